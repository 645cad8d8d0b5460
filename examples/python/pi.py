"""Monte Carlo pi on a local swarm, from Python: 8 sampling tasks and a reduce.

    pip install ./python            # once, in a virtual environment
    python examples/python/pi.py

prints (the tasks are deterministic, so the estimate is exact):

    9 tasks on a swarm of 4 peers
    pi ~= 3.141252000 (6282504/8000000)

with a progress bar on stderr (tqdm's if installed: pip install tqdm).
"""

from pathlib import Path

import shoal

WASM = Path(__file__).resolve().parents[2] / "jobs" / "wasm"
MAPS = 8
SAMPLES_PER_MAP = 1_000_000


def main() -> None:
    job = shoal.Job()
    pi = job.module_file(WASM / "pi.wasm")
    reduce = job.module_file(WASM / "pi_reduce.wasm")
    # Each map throws SAMPLES_PER_MAP darts from its own seed and prints "hits samples".
    maps = [job.task(f"sample-{seed}", pi, args=[str(seed), str(SAMPLES_PER_MAP)]) for seed in range(MAPS)]
    # The reduce reads every map's line on stdin and prints the estimate.
    job.task("reduce", reduce, inputs=maps)

    with shoal.Swarm.local(4) as swarm:
        submission = swarm.submit(job)
        print(f"{len(job)} tasks on a swarm of {len(swarm)} peers", flush=True)
        outputs = submission.outputs(progress=True)
    print(outputs["reduce"].decode(), end="")


if __name__ == "__main__":
    main()
