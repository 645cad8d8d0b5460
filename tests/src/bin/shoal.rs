//! `shoal-e2e`: the `shoal` command, built from `shoal-worker`'s library as a binary of this
//! package so that its integration tests can run it (`env!("CARGO_BIN_EXE_shoal-e2e")`).

fn main() -> std::process::ExitCode {
    shoal_worker::main()
}
