//! Jobs on disk: one append-only journal file per job this peer owns or deputizes for, in
//! `<data_dir>/jobs/<job id>.journal`, so a restarted peer resumes them.
//!
//! A file is a sequence of records, each a little-endian `u32` length, the first 8 bytes of
//! the blake3 hash of the body, and the body: an [`Entry`] in rkyv form. The first record is
//! the job ([`Entry::Job`]); then [`Entry::Term`] whenever the owner followed changes, and
//! [`Entry::Changes`] as the owner's journal grows. Reading stops at the first record that is
//! cut short or does not hash right (a crash mid-write), keeping everything before it: a change
//! is on disk as soon as its `write` returns, so killing the process at any instant loses no
//! change already written. `fsync` is called only when the job's owner changes (a takeover, a
//! step-down): surviving a power cut is the deputies' job, on other machines (`docs/owners.md`).
//!
//! Invariants: a file is written by one peer at a time (the data directory is locked); a file
//! rewritten whole (a deputy resynced by its owner) is written to a temporary name and renamed
//! over the old one, so a reader sees the old file or the new, never a mix; a new file is
//! written in place (a crash mid-write leaves a torn first record: no job, which a restart skips
//! with a warning, as nothing of it was sent anywhere yet).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use shoal_core::ids::{JobId, PeerId};
use shoal_core::sched::deputy::{Change, JobRecord};

/// The directory of journals under the data directory.
pub const JOBS_DIR: &str = "jobs";

/// Largest record read back.
const RECORD_MAX: usize = 256 << 20;

/// One record of a journal file.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum Entry {
    /// The job (always first).
    Job(JobRecord),
    /// From here on, `owner` owns the job in `term`, with these deputies.
    Term {
        /// The term.
        term: u32,
        /// Its owner.
        owner: PeerId,
        /// The deputies, in takeover order.
        deputies: Vec<PeerId>,
    },
    /// More changes of the owner's journal.
    Changes(Vec<Change>),
    /// The job ended here (done, failed or cancelled), at this Unix time in milliseconds.
    Ended {
        /// When.
        at_unix_ms: u64,
    },
}

/// A journal file read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The job.
    pub record: JobRecord,
    /// The last term written.
    pub term: u32,
    /// Its owner.
    pub owner: PeerId,
    /// Its deputies.
    pub deputies: Vec<PeerId>,
    /// Every change, in order.
    pub changes: Vec<Change>,
    /// When it ended, if it did.
    pub ended_unix_ms: Option<u64>,
    /// Records after the last good one that were cut short or corrupt (ignored).
    pub bad_tail: bool,
}

/// Why a journal could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file system refused.
    #[error("job journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no job record.
    #[error("job journal {0}: no job record at its start")]
    NoJob(PathBuf),
}

/// An open journal, appended to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

fn frame(entry: &Entry) -> Vec<u8> {
    let body = match rkyv::to_bytes::<rkyv::rancor::Error>(entry) {
        Ok(b) => b.into_vec(),
        // Serialising owned values into a growable buffer cannot fail.
        Err(e) => unreachable!("serialising a journal entry failed: {e}"),
    };
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&blake3::hash(&body).as_bytes()[..8]);
    out.extend_from_slice(&body);
    out
}

/// Reads an rkyv value from untrusted bytes (validated, from aligned memory: rkyv reads
/// archives only there).
pub(crate) fn decode<T>(bytes: &[u8]) -> Result<T, String>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
}

/// The journal file of `job` under `data_dir`.
pub fn path_of(data_dir: &Path, job: JobId) -> PathBuf {
    data_dir.join(JOBS_DIR).join(format!("{job}.journal"))
}

impl Journal {
    /// Writes a new journal for `record` owned by `owner` in `term`, with the changes so far,
    /// replacing any file of the same job (atomically).
    pub fn create(
        data_dir: &Path,
        record: &JobRecord,
        term: u32,
        owner: PeerId,
        deputies: &[PeerId],
        changes: &[Change],
    ) -> Result<Journal, JournalError> {
        let path = path_of(data_dir, record.id);
        let io = |source| JournalError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = frame(&Entry::Job(record.clone()));
        bytes.extend(frame(&Entry::Term { term, owner, deputies: deputies.to_vec() }));
        if !changes.is_empty() {
            bytes.extend(frame(&Entry::Changes(changes.to_vec())));
        }
        if path.exists() {
            // Replaced whole: a reader (a restart) sees the old file or the new one.
            let tmp = path.with_extension("journal.tmp");
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
        } else {
            let mut file = OpenOptions::new().append(true).create_new(true).open(&path).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            return Ok(Journal { path, file });
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        Ok(Journal { path, file })
    }

    /// Opens an existing journal to append to it.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| JournalError::Io { path: path.to_path_buf(), source })?;
        Ok(Journal { path: path.to_path_buf(), file })
    }

