//! `shoal`: the command-line front of Shoal, a volunteer computing swarm of WebAssembly tasks.
//!
//! This library is the whole command; its one public item is [`main`], which `src/main.rs` calls.
//! It is a library so that the cross-crate tests (`tests/`, package `shoal-tests`) can build the
//! same program as a binary of their own and run it as separate processes.

mod cgroup;
mod cmd_credit;
mod cmd_demo;
mod cmd_job;
mod cmd_key;
mod cmd_new;
mod cmd_run;
mod cmd_sim;
mod cmd_status;
mod cmd_submit;
mod cmd_worker;
mod control;
mod logging;
mod metrics;
mod page;
mod policy;
mod settings;
mod trust;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shoal: share idle CPU with a peer-to-peer swarm of sandboxed WebAssembly tasks.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one task locally, under the same sandbox and limits a volunteer's peer applies.
    Run(cmd_run::RunArgs),
    /// Simulate a swarm running a job DAG (the real scheduler over a modelled network).
    Sim(cmd_sim::SimArgs),
    /// Join a swarm and donate idle CPU: run others' tasks until SIGINT or SIGTERM.
    Worker(Box<cmd_worker::WorkerArgs>),
    /// Show what the worker running in a data directory is doing (through its control socket).
    Status(cmd_status::StatusArgs),
    /// List the peers the worker running in a data directory knows.
    Peers(cmd_status::StatusArgs),
    /// Submit a job file to the swarm, wait for it and write its outputs (or detach).
    Submit(cmd_submit::SubmitArgs),
    /// Follow jobs from anywhere: status, wait for outputs, cancel, list.
    Job(cmd_job::JobArgs),
    /// Start a swarm of worker processes on this machine and compute a Mandelbrot PNG with it (or
    /// run any job file on it with --job).
    Demo(cmd_demo::DemoArgs),
    /// Write a ready-to-build task skeleton in C or Zig, with a job file that runs it.
    New(cmd_new::NewArgs),
    /// Make or show a submitter's signing key (workers run signed jobs from keys they trust).
    Key(cmd_key::KeyArgs),
    /// The credit a worker earned: its runs that owners paid in signed receipts.
    Credit(cmd_status::StatusArgs),
}

/// Runs the `shoal` command on this process's arguments and returns its exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `shoal worker` installs its log subscriber once its settings chose the format.
    if !matches!(cli.command, Command::Worker(_)) {
        logging::init(logging::LogFormat::Text);
    }
    let result = match cli.command {
        Command::Run(args) => cmd_run::run(args),
        Command::Worker(args) => cmd_worker::run(*args),
        Command::Status(args) => cmd_status::status(args),
        Command::Peers(args) => cmd_status::peers(args),
        Command::Submit(args) => cmd_submit::run(args),
        Command::Job(args) => cmd_job::run(args),
        Command::Demo(args) => cmd_demo::run(args),
        Command::Sim(args) => cmd_sim::run(args),
        Command::New(args) => cmd_new::run(args),
        Command::Key(args) => cmd_key::run(args),
        Command::Credit(args) => cmd_credit::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("shoal: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message already
/// holds (many errors print their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
