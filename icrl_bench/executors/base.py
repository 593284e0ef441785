"""What an executor is, for the driver and for each kind of executor: the `Executor` protocol,
how a job ended (`Finished`), and where progress goes (`ProgressSink`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

ProgressSink = Callable[[int, int], None]
"""Called by an executor with (job key, units done since the last report)."""


@dataclass(frozen=True)
class Finished:
    """How one submitted job ended: a value, an exception it raised, or its worker's death."""

    key: int
    value: Any = None
    error: BaseException | None = None  # what the job raised (retried: a simulator's crash may not recur)
    lost: str | None = None  # the worker died under the job (killed, out of memory, node lost): not the job's fault


class Executor(Protocol):
    """What the driver needs of a place to run jobs."""

    name: str
    slots: int  # jobs that run at once
    in_flight: int  # jobs submitted at once (queued ones wait in the executor, their results in its store)

    def submit(self, key: int, fn: Callable[..., Any], args: tuple) -> None:
        """Start `fn(*args, progress=...)`; `key` names this attempt in `poll`'s answers."""
        ...

    def poll(self, timeout: float, progress: ProgressSink) -> list[Finished]:
        """Wait up to `timeout` s for jobs to end; forward the progress reported meanwhile."""
        ...

    def close(self, cancel: bool) -> None:
        """Release the workers; with `cancel`, stop the jobs still running (an interrupted driver)."""
        ...
