"""Building a dataset: run the source on every task, write each as it finishes, publish.

A build is a job you can trust. It writes into `<root>/staging/<id>/`, records after each
task which tasks are complete (`build-state.json`, replaced atomically), and on a rerun
after Ctrl-C or a kill skips those tasks; tasks are seeded by index, so the resumed
dataset has exactly the content hash of an uninterrupted one. Only a complete, hashed
store is renamed to `<root>/datasets/<id>/`, so no half-written dataset ever carries
its final id.

Jobs run on an executor (`icrl_bench.executors`): local processes by default, or a Ray
cluster. Either way each job's arrays come back to this process, which alone writes the
store and the build state, one job at a time (docs/scale.md says why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import platform
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from icrl_bench.data import store
from icrl_bench.data.manifest import FORMAT_NAME, FORMAT_VERSION, MANIFEST_KEY, Manifest
from icrl_bench.data.recipes import BuildPlan, resolve
from icrl_bench.data.schema import ArraySpec, family_arrays
from icrl_bench.devices import resolve_device
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig, open_executor, require
from icrl_bench.executors.driver import Job, JobsReport, RetryPolicy, run_jobs
from icrl_bench.fileio import write_json_atomic
from icrl_bench.paths import data_root, ensure_writable
from icrl_bench.provenance import provenance
from icrl_bench.sources import ProgressFn, get_source, make_config


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
    retried_jobs: int = 0  # jobs run again after they raised or their worker died (same seed, same bytes)


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
    executor: str = "local",
    address: str | None = None,
) -> BuildResult:
    """Build (or resume, or find already built) the dataset of `family` with a preset.

    With more than one worker, tasks run in spawned processes: a script that calls this
    must guard its entry point with `if __name__ == "__main__":`. `executor="ray"` runs the
    jobs on the Ray cluster at `address` instead (see `icrl_bench.executors.ExecutorConfig`);
    the dataset is the same, byte for byte.
    """
    plan = resolve(family, preset, source, seed, task)
    return run_plan(plan, workers=workers, root=root, device=device, show_progress=show_progress, console=console,
                    executor=executor, address=address)


CPU_KERNELS_VAR = "ATEN_CPU_CAPABILITY"  # torch reads it at its first CPU kernel call in a process
CPU_KERNELS = "avx2"  # the ATen kernels the published datasets were built on (datasets/catalog.yaml)


def job_environment() -> dict[str, str]:
    """ATen's CPU kernels for build jobs: AVX2 on x86-64, or the user's own ATEN_CPU_CAPABILITY.

    Torch picks its vectorised kernels by CPU (AVX2, AVX512), and they change a source's float
    bits. On AVX2 kernels an AVX512 CPU builds the AVX2 machines' bytes where MKL's own code path
    agrees (measured: an AMD Zen 5 does, an Intel Xeon does not: docs/datasets.md). A CPU without
    AVX2 falls back to its own kernels.
    """
    if CPU_KERNELS_VAR in os.environ:
        return {CPU_KERNELS_VAR: os.environ[CPU_KERNELS_VAR]}
    return {CPU_KERNELS_VAR: CPU_KERNELS} if platform.machine().lower() in {"x86_64", "amd64"} else {}


def pin_cpu_kernels() -> None:
    """Set `job_environment()` in this process: call it before the process's first torch op.

    The commands that build (`build-dataset`, `reproduce`) do, so their in-process jobs, their
    spawned workers and their Ray jobs all run the same kernels. A library call of `build_dataset`
    changes no process state: its jobs run this process's kernels (the manifest records which).
    """
    os.environ.update(job_environment())


def run_plan(
    plan: BuildPlan,
    workers: int | None = None,
    root: str | os.PathLike | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    console: Console | None = None,
    executor: str = "local",
    address: str | None = None,
) -> BuildResult:
    kernels = os.environ.get(CPU_KERNELS_VAR)  # what this process and its spawned workers run; Ray jobs are told
    config = ExecutorConfig(executor, workers, address, env=((CPU_KERNELS_VAR, kernels),) if kernels else ())
    device = resolve_device(device)
    if device.startswith("cuda"):
        config = dataclasses.replace(config, gpus_per_job=1.0)
    require(config)  # a missing extra is said before anything is written
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
            slots, report = _run_tasks(plan, staging, state, pending, config, device, show_progress, console)
        except KeyboardInterrupt:
            state["wall_time_s"] = state.get("wall_time_s", 0.0) + time.perf_counter() - started
            _save_state(staging, state)  # the time spent so far counts in the resumed build's manifest
            raise BuildInterrupted(
                f"build of {plan.dataset_id} interrupted with {len(state['done'])}/{len(plan.tasks)} tasks saved; "
                "run the same command again to resume."
            ) from None
        state["wall_time_s"] = state.get("wall_time_s", 0.0) + time.perf_counter() - started
        execution = {"executor": config.name, "workers": slots, "retried_jobs": report.retried}
        content_hash = _publish(staging, final, plan, state, execution, device)
        if len(state.get("numerics", [])) > 1:
            (console or Console(stderr=True)).print(
                f"[yellow]warning:[/] the jobs of {plan.dataset_id} ran on machines with different CPU kernels "
                f"({_workers_numerics(state, device)['torch_cpu_capability']}): its hash matches no build on one kind "
                "of machine; build on nodes of one CPU type to get the published bytes (docs/scale.md).", highlight=False)
        state_path(staging).unlink()
        staging.with_suffix(".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # staging/ itself, once no other build uses it
    return BuildResult(plan.dataset_id, final, content_hash, False, len(pending), state["wall_time_s"], report.retried)


def _already_built(final: Path, plan: BuildPlan) -> BuildResult:
    _, manifest = store.open_dataset(final, plan.dataset_id)
    if manifest.recipe != json.loads(json.dumps(plan.to_dict())):
        raise IcrlBenchError(
            f"{final} holds a dataset {plan.dataset_id} built from another recipe; "
            f"run `icrl-bench datasets delete {plan.dataset_id}` to rebuild it."
        )
    return BuildResult(plan.dataset_id, final, manifest.content_hash, True, 0, manifest.build.wall_time_s)


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


def run_job(plan_dict: dict[str, Any], rows: list[int], device: str, progress: ProgressFn | None = None) -> list[dict[str, np.ndarray]]:
    """Learn the tasks at `rows` of the plan and return their complete histories.

    The one job function of every executor (this process, a local worker, a Ray node): only
    plain data crosses to and from it, and its bytes depend on the plan and rows alone.
    """
    plan = BuildPlan(**plan_dict)
    source = get_source(plan.source)
    config = make_config(source.config_cls, plan.source_settings, plan.dataset_id)
    env = get_family(plan.env)
    tasks = [plan.tasks[r] for r in rows]
    params = env.task_params()[tasks]
    histories = source.run(plan.env, tasks, [plan.task_seed(t) for t in tasks], config, device, progress)
    return [complete_history(plan.env, p, h) for p, h in zip(params, histories)]


def build_job(plan_dict: dict[str, Any], rows: list[int], device: str, progress: ProgressFn | None = None) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """`run_job`, and the numerics of the machine it ran on: on a cluster, the workers' CPUs make the bytes, not the driver's."""
    return run_job(plan_dict, rows, device, progress), numerics(device)


def complete_history(env_name: str, params: np.ndarray, history: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the oracle's labels (grid worlds) and cast every array to the schema's dtype."""
    env = get_family(env_name)
    history = dict(history)
    if env.kind == "discrete":
        history["optimal_action"] = env.optimal_actions(params[None], history["obs"][None], history["reward"][None], history["done"][None])[0]
    specs = {s.name: s for s in family_arrays(env) if not s.per_task}
    return {name: spec.cast(history[name]) for name, spec in specs.items()}


