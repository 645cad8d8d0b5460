//! `shoal run`: runs one task locally, under exactly the sandbox and limits a peer applies.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shoal_sandbox::{FailureKind, Limits, Sandbox, SandboxConfig};

/// Arguments of `shoal run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal run jobs/wasm/primes.wasm -- 0 1000000\n  \
    shoal run jobs/wasm/wordcount.wasm --input book.txt -- map\n  \
    shoal run jobs/wasm/sum.wasm --input a.txt --input b.txt --json")]
pub(crate) struct RunArgs {
    /// The task module: a `.wasm` (WASI preview 1 command) or `.wat` file.
    module: PathBuf,
    /// An input file; repeat for several inputs, in order (default: stdin is the one input).
    #[arg(long = "input", short = 'i', value_name = "FILE")]
    inputs: Vec<PathBuf>,
    /// Write the task's output to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Fuel budget (deterministic instruction count).
    #[arg(long, value_name = "N", default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// Linear memory limit, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = crate::units::parse_size)]
    memory: u64,
    /// Wall-clock deadline, e.g. 10s.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = crate::units::parse_duration)]
    timeout: Duration,
    /// Output size limit, e.g. 16MiB.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = crate::units::parse_size)]
    max_output: u64,
    /// Print only a one-line JSON summary on stdout (the output goes to --output, or nowhere).
    #[arg(long)]
    json: bool,
    /// Arguments passed to the task (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// The `--json` summary.
#[derive(Debug, serde::Serialize)]
struct Summary {
    status: &'static str,
    exit_code: Option<i32>,
    fuel: u64,
    wall_ms: f64,
    output_bytes: usize,
    output_blake3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_kind: Option<&'static str>,
}

/// A short, stable name for each failure kind (for scripts).
fn kind_name(kind: &FailureKind) -> &'static str {
    match kind {
        FailureKind::Compile(_) => "invalid_module",
        FailureKind::OutOfFuel { .. } => "out_of_fuel",
        FailureKind::MemoryLimit { .. } => "memory_limit",
        FailureKind::TableLimit { .. } => "table_limit",
        FailureKind::Deadline { .. } => "deadline",
        FailureKind::OutputLimit { .. } => "output_limit",
        FailureKind::LogLimit { .. } => "log_limit",
        FailureKind::Trap { .. } => "trap",
        FailureKind::Exit { .. } => "exit",
        FailureKind::Busy { .. } => "busy",
        FailureKind::Halted => "halted",
        FailureKind::Internal(_) => "internal",
    }
}

/// Runs the command; returns the process exit status.
pub(crate) fn run(args: RunArgs) -> anyhow::Result<u8> {
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module {}", args.module.display()))?;
    let mut inputs = Vec::new();
    if args.inputs.is_empty() {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("cannot read stdin")?;
        inputs.push(buf);
    } else {
        for path in &args.inputs {
            inputs
                .push(std::fs::read(path).with_context(|| format!("cannot read input {}", path.display()))?);
        }
    }
    let limits = Limits {
        fuel: args.fuel,
        memory_bytes: args.memory,
        deadline: args.timeout,
        output_bytes: args.max_output,
        ..Limits::default()
    };
    let sandbox = Sandbox::new(SandboxConfig { max_concurrent_tasks: 1, ..SandboxConfig::default() })?;
    let input_refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
    let arg_refs: Vec<&str> = args.args.iter().map(|s| s.as_str()).collect();

    let result = sandbox
        .load(&bytes)
        .map_err(|e| shoal_sandbox::TaskFailure {
            kind: e.into(),
            log: Vec::new(),
            fuel_used: 0,
            wall: Duration::ZERO,
        })
        .and_then(|module| sandbox.run(&module, &input_refs, &arg_refs, &limits));

    let (log, summary, output) = match result {
        Ok(out) => {
            let summary = Summary {
                status: "ok",
                exit_code: Some(0),
                fuel: out.fuel_used,
                wall_ms: out.wall.as_secs_f64() * 1e3,
                output_bytes: out.output.len(),
                output_blake3: Some(blake3::hash(&out.output).to_hex().to_string()),
                error: None,
                error_kind: None,
            };
            (out.log, summary, Some(out.output))
        }
        Err(f) => {
            let summary = Summary {
                status: "failed",
                exit_code: match f.kind {
                    FailureKind::Exit { code } => Some(code),
                    _ => None,
                },
                fuel: f.fuel_used,
                wall_ms: f.wall.as_secs_f64() * 1e3,
                output_bytes: 0,
                output_blake3: None,
                error: Some(f.kind.to_string()),
                error_kind: Some(kind_name(&f.kind)),
            };
            (f.log, summary, None)
        }
    };
    std::io::stderr().write_all(&log).ok();
    if let Some(output) = &output {
        match &args.output {
            Some(path) => {
                std::fs::write(path, output).with_context(|| format!("cannot write {}", path.display()))?
            }
            None if !args.json => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(output).and_then(|()| stdout.flush()).context("cannot write to stdout")?;
            }
            None => {}
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    match &summary.error {
        None => Ok(0),
        Some(e) => {
            eprintln!("shoal run: task failed: {e}");
            Ok(1)
        }
    }
}
