//! `shoal`: the command-line front of Shoal, a volunteer computing swarm of WebAssembly tasks
//! (the code is in the library, `src/lib.rs`).

fn main() -> std::process::ExitCode {
    shoal_worker::main()
}
