"""The exceptions the shoal package raises. Every one is a ``ShoalError``."""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of every error raised by shoal."""


class JobBuildError(ShoalError, ValueError):
    """The job is not valid: an unreadable module file, an input naming no task, a cycle, ..."""


class JobFileError(ShoalError, ValueError):
    """A job file could not be read or is not valid (the message names the file and the line)."""


class SwarmError(ShoalError):
    """A swarm could not be started or joined, or a job could not be submitted."""


class JobFailed(ShoalError):
    """The job ended without its outputs."""


class TaskFailed(JobFailed):
    """A task failed for good: its own deterministic failure, or too many faults elsewhere.

    Attributes:
        task: the failed task's name.
        index: its index in the job.
        reason: what the executing peer reported (the task's exit, trap or limit, and the tail of
            its stderr).
    """

    def __init__(self, message: str, task: str, index: int, reason: str) -> None:
        super().__init__(message)
        self.task = task
        self.index = index
        self.reason = reason


class JobCancelled(JobFailed):
    """The job was cancelled (``Submission.cancel``)."""


class PeerStopped(JobFailed):
    """The peer owning the job stopped (the swarm was shut down) before the job finished."""
