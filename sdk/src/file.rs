//! TOML job files (format: `docs/job-files.md`), read into the same [`Job`] builder as Rust code.
//!
//! Reading happens in three steps, each of which reports errors with the file, line, column, task
//! and field: serde parses the text into strict structs (`deny_unknown_fields`, no untagged enums);
//! `for` clauses and `{expr}` placeholders are expanded into concrete tasks, whose input references
//! are checked against the full set of task names; the tasks are added to a [`Job`] in file order.
//! Paths in the file (modules, input files) are relative to the file's directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shoal_core::job::JobError;
use toml::Spanned;

use crate::builder::{BuildError, CompiledJob, Job, Module};
use crate::template::{self, Vars};

/// What went wrong in a job file; see [`JobFileError`] for where.
#[derive(Debug, thiserror::Error)]
pub enum JobFileErrorKind {
    /// The file could not be read.
    #[error("cannot read the job file: {0}")]
    Read(#[source] std::io::Error),
    /// The text is not valid TOML or does not fit the format (unknown field, wrong type, missing
    /// field).
    #[error("{0}")]
    Format(String),
    /// A value is well-typed but wrong: a bad size, duration, `for` clause or placeholder, an
    /// unknown module or task, a missing file.
    #[error("{0}")]
    Invalid(String),
    /// The job as a whole is invalid (a cycle, no tasks, a duplicate name).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// An error in a job file, located as precisely as the file allows.
///
/// Its `Display` reads `FILE:LINE:COLUMN: task "NAME": field `FIELD`: MESSAGE`, leaving out what
/// is unknown.
#[derive(Debug)]
pub struct JobFileError {
    /// The job file.
    pub path: PathBuf,
    /// 1-based line, when the error has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), with `line`.
    pub column: Option<usize>,
    /// The task (its name as written, placeholders unexpanded, or the expanded name if known).
    pub task: Option<String>,
    /// The field, as written in the file (`memory`, `inputs`, `modules.pi`, `outputs`…).
    pub field: Option<String>,
    /// What is wrong (boxed to keep `Result`s small).
    pub kind: Box<JobFileErrorKind>,
}

impl fmt::Display for JobFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        f.write_str(": ")?;
        if let Some(t) = &self.task {
            write!(f, "task {t:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for JobFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.kind)
    }
}

/// A job file read into a [`Job`] builder, with what is needed to locate errors found later.
#[derive(Debug)]
pub struct JobFile {
    path: PathBuf,
    job: Job,
    text: String,
    /// Expanded task name → span of its `name` value in the file.
    origins: HashMap<String, Range<usize>>,
}

/// Reads and compiles the job file at `path`: [`JobFile::load`] then [`JobFile::compile`].
///
/// ```
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jobs/pi.toml");
/// let compiled = shoal_sdk::load_job_file(path)?;
/// assert_eq!(compiled.outputs.len(), 1);
/// # Ok::<(), shoal_sdk::JobFileError>(())
/// ```
pub fn load_job_file(path: impl AsRef<Path>) -> Result<CompiledJob, JobFileError> {
    JobFile::load(path)?.compile()
}

impl JobFile {
    /// Reads the job file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<JobFile, JobFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| JobFileError {
            path: path.to_owned(),
            line: None,
            column: None,
            task: None,
            field: None,
            kind: Box::new(JobFileErrorKind::Read(e)),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        JobFile::parse(&text, dir, path)
    }

    /// Reads a job file from its text; relative paths in it are taken from `dir`, and errors name
    /// `path`.
    pub fn parse(text: &str, dir: &Path, path: &Path) -> Result<JobFile, JobFileError> {
        let cx = Cx { text, path };
        let raw: RawFile = toml::from_str(text).map_err(|e| cx.serde_error(&e))?;
        let mut job = Job::new();
        let mut modules: HashMap<String, Module> = HashMap::new();
        for (name, file) in &raw.modules {
            let m = job.module_file(dir.join(file.get_ref())).map_err(|e| {
                let msg = match e {
                    BuildError::ModuleFile { path, source } => format!("{}: {source}", path.display()),
                    other => other.to_string(),
                };
                // Name the first task that needs the module, when there is one.
                let user = raw.task.iter().find(|t| t.get_ref().module.get_ref() == name);
                let task = user.map(|t| t.get_ref().name.get_ref().as_str());
                cx.invalid(file.span(), task, format!("modules.{name}"), msg)
            })?;
            modules.insert(name.clone(), m);
        }
        let tasks = expand_tasks(&cx, &raw, dir)?;
        let names: HashSet<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        for t in &tasks {
            for input in &t.inputs {
                if let Input::Task(name, span) = input
                    && !names.contains(name.as_str())
                {
                    let msg = format!("no task is called {name:?}");
                    return Err(cx.invalid(span.clone(), Some(&t.name), "inputs".into(), msg));
                }
            }
        }
        let mut origins = HashMap::new();
        for t in tasks {
            let module = modules.get(t.module.get_ref()).ok_or_else(|| {
                let msg = format!("no module is called {:?} (see [modules])", t.module.get_ref());
                cx.invalid(t.module.span(), Some(&t.name), "module".into(), msg)
            })?;
            let mut b = job.task(t.name.clone(), module).args(t.args);
            for input in t.inputs {
                b = match input {
                    Input::Task(name, _) => b.input_named(name),
                    Input::Bytes(bytes) => b.input_bytes(bytes),
                };
            }
            if let Some(c) = t.cost {
                b = b.cost(c);
            }
            b = b.limits(t.limits);
            let handle = b.build().map_err(|e| cx.build_error(t.name_span.clone(), &t.name, e))?;
            if t.output {
                job.output(&handle);
            }
            origins.insert(t.name, t.name_span);
        }
        for o in &raw.outputs {
            if !origins.contains_key(o.get_ref()) {
                let msg = format!("no task is called {:?}", o.get_ref());
                return Err(cx.invalid(o.span(), None, "outputs".into(), msg));
            }
            job.output_named(o.get_ref().clone());
        }
        if let Some(v) = &raw.verify {
            let mut text = v.policy.get_ref().trim().to_owned();
            if text == "replicate" {
                let k = v.k.unwrap_or(2);
                text = match v.quorum {
                    Some(q) => format!("replicate={k}/{q}"),
                    None => format!("replicate={k}"),
                };
            } else if v.k.is_some() || v.quorum.is_some() {
                let msg = "k and quorum go with policy = \"replicate\"".to_owned();
                return Err(cx.invalid(v.policy.span(), None, "verify.policy".into(), msg));
            }
            let policy = shoal_core::sched::VerifyPolicy::parse(&text)
                .map_err(|msg| cx.invalid(v.policy.span(), None, "verify.policy".into(), msg))?;
            job.verify(policy);
        }
        if let Some(r) = &raw.retention {
            let d = parse_duration(r.get_ref())
                .map_err(|msg| cx.invalid(r.span(), None, "retention".into(), msg))?;
            job.retention(d);
        }
        Ok(JobFile { path: path.to_owned(), job, text: text.to_owned(), origins })
    }

    /// The builder, to add more tasks in Rust or inspect the tasks read.
    pub fn builder(&mut self) -> &mut Job {
        &mut self.job
    }

    /// Gives up the error locations and returns the builder.
    pub fn into_builder(self) -> Job {
        self.job
    }

    /// Compiles the job; a cycle is reported at the line of a task on it.
    pub fn compile(self) -> Result<CompiledJob, JobFileError> {
        let JobFile { path, job, text, origins } = self;
        job.compile().map_err(|e| {
            let cx = Cx { text: &text, path: &path };
            let task = match &e {
                BuildError::Graph(JobError::Cycle { task } | JobError::UnknownInput { task, .. }) => {
                    Some(task.clone())
                }
                _ => None,
            };
            match task.and_then(|t| origins.get(&t).map(|span| (t, span.clone()))) {
                Some((t, span)) => cx.build_error(span, &t, e),
                None => JobFileError {
                    path: path.clone(),
                    line: None,
                    column: None,
                    task: None,
                    field: None,
                    kind: Box::new(JobFileErrorKind::Build(e)),
                },
            }
        })
    }
}

/// The file as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    modules: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    task: Vec<Spanned<RawTask>>,
    #[serde(default)]
    outputs: Vec<Spanned<String>>,
    verify: Option<RawVerify>,
    /// How long the outputs stay fetchable after the job ended (`"2h"`).
    retention: Option<Spanned<String>>,
}

