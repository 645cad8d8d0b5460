"""The Python SDK against real swarms: in-process peers (Swarm.local), `shoal worker` processes
(Swarm.join), job files, errors, cancel, progress (blocking and async).

Run from the repository root after `maturin develop` (see .ci/run):
    pytest python/tests
The worker tests need the `shoal` binary (`cargo build -p shoal-worker --bin shoal`, or
SHOAL_BIN=PATH); without it they are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List

import pytest

import shoal

ROOT = Path(__file__).resolve().parents[2]
WASM = ROOT / "jobs" / "wasm"


def primes_job(hi: int = 1_000_000, parts: int = 2) -> shoal.Job:
    job = shoal.Job()
    primes = job.module_file(WASM / "primes.wasm")
    add = job.module_file(WASM / "sum.wasm")
    step = hi // parts
    ranges = [
        job.task(f"primes{k}", primes, args=[str(k * step), str(hi if k + 1 == parts else (k + 1) * step)])
        for k in range(parts)
    ]
    job.task("total", add, inputs=ranges)
    return job


@pytest.fixture(scope="module")
def local() -> Iterator[shoal.Swarm]:
    with shoal.Swarm.local(3) as swarm:
        yield swarm


def test_a_job_on_a_local_swarm_gives_the_right_output_and_progress(local: shoal.Swarm) -> None:
    sub = local.submit(primes_job())
    seen = list(sub)
    outputs = sub.outputs()
    assert outputs == {"total": b"78498\n"}  # pi(10^6)
    final = sub.progress()
    assert (final.done, final.total, final.failed) == (3, 3, 0)
    assert final.fuel_used > 0 and final.peers_used >= 1
    assert all(p.total == 3 for p in seen)
    assert [p.done for p in seen] == sorted(p.done for p in seen), "progress never goes back"


def test_literal_inputs_named_inputs_and_marked_outputs(local: shoal.Swarm) -> None:
    job = shoal.Job()
    wc = job.module_file(WASM / "wordcount.wasm")
    mapped = job.task("map", wc, args=["map"], inputs=[b"to be or ", bytearray(b"not to be")])
    job.task("again", wc, args=["map"], inputs=["map"])
    job.output(mapped)
    assert [t.name for t in job.tasks] == ["map", "again"] and len(job) == 2
    outputs = local.run(job)
    assert list(outputs) == ["map"]
    assert outputs["map"] == b"be\t2\nnot\t1\nor\t1\nto\t2\n"


def test_a_job_file_runs_as_the_cli_runs_it(local: shoal.Swarm) -> None:
    job = shoal.load_job_file(ROOT / "examples" / "jobs" / "primes.toml")
    assert len(job) > 1 and job.output_names
    outputs = local.submit(job).outputs()
    assert outputs[job.output_names[0]] == b"78498\n"


def test_async_progress_and_outputs(local: shoal.Swarm) -> None:
    async def main() -> bytes:
        sub = local.submit(primes_job(parts=4))
        seen: List[shoal.Progress] = [p async for p in sub]
        outputs = await sub.outputs_async()
        assert seen, "at least one progress report"
        return outputs["total"]

    assert asyncio.run(main()) == b"78498\n"


def test_a_failing_task_raises_task_failed_naming_it(local: shoal.Swarm) -> None:
    job = shoal.Job()
    spin = job.module_file(WASM / "spin.wasm")
    job.task("too-long", spin, args=["100000000"], fuel=1000)
    with pytest.raises(shoal.TaskFailed) as failed:
        local.submit(job).outputs()
    assert failed.value.task == "too-long" and failed.value.index == 0
    assert "fuel" in failed.value.reason
    assert isinstance(failed.value, shoal.ShoalError)


def test_bad_jobs_raise_clear_errors(tmp_path: Path) -> None:
    job = shoal.Job()
    with pytest.raises(shoal.JobBuildError, match="no-such.wasm"):
        job.module_file(tmp_path / "no-such.wasm")
    m = job.module(b"\0asm\1\0\0\0")
    job.task("a", m, inputs=["nobody"])
    with pytest.raises(shoal.JobBuildError, match="nobody"):
        job._compile()
    with pytest.raises(shoal.JobBuildError):
        shoal.Job().task("x", "not a module")  # type: ignore[arg-type]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[task]]\nname = 1\n")
    with pytest.raises(shoal.JobFileError, match="bad.toml"):
        shoal.load_job_file(bad)


def test_a_job_is_submitted_once(local: shoal.Swarm) -> None:
    job = primes_job()
    local.submit(job).outputs()
    with pytest.raises(shoal.JobBuildError, match="already"):
        local.submit(job)


def test_cancel_while_another_thread_waits_for_the_outputs(local: shoal.Swarm) -> None:
    job = shoal.Job()
    spin = job.module_file(WASM / "spin.wasm")
    for k in range(6):
        job.task(f"spin{k}", spin, args=["3000000000"])
    sub = local.submit(job)
    caught: List[BaseException] = []

    def wait() -> None:
        try:
            sub.outputs()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            caught.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    sub.cancel()
    waiter.join(timeout=60)
    assert not waiter.is_alive(), "outputs() returned after cancel"
    assert len(caught) == 1 and isinstance(caught[0], shoal.JobCancelled)


def test_joining_nobody_is_a_swarm_error_naming_the_address() -> None:
    with pytest.raises(shoal.SwarmError, match="127.0.0.1:9"):
        shoal.Swarm.join("127.0.0.1:9", join_timeout=1.0)
    with pytest.raises(shoal.SwarmError, match="HOST:PORT"):
        shoal.Swarm.join("no port here")


def shoal_binary() -> Path:
    given = os.environ.get("SHOAL_BIN")
    candidates = [Path(given)] if given else [ROOT / "target" / "debug" / "shoal", ROOT / "target" / "release" / "shoal"]
    for c in candidates:
        if c.is_file():
            return c
    pytest.skip(
        "SKIPPED: no `shoal` binary (looked at "
        + ", ".join(str(c) for c in candidates)
        + "): run `cargo build -p shoal-worker --bin shoal` or set SHOAL_BIN"
    )


class Worker:
    """A `shoal worker` process on loopback."""

    def __init__(self, binary: Path, data: Path, bootstrap: "str | None" = None, secret: "Path | None" = None) -> None:
        cmd = [str(binary), "worker", "--listen", "127.0.0.1:0", "--cores", "1", "--memory", "256MiB", "--data-dir", str(data)]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        if secret:
            cmd += ["--swarm-secret", str(secret)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.id = self.proc.stdout.readline().strip().removeprefix("peer ")
        self.addr = self.proc.stdout.readline().strip().removeprefix("listening ")
        assert self.addr.startswith("127.0.0.1:"), self.addr

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_a_job_on_shoal_worker_processes_with_a_swarm_secret(tmp_path: Path) -> None:
    binary = shoal_binary()
    secret = tmp_path / "secret"
    secret.write_bytes(b"our private swarm")
    first = Worker(binary, tmp_path / "w0", secret=secret)
    second = Worker(binary, tmp_path / "w1", bootstrap=first.addr, secret=secret)
    try:
        with pytest.raises(shoal.SwarmError):
            shoal.Swarm.join(first.addr, join_timeout=2.0)  # without the secret: refused
        with shoal.Swarm.join(first.addr, swarm_secret=secret) as swarm:
            sub = swarm.submit(primes_job(parts=4))
            outputs = sub.outputs()
            assert outputs == {"total": b"78498\n"}
            assert sub.progress().peers_used >= 1
    finally:
        second.stop()
        first.stop()