def _write_rows(staging: Path, rows: list[int], histories: list[dict[str, np.ndarray]], facts: dict[str, Any], state: dict[str, Any]) -> None:
    group = zarr.open_group(store=str(staging), mode="r+", zarr_format=3)
    for row, history in zip(rows, histories):
        for name, values in history.items():
            group[name][row] = values
    state["done"] = sorted(set(state["done"]) | set(rows))
    if facts not in state.setdefault("numerics", []):  # kept across resumes: every job's machine counts
        state["numerics"].append(facts)
    _save_state(staging, state)


def _run_tasks(
    plan: BuildPlan,
    staging: Path,
    state: dict[str, Any],
    pending: list[int],
    config: ExecutorConfig,
    device: str,
    show_progress: bool,
    console: Console | None,
) -> tuple[int, JobsReport]:
    """Run the pending rows' jobs on the executor, writing each job's rows as it finishes."""
    source = get_source(plan.source)
    # Jobs are aligned blocks of rows (row // tasks_per_job), so a resumed build regroups the
    # unfinished rows exactly as the first run did: batched sources then see the same batches.
    blocks: dict[int, list[int]] = {}
    for row in pending:
        blocks.setdefault(row // source.tasks_per_job, []).append(row)
    rows_of = list(blocks.values())
    steps_per_task = plan.source_settings["total_timesteps"]
    plan_dict = plan.to_dict()
    jobs = [Job((plan_dict, rows, device), units=len(rows) * steps_per_task) for rows in rows_of]
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
    with progress:
        tasks_bar = progress.add_task(f"{plan.dataset_id}: tasks", total=len(plan.tasks), completed=len(state["done"]))
        steps_bar = progress.add_task("env steps", total=len(plan.tasks) * steps_per_task, completed=len(state["done"]) * steps_per_task)

        def write(index: int, result: tuple[list[dict[str, np.ndarray]], dict[str, Any]]) -> None:
            _write_rows(staging, rows_of[index], *result, state)
            progress.update(tasks_bar, advance=len(rows_of[index]))

        if not jobs:  # killed between the last task and publishing: nothing to run, no cluster to join
            return 0, JobsReport()
        # The executor first: Ray's init installs its own SIGTERM handler, which ours replaces for the run.
        with open_executor(config, len(jobs)) as executor, _sigterm_interrupts():  # in this process too (--workers 1)
            report = run_jobs(executor, build_job, jobs, write, lambda n: progress.update(steps_bar, advance=n),
                              RetryPolicy(errors=RETRIES, lost=LOST_WORKER_RETRIES))
    _report_failures(plan, report, rows_of, state)
    return executor.slots, report


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
LOST_WORKER_RETRIES = 3  # a job whose worker died (SIGKILL, OOM, a lost node) runs up to 3 more times


def _report_failures(plan: BuildPlan, report: JobsReport, rows_of: list[list[int]], state: dict[str, Any]) -> None:
    """Fail the build, naming the tasks that failed on every try; every finished task stays saved."""
    if not report.failures:
        return
    lines = "; ".join(
        f"task(s) {[plan.tasks[r] for r in rows_of[index]]}: {failure.error} (failed {failure.tries} times)"
        for index, failure in report.failures.items()
    )
    raise IcrlBenchError(
        f"build of {plan.dataset_id}: {lines}; the {len(state['done'])} finished "
        "tasks are saved: run the same command again to retry the failed ones."
    )


def _publish(staging: Path, final: Path, plan: BuildPlan, state: dict[str, Any], execution: dict[str, Any], device: str) -> str:
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
        "build": {"wall_time_s": round(state["wall_time_s"], 3), **execution, "device": device, **_workers_numerics(state, device)},
    }
    return finalize(staging, final, manifest)