    /// Appends one entry; `sync`: and flushes it to the disk.
    pub fn append(&mut self, entry: &Entry, sync: bool) -> Result<(), JournalError> {
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        self.file.write_all(&frame(entry)).map_err(io)?;
        if sync {
            self.file.sync_data().map_err(io)?;
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a journal file, keeping every record up to the first bad one.
pub fn read(path: &Path) -> Result<Stored, JournalError> {
    let bytes =
        std::fs::read(path).map_err(|source| JournalError::Io { path: path.to_path_buf(), source })?;
    let mut at = 0usize;
    let mut stored: Option<Stored> = None;
    let mut bad_tail = false;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 12) else {
            bad_tail = true;
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(body) = bytes.get(at + 12..at + 12 + len).filter(|_| len <= RECORD_MAX) else {
            bad_tail = true;
            break;
        };
        if blake3::hash(body).as_bytes()[..8] != head[4..12] {
            bad_tail = true;
            break;
        }
        let Ok(entry) = decode::<Entry>(body) else {
            bad_tail = true;
            break;
        };
        at += 12 + len;
        match (entry, &mut stored) {
            (Entry::Job(record), None) => {
                stored = Some(Stored {
                    owner: record.submitter,
                    record,
                    term: 0,
                    deputies: Vec::new(),
                    changes: Vec::new(),
                    ended_unix_ms: None,
                    bad_tail: false,
                });
            }
            (_, None) | (Entry::Job(_), Some(_)) => {
                bad_tail = true;
                break;
            }
            (Entry::Term { term, owner, deputies }, Some(s)) => {
                s.term = term;
                s.owner = owner;
                s.deputies = deputies;
            }
            (Entry::Changes(c), Some(s)) => s.changes.extend(c),
            (Entry::Ended { at_unix_ms }, Some(s)) => s.ended_unix_ms = Some(at_unix_ms),
        }
    }
    let mut stored = stored.ok_or_else(|| JournalError::NoJob(path.to_path_buf()))?;
    stored.bad_tail = bad_tail;
    Ok(stored)
}

/// Every journal under `data_dir` (unreadable ones are skipped, with a reason each).
pub fn read_all(data_dir: &Path) -> (Vec<(PathBuf, Stored)>, Vec<JournalError>) {
    let dir = data_dir.join(JOBS_DIR);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else { return (good, bad) };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    paths.sort();
    for p in paths {
        match read(&p) {
            Ok(s) => good.push((p, s)),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::ids::{BlobHash, TaskIndex};
    use shoal_core::job::{Job, TaskSpec};
    use shoal_core::sched::OutputRef;

    fn record() -> JobRecord {
        let job = Job::new(vec![TaskSpec::new("a", BlobHash::of(b"m"))]).unwrap();
        JobRecord::of(JobId(9), &job, vec![TaskIndex(0)], PeerId([1; 32]), 1000)
    }

    fn done(i: u32) -> Change {
        Change::Done {
            task: TaskIndex(i),
            output: OutputRef { hash: BlobHash::of(b"x"), size: 1, inline: Some(b"x".to_vec()) },
            holders: vec![PeerId([2; 32])],
            fuel: 5,
            executor: PeerId([2; 32]),
        }
    }

    #[test]
    fn a_journal_reads_back_and_a_torn_or_corrupt_tail_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let r = record();
        let mut j = Journal::create(dir.path(), &r, 0, PeerId([1; 32]), &[PeerId([3; 32])], &[]).unwrap();
        j.append(&Entry::Changes(vec![done(0)]), false).unwrap();
        j.append(&Entry::Term { term: 1, owner: PeerId([3; 32]), deputies: vec![] }, true).unwrap();
        let s = read(j.path()).unwrap();
        assert_eq!((s.term, s.owner, s.changes.len(), s.bad_tail), (1, PeerId([3; 32]), 1, false));
        assert_eq!(s.record, r);
        // A record cut short by a crash: everything before it stays.
        j.append(&Entry::Changes(vec![done(0), done(0)]), false).unwrap();
        let len = std::fs::metadata(j.path()).unwrap().len();
        let f = OpenOptions::new().write(true).open(j.path()).unwrap();
        f.set_len(len - 3).unwrap();
        let s = read(j.path()).unwrap();
        assert_eq!((s.changes.len(), s.bad_tail), (1, true));
        // A flipped byte in a record's body: the same.
        let mut bytes = std::fs::read(j.path()).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0xff;
        std::fs::write(j.path(), &bytes).unwrap();
        assert!(read(j.path()).unwrap().bad_tail);
        // Garbage is not a journal.
        std::fs::write(dir.path().join(JOBS_DIR).join("x.journal"), b"nonsense").unwrap();
        let (good, bad) = read_all(dir.path());
        assert_eq!((good.len(), bad.len()), (1, 1));
    }
}