/// `[verify]`: how the job's results are checked (docs/verification.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    /// `none`, `adaptive` or `replicate` (then `k` and `quorum`), or `replicate=K[/Q]`.
    policy: Spanned<String>,
    k: Option<u32>,
    quorum: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Spanned<String>,
    module: Spanned<String>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<RawInput>>,
    cost: Option<u64>,
    fuel: Option<u64>,
    memory: Option<Spanned<String>>,
    output_limit: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    output: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    task: Option<String>,
    file: Option<String>,
    text: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
}

/// A task after `for` and placeholders are expanded.
#[derive(Debug)]
struct Expanded {
    name: String,
    name_span: Range<usize>,
    module: Spanned<String>,
    args: Vec<String>,
    inputs: Vec<Input>,
    cost: Option<u64>,
    limits: shoal_core::job::Limits,
    output: bool,
}

#[derive(Debug)]
enum Input {
    /// Another task's output, with the span of the input entry.
    Task(String, Range<usize>),
    Bytes(Vec<u8>),
}

fn expand_tasks(cx: &Cx<'_>, raw: &RawFile, dir: &Path) -> Result<Vec<Expanded>, JobFileError> {
    let mut out = Vec::new();
    for task in &raw.task {
        let t = task.get_ref();
        let written = t.name.get_ref();
        let err =
            |span: Range<usize>, field: &str, msg: String| cx.invalid(span, Some(written), field.into(), msg);
        let loops = match &t.for_ {
            Some(f) => template::parse_for(f.get_ref()).map_err(|m| err(f.span(), "for", m))?,
            None => Vec::new(),
        };
        let mut limits = shoal_core::job::Limits { fuel: t.fuel, ..Default::default() };
        if let Some(m) = &t.memory {
            limits.memory_bytes = Some(parse_size(m.get_ref()).map_err(|msg| err(m.span(), "memory", msg))?);
        }
        if let Some(m) = &t.output_limit {
            let size = parse_size(m.get_ref()).map_err(|msg| err(m.span(), "output_limit", msg))?;
            limits.output_bytes = Some(size);
        }
        if let Some(d) = &t.timeout {
            let d = parse_duration(d.get_ref()).map_err(|msg| err(d.span(), "timeout", msg))?;
            limits.deadline_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        for vars in template::combinations(&loops, &Vars::new()) {
            let name = template::expand(written, &vars).map_err(|m| err(t.name.span(), "name", m))?;
            let err = |span: Range<usize>, field: &str, msg: String| {
                cx.invalid(span, Some(&name), field.into(), msg)
            };
            let mut args = Vec::with_capacity(t.args.len());
            for a in &t.args {
                args.push(template::expand(a.get_ref(), &vars).map_err(|m| err(a.span(), "args", m))?);
            }
            let mut inputs = Vec::new();
            for input in &t.inputs {
                let i = input.get_ref();
                let sources = [i.task.is_some(), i.file.is_some(), i.text.is_some()];
                if sources.iter().filter(|&&s| s).count() != 1 {
                    let msg = "an input needs exactly one of `task`, `file` or `text`".to_owned();
                    return Err(err(input.span(), "inputs", msg));
                }
                let inner = match &i.for_ {
                    Some(f) => template::parse_for(f).map_err(|m| err(input.span(), "inputs", m))?,
                    None => Vec::new(),
                };
                for vars in template::combinations(&inner, &vars) {
                    let exp =
                        |s: &str| template::expand(s, &vars).map_err(|m| err(input.span(), "inputs", m));
                    if let Some(task) = &i.task {
                        inputs.push(Input::Task(exp(task)?, input.span()));
                    } else if let Some(file) = &i.file {
                        let p = dir.join(exp(file)?);
                        let bytes = std::fs::read(&p)
                            .map_err(|e| err(input.span(), "inputs", format!("{}: {e}", p.display())))?;
                        inputs.push(Input::Bytes(bytes));
                    } else if let Some(text) = &i.text {
                        inputs.push(Input::Bytes(exp(text)?.into_bytes()));
                    }
                }
            }
            out.push(Expanded {
                name,
                name_span: t.name.span(),
                module: t.module.clone(),
                args,
                inputs,
                cost: t.cost,
                limits: limits.clone(),
                output: t.output,
            });
        }
    }
    Ok(out)
}

/// Parses a size: a non-negative integer and an optional unit `B`, `KB`, `MB`, `GB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB` (powers of 1024), with or without a space.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.replace('_', "").parse().map_err(|_| bad_size(text))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad_size(text)),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {text:?} is too large"))
}

