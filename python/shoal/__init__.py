"""Shoal: run DAGs of sandboxed WebAssembly tasks on a peer-to-peer swarm.

Describe a job with :class:`Job` (or load a TOML job file with :func:`load_job_file`), start or
join a swarm with :class:`Swarm`, submit, follow the progress and get the outputs as ``bytes``::

    import shoal

    job = shoal.Job()
    primes = job.module_file("jobs/wasm/primes.wasm")
    add = job.module_file("jobs/wasm/sum.wasm")
    low = job.task("low", primes, args=["0", "500000"])
    high = job.task("high", primes, args=["500000", "1000000"])
    job.task("total", add, inputs=[low, high])

    with shoal.Swarm.local(4) as swarm:
        outputs = swarm.submit(job).outputs()
    assert outputs["total"] == b"78498\\n"

This package wraps the Rust SDK (``shoal-sdk``); every wait releases the GIL and answers Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import AsyncIterator, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from . import _shoal
from ._shoal import Progress
from .errors import (
    JobBuildError,
    JobCancelled,
    JobFailed,
    JobFileError,
    PeerStopped,
    ShoalError,
    SwarmError,
    TaskFailed,
)

__version__: str = _shoal.__version__

__all__ = [
    "Job",
    "JobBuildError",
    "JobCancelled",
    "JobFailed",
    "JobFile",
    "JobFileError",
    "Module",
    "PeerStopped",
    "Progress",
    "ShoalError",
    "Submission",
    "Swarm",
    "SwarmError",
    "Task",
    "TaskFailed",
    "load_job_file",
]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Module:
    """A WebAssembly module added to a :class:`Job` (by :meth:`Job.module_file` or :meth:`Job.module`)."""

    number: int
    source: str


@dataclass(frozen=True)
class Task:
    """A task added to a :class:`Job`; pass it in another task's ``inputs`` to consume its output."""

    name: str
    index: int


Input = Union[Task, str, bytes, bytearray, memoryview]


