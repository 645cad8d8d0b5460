//! `shoal credit`: the credit a worker earned, from the receipts in its data directory.
//!
//! Reads `<data_dir>/credit.log` directly (no running worker needed), checks every receipt's
//! owner signature again, counts each paid run once and prints the total fuel and the receipts
//! (`--json`: one object with `total_fuel`, `runs`, `bad_records` and `receipts`).

use shoal_node::credit::{CREDIT_LOG, Credit};

use crate::cmd_status::StatusArgs;

#[derive(Debug, serde::Serialize)]
struct ReceiptJson {
    job: String,
    owner: String,
    task: u32,
    attempt: u32,
    fuel: u64,
    output: String,
}

/// Runs the command; returns the process exit status.
pub(crate) fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let dir = crate::settings::load_data_dir(args.data_dir.as_deref(), args.config.as_deref())?;
    let path = dir.join(CREDIT_LOG);
    let credit = Credit::read(&path, None)
        .map_err(|e| anyhow::anyhow!("cannot read the credit log {}: {e}", path.display()))?;
    let receipts: Vec<ReceiptJson> = credit
        .paid_runs()
        .map(|(job, owner, run)| ReceiptJson {
            job: job.to_string(),
            owner: owner.to_string(),
            task: run.task.0,
            attempt: run.attempt,
            fuel: run.fuel,
            output: run.output.to_string(),
        })
        .collect();
    if args.json {
        let out = serde_json::json!({
            "total_fuel": credit.total_fuel,
            "runs": credit.runs(),
            "bad_records": credit.bad_records,
            "receipts": receipts,
        });
        println!("{out}");
        return Ok(0);
    }
    let owners: std::collections::BTreeSet<&str> = receipts.iter().map(|r| r.owner.as_str()).collect();
    let jobs: std::collections::BTreeSet<&str> = receipts.iter().map(|r| r.job.as_str()).collect();
    println!(
        "{} fuel earned: {} runs of {} jobs, paid by {} owners ({})",
        credit.total_fuel,
        credit.runs(),
        jobs.len(),
        owners.len(),
        path.display()
    );
    if credit.bad_records > 0 {
        println!("{} records skipped: unsigned, altered or cut short", credit.bad_records);
    }
    Ok(0)
}
