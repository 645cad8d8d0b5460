//! The worker's trust settings (`trusted_submitters`, `allowed_modules`, `accept_unsigned`) and
//! the [`TrustPolicy`] they make.
//!
//! A list comes from a file (one item a line; blank lines and `#` comments are skipped) or, in
//! the config file only, inline as a TOML array. Every item is checked when the worker starts: a
//! bad key or hash is an error naming the file and line, never a silently shorter list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use shoal_core::ids::{BlobHash, SubmitterKey};
use shoal_core::sched::TrustPolicy;

/// Where a list setting's items are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum ListSource {
    /// A file, one item a line.
    File(PathBuf),
    /// Items given inline (config file only).
    Inline(Vec<String>),
}

impl ListSource {
    /// A file path in a config file is relative to the file's directory.
    pub(crate) fn relative_to(self, base: &Path) -> ListSource {
        match self {
            ListSource::File(p) => ListSource::File(base.join(p)),
            inline => inline,
        }
    }

    /// The items with where each came from (`file:line`, or `setting[k]`), parsed by `parse`.
    fn items<T: Ord>(
        &self,
        setting: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<BTreeSet<T>> {
        let lines: Vec<(String, String)> = match self {
            ListSource::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {setting} from {}", path.display()))?
                .lines()
                .enumerate()
                .map(|(n, line)| (format!("{}:{}", path.display(), n + 1), line.to_string()))
                .collect(),
            ListSource::Inline(items) => {
                items.iter().enumerate().map(|(k, item)| (format!("{setting}[{k}]"), item.clone())).collect()
            }
        };
        let mut out = BTreeSet::new();
        for (at, line) in lines {
            let item = line.split('#').next().unwrap_or_default().trim();
            if !item.is_empty() {
                out.insert(parse(item).map_err(|e| anyhow::anyhow!("{at}: {e}"))?);
            }
        }
        Ok(out)
    }
}

/// The trust settings as merged; the lists are read by [`policy`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TrustSettings {
    pub(crate) trusted_submitters: Option<ListSource>,
    pub(crate) allowed_modules: Option<ListSource>,
    pub(crate) accept_unsigned: bool,
}

/// The policy the worker's peer applies, with every list read and checked.
pub(crate) fn policy(s: &TrustSettings) -> anyhow::Result<TrustPolicy> {
    let submitters = match &s.trusted_submitters {
        Some(list) => list.items("trusted_submitters", |k| {
            k.parse::<SubmitterKey>().map_err(|e| format!("{e} (a key as `shoal key show` prints it)"))
        })?,
        None => BTreeSet::new(),
    };
    let modules = match &s.allowed_modules {
        Some(list) => {
            Some(list.items("allowed_modules", |h| h.parse::<BlobHash>().map_err(|e| e.to_string()))?)
        }
        None => None,
    };
    Ok(TrustPolicy {
        accept_unsigned: s.accept_unsigned,
        trusted_submitters: submitters,
        allowed_modules: modules,
        epoch_unix_ms: 0,
    })
}

/// One line for the worker's start-up output: what it runs.
pub(crate) fn describe(p: &TrustPolicy) -> String {
    let who = match (p.trusted_submitters.len(), p.accept_unsigned) {
        (0, true) => "jobs from anyone in the swarm".to_string(),
        (0, false) => "no jobs (accept_unsigned is off and no trusted_submitters are listed)".to_string(),
        (n, true) => format!("jobs from anyone in the swarm ({n} trusted submitters listed)"),
        (n, false) => format!("jobs signed by its {n} trusted submitters only"),
    };
    match &p.allowed_modules {
        Some(m) => format!("runs {who}, and only {} allowed modules", m.len()),
        None => format!("runs {who}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn lists_come_from_files_or_inline_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = SubmitterKey([1; 32]);
        let b = SubmitterKey([2; 32]);
        let file = dir.path().join("trusted");
        std::fs::write(&file, format!("# our lab\n{a}\n\n  {b}  # the other lab\n")).unwrap();
        let s = TrustSettings {
            trusted_submitters: Some(ListSource::File(file.clone())),
            allowed_modules: Some(ListSource::Inline(vec![BlobHash::of(b"m").to_string()])),
            accept_unsigned: false,
        };
        let p = policy(&s).unwrap();
        assert_eq!(p.trusted_submitters, BTreeSet::from([a, b]));
        assert_eq!(p.allowed_modules, Some(BTreeSet::from([BlobHash::of(b"m")])));
        assert!(!p.accept_unsigned);
        assert_eq!(
            describe(&p),
            "runs jobs signed by its 2 trusted submitters only, and only 1 allowed modules"
        );

        std::fs::write(&file, format!("{a}\nnot-a-key\n")).unwrap();
        let err = policy(&s).unwrap_err().to_string();
        assert!(err.contains("trusted:2") && err.contains("shoal key show"), "{err}");
        let inline = TrustSettings {
            allowed_modules: Some(ListSource::Inline(vec!["zz".into()])),
            ..TrustSettings::default()
        };
        let err = policy(&inline).unwrap_err().to_string();
        assert!(err.starts_with("allowed_modules[0]: "), "{err}");
        let missing =
            TrustSettings { trusted_submitters: Some(ListSource::File(dir.path().join("none"))), ..s };
        assert!(policy(&missing).unwrap_err().to_string().contains("cannot read trusted_submitters"));
    }
}