class Job:
    """A job being described: modules, then tasks that use them.

    Tasks are numbered in the order they are added. A task's inputs are other tasks' outputs (a
    :class:`Task` or a task's name) or literal bytes; they reach the task concatenated on its stdin
    in the order given (see ``docs/task-abi.md``). Unless :meth:`output` marks some, the outputs
    fetched are those of the sinks (tasks no other task consumes).
    """

    def __init__(self) -> None:
        self._builder = _shoal.JobBuilder()
        self._tasks: List[Task] = []

    def module_file(self, path: PathLike) -> Module:
        """Adds the module in a ``.wasm`` (or ``.wat``) file."""
        return Module(self._builder.module_file(os.fspath(path)), os.fspath(path))

    def module(self, wasm: bytes) -> Module:
        """Adds a module from its bytes."""
        return Module(self._builder.module_bytes(bytes(wasm)), "<bytes>")

    def task(
        self,
        name: str,
        module: Module,
        args: Sequence[str] = (),
        inputs: Iterable[Input] = (),
        *,
        fuel: Optional[int] = None,
        memory: Optional[int] = None,
        output_limit: Optional[int] = None,
        timeout: Optional[float] = None,
        cost: Optional[int] = None,
    ) -> Task:
        """Adds a task running ``module`` with ``args``, reading ``inputs`` on stdin.

        Limits (``None``: the executing peer's defaults, lowered to its volunteer's caps):
        ``fuel`` (instructions), ``memory`` and ``output_limit`` (bytes), ``timeout`` (seconds of
        wall clock). ``cost`` is a fuel estimate that helps the scheduler place the task.
        """
        if not isinstance(module, Module):
            raise JobBuildError(f"task {name!r}: module must be a Module from module_file() or module()")
        wire: List[Union[str, bytes]] = []
        for i in inputs:
            if isinstance(i, Task):
                wire.append(i.name)
            elif isinstance(i, str):
                wire.append(i)
            elif isinstance(i, (bytes, bytearray, memoryview)):
                wire.append(bytes(i))
            else:
                raise JobBuildError(f"task {name!r}: an input must be a Task, a task name or bytes, not {type(i).__name__}")
        index = self._builder.task(
            name,
            module.number,
            [str(a) for a in args],
            wire,
            fuel=fuel,
            memory=memory,
            output_limit=output_limit,
            timeout=timeout,
            cost=cost,
        )
        task = Task(name, index)
        self._tasks.append(task)
        return task

    def output(self, task: Union[Task, str]) -> "Job":
        """Marks a task whose output the submitter wants (by default: the sinks)."""
        self._builder.output(task.name if isinstance(task, Task) else task)
        return self

    @property
    def tasks(self) -> List[Task]:
        """The tasks added so far, in index order."""
        return list(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def _compile(self) -> "_shoal.CompiledJob":
        return self._builder.compile()


class JobFile:
    """A job loaded from a TOML job file (see :func:`load_job_file`), ready to submit once."""

    def __init__(self, compiled: "_shoal.CompiledJob", path: str) -> None:
        self._compiled = compiled
        self.path = path
        #: The tasks' names, in index order.
        self.task_names: List[str] = compiled.task_names()
        #: The tasks whose outputs will be fetched.
        self.output_names: List[str] = compiled.output_names()

    def __len__(self) -> int:
        return len(self.task_names)

    def _compile(self) -> "_shoal.CompiledJob":
        return self._compiled


def load_job_file(path: PathLike) -> JobFile:
    """Loads and validates a TOML job file (format: ``docs/job-files.md``).

    Raises :class:`JobFileError` naming the file and what is wrong with it.
    """
    return JobFile(_shoal.load_job_file(os.fspath(path)), os.fspath(path))


class Submission:
    """A submitted job: follow its progress, cancel it, or wait for its outputs.

    Iterating over it (``for p in submission`` or ``async for p in submission``) yields a
    :class:`Progress` at each change until the job is over; a slow reader sees the latest counts.
    """

    def __init__(self, native: "_shoal.Submission") -> None:
        self._native = native
        self._final: Optional[Progress] = None

    @property
    def id(self) -> str:
        """The job's id."""
        return self._native.id

    @property
    def output_names(self) -> List[str]:
        """The names of the tasks whose outputs :meth:`outputs` returns."""
        return self._native.output_names

    def progress(self) -> Progress:
        """The progress as last reported (the final one once :meth:`outputs` returned)."""
        if self._final is not None:
            return self._final
        return self._native.progress()

    def __iter__(self) -> Iterator[Progress]:
        while True:
            p = self._native.next_progress()
            if p is None:
                return
            yield p

    async def _aiter(self) -> AsyncIterator[Progress]:
        loop = asyncio.get_running_loop()
        while True:
            p = await loop.run_in_executor(None, self._native.next_progress)
            if p is None:
                return
            yield p

    def __aiter__(self) -> AsyncIterator[Progress]:
        return self._aiter()

    def cancel(self) -> None:
        """Cancels the job; :meth:`outputs` then raises :class:`JobCancelled`."""
        self._native.cancel()

    def outputs(self, progress: bool = False) -> Dict[str, bytes]:
        """Waits for the end of the job and returns the wanted outputs by task name.

        With ``progress=True`` draws a progress bar on stderr (``tqdm`` if installed, else a
        plain line). Raises :class:`TaskFailed` (naming the task), :class:`JobCancelled` or
        :class:`PeerStopped` when the job ends without its outputs.
        """
        if progress:
            _draw_progress(self)
        outputs, final = self._native.outputs()
        self._final = final
        return outputs

    async def outputs_async(self) -> Dict[str, bytes]:
        """:meth:`outputs` for ``asyncio``: awaits the end of the job without blocking the loop."""
        loop = asyncio.get_running_loop()
        outputs, final = await loop.run_in_executor(None, self._native.outputs)
        self._final = final
        return outputs

    def __repr__(self) -> str:
        return f"<shoal.Submission {self.id}>"


def _draw_progress(submission: Submission) -> None:
    import sys

    try:
        from tqdm import tqdm  # type: ignore[import-not-found]
    except ImportError:
        tqdm = None
    first = submission.progress()
    if tqdm is not None:
        with tqdm(total=first.total, unit="task", desc=f"job {submission.id[:8]}") as bar:
            for p in submission:
                bar.n = p.done
                bar.set_postfix(running=p.running, peers=p.peers_used)
                bar.refresh()
        return
    for p in submission:
        sys.stderr.write(f"\r{p.done}/{p.total} tasks done, {p.running} running, {p.peers_used} peers")
        sys.stderr.flush()
    sys.stderr.write("\n")


class Swarm:
    """Peers started by this process; the first owns the jobs submitted through it.

    Use it as a context manager (``with Swarm.local(4) as swarm:``) or call :meth:`shutdown`.
    """

    def __init__(self, native: "_shoal.Swarm") -> None:
        self._native = native

    @classmethod
    def local(cls, n: int = 4) -> "Swarm":
        """Starts ``n`` peers in this process, each donating one core, and waits until they see
        each other."""
        return cls(_shoal.Swarm.local(n))

    @classmethod
    def join(
        cls,
        bootstrap: Union[str, Sequence[str]],
        *,
        swarm_secret: Union[bytes, PathLike, None] = None,
        cores: int = 0,
        listen: Optional[str] = None,
        join_timeout: float = 10.0,
        data_dir: Optional[PathLike] = None,
    ) -> "Swarm":
        """Starts an embedded peer that joins a swarm through ``bootstrap`` (``"HOST:PORT"``, or
        several) and owns the jobs you submit; it donates ``cores`` (default none).

        ``swarm_secret`` is a private swarm's secret: its bytes, or the path of the file holding
        it (as ``shoal worker --swarm-secret FILE`` takes it). Raises :class:`SwarmError` if no
        bootstrap peer answers within ``join_timeout`` seconds.
        """
        addrs = [bootstrap] if isinstance(bootstrap, str) else list(bootstrap)
        secret: Optional[bytes]
        if swarm_secret is None or isinstance(swarm_secret, bytes):
            secret = swarm_secret
        else:
            with open(swarm_secret, "rb") as f:
                secret = f.read()
            if not secret:
                raise SwarmError(f"the swarm secret file {os.fspath(swarm_secret)} is empty")
        native = _shoal.Swarm.join(
            addrs,
            swarm_secret=secret,
            cores=cores,
            listen=listen,
            join_timeout=join_timeout,
            data_dir=os.fspath(data_dir) if data_dir is not None else None,
        )
        return cls(native)

    def submit(self, job: Union[Job, JobFile]) -> Submission:
        """Submits a job (a :class:`Job` or a :class:`JobFile`); each can be submitted once."""
        if not isinstance(job, (Job, JobFile)):
            raise TypeError(f"submit() takes a shoal.Job or a shoal.JobFile, not {type(job).__name__}")
        return Submission(self._native.submit(job._compile()))

    def run(self, job: Union[Job, JobFile], progress: bool = False) -> Dict[str, bytes]:
        """Submits ``job`` and returns its outputs (see :meth:`Submission.outputs`)."""
        return self.submit(job).outputs(progress=progress)

    @property
    def local_addr(self) -> Optional[str]:
        """The address other peers reach the first peer at."""
        return self._native.local_addr()

    def __len__(self) -> int:
        return len(self._native)

    def shutdown(self) -> None:
        """Leaves the swarm gracefully; jobs still running raise :class:`PeerStopped`."""
        self._native.shutdown()

    def __enter__(self) -> "Swarm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
