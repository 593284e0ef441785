"""The driver's loop, one for every executor: submit, collect, retry, count progress.

A job that fails runs again with the same arguments, so with the same seed: a job that
raised gets `RetryPolicy.errors` more tries (a simulator's numerical blow-up may not recur),
a job whose worker died gets `RetryPolicy.lost` more (a node lost, the OOM killer, a SIGKILL
are not the job's fault). A job that raises an `IcrlBenchError` (a user's mistake, the same
on every try) stops the run at once.

Progress is counted per attempt: an attempt that fails takes back what it reported, and a
finished job counts exactly its `units`, whatever its reports added up to (a Ray worker sends
its last reports late or not at all), so the bar never runs past 100%.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors.base import Executor

POLL_S = 0.25  # how often the driver looks at progress while jobs run


@dataclass(frozen=True)
class Job:
    """One job: its function's arguments, and how many progress units it reports in all."""

    args: tuple
    units: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """More tries a failed job gets, with the same arguments (and so the same seed)."""

    errors: int = 1  # after the job raised
    lost: int = 3  # after its worker died


@dataclass(frozen=True)
class Failure:
    """A job that failed on every try: its last error, and how many times it ran."""

    error: str
    tries: int


@dataclass
class JobsReport:
    """How a run of jobs went: the jobs that failed for good, and what was retried."""

    failures: dict[int, Failure] = field(default_factory=dict)  # job index -> its last failure
    retried: int = 0  # attempts run again, for any reason
    lost_workers: int = 0  # attempts whose worker died


def run_jobs(
    executor: Executor,
    fn: Callable[..., Any],
    jobs: Sequence[Job],
    on_result: Callable[[int, Any], None],
    on_progress: Callable[[int], None] | None = None,
    retry: RetryPolicy = RetryPolicy(),
    in_flight: int | None = None,
) -> JobsReport:
    """Run `fn(*job.args)` for every job on `executor`, calling `on_result(index, value)` as each ends.

    At most `in_flight` jobs (default: the executor's) are submitted at once, so a cluster's
    finished results wait in its object store in bounded number, not all at once.
    """
    report = JobsReport()
    todo = deque(range(len(jobs)))
    tries = {i: {"errors": 0, "lost": 0} for i in range(len(jobs))}
    attempts: dict[int, int] = {}  # attempt key -> job index, for attempts still running
    reported: dict[int, int] = {}  # attempt key -> progress units it reported so far
    next_key = 0
    limit = in_flight or executor.in_flight
    advance = on_progress or (lambda n: None)

    def count(key: int, n: int) -> None:
        if key in attempts:  # a late report of an ended attempt counts no more
            reported[key] += n
            advance(n)

    while todo or attempts:
        while todo and len(attempts) < limit:
            index = todo.popleft()
            attempts[next_key], reported[next_key] = index, 0
            executor.submit(next_key, fn, jobs[index].args)
            next_key += 1
        for outcome in executor.poll(POLL_S, count):
            index, done_units = attempts.pop(outcome.key), reported.pop(outcome.key)
            if outcome.error is None and outcome.lost is None:
                advance(jobs[index].units - done_units)
                report.failures.pop(index, None)
                on_result(index, outcome.value)
                continue
            advance(-done_units)
            if isinstance(outcome.error, IcrlBenchError):
                raise outcome.error
            kind = "lost" if outcome.lost is not None else "errors"
            report.lost_workers += kind == "lost"
            error = outcome.lost if outcome.lost is not None else describe(outcome.error)
            report.failures[index] = Failure(error, 1 + tries[index]["errors"] + tries[index]["lost"])
            if tries[index][kind] < getattr(retry, kind):
                tries[index][kind] += 1
                report.retried += 1
                todo.appendleft(index)  # first in line: its seed and arguments are unchanged
    return report


def describe(err: BaseException | None) -> str:
    """`Type: first line of the message`: how a failed job is named in one-line errors."""
    if err is None:
        return ""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
