//! `shoal new task NAME --lang c|zig|assemblyscript`: writes a ready-to-build task skeleton (the source, the
//! language's guest helper, a build script and a job file that runs it), then builds it when the
//! language's toolchain is here, so that a newcomer goes from nothing to a task running on a
//! local swarm with `shoal new task hello` and `shoal demo --job hello/job.toml`.
//!
//! Invariants: nothing is overwritten (an existing target directory is an error); the helpers are
//! the ones in `jobs/src`, compiled into the binary, so a skeleton builds like the repository's
//! own tasks; a missing toolchain is not an error: the files are written and the message says
//! what to install and which command builds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

/// `shoal new …`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    #[command(subcommand)]
    what: NewWhat,
}

#[derive(Debug, Subcommand)]
enum NewWhat {
    /// A task skeleton: its source, the guest helper, build.sh and a job file that runs it.
    Task(NewTaskArgs),
}

#[derive(Debug, Args)]
struct NewTaskArgs {
    /// The task's name (letters, digits, '_' and '-'); also the directory created, unless --dir.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = Lang::C)]
    lang: Lang,
    /// Where to write it (default: ./NAME). Must not exist yet.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only write the files; do not try to build the .wasm.
    #[arg(long)]
    no_build: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Lang {
    /// C, built with clang for wasm32-wasi (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32).
    C,
    /// Zig 0.17, which targets wasm32-wasi itself (`pip install ziglang==0.17.1`).
    Zig,
    /// AssemblyScript with its WASI shim (node and npm; the compiler comes from npm).
    #[value(name = "assemblyscript", alias = "as")]
    AssemblyScript,
}

const C_HELPER: &str = include_str!("../../jobs/src/shoal_task.h");
const ZIG_HELPER: &str = include_str!("../../jobs/src/zig/shoal_task.zig");
const AS_HELPER: &str = include_str!("../../jobs/src/as/shoal_task.ts");
const AS_PACKAGE: &str = include_str!("../../jobs/src/as/package.json");

fn c_source(name: &str) -> String {
    format!(
        r#"/* {name}: a Shoal task. Its inputs arrive concatenated on stdin (shoal_read_inputs splits
 * them), its arguments in argv; what it prints on stdout is its output, stderr is its log, and
 * exit status 0 is success. The task ABI: docs/task-abi.md in the Shoal repository. */
#include "shoal_task.h"

int main(int argc, char **argv) {{
    shoal_inputs in = shoal_read_inputs();
    const char *who = argc > 1 ? argv[1] : "world";
    printf("hello, %s: %zu input(s), %zu bytes\n", who, in.count, in.total);
    return 0;
}}
"#
    )
}

fn zig_source(name: &str) -> String {
    format!(
        r#"//! {name}: a Shoal task. Its inputs arrive concatenated on stdin (task.readInputs splits them),
//! its arguments from task.args(); what it writes with task.output is its output, and exit status
//! 0 is success. The task ABI: docs/task-abi.md in the Shoal repository.
const std = @import("std");
const task = @import("shoal_task.zig");

pub fn main() void {{
    const inputs = task.readInputs();
    var bytes: usize = 0;
    for (inputs) |input| bytes += input.len;
    const args = task.args();
    const who = if (args.len > 0) args[0] else "world";
    var out: [256]u8 = undefined;
    task.output(std.fmt.bufPrint(&out, "hello, {{s}}: {{d}} input(s), {{d}} bytes\n", .{{ who, inputs.len, bytes }}) catch task.die("name too long"));
}}
"#
    )
}

fn as_source(name: &str) -> String {
    format!(
        r#"// {name}: a Shoal task. Its inputs arrive concatenated on stdin (readInputs splits them), its
// arguments from args(); what it writes with output() is its output, and exit status 0 is
// success. The task ABI: docs/task-abi.md in the Shoal repository.
import {{ args, output, readInputs }} from "./shoal_task";

const inputs = readInputs();
let bytes = 0;
for (let k = 0; k < inputs.length; k++) bytes += inputs[k].length;
const given = args();
const who = given.length > 0 ? given[0] : "world";
output("hello, " + who + ": " + inputs.length.toString() + " input(s), " + bytes.toString() + " bytes\n");
"#
    )
}

fn job_file(name: &str) -> String {
    format!(
        r#"# Runs the task {name} once on a swarm: `shoal demo --job job.toml` starts a local one;
# `shoal submit job.toml --bootstrap HOST:PORT` sends it to a running swarm. Format: docs/job-files.md.
# Expected output: "hello, shoal: 2 input(s), 11 bytes".

[modules]
{name} = "{name}.wasm"

[[task]]
name = "{name}"
module = "{name}"
args = ["shoal"]
inputs = [{{ text = "hello" }}, {{ text = " world" }}]
"#
    )
}