fn bad_size(text: &str) -> String {
    format!("{text:?} is not a size (examples: \"64MiB\", \"512 KiB\", \"1GB\", \"4096\")")
}

/// Parses a duration: a non-negative integer and a unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (examples: \"500ms\", \"10s\", \"2m\", \"1h\")");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad);
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(bad()),
    }
}

/// The text being read, to turn byte spans into lines and tasks.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Cx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    fn at(
        &self,
        span: Range<usize>,
        task: Option<&str>,
        field: Option<String>,
        kind: JobFileErrorKind,
    ) -> JobFileError {
        let (line, column) = self.line_col(span.start);
        JobFileError {
            path: self.path.to_owned(),
            line: Some(line),
            column: Some(column),
            task: task.map(str::to_owned),
            field,
            kind: Box::new(kind),
        }
    }

    fn invalid(&self, span: Range<usize>, task: Option<&str>, field: String, msg: String) -> JobFileError {
        self.at(span, task, Some(field), JobFileErrorKind::Invalid(msg))
    }

    fn build_error(&self, span: Range<usize>, task: &str, e: BuildError) -> JobFileError {
        self.at(span, Some(task), Some("name".into()), JobFileErrorKind::Build(e))
    }

    /// Locates a serde error: its line, the `[[task]]` it falls in (by a lenient second parse that
    /// only reads task names) and the key written on its line.
    fn serde_error(&self, e: &toml::de::Error) -> JobFileError {
        let kind = JobFileErrorKind::Format(e.message().trim().to_owned());
        let Some(span) = e.span() else {
            return JobFileError {
                path: self.path.to_owned(),
                line: None,
                column: None,
                task: None,
                field: None,
                kind: Box::new(kind),
            };
        };
        let task = self.task_at(span.start);
        let unknown = e.message().strip_prefix("unknown field `").and_then(|m| m.split_once('`'));
        let field = unknown.map(|(f, _)| f.to_owned()).or_else(|| self.key_on_line(span.start));
        self.at(span, task.as_deref(), field, kind)
    }

    /// The name of the `[[task]]` whose section holds `offset`: the last table header up to its
    /// line must be a `[[task]]` header, and its position among those headers picks the task.
    fn task_at(&self, offset: usize) -> Option<String> {
        #[derive(Deserialize)]
        struct Names {
            #[serde(default)]
            task: Vec<Name>,
        }
        #[derive(Deserialize)]
        struct Name {
            name: Option<String>,
        }
        // Up to the end of the error's line: a missing field is reported at its table's header.
        let end = self.text.get(offset..)?.find('\n').map_or(self.text.len(), |i| offset + i);
        let before = self.text.get(..end)?;
        let mut tasks_seen = 0;
        let mut in_task = false;
        for line in before.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let is_header = line.starts_with('[')
                && line.ends_with(']')
                && line.chars().all(|c| c.is_ascii_alphanumeric() || "[]_-. ".contains(c));
            if is_header {
                in_task = line.replace(' ', "") == "[[task]]";
                tasks_seen += usize::from(in_task);
            }
        }
        if !in_task {
            return None;
        }
        let names: Names = toml::from_str(self.text).ok()?;
        names.task.into_iter().nth(tasks_seen - 1)?.name
    }

    fn key_on_line(&self, offset: usize) -> Option<String> {
        let start = self.text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
        let line = self.text.get(start..)?.lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c));
        ok.then(|| key.trim_matches('"').to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4_096"), Ok(4096));
        assert!(parse_size("64 MeB").unwrap_err().contains("not a size"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999GiB").unwrap_err().contains("too large"));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1.5s").is_err());
    }
}
