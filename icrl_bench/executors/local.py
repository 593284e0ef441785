"""Jobs on this machine: in this process (one worker), or one spawned process per job.

A fresh process per job (`max_tasks_per_child=1`): simulators (MuJoCo) hold memory past
`env.close()`, and a crash stays contained. Workers die with the driver, even after a SIGKILL
of it (Linux), and a worker that dies under its job (SIGKILL, the OOM killer) breaks only the
pool, which is rebuilt: the driver sees those jobs as lost and runs them again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from icrl_bench.executors.base import Finished, ProgressSink


def default_workers() -> int:
    return os.cpu_count() or 1


class InProcess:
    """Jobs one after another in the calling process: `--workers 1`, or a single job.

    Progress reaches the driver live (the job calls it directly), and Ctrl-C or SIGTERM stops
    the job where it is, as the driver's KeyboardInterrupt.
    """

    name = "local"
    slots = 1
    in_flight = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[int, Callable[..., Any], tuple]] = deque()

    def submit(self, key: int, fn: Callable[..., Any], args: tuple) -> None:
        self._queue.append((key, fn, args))

    def poll(self, timeout: float, progress: ProgressSink) -> list[Finished]:
        if not self._queue:
            return []
        key, fn, args = self._queue.popleft()
        try:
            value = fn(*args, progress=lambda n: progress(key, n))
        except Exception as err:  # noqa: BLE001 - the driver decides: retry, or re-raise a user error
            return [Finished(key, error=err)]
        return [Finished(key, value=value)]

    def close(self, cancel: bool) -> None:
        self._queue.clear()


class ProcessPool:
    """One spawned single-job process per job, `workers` at a time."""

    name = "local"

    def __init__(self, workers: int):
        self.slots = workers
        self.in_flight = 2 * workers  # the pool runs `workers`; the rest wait in its queue, ready to start
        self._context = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None
        self._queue: Any = None
        self._futures: dict[Future, int] = {}
        self._settled: list[Finished] = []  # outcomes collected from a broken pool, for the next poll

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._queue = self._context.Queue()  # handed to each worker at its start (no manager process to outlive the build)
            self._pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=self._context, max_tasks_per_child=1,
                                             initializer=_worker_start, initargs=(self._queue, os.getpid()))
        return self._pool

    def submit(self, key: int, fn: Callable[..., Any], args: tuple) -> None:
        try:
            future = self._start().submit(_pool_call, fn, args, key)
        except BrokenProcessPool:  # a worker died since the last poll: start a new pool
            self._discard_broken()
            future = self._start().submit(_pool_call, fn, args, key)
        self._futures[future] = key

    def poll(self, timeout: float, progress: ProgressSink) -> list[Finished]:
        finished, self._settled = self._settled, []
        if self._futures and not finished:
            wait(self._futures, timeout=timeout, return_when=FIRST_COMPLETED)
        self._drain(progress)
        for future in [f for f in self._futures if f.done()]:
            finished.append(_outcome(future, self._futures.pop(future)))
        if any(f.lost for f in finished):
            self._discard_broken()
        return finished

    def _drain(self, progress: ProgressSink) -> None:
        while self._queue is not None and not self._queue.empty():
            key, n = self._queue.get_nowait()
            progress(key, n)

    def _discard_broken(self) -> None:
        """Drop a pool whose worker died; its executor has stopped the other workers and failed their jobs."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # joins the executor's thread: every future is settled after it
            self._queue.close()  # a worker killed while writing to it may have left it unusable
        self._pool, self._queue = None, None
        self._settled += [_outcome(future, key) for future, key in self._futures.items()]
        self._futures.clear()

    def close(self, cancel: bool) -> None:
        if self._pool is None:
            return
        if cancel:
            _stop_workers(self._pool, self._queue)
        else:  # every job is done: a plain shutdown (wait=False here races the executor's own thread)
            self._pool.shutdown(wait=True)
            self._queue.close()
        self._pool, self._queue = None, None


def _stop_workers(pool: ProcessPoolExecutor, queue: Any) -> None:
    """An interrupted driver leaves no worker running and no queue writer behind."""
    running = list((getattr(pool, "_processes", None) or {}).values())  # the executor's own record
    pool.shutdown(wait=False, cancel_futures=True)
    for process in running:
        if process.is_alive():
            process.terminate()
    for process in running:
        process.join(timeout=10)  # before the queue closes: a worker writing to it would print a BrokenPipe traceback
    queue.close()


_WORKER_QUEUE: Any = None


def _worker_start(queue: Any, driver_pid: int) -> None:
    """A worker's start: keep the progress queue, and die with the driver (Linux), even after a SIGKILL of it."""
    global _WORKER_QUEUE
    _WORKER_QUEUE = queue
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != driver_pid:  # the driver died before prctl took effect
            os._exit(1)


def _outcome(future: Future, key: int) -> Finished:
    if future.cancelled():
        return Finished(key, lost="its worker pool was stopped")
    error = future.exception()
    if isinstance(error, BrokenProcessPool):  # every job in flight fails with it, the dead worker's and the others'
        return Finished(key, lost="a worker process died (killed, or out of memory)")
    if error is not None:
        return Finished(key, error=error)
    return Finished(key, value=future.result())


def _pool_call(fn: Callable[..., Any], args: tuple, key: int) -> Any:
    return fn(*args, progress=lambda n: _WORKER_QUEUE.put((key, n)))