/// The build command, as run from the task's directory.
fn build_command(lang: Lang, name: &str) -> Vec<String> {
    let words: Vec<String> = match lang {
        Lang::AssemblyScript => [
            "npm install --silent --no-audit --no-fund &&",
            "node_modules/.bin/asc",
            &format!("{name}.ts"),
            "--config node_modules/@assemblyscript/wasi-shim/asconfig.json",
            "-O3 --noAssert --runtime stub -o",
            &format!("{name}.wasm"),
        ]
        .map(String::from)
        .to_vec(),
        Lang::C => vec![
            "clang",
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-O2",
            "-Wl,--strip-all",
            "-o",
            &format!("{name}.wasm"),
            &format!("{name}.c"),
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        Lang::Zig => {
            let mut w: Vec<String> = zig_command();
            w.extend(
                [
                    "build-exe",
                    &format!("{name}.zig"),
                    "-target",
                    "wasm32-wasi",
                    "-O",
                    "ReleaseSmall",
                    "-fstrip",
                ]
                .map(String::from),
            );
            w
        }
    };
    words
}

/// How to run Zig: `$ZIG` (a command line), else `zig`, else `python3 -m ziglang` if that works.
fn zig_command() -> Vec<String> {
    if let Ok(z) = std::env::var("ZIG")
        && !z.trim().is_empty()
    {
        return z.split_whitespace().map(String::from).collect();
    }
    let runs = |cmd: &[&str]| {
        Command::new(cmd[0]).args(&cmd[1..]).arg("version").output().is_ok_and(|o| o.status.success())
    };
    if !runs(&["zig"]) && runs(&["python3", "-m", "ziglang"]) {
        return ["python3", "-m", "ziglang"].map(String::from).to_vec();
    }
    vec!["zig".into()]
}

/// Whether `tool` names an executable (a path, or a file on PATH).
fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// `shoal new`.
pub(crate) fn run(args: NewArgs) -> anyhow::Result<u8> {
    let NewWhat::Task(args) = args.what;
    if !valid_name(&args.name) {
        bail!(
            "{:?} is not a task name: use a letter, then letters, digits, '_' or '-' (at most 64)",
            args.name
        );
    }
    let name = args.name.as_str();
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} already exists: choose another name or --dir (nothing was written)", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (source_name, source, helper_name, helper) = match args.lang {
        Lang::C => (format!("{name}.c"), c_source(name), "shoal_task.h", C_HELPER),
        Lang::Zig => (format!("{name}.zig"), zig_source(name), "shoal_task.zig", ZIG_HELPER),
        Lang::AssemblyScript => (format!("{name}.ts"), as_source(name), "shoal_task.ts", AS_HELPER),
    };
    if args.lang == Lang::AssemblyScript {
        write(
            &dir,
            "package.json",
            &AS_PACKAGE.replace("shoal-tasks-assemblyscript", &format!("shoal-task-{name}")),
        )?;
    }
    let command = build_command(args.lang, name);
    let script = format!(
        "#!/bin/sh\n# Builds {name}.wasm from {source_name} (run it from this directory).\nset -e\ncd \"$(dirname \"$0\")\"\n{}\n",
        command.join(" ")
    );
    write(&dir, &source_name, &source)?;
    write(&dir, helper_name, helper)?;
    write(&dir, "job.toml", &job_file(name))?;
    write(&dir, "build.sh", &script)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("build.sh");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    let extra = if args.lang == Lang::AssemblyScript { ", package.json" } else { "" };
    println!("wrote {}/: {source_name}, {helper_name}{extra}, build.sh, job.toml", dir.display());
    if args.no_build {
        println!("build it with: (cd {} && ./build.sh)", dir.display());
        return Ok(0);
    }
    let install = match args.lang {
        Lang::C => "Debian: apt install clang lld wasi-libc libclang-rt-14-dev-wasm32",
        Lang::Zig => "pip install ziglang==0.17.1, or a Zig 0.17 on PATH, or set ZIG",
        Lang::AssemblyScript => "node and npm; Debian: apt install npm",
    };
    let tool = command.iter().find(|w| !w.starts_with('-')).cloned().unwrap_or_default();
    let tool = if args.lang == Lang::AssemblyScript { "npm".to_string() } else { tool };
    if !on_path(&tool) {
        println!(
            "not built: no {tool} here; install the toolchain ({install}), then: (cd {} && ./build.sh)",
            dir.display()
        );
        return Ok(0);
    }
    let built = Command::new("sh").arg("build.sh").current_dir(&dir).status();
    match built {
        Ok(s) if s.success() => {
            println!("built {}/{name}.wasm", dir.display());
            println!("run it on a local swarm: shoal demo --job {}", dir.join("job.toml").display());
            Ok(0)
        }
        Ok(s) => bail!("building {name}.wasm failed ({s}): the compiler's message is above"),
        Err(e) => bail!("cannot run sh build.sh in {}: {e}", dir.display()),
    }
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("hello") && valid_name("my-task_2"));
        assert!(!valid_name("") && !valid_name("2fast") && !valid_name("a/b") && !valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn the_job_file_names_the_module_and_the_expected_output() {
        let job = job_file("hello");
        assert!(job.contains("hello = \"hello.wasm\"") && job.contains("hello, shoal: 2 input(s), 11 bytes"));
        assert!(c_source("hello").contains("#include \"shoal_task.h\""));
        assert!(zig_source("hello").contains("@import(\"shoal_task.zig\")"));
        assert!(as_source("hello").contains("from \"./shoal_task\""));
    }
}
