"""Building a dataset: run the source on every task, write each as it finishes, publish.

A build is a job you can trust. It writes into `<root>/staging/<id>/`, records after each
task which tasks are complete (`build-state.json`, replaced atomically), and on a rerun
after Ctrl-C or a kill skips those tasks; tasks are seeded by index, so the resumed
dataset has exactly the content hash of an uninterrupted one. Only a complete, hashed
store is renamed to `<root>/datasets/<id>/`, so no half-written dataset ever carries
its final id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from icrl_bench.data import store
from icrl_bench.data.recipes import BuildPlan, resolve
from icrl_bench.data.schema import ArraySpec, family_arrays
from icrl_bench.devices import resolve_device
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import write_json_atomic
from icrl_bench.paths import data_root, ensure_writable
from icrl_bench.provenance import provenance
from icrl_bench.sources import get_source, make_config


class BuildInterrupted(IcrlBenchError):
    """The user stopped a build; what finished is kept for the next run."""


@dataclass(frozen=True)
class BuildResult:
    dataset_id: str
    path: Path
    content_hash: str
    already_built: bool
    tasks_run: int
    wall_time_s: float


def datasets_dir(root: Path) -> Path:
    return root / "datasets"


def staging_dir(root: Path, dataset_id: str) -> Path:
    return root / "staging" / dataset_id


def state_path(staging: Path) -> Path:
    """The build state lives beside the staging store, so the store holds data only."""
    return staging.with_name(staging.name + ".build-state.json")


def build_dataset(
    family: str,
    preset: str | None = None,
    source: str | None = None,
    seed: int | None = None,
    workers: int | None = None,
    root: str | os.PathLike | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    console: Console | None = None,
    task: str | None = None,
) -> BuildResult:
    """Build (or resume, or find already built) the dataset of `family` with a preset.

    With more than one worker, tasks run in spawned processes: a script that calls this
    must guard its entry point with `if __name__ == "__main__":`.
    """
    plan = resolve(family, preset, source, seed, task)
    return run_plan(plan, workers=workers, root=root, device=device, show_progress=show_progress, console=console)


def run_plan(
    plan: BuildPlan,
    workers: int | None = None,
    root: str | os.PathLike | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    console: Console | None = None,
) -> BuildResult:
    if workers is not None and workers < 1:
        raise IcrlBenchError(f"--workers must be at least 1, got {workers}.")
    device = resolve_device(device)
    n_workers = workers or os.cpu_count() or 1
    root_dir = ensure_writable(data_root(root), "datasets", "staging")
    final = datasets_dir(root_dir) / plan.dataset_id
    if final.exists():
        return _already_built(final, plan)
    staging = staging_dir(root_dir, plan.dataset_id)
    staging.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(staging.with_suffix(".lock"), plan.dataset_id):
        state = _open_or_create(staging, plan)
        started = time.perf_counter()
        pending = [row for row in range(len(plan.tasks)) if row not in set(state["done"])]
        try:
            with _sigterm_interrupts():  # in the main process too (--workers 1), not only with a pool
                _run_tasks(plan, staging, state, pending, n_workers, device, show_progress, console)
        except KeyboardInterrupt:
            state["wall_time_s"] = state.get("wall_time_s", 0.0) + time.perf_counter() - started
            _save_state(staging, state)  # the time spent so far counts in the resumed build's manifest
            raise BuildInterrupted(
                f"build of {plan.dataset_id} interrupted with {len(state['done'])}/{len(plan.tasks)} tasks saved; "
                "run the same command again to resume."
            ) from None
        state["wall_time_s"] = state.get("wall_time_s", 0.0) + time.perf_counter() - started
        content_hash = _publish(staging, final, plan, state, n_workers, device)
        state_path(staging).unlink()
        staging.with_suffix(".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # staging/ itself, once no other build uses it
    return BuildResult(plan.dataset_id, final, content_hash, False, len(pending), state["wall_time_s"])


def _already_built(final: Path, plan: BuildPlan) -> BuildResult:
    group = store.open_dataset_group(final, plan.dataset_id)
    manifest = group.attrs[store.MANIFEST_KEY]
    if manifest.get("recipe") != json.loads(json.dumps(plan.to_dict())):
        raise IcrlBenchError(
            f"{final} holds a dataset {plan.dataset_id} built from another recipe; "
            f"run `icrl-bench datasets delete {plan.dataset_id}` to rebuild it."
        )
    return BuildResult(plan.dataset_id, final, manifest["content_hash"], True, 0, manifest["build"]["wall_time_s"])


@contextmanager
def _exclusive(lock_path: Path, dataset_id: str) -> Iterator[None]:
    """Hold an OS lock so two builds of one dataset never write the same staging dir."""
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IcrlBenchError(f"another build of {dataset_id} is running (lock {lock_path}); wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _specs(plan: BuildPlan) -> list[ArraySpec]:
    return family_arrays(get_family(plan.env))


def _open_or_create(staging: Path, plan: BuildPlan) -> dict[str, Any]:
    """The build state of a resumable staging dir, or a fresh store and state."""
    plan_dict = json.loads(json.dumps(plan.to_dict()))
    if state_path(staging).is_file():
        try:
            state = json.loads(state_path(staging).read_text())
        except json.JSONDecodeError:
            state = None
        if state is not None and state.get("plan") == plan_dict and (staging / "zarr.json").is_file():
            return state
        if state is not None and not (staging / "zarr.json").is_file():
            state = None  # left behind by a kill between publishing and cleaning up: start clean
        if state is not None:
            raise IcrlBenchError(
                f"{staging} holds an unfinished build of {plan.dataset_id} with other settings; "
                f"delete it and {state_path(staging).name} beside it to start over."
            )
    # Nothing recorded as finished (new build, or killed before the first task ended): start clean.
    if staging.exists():
        shutil.rmtree(staging)
    env = get_family(plan.env)
    group = store.create(staging, _specs(plan), len(plan.tasks), plan.source_settings["n_streams"], _steps_per_stream(plan))
    params = env.task_params()[plan.tasks]
    group["task_index"][:] = np.asarray(plan.tasks, dtype=np.int32)
    group["task_params"][:] = {s.name: s for s in _specs(plan)}["task_params"].cast(params)
    group["split"][:] = env.split().labels(env.n_tasks)[plan.tasks]
    state = {"plan": plan_dict, "done": [], "wall_time_s": 0.0}
    _save_state(staging, state)
    return state


def _steps_per_stream(plan: BuildPlan) -> int:
    return plan.source_settings["total_timesteps"] // plan.source_settings["n_streams"]


def _save_state(staging: Path, state: dict[str, Any]) -> None:
    write_json_atomic(state_path(staging), state)


def run_job(plan_dict: dict[str, Any], rows: list[int], device: str, progress_queue: Any = None) -> list[dict[str, np.ndarray]]:
    """Learn the tasks at `rows` of the plan and return their complete histories.

    Runs in a worker process: only plain data crosses the process boundary.
    """
    plan = BuildPlan(**plan_dict)
    source = get_source(plan.source)
    config = make_config(source.config_cls, plan.source_settings, plan.dataset_id)
    env = get_family(plan.env)
    tasks = [plan.tasks[r] for r in rows]
    params = env.task_params()[tasks]
    progress = progress_queue.put if progress_queue is not None else None
    histories = source.run(plan.env, tasks, [plan.task_seed(t) for t in tasks], config, device, progress)
    return [complete_history(plan.env, p, h) for p, h in zip(params, histories)]


def complete_history(env_name: str, params: np.ndarray, history: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the oracle's labels (grid worlds) and cast every array to the schema's dtype."""
    env = get_family(env_name)
    history = dict(history)
    if env.kind == "discrete":
        history["optimal_action"] = env.optimal_actions(params[None], history["obs"][None], history["reward"][None], history["done"][None])[0]
    specs = {s.name: s for s in family_arrays(env) if not s.per_task}
    return {name: spec.cast(history[name]) for name, spec in specs.items()}


