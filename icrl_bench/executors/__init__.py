"""Where a long computation's jobs run: processes on this machine (default) or a Ray cluster.

A job is a module-level function and its plain-data arguments, called in a worker as
`fn(*args, progress=report)`, where `report(n)` counts units of work done (env steps, episodes).
The same function runs whatever the executor, so a job's result never depends on where it ran;
that is what lets a dataset built on Ray carry the content hash of a local build.

An executor only starts jobs, says which ended and how, and forwards progress. Everything
else (how many jobs are in flight, retries with the same arguments, progress bookkeeping)
is the driver's, one loop for every executor: `icrl_bench.executors.driver.run_jobs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from icrl_bench.errors import IcrlBenchError, unknown
from icrl_bench.executors.base import Executor, Finished, ProgressSink
from icrl_bench.executors.local import InProcess, ProcessPool, default_workers
from icrl_bench.executors.ray_cluster import RayExecutor, check_reachable, import_ray

EXECUTORS = {
    "local": "processes on this machine, one job per process (the default)",
    "ray": "a Ray cluster (pip install 'icrl-bench[ray]'); --address auto or HOST:PORT",
}


@dataclass(frozen=True)
class ExecutorConfig:
    """How to run a computation's jobs.

    Attributes:
        name: `local` or `ray`.
        workers: jobs running at once. Local: processes (default: all cores; 1 runs the jobs in
            this process). Ray: default, the cluster's CPUs (its GPUs when jobs ask for one).
        address: Ray only. None: $RAY_ADDRESS, else a cluster started on this machine, else a
            new Ray instance here; `auto`: a running cluster that this machine is part of;
            `HOST:PORT`: the head node's GCS address (`ray start --head` prints it).
        gpus_per_job: Ray only: GPUs each job asks the cluster for (builds with --device cuda).
        env: Ray only: environment variables each job's worker process starts with (local worker
            processes inherit this process's environment).
    """

    name: str = "local"
    workers: int | None = None
    address: str | None = None
    gpus_per_job: float = 0.0
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise unknown("executor", self.name, EXECUTORS)
        if self.workers is not None and self.workers < 1:
            raise IcrlBenchError(f"--workers must be at least 1, got {self.workers}.")
        if self.address is not None and self.name != "ray":
            raise IcrlBenchError(f"--address {self.address} is for --executor ray; drop it or add --executor ray.")


def require(config: ExecutorConfig) -> None:
    """Fail now, in one line, before any work is written: a missing extra, an address where no one answers."""
    if config.name == "ray":
        import_ray()
        check_reachable(config.address)


def make_executor(config: ExecutorConfig, n_jobs: int) -> Executor:
    """The executor `config` names, sized for `n_jobs` jobs."""
    if config.name == "ray":
        return RayExecutor(config.address, config.workers, config.gpus_per_job, dict(config.env))
    workers = min(config.workers or default_workers(), max(n_jobs, 1))
    return InProcess() if workers == 1 else ProcessPool(workers)


@contextmanager
def open_executor(config: ExecutorConfig, n_jobs: int) -> Iterator[Executor]:
    """An executor for the block; on an exception (Ctrl-C included) its running jobs are stopped."""
    executor = make_executor(config, n_jobs)
    try:
        yield executor
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close(cancel=False)


__all__ = ["EXECUTORS", "Executor", "ExecutorConfig", "Finished", "ProgressSink", "make_executor", "open_executor", "require"]