def _workers_numerics(state: dict[str, Any], device: str) -> dict[str, Any]:
    """The numerics the jobs ran with; a cluster of mixed CPUs is named as such (its bytes match no one-machine build)."""
    seen = state.get("numerics") or [numerics(device)]
    if len(seen) == 1:
        return seen[0]
    kernels = sorted({str(facts["torch_cpu_capability"]) for facts in seen})
    return {"torch_threads": seen[0]["torch_threads"], "torch_cpu_capability": "mixed: " + ", ".join(kernels), "workers_numerics": seen}


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


def finalize(staging: Path, final: Path, given: dict[str, Any]) -> str:
    """Hash a complete staging store, write its manifest, and rename it into place.

    `given` holds the manifest fields only the caller knows (id, recipe or origin, source); the
    shapes, split, env constants, array hashes and provenance are added here, and the whole is
    checked against the `Manifest` schema before anything is written.
    """
    group = zarr.open_group(store=str(staging), mode="r+", zarr_format=3)
    digests = store.digests(group)
    content_hash = store.content_hash(digests)
    env = get_family(given["env"])
    split = env.split()
    obs_shape = group["obs"].shape
    manifest = Manifest.build_new({
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **given,
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
    })
    group.attrs[MANIFEST_KEY] = manifest.to_dict()
    store.consolidate(staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, final)
    return content_hash