def _write_rows(staging: Path, rows: list[int], histories: list[dict[str, np.ndarray]], state: dict[str, Any]) -> None:
    group = zarr.open_group(store=str(staging), mode="r+", zarr_format=3)
    for row, history in zip(rows, histories):
        for name, values in history.items():
            group[name][row] = values
    state["done"] = sorted(set(state["done"]) | set(rows))
    _save_state(staging, state)


def _run_tasks(plan, staging, state, pending, workers, device, show_progress, console) -> None:
    source = get_source(plan.source)
    # Jobs are aligned blocks of rows (row // tasks_per_job), so a resumed build regroups the
    # unfinished rows exactly as the first run did: batched sources then see the same batches.
    blocks: dict[int, list[int]] = {}
    for row in pending:
        blocks.setdefault(row // source.tasks_per_job, []).append(row)
    jobs = list(blocks.values())
    steps_per_task = plan.source_settings["total_timesteps"]
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    plan_dict = plan.to_dict()
    with progress:
        tasks_bar = progress.add_task(f"{plan.dataset_id}: tasks", total=len(plan.tasks), completed=len(state["done"]))
        steps_bar = progress.add_task("env steps", total=len(plan.tasks) * steps_per_task, completed=len(state["done"]) * steps_per_task)
        failures: dict[tuple[int, ...], str] = {}
        if workers == 1 or len(jobs) <= 1:
            for rows in jobs:
                for _ in range(1 + RETRIES):
                    try:
                        histories = run_job(plan_dict, rows, device, _Direct(progress, steps_bar))
                    except (KeyboardInterrupt, IcrlBenchError):
                        raise
                    except Exception as err:  # noqa: BLE001 - a simulator crash: retry, then report
                        failures[tuple(rows)] = _describe(err)
                        continue
                    failures.pop(tuple(rows), None)
                    _write_rows(staging, rows, histories, state)
                    progress.update(tasks_bar, advance=len(rows))
                    break
            _report_failures(plan, failures, state)
            return
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()  # handed to each worker at its start (no manager process to outlive the build)
        # A fresh process per job: simulators (MuJoCo) hold memory past env.close(), and a crash stays contained.
        executor = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context, max_tasks_per_child=1,
                                       initializer=_worker_start, initargs=(queue, os.getpid()))
        finished_all = False
        try:
            futures: dict[Future, tuple[list[int], int]] = {executor.submit(_worker_job, plan_dict, rows, device): (rows, 0) for rows in jobs}
            while futures:
                finished, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(queue, progress, steps_bar)
                for future in finished:
                    rows, attempt = futures.pop(future)
                    error = future.exception()
                    if isinstance(error, IcrlBenchError):
                        raise error
                    if error is not None:
                        failures[tuple(rows)] = _describe(error)
                        if attempt < RETRIES:
                            futures[executor.submit(_worker_job, plan_dict, rows, device)] = (rows, attempt + 1)
                        continue
                    failures.pop(tuple(rows), None)
                    _write_rows(staging, rows, future.result(), state)
                    progress.update(tasks_bar, advance=len(rows))
            finished_all = True
        finally:
            if finished_all:  # every job is done: a plain shutdown (wait=False here races the executor's own thread)
                executor.shutdown(wait=True)
                queue.close()
            else:
                _stop_workers(executor, queue)
        _report_failures(plan, failures, state)


