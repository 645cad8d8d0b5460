//! A Mandelbrot PNG rendered by a swarm, with the `Job` builder of `shoal-sdk`.
//!
//! The 256×256 image is cut into 16 tiles of 64×64 pixels; each tile is one task
//! (`jobs/wasm/mandelbrot.wasm`, from `jobs/src/mandelbrot.c`) printing raw RGB pixels, and one
//! *stitch* task (`stitch.wasm`) takes the 16 tiles, row by row, and prints the PNG file. The
//! tiles run in parallel on a swarm of four peers started in this process, while this program
//! draws the job's progress on stderr.
//!
//! ```sh
//! cargo run -p shoal-examples --example mandelbrot -- out/mandelbrot.png
//! ```
//!
//! prints `wrote out/mandelbrot.png (196947 bytes, 17 tasks on 4 peers)` (the path defaults to
//! `out/mandelbrot.png`). Every task is deterministic, so the file is the same byte for byte on any
//! swarm, and the same as `shoal demo --job examples/jobs/mandelbrot.toml` writes.

use std::path::PathBuf;
use std::time::Duration;

use shoal_sdk::{Job, Swarm};

/// Where the task programs are: `jobs/wasm` in this repository (a copy of this example would
/// name its own `.wasm` files).
const WASM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");

const SIZE: u32 = 256;
const TILE: u32 = 64;
const MAX_ITERATIONS: u32 = 256;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out/mandelbrot.png".into()));

    let mut job = Job::new();
    let mandelbrot = job.module_file(format!("{WASM}/mandelbrot.wasm"))?;
    let stitch = job.module_file(format!("{WASM}/stitch.wasm"))?;

    // One task per tile: `mandelbrot WIDTH HEIGHT TILE_SIZE TILE_X TILE_Y MAX_ITER`. Limits are
    // per task; a tile needs more than the default memory, and a stuck one is stopped after 30 s.
    let size = SIZE.to_string();
    let tile = TILE.to_string();
    let mut tiles = Vec::new();
    for y in 0..SIZE / TILE {
        for x in 0..SIZE / TILE {
            let args = [&size, &size, &tile, &x.to_string(), &y.to_string(), &MAX_ITERATIONS.to_string()];
            let task = job.task(format!("tile-{y}-{x}"), &mandelbrot).args(args);
            tiles.push(task.memory(64 << 20).timeout(Duration::from_secs(30)).build()?);
        }
    }

    // The stitcher reads the tiles in the order given here: row by row.
    let png =
        job.task("stitch", &stitch).args([&size, &size, &tile]).inputs(&tiles).memory(64 << 20).build()?;
    // Only the PNG is wanted back (by default every sink's output is; here that is the same).
    job.output(&png);

    let swarm = Swarm::local(4).await?;
    let submission = swarm.submit(job.compile()?).await?;

    // Progress arrives as a stream of counts; a slow reader only ever sees the latest.
    let mut progress = submission.progress_stream();
    let bar = tokio::spawn(async move {
        while let Some(p) = progress.next().await {
            eprint!("\r{}/{} tasks done, {} running", p.done, p.total, p.running);
        }
        eprintln!();
    });

    let outputs = submission.outputs().await?;
    bar.await?;
    let bytes = outputs.get(png.name()).ok_or("the stitch has no output")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, bytes)?;
    println!(
        "wrote {} ({} bytes, {} tasks on {} peers)",
        path.display(),
        bytes.len(),
        outputs.progress.total,
        swarm.peers().len()
    );

    swarm.shutdown().await;
    Ok(())
}
