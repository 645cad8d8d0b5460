//! Monte Carlo π on a swarm, with the `Job` builder of `shoal-sdk`.
//!
//! Eight *map* tasks each throw a million darts at the unit square (`jobs/wasm/pi.wasm`, from
//! `jobs/src/pi.c`: a seeded SplitMix64, so each task's count is the same on every peer) and print
//! `HITS SAMPLES`; one *reduce* task (`pi_reduce.wasm`) adds them up and prints the estimate
//! 4 · hits / samples. The job runs on a swarm of four peers started in this process.
//!
//! ```sh
//! cargo run -p shoal-examples --example pi
//! ```
//!
//! prints `9 tasks on a swarm of 4 peers` and then `pi ~= 3.141252000 (6282504/8000000)`, the same
//! as `shoal demo --job examples/jobs/pi.toml`, which describes this job as a TOML file.

use shoal_sdk::{Job, Swarm};

/// Where the task programs are: `jobs/wasm` in this repository (a copy of this example would
/// name its own `.wasm` files).
const WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");

const MAPS: u64 = 8;
const SAMPLES_PER_MAP: u64 = 1_000_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Describe the job: register each module once, then add tasks that run it.
    let mut job = Job::new();
    let pi = job.module_file(format!("{WASM}/pi.wasm"))?;
    let reduce = job.module_file(format!("{WASM}/pi_reduce.wasm"))?;

    // The maps: a task's arguments are its command line (here the seed and the sample count).
    // Tasks without inputs from other tasks are ready at once and spread over the peers.
    let mut maps = Vec::new();
    for seed in 0..MAPS {
        let map =
            job.task(format!("sample-{seed}"), &pi).args([seed.to_string(), SAMPLES_PER_MAP.to_string()]);
        maps.push(map.build()?);
    }

    // The reduce reads every map's output, in this order, as its inputs: this is the DAG's edges.
    job.task("reduce", &reduce).inputs(&maps).build()?;

    // Compiling checks the DAG (names, cycles, limits) and hashes the modules.
    let job = job.compile()?;

    // A swarm of four peers in this process; `Swarm::join(SwarmConfig::default().bootstrap(addr))`
    // would join a swarm of `shoal worker`s instead, with the rest of this program unchanged.
    let swarm = Swarm::local(4).await?;
    let submission = swarm.submit(job).await?;
    println!("{} tasks on a swarm of {} peers", submission.tasks(), swarm.peers().len());

    // The outputs of the job's sinks (here, the reduce), by task name.
    let outputs = submission.outputs().await?;
    let estimate = outputs.get("reduce").ok_or("the reduce has no output")?;
    print!("{}", String::from_utf8_lossy(estimate));

    swarm.shutdown().await;
    Ok(())
}