def _stop_workers(executor: ProcessPoolExecutor, queue: Any) -> None:
    """An interrupted build leaves no worker running and no queue writer behind."""
    running = list((getattr(executor, "_processes", None) or {}).values())  # the executor's own record
    executor.shutdown(wait=False, cancel_futures=True)
    for process in running:
        if process.is_alive():
            process.terminate()
    for process in running:
        process.join(timeout=10)  # before the queue closes: a worker writing to it would print a BrokenPipe traceback
    queue.close()


_WORKER_QUEUE: Any = None


def _worker_start(queue: Any, builder_pid: int) -> None:
    """A builder worker's start: keep the progress queue, and die with the builder (Linux), even after a SIGKILL of it."""
    global _WORKER_QUEUE
    _WORKER_QUEUE = queue
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != builder_pid:  # the builder died before prctl took effect
            os._exit(1)


def _worker_job(plan_dict: dict[str, Any], rows: list[int], device: str) -> list[dict[str, np.ndarray]]:
    return run_job(plan_dict, rows, device, _WORKER_QUEUE)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM interrupts a build as Ctrl-C does: finished tasks stay saved, workers are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


RETRIES = 1  # a job that raises (e.g. a MuJoCo instability) runs once more with the same seed


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _report_failures(plan: BuildPlan, failures: dict[tuple[int, ...], str], state: dict[str, Any]) -> None:
    """Fail the build, naming the tasks that failed twice; every finished task stays saved."""
    if not failures:
        return
    lines = "; ".join(f"task(s) {[plan.tasks[r] for r in rows]}: {error}" for rows, error in failures.items())
    raise IcrlBenchError(
        f"build of {plan.dataset_id}: {lines} (failed {1 + RETRIES} times); the {len(state['done'])} finished "
        "tasks are saved: run the same command again to retry the failed ones."
    )


