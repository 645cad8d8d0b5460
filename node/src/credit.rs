//! The executor's credit: every verified receipt its owners sent, kept in `<data_dir>/credit.log`.
//!
//! The log is append-only: each record is a little-endian `u32` length and a receipt in rkyv
//! form. A record is appended (and handed to the OS) as soon as its receipt arrives; reading
//! validates every record and checks its signature again, so an edited log loses the edited
//! receipts, not the rest. A record cut short by a crash ends the readable log (it and anything
//! after it are ignored and counted).
//!
//! Invariant: a run counts once ([`Credit::total_fuel`] and [`Credit::runs`] go by
//! [`Receipt::keys`]), however many times its receipt was received or written.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use shoal_core::ids::{JobId, PeerId, TaskIndex};
use shoal_core::sched::{PaidRun, Receipt};

/// The log's file name in the data directory.
pub const CREDIT_LOG: &str = "credit.log";

/// Largest record read back (a receipt of a few thousand runs).
const RECORD_MAX: usize = 16 << 20;

type RunKey = (JobId, PeerId, TaskIndex, u32);

/// Credit earned: every paid run once.
#[derive(Debug, Default, Clone)]
pub struct Credit {
    seen: HashSet<RunKey>,
    /// The receipts that paid at least one new run, in arrival order.
    pub receipts: Vec<Receipt>,
    /// Fuel of every distinct paid run.
    pub total_fuel: u64,
    /// Records in the log that did not verify or were cut short.
    pub bad_records: u64,
}

impl Credit {
    /// Adds `r`'s runs not counted yet; whether any was new.
    fn count(&mut self, r: &Receipt) -> bool {
        let mut new = false;
        for (key, run) in r.keys() {
            if self.seen.insert(key) {
                self.total_fuel = self.total_fuel.saturating_add(run.fuel);
                new = true;
            }
        }
        new
    }

    /// Distinct runs paid.
    pub fn runs(&self) -> usize {
        self.seen.len()
    }

    /// Every distinct paid run with its receipt's job and owner.
    pub fn paid_runs(&self) -> impl Iterator<Item = (JobId, PeerId, &PaidRun)> {
        let mut shown = HashSet::new();
        self.receipts
            .iter()
            .flat_map(|r| r.keys().map(move |(k, run)| (k, r.job, r.owner, run)))
            .filter_map(move |(k, job, owner, run)| shown.insert(k).then_some((job, owner, run)))
    }

    /// Reads a credit log, checking every record; a missing file is no credit.
    pub fn read(path: &Path, me: Option<PeerId>) -> std::io::Result<Credit> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut credit = Credit::default();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let Some((len, body)) = rest.split_first_chunk::<4>() else {
                credit.bad_records += 1;
                break;
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > RECORD_MAX || body.len() < len {
                credit.bad_records += 1;
                break;
            }
            let (record, after) = body.split_at(len);
            rest = after;
            // rkyv reads from an aligned buffer; a record in the file is not.
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(record.len());
            aligned.extend_from_slice(record);
            match rkyv::from_bytes::<Receipt, rkyv::rancor::Error>(&aligned) {
                Ok(r) if r.verify() && me.is_none_or(|me| r.executor == me) => {
                    if credit.count(&r) {
                        credit.receipts.push(r);
                    }
                }
                _ => credit.bad_records += 1,
            }
        }
        Ok(credit)
    }
}

/// The open log of a running peer: the runs already paid (to count each once) and their total.
#[derive(Debug)]
pub(crate) struct CreditLog {
    path: PathBuf,
    credit: Credit,
}

impl CreditLog {
    /// Opens (reads) the log in `data_dir` for peer `me`.
    pub(crate) fn open(data_dir: &Path, me: PeerId) -> CreditLog {
        let path = data_dir.join(CREDIT_LOG);
        let credit = Credit::read(&path, Some(me)).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "cannot read the credit log: {e}; starting from zero");
            Credit::default()
        });
        if credit.bad_records > 0 {
            tracing::warn!(path = %path.display(), bad = credit.bad_records, "credit log records skipped");
        }
        // A running peer needs the runs seen and the total, not the receipts (`shoal credit`
        // reads them from the file): they are not kept in memory.
        let credit = Credit { receipts: Vec::new(), ..credit };
        CreditLog { path, credit }
    }

    /// Appends `r` (already verified by the scheduler) to the log if it pays a new run.
    pub(crate) fn add(&mut self, r: Receipt) {
        if !self.credit.count(&r) {
            return;
        }
        let bytes = match rkyv::to_bytes::<rkyv::rancor::Error>(&r) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot serialise a receipt: {e}");
                return;
            }
        };
        let written =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).and_then(|mut f| {
                let mut record = Vec::with_capacity(4 + bytes.len());
                record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                record.extend_from_slice(&bytes);
                f.write_all(&record)
            });
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), "cannot append to the credit log: {e}");
        }
    }

    /// Fuel of every distinct paid run so far.
    pub(crate) fn total_fuel(&self) -> u64 {
        self.credit.total_fuel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use shoal_core::ids::BlobHash;

    fn receipt(owner: &ed25519_dalek::SigningKey, executor: PeerId, tasks: &[u32]) -> Receipt {
        let runs = tasks
            .iter()
            .map(|&t| PaidRun { task: TaskIndex(t), attempt: 1, fuel: 100, output: BlobHash::of(&[t as u8]) })
            .collect();
        let mut r = Receipt {
            job: JobId(1),
            owner: PeerId(owner.verifying_key().to_bytes()),
            executor,
            runs,
            sig: vec![],
        };
        r.sig = owner.sign(&r.digest()).to_bytes().to_vec();
        r
    }

    #[test]
    fn the_log_counts_each_run_once_survives_a_restart_and_a_torn_tail_and_drops_forgeries() {
        let dir = tempfile::tempdir().unwrap();
        let me = PeerId([4; 32]);
        let owner = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut log = CreditLog::open(dir.path(), me);
        log.add(receipt(&owner, me, &[0, 1]));
        log.add(receipt(&owner, me, &[0, 1])); // replayed: nothing new
        log.add(receipt(&owner, me, &[1, 2])); // one new run
        assert_eq!(log.total_fuel(), 300);

        let path = dir.path().join(CREDIT_LOG);
        let again = CreditLog::open(dir.path(), me);
        assert_eq!(again.total_fuel(), 300, "the same after a restart");
        assert_eq!(Credit::read(&path, Some(me)).unwrap().runs(), 3);
        assert_eq!(Credit::read(&path, Some(me)).unwrap().paid_runs().count(), 3);

        // A forged record (fuel inflated after signing), then a torn one.
        let mut forged = receipt(&owner, me, &[7]);
        forged.runs[0].fuel = 1 << 40;
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&forged).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&(bytes.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&bytes).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let credit = Credit::read(&path, Some(me)).unwrap();
        assert_eq!((credit.total_fuel, credit.bad_records), (300, 2));
        // Another executor's log read as mine: none of it counts.
        assert_eq!(Credit::read(&path, Some(PeerId([5; 32]))).unwrap().total_fuel, 0);
        assert_eq!(Credit::read(&dir.path().join("none"), None).unwrap().total_fuel, 0);
    }
}
