"""Jobs on a Ray cluster: one Ray task per job, one CPU (or GPU) each.

Ray is an optional extra, imported only here. Every node runs the job function of its own
icrl-bench install (no code is shipped), so every node needs the same icrl-bench and packages
as the driver: the same content hash needs the same code (see docs/scale.md).

Retries are the driver's, not Ray's (`max_retries=0`): a job whose worker dies comes back as
lost and the driver submits it again with the same arguments, as it does for local workers,
counting what it retried. Results come back through Ray's object store, one at a time
(`poll` fetches at most one finished job), so the driver holds one job's arrays at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from icrl_bench.errors import IcrlBenchError, missing_extra
from icrl_bench.executors.base import Finished, ProgressSink

CONNECT_TIMEOUT_S = 5.0  # a HOST:PORT that does not accept a TCP connection in this time is refused
PROGRESS_EVERY_S = 0.5  # a worker sends its progress at most this often (one actor call each)
FIX = "start one with `ray start --head` and pass the address it prints (or auto on a node of the cluster), or leave --address out to run a Ray instance here"


def import_ray() -> Any:
    """The `ray` module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise missing_extra(err, "ray", "--executor ray") from None
    return ray


class RayExecutor:
    """One Ray task per job; `slots` jobs in flight (default: the cluster's CPUs or GPUs)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_job: float = 0.0,
                 env: dict[str, str] | None = None):
        self._ray = ray = import_ray()
        self._owns_connection = connect(address)
        resources = ray.cluster_resources()
        per_job = ("GPU", gpus_per_job) if gpus_per_job else ("CPU", 1.0)
        self.slots = workers or max(1, int(resources.get(per_job[0], 0) // per_job[1]))
        # --workers caps the jobs running at once, and only the driver can (Ray runs all it is given);
        # otherwise a few queued ones keep the cluster busy while the driver writes a result.
        self.in_flight = workers or 2 * self.slots
        self._sink = ray.remote(num_cpus=0)(_ProgressActor).remote()
        self._task = ray.remote(icrl_bench_job).options(num_cpus=1, num_gpus=gpus_per_job, max_retries=0,
                                                        **({"runtime_env": {"env_vars": env}} if env else {}))
        self._refs: dict[Any, int] = {}

    def submit(self, key: int, fn: Callable[..., Any], args: tuple) -> None:
        self._refs[self._task.remote(fn, args, key, self._sink)] = key

    def poll(self, timeout: float, progress: ProgressSink) -> list[Finished]:
        ray = self._ray
        ready = []
        if self._refs:
            ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        for key, n in ray.get(self._sink.drain.remote()):
            progress(key, n)
        return [self._outcome(ref) for ref in ready]  # at most one: the driver writes it before fetching the next

    def _outcome(self, ref: Any) -> Finished:
        ray, key = self._ray, self._refs.pop(ref)
        try:
            return Finished(key, value=ray.get(ref))
        except ray.exceptions.RayTaskError as err:  # the job raised: hand over its own exception
            cause = err.cause if isinstance(err.cause, BaseException) else err
            return Finished(key, error=cause)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError, ray.exceptions.LocalRayletDiedError,
                ray.exceptions.TaskCancelledError) as err:
            return Finished(key, lost=f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")

    def close(self, cancel: bool) -> None:
        ray = self._ray
        with contextlib.suppress(Exception):  # closing must not hide why the build stopped
            if cancel:
                for ref in self._refs:
                    ray.cancel(ref, force=True)
            ray.kill(self._sink)
        self._refs.clear()
        if self._owns_connection:
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address`; False if this process was already connected (its caller's).

    A HOST:PORT is first tried with a plain TCP connection, because `ray.init` waits minutes
    on an address where nothing listens.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    except ConnectionError as err:
        found = "found no running Ray cluster" if address == "auto" else f"could not connect to Ray at {address}"
        raise IcrlBenchError(f"--address {address}: {found} ({_first_line(err)}); {FIX}.") from None
    except RuntimeError as err:  # e.g. the cluster runs another Ray or Python version
        raise IcrlBenchError(f"could not join the Ray cluster at {address or 'this machine'}: {_first_line(err)}") from None
    return True


def check_reachable(address: str | None) -> None:
    """A HOST:PORT must accept a TCP connection within `CONNECT_TIMEOUT_S` (None and auto: Ray looks)."""
    if address in (None, "auto"):
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise IcrlBenchError(f"no Ray cluster answers at --address {address} ({err.strerror or err}); {FIX}.") from None


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise IcrlBenchError(f"--address {address!r} is not HOST:PORT or auto; give the head node's address, e.g. 10.0.0.1:6379.")
    return host.strip("[]"), int(port)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def icrl_bench_job(fn: Callable[..., Any], args: tuple, key: int, sink: Any) -> Any:
    """A job on a Ray worker (its process title reads `ray::icrl_bench_job` while it runs)."""
    report = _Throttled(lambda n: sink.put.remote(key, n))
    return fn(*args, progress=report)


class _Throttled:
    """Sums progress and sends it at most every `PROGRESS_EVERY_S` (an actor call is ~1 ms)."""

    def __init__(self, send: Callable[[int], Any]):
        self.send, self.unsent, self.last = send, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.unsent += n
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.send(self.unsent)
            self.unsent, self.last = 0, time.monotonic()


class _ProgressActor:
    """Collects the workers' progress reports until the driver drains them."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, int]] = []

    def put(self, key: int, n: int) -> None:
        self.reports.append((key, n))

    def drain(self) -> list[tuple[int, int]]:
        reports, self.reports = self.reports, []
        return reports