class _Direct:
    """The progress sink of an in-process job (a queue's `put`, without the queue)."""

    def __init__(self, progress: Progress, bar: Any):
        self.put = lambda n: progress.update(bar, advance=n)


def _drain(queue: Any, progress: Progress, bar: Any) -> None:
    while not queue.empty():
        progress.update(bar, advance=queue.get_nowait())


def _publish(staging: Path, final: Path, plan: BuildPlan, state: dict[str, Any], workers: int, device: str) -> str:
    manifest = {
        "dataset_id": plan.dataset_id,
        "family": plan.family,
        "env": plan.env,
        "version": plan.version,
        "preset": plan.preset,
        "description": plan.description,
        "recipe": plan.to_dict(),
        "source": {"name": plan.source, "hyperparameters": plan.source_settings},
        "seeds": {"base": plan.seed, "rule": "the learner on canonical task i is seeded with base + i"},
        "build": {"wall_time_s": round(state["wall_time_s"], 3), "workers": workers, "device": device, **numerics(device)},
    }
    return finalize(staging, final, manifest)


def numerics(device: str) -> dict[str, Any]:
    """What a source's float bits depend on besides the code: threads, CPU kernels, CUDA.

    Same values (and the same package versions, in the provenance) give the same bytes; other
    hardware gives statistically equal learning (benchmarks/bench_source_fidelity.py), not
    necessarily the same bits.
    """
    import torch

    from icrl_bench.sources.batched_ppo import CPU_THREADS

    facts: dict[str, Any] = {"torch_threads": CPU_THREADS, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.startswith("cuda"):
        facts["cuda"] = {"device": torch.cuda.get_device_name(), "cuda_version": torch.version.cuda}
    return facts


def _split_rule(env: Any) -> dict[str, Any]:
    if env.kind == "continuous":
        return {"seed": env.split_seed, "rule": "Meta-World's own: its train tasks, then its test tasks (benchmark seed)"}
    return {
        "seed": env.split_seed,
        "train_ratio": env.train_ratio,
        "rule": "random.seed(seed); random.shuffle(task indices); the first round(n * train_ratio) are train",
    }


def finalize(staging: Path, final: Path, manifest: dict[str, Any]) -> str:
    """Hash a complete staging store, write its manifest, and rename it into place.

    `manifest` holds what only the caller knows (id, recipe or origin, source); the
    shapes, split, env constants, array hashes and provenance are added here.
    """
    group = zarr.open_group(store=str(staging), mode="r+", zarr_format=3)
    digests = store.digests(group)
    content_hash = store.content_hash(digests)
    env = get_family(manifest["env"])
    split = env.split()
    obs_shape = group["obs"].shape
    manifest = {
        "format": store.FORMAT_NAME,
        "format_version": store.FORMAT_VERSION,
        **manifest,
        "shape": {"n_tasks": obs_shape[0], "n_streams": obs_shape[1], "n_steps": obs_shape[2]},
        "env_spec": {
            "gym_id": env.gym_id,
            "kind": env.kind,
            "horizon": env.horizon,
            "obs_dim": env.obs_dim,
            "action_dim": env.action_dim,
            "param_names": list(env.param_names),
            "n_env_tasks": env.n_tasks,
            **env.env_facts(),
        },
        "split": {
            **_split_rule(env),
            "train": split.train.tolist(),
            "test": split.test.tolist(),
        },
        "next_obs_at_episode_end": "true terminal observation",
        "arrays": {
            name: {
                "shape": list(group[name].shape),
                "dtype": str(group[name].dtype),
                "chunks": list(group[name].chunks),
                "sha256": digest,
                "doc": group[name].attrs.get("doc", ""),
            }
            for name, digest in digests.items()
        },
        "content_hash": content_hash,
        "provenance": provenance(),
    }
    manifest["manifest_hash"] = store.manifest_hash(manifest)
    group.attrs[store.MANIFEST_KEY] = manifest
    store.consolidate(staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, final)
    return content_hash
