"""`icrl-bench reproduce ENV`: from nothing to the paper's table, in resumable stages.

    icrl-bench reproduce darkroom                         # laptop budget on CPU: build, train 6 agents, evaluate, report
    icrl-bench reproduce darkroom --device cuda --budget paper
    icrl-bench reproduce darkroom --agents ad,dicp-ad     # a subset; re-running skips finished stages
    icrl-bench reproduce darkroom --from-shipped          # evaluate the shipped checkpoints only
    icrl-bench reproduce darkroom-permuted --agents idt --ranks 2   # one training on both cores, as it was shipped

Stages, each skipped when its output is there and still valid (`--force` redoes them):
dataset (built, or found), one training run per agent (a killed run is resumed exactly), one
evaluation per agent under the env's standard protocol (redone if the checkpoint changed), and
the report: `reproduction/<env>/README.md` with the return at the paper's episodes with 95%
CIs beside the paper's numbers (`reproduction/paper_results.yaml`, with their source), a
verdict per cell, the budget spent, and `curves.png` overlaying our curves on the paper's
(reproduction_report.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from icrl_bench.bench.reproduction_report import AgentRecord, budget_of, plot_against_paper, render_report
from icrl_bench.devices import cpu_threads
from icrl_bench.errors import IcrlBenchError, unknown
from icrl_bench.fileio import write_json_atomic
from icrl_bench.paths import IN_CHECKOUT, shipped
from icrl_bench.run_records import shipped_hardware

GRID_AGENTS = ("ad", "dicp-ad", "dpt", "dicp-dpt", "idt", "dicp-idt")
ENVS = {"darkroom": None, "darkroom-permuted": None, "dark-key-to-door": "small"}  # env -> dataset preset (None: paper size)
EVAL_BY_SEED = frozenset({"darkroom-permuted", "dark-key-to-door"})
"""Envs whose evaluations `reproduce` runs seed by seed on a CPU, resumable: DICP's planning there
(depth 16, 200-transition windows) takes hours of a core. Darkroom's take minutes and stay one
batch per agent: the leaderboard entries' draws, and less work (`benchmarks/bench_seed_batches.py`:
the shipped DICP-AD's five one-seed batches act 1.32x longer than one 40-env batch over 10
episodes; in a whole `--from-shipped` run they took 593 s of acting against 344)."""
BUDGETS = {"laptop": "laptop", "cpu": "cpu", "paper": None, "tiny": None}  # budget -> preset of baselines/<env>/<agent>.yaml
TINY_OVERRIDES = ["train.steps=4", "train.batch_size=4", "train.num_workers=0", "model.transformer.n_layer=1", "model.n_transit=20",
                  "train.val_max_tasks=2", "train.val_windows_per_task=2", "train.ckpt_interval=2"]
"""The `tiny` budget: a smoke run of every stage on the tiny dataset (seconds; numbers mean nothing)."""
STATE_FILE = "state.json"
WARM_SUFFIX = "-warm"  # a budget's preset for an agent warm-started from another (baselines/<env>/<agent>.yaml: laptop-warm)


# ---- the pipeline -------------------------------------------------------------------------------------


def default_out_dir(env: str) -> Path:
    """The checkout's reproduction/<env>/ (its committed report); from an installed package, whose copy
    is read-only, reproduction/<env>/ under the current directory, like `train`'s runs/."""
    return shipped("reproduction", env) if IN_CHECKOUT else Path("reproduction") / env


def _agents(text: str | None) -> list[str]:
    if not text:
        return list(GRID_AGENTS)
    agents = [a.strip() for a in text.split(",") if a.strip()]
    for agent in agents:
        if agent not in GRID_AGENTS:
            raise unknown("agent", agent, GRID_AGENTS)
    return agents


def reproduce(
    env: str,
    agents: str | None = None,
    budget: str = "laptop",
    device: str = "cpu",
    out: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    from_shipped: bool = False,
    force: bool = False,
    seeds: list[int] | None = None,
    n_episodes: int | None = None,
    n_tasks: int | None = None,
    log: Any = print,
    jobs: int = 1,
    ranks: int = 1,
) -> Path:
    """Run (or resume) every stage for `env` and write the report; returns the report's path.

    `jobs` > 1 trains that many agents at once, each in its own single-thread process, then evaluates
    that many agents (or seeds, `EVAL_BY_SEED`) at once. `ranks` > 1 trains each agent as that many
    torchrun ranks of one thread (the preset's batch split between them; ranks.py), one agent at a time.
    """
    from icrl_bench.devices import resolve_device

    if env not in ENVS:
        raise unknown("env", env, ENVS)
    if budget not in BUDGETS:
        raise unknown("budget", budget, BUDGETS)
    names = _agents(agents)
    if jobs < 1:
        raise IcrlBenchError(f"--jobs must be at least 1, got {jobs}.")
    if ranks < 1:
        raise IcrlBenchError(f"--ranks must be at least 1, got {ranks}.")
    device = resolve_device(device)
    preset = BUDGETS[budget]
    notes = []
    out_dir = Path(out) if out is not None else default_out_dir(env)
    if out is None and not IN_CHECKOUT:
        log(f"[report] writing to {out_dir.resolve()} (--out DIR to choose)")
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    state = {"runs": {}} if force else _read_state(state_path, log)
    presets: dict[str, str | None] = {}
    warm = {} if from_shipped else warm_sources(names, env, preset)  # agent -> the agent it starts from
    if not from_shipped:
        from icrl_bench.training import load_run_config, parse_overrides

        for agent in names:  # a budget the env has no config for fails before any work
            presets[agent] = preset
            if agent in warm and preset is not None:
                presets[agent] = f"{preset}{WARM_SUFFIX}"
                continue
            try:
                load_run_config(agent, env, preset, overrides=parse_overrides(TINY_OVERRIDES) if budget == "tiny" else None)
            except IcrlBenchError:
                if budget != "laptop":
                    raise
                presets[agent] = "cpu"  # no laptop budget fixed for this agent yet: the cpu preset, said in the report
                load_run_config(agent, env, "cpu")
                notes.append(f"{agent}: no `laptop` preset in baselines/{env}/{agent}.yaml yet; trained with the `cpu` preset.")

    dataset_id = None
    if not from_shipped and all(_recorded_run(out_dir, state, agent, force)[2] for agent in names):
        log("[dataset] every agent's training is finished: the dataset is not needed")
    elif not from_shipped:
        from icrl_bench.data.build import build_dataset

        dataset_preset = "tiny" if budget == "tiny" else ENVS[env]
        log(f"[dataset] {env} preset {dataset_preset or 'paper size'}")
        dataset_id = build_dataset(env, dataset_preset, root=root, device=device, show_progress=True).dataset_id

    overrides = TINY_OVERRIDES if budget == "tiny" else None
    training = {agent: (agent, env, dataset_id, presets.get(agent), overrides, device, out_dir, root, state, state_path, from_shipped, force)
                for agent in names}
    trained: dict[str, tuple[Path, dict[str, Any]]] = {}
    for wave in training_waves(names, warm):  # a warm-started agent trains after the agent it starts from
        for agent in wave:
            source = warm.get(agent)
            if source is None:
                continue
            start = trained[source][0] if source in trained else _finished_run(out_dir, state, source)
            training[agent] += (start,)
            notes.append(f"{agent}: {'the `' + presets[agent] + '` preset, ' if presets.get(agent) else ''}warm-started from "
                         + (f"this run's {source} ({_within(start, out_dir)})." if start else f"the shipped {source} (reproduce {source} too to start from yours)."))
        if jobs > 1 and len(wave) > 1 and ranks == 1 and not from_shipped:  # one single-thread process per agent: trainings are independent
            log(f"[train] {len(wave)} agents, {jobs} at a time")
            trained |= _in_processes(_train_in_worker, {a: training[a] for a in wave}, jobs, report=_training_progress(state_path, wave, log))
        else:
            trained |= {agent: _train_stage(*training[agent], log=log, ranks=ranks) for agent in wave}
    # Planning agents first (they take 10-30x longer): started first, the others fill the workers
    # around them, and the evaluations end closer together (longest first).
    from icrl_bench.agents.registry import plans

    order = sorted(names, key=lambda name: not plans(name))
    results = _evaluate_stage(order, {agent: trained[agent][0] for agent in names}, env, device, out_dir, seeds, n_episodes, n_tasks,
                              force, jobs, log)
    records = [AgentRecord(agent, results[agent], trained[agent][1]) for agent in names]
    records += _reported_by_earlier_runs(env, names, out_dir, state_path, from_shipped, seeds, n_episodes)
    records.sort(key=lambda record: GRID_AGENTS.index(record.agent))

    reduced = " ".join(flag for flag in (f"--seeds {','.join(map(str, seeds))}" if seeds is not None else "",
                                         f"--episodes {n_episodes}" if n_episodes is not None else "",
                                         f"--tasks {n_tasks}" if n_tasks is not None else "") if flag)
    header = (f"Made by `icrl-bench reproduce {env}" + (" --from-shipped" if from_shipped else f" --budget {budget} --device {device}")
              + (f" {reduced}" if reduced else "") + "`" + (": the shipped checkpoints of baselines/" + env if from_shipped else "") + ".")
    if any(not record.results.get("standard", True) for record in records):
        header += (" **Not the standard protocol** (other seeds, fewer episodes or test tasks): a smoke run, not comparable"
                   " with the paper's numbers.")
    if budget == "laptop" and not from_shipped:
        header += " Budget `laptop`: the per-agent CPU budget of baselines/<env>/<agent>.yaml."
    notes += [f"{record.agent}: no `laptop` preset in baselines/{env}/{record.agent}.yaml yet; trained with the `cpu` preset."
              for record in records if record.agent not in names and budget == "laptop" and record.budget.get("preset") == "cpu"]
    if notes:
        header += "\n\n" + "\n".join(f"- {note}" for note in notes)
    report = out_dir / "README.md"
    report.write_text(render_report(env, records, header))
    plot_against_paper(env, records, out_dir / "curves.png")
    log(f"[report] {report}")
    return report


def _reported_by_earlier_runs(env: str, names: list[str], out_dir: Path, state_path: Path, from_shipped: bool,
                              seeds: list[int] | None, n_episodes: int | None) -> list[AgentRecord]:
    """The other agents a partial run (`--agents`) reports too: those this folder has finished training
    (or, `--from-shipped`, whose shipped checkpoints it has) with results still valid for them, so that
    partial runs sharing a folder leave one report of everything it holds."""
    from icrl_bench.agents.registry import default_checkpoint

    state = _read_state(state_path, lambda _: None)  # re-read: another partial run may have written it meanwhile
    records = []
    for agent in GRID_AGENTS:
        if agent in names:
            continue
        if from_shipped:
            checkpoint = default_checkpoint(agent, env)
        else:
            run_dir, _, finished = _recorded_run(out_dir, state, agent, force=False)
            checkpoint = run_dir if finished else None
        if checkpoint is None:
            continue
        kept = _kept_results(agent, checkpoint, out_dir / "results" / f"{agent}.json", seeds, n_episodes, False, lambda _: None)
        if kept is not None:
            records.append(AgentRecord(agent, kept, budget_of(checkpoint, shipped_hardware(checkpoint) if from_shipped else None)))
    return records


def warm_sources(names: list[str], env: str, preset: str | None) -> dict[str, str]:
    """Agents of `names` whose `<preset>-warm` preset (baselines/<env>/<agent>.yaml) starts from another
    grid agent's weights (`train.init_from: baselines/<env>/<source>`): agent -> source. A budget
    reproduces what is shipped, so such an agent trains that preset, from the source this run trains."""
    from icrl_bench.training import load_run_config

    sources: dict[str, str] = {}
    for agent in names if preset is not None else []:  # the paper's config (no preset) trains from scratch
        try:
            config = load_run_config(agent, env, f"{preset}{WARM_SUFFIX}")
        except IcrlBenchError:
            continue  # no warm preset
        source = Path(config.train.init_from).name
        if config.train.init_from and source in GRID_AGENTS and source != agent:
            sources[agent] = source
    return sources


def training_waves(names: list[str], warm: dict[str, str]) -> list[list[str]]:
    """`names` in the order they can train: first every agent that starts from no agent of `names`,
    then those that start from one (one level: a source is never itself warm-started)."""
    later = [agent for agent in names if warm.get(agent) in names]
    return [wave for wave in ([a for a in names if a not in later], later) if wave]


def _finished_run(out_dir: Path, state: dict, agent: str) -> Path | None:
    """`agent`'s finished run in this reproduction folder (an earlier partial run's), if any."""
    run_dir, _, finished = _recorded_run(out_dir, state, agent, force=False)
    return run_dir if finished else None


def _within(path: Path, out_dir: Path) -> str:
    """`path` relative to the reproduction folder where it lies inside it, else absolute (state.json, the report)."""
    path, out_dir = Path(path).resolve(), out_dir.resolve()
    return str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else str(path)


def _train_stage(agent, env, dataset_id, preset, overrides, device, out_dir, root, state, state_path, from_shipped, force,
                 init_from=None, log=print, show_progress=True, ranks=1):
    """`agent`'s trained run: the shipped checkpoint, this folder's finished run, its unfinished run resumed, or a new one.

    One rule for a recorded run, in-process or on ranks: finished -> kept; a checkpoint past step 0 ->
    resumed (a corrupt one is refused by `train`, never silently replaced); none -> trained again."""
    if from_shipped:
        from icrl_bench.agents.registry import default_checkpoint

        shipped = default_checkpoint(agent, env)
        if shipped is None:
            raise IcrlBenchError(f"no shipped {agent} checkpoint for {env} under baselines/{env}/; run without --from-shipped to train one.")
        return shipped, budget_of(shipped, shipped_hardware(shipped))
    run_dir, done, finished = _recorded_run(out_dir, state, agent, force)
    if run_dir is not None and finished:
        log(f"[train] {agent}: finished ({done} steps), skipped")
        return run_dir, budget_of(run_dir)
    resume = run_dir if run_dir is not None and done > 0 else None
    if run_dir is not None and resume is None:
        log(f"[train] {agent}: {run_dir} stopped before its first checkpoint; starting again")
    runs_dir = out_dir / "runs"
    if ranks > 1:
        return _train_on_ranks(agent, env, dataset_id, preset, overrides, device, runs_dir, root, state, state_path, init_from, resume, done,
                               ranks, log)
    return _train_in_process(agent, dataset_id, preset, overrides, device, runs_dir, root, state, state_path, init_from, resume, done, log,
                             show_progress)


def _train_in_process(agent, dataset_id, preset, overrides, device, runs_dir, root, state, state_path, init_from, resume, done, log,
                      show_progress) -> tuple[Path, dict[str, Any]]:
    """`_train_stage` in this process: the run in `resume` continued, or a new one."""
    from icrl_bench.training import train

    if resume is not None:
        log(f"[train] {agent}: resuming {resume} at step {done}")
        result = train(resume=resume, device=device, show_progress=show_progress)
        return result.run_dir, budget_of(result.run_dir)
    log(f"[train] {agent} on {dataset_id} ({'preset ' + preset if preset else 'the paper config'}, {device})")
    t0 = time.perf_counter()
    result = train(agent, dataset_id, preset, device, runs_dir, root, overrides=overrides, show_progress=show_progress, init_from=init_from,
                   on_run_dir=lambda path: _remember(state, state_path, agent, path))
    log(f"[train] {agent}: {result.step} steps in {time.perf_counter() - t0:.0f} s")
    return result.run_dir, budget_of(result.run_dir)


def _train_on_ranks(agent, env, dataset_id, preset, overrides, device, runs_dir, root, state, state_path, init_from, resume, done,
                    ranks, log) -> tuple[Path, dict[str, Any]]:
    """`_train_stage` as `ranks` torchrun ranks in child processes (ranks.py): the run in `resume` continued, or a new one."""
    from icrl_bench.training import load_run_config, parse_overrides
    from icrl_bench.training.ranks import check_resumable_on, per_rank_batch, train_on_ranks
    from icrl_bench.training.run_dir import saved_step

    common = ["--device", device, *(["--threads", "1"] if device == "cpu" else []), *(["--root", str(root)] if root is not None else [])]
    if resume is not None:
        check_resumable_on(resume, ranks)
        log(f"[train] {agent}: resuming {resume} at step {done} on {ranks} torchrun ranks")
        train_on_ranks(ranks, ["--resume", str(resume), *common], runs_dir, agent)
        return resume, budget_of(resume)
    batch = per_rank_batch(load_run_config(agent, env, preset, overrides=parse_overrides(overrides or [])).train.batch_size, ranks)
    args = ["--agent", agent, "--dataset", dataset_id, "--out", str(runs_dir), *common, *(["--preset", preset] if preset else []),
            *(f"--set={pair}" for pair in overrides or []), f"--set=train.batch_size={batch}",
            *(["--init-from", str(init_from)] if init_from is not None else [])]
    log(f"[train] {agent} on {dataset_id} ({'preset ' + preset if preset else 'the paper config'}, {device}, "
        f"{ranks} torchrun ranks x batch {batch})")
    t0 = time.perf_counter()
    run_dir = train_on_ranks(ranks, args, runs_dir, agent, on_run_dir=lambda path: _remember(state, state_path, agent, path))
    log(f"[train] {agent}: {_step_or_zero(run_dir, saved_step)} steps in {time.perf_counter() - t0:.0f} s")
    return run_dir, budget_of(run_dir)


def _recorded_run(out_dir: Path, state: dict, agent: str, force: bool) -> tuple[Path | None, int, bool]:
    """`agent`'s run directory as state.json records it (None if none, or `force`), the step of its
    last checkpoint, and whether it has trained all its steps."""
    from icrl_bench.training.run_dir import RUN_FILE, saved_step

    recorded = state["runs"].get(agent)
    run_dir = out_dir / recorded if recorded and not force else None  # relative to out_dir (an absolute path stays one)
    if run_dir is None or not (run_dir / RUN_FILE).is_file():
        return None, 0, False
    steps = json.loads((run_dir / RUN_FILE).read_text())["config"]["train"]["steps"]
    done = _step_or_zero(run_dir, saved_step)
    return run_dir, done, done >= steps


def _step_or_zero(run_dir: Path, saved_step) -> int:
    from icrl_bench.training.run_dir import latest_checkpoint

    try:
        return saved_step(latest_checkpoint(run_dir))
    except IcrlBenchError:
        return 0


def _remember(state: dict, state_path: Path, agent: str, run_dir: Path) -> None:
    """Record `agent`'s run directory in state.json, so a killed reproduction resumes it: relative to the
    reproduction folder where it lies inside it, so the folder resumes after a move (or a commit and a
    fresh clone). Trainings in parallel processes each hold their own copy of `state`: the file is
    re-read and updated under a lock."""
    import fcntl

    recorded = _within(run_dir, state_path.parent)
    state["runs"][agent] = recorded
    with open(state_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        on_disk = _read_state(state_path, lambda _: None)
        on_disk["runs"][agent] = recorded
        write_json_atomic(state_path, on_disk, indent=2, sort_keys=True)


def _read_state(state_path: Path, log: Any) -> dict[str, Any]:
    """state.json's stages, or none where it is missing or unreadable."""
    state: Any = {}
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            log(f"[state] {state_path} is unreadable; starting the stages afresh")
    if not isinstance(state, dict) or not isinstance(state.get("runs", {}), dict):
        state = {}
    state.setdefault("runs", {})
    return state


def _planned_by_another_revision(agent: dict) -> bool:
    """Results whose planning code has changed since (results from before revisions were recorded count as current)."""
    from icrl_bench.agents.planner import PLANNER_REVISION

    recorded = agent.get("planner_revision")
    return recorded is not None and recorded != PLANNER_REVISION


def _in_processes(stage: Any, args_of: dict[str, tuple], jobs: int, report: Any = None, every_s: float = 60.0) -> dict[str, Any]:
    """`stage(*args_of[agent])` for every agent, `jobs` spawned processes at a time; `report()` every `every_s` seconds meanwhile.

    Each process runs one stage and exits, and stops itself (SIGTERM: a training checkpoints and
    stops at a step boundary) when this process dies: a killed `reproduce` leaves no worker behind
    training, or taking up the next queued agent, beside the `reproduce` that resumes it.
    """
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
                             initializer=_stop_when_orphaned, initargs=(os.getpid(),)) as pool:
        futures = {agent: pool.submit(stage, *args) for agent, args in args_of.items()}
        while wait(futures.values(), timeout=every_s, return_when=FIRST_EXCEPTION).not_done:
            if any(future.done() and future.exception() for future in futures.values()):
                break  # result() below raises it
            if report is not None:
                report()
        return {agent: future.result() for agent, future in futures.items()}


def _stop_when_orphaned(parent: int, every_s: float = 1.0) -> None:
    """In a worker: SIGTERM itself once `parent` is gone (it was killed; the worker is re-parented)."""
    import signal
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="stop-when-orphaned").start()


def _training_progress(state_path: Path, agents: list[str], log: Any) -> Any:
    """A report of the parallel trainings' steps (from their metrics.jsonl), logged when one has done
    another tenth: the workers draw no progress bars of their own (two would garble one terminal)."""
    logged: dict[str, int] = {}

    def report() -> None:
        runs = _read_state(state_path, lambda _: None)["runs"]
        parts, moved = [], False
        for agent in agents:
            step_total = _run_progress(state_path.parent / runs[agent]) if agent in runs else None
            if step_total is None:
                continue
            step, total = step_total
            tenth = 10 * step // max(total, 1)
            moved |= logged.get(agent) != tenth
            logged[agent] = tenth
            parts.append(f"{agent} {step}/{total}")
        if moved:
            log("[train] " + ", ".join(parts))

    return report


def _run_progress(run_dir: Path) -> tuple[int, int] | None:
    """(last logged step, total steps) of a run directory, or None before its first metrics line."""
    try:
        total = json.loads((run_dir / "run.json").read_text())["config"]["train"]["steps"]
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except (OSError, ValueError, KeyError):
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"]), int(total)
        except (ValueError, KeyError, TypeError):
            continue  # a line being written
    return None


def _train_in_worker(*training) -> tuple[Path, dict[str, Any]]:
    device = training[5]
    with cpu_threads(1 if device == "cpu" else None):  # one core per training: two at once beat one on two threads
        return _train_stage(*training, log=print, show_progress=False)  # the parent reports every run's steps


def _evaluate_stage(agents: list[str], checkpoints: dict[str, Path], env: str, device: str, out_dir: Path, seeds: list[int] | None,
                    n_episodes: int | None, n_tasks: int | None, force: bool, jobs: int, log: Any) -> dict[str, dict]:
    """Every agent's results under the env's protocol: the kept ones where still valid, else evaluated.

    On a CPU, for the envs of `EVAL_BY_SEED` (hours), every agent's seeds are shards in one pool of
    `jobs` single-thread processes, each kept in results/.shards/ as it finishes, so a stopped run
    continues seed by seed; the curves are those of `icrl-bench evaluate --executor local`.
    Elsewhere (Darkroom; any GPU: minutes) each agent is one batch, `jobs` agents at a time.
    """
    results_dir = out_dir / "results"
    results = {agent: kept for agent in agents
               if (kept := _kept_results(agent, checkpoints[agent], results_dir / f"{agent}.json", seeds, n_episodes, force, log))}
    todo = [agent for agent in agents if agent not in results]
    if not todo:
        return results
    if device == "cpu" and env in EVAL_BY_SEED:
        from icrl_bench.bench.harness import evaluate_sharded, prepare_agent
        from icrl_bench.executors import ExecutorConfig

        shard_dir = results_dir / ".shards"
        if force:  # redo: no seed a previous run kept
            shutil.rmtree(shard_dir, ignore_errors=True)
        log(f"[evaluate] {', '.join(todo)} on {env} (cpu): seed by seed, {jobs} at a time; finished seeds are kept in {shard_dir}")
        with cpu_threads(1):  # every shard on one core: on a busy CPU 2 threads were 3x slower
            prepared = [prepare_agent(agent, checkpoints[agent], env) for agent in todo]
            evaluate_sharded(prepared, ExecutorConfig("local", workers=jobs), seeds, n_episodes, n_tasks, shard_dir=shard_dir,
                             progress=_log_progress(log, f"[evaluate] {len(todo)} agents"),
                             save=lambda made: results.update({agent: _save_results(agent, r, results_dir) for agent, r in zip(todo, made, strict=True)}))
        return results
    evaluation = {agent: (agent, checkpoints[agent], env, device, results_dir, seeds, n_episodes, n_tasks) for agent in todo}
    if jobs > 1 and len(todo) > 1:  # one process per agent: evaluations are independent
        log(f"[evaluate] {len(todo)} agents, {jobs} at a time")
        results.update(_in_processes(_evaluate_in_worker, evaluation, jobs))
    else:
        results.update({agent: _evaluate_one_batch(*evaluation[agent], log) for agent in todo})
    return results


def _kept_results(agent: str, checkpoint: Path, path: Path, seeds: list[int] | None, n_episodes: int | None, force: bool,
                  log: Any) -> dict | None:
    """`agent`'s results at `path` if they are of this checkpoint, seeds, episodes and planner (and not `force`d)."""
    from icrl_bench.agents.checkpoint import load_checkpoint
    from icrl_bench.agents.planner import PLANNER_REVISION

    if force or not path.is_file():
        return None
    weights = load_checkpoint(checkpoint, agent).meta["weights_sha256"]  # verified against the file
    existing = json.loads(path.read_text())
    same = existing["agent"].get("checkpoint_hash") == weights and (seeds is None or existing["seeds"] == seeds)
    if _planned_by_another_revision(existing["agent"]):
        log(f"[evaluate] {agent}: results were planned by planner revision {existing['agent']['planner_revision']}, now {PLANNER_REVISION}: re-evaluating")
        return None
    if same and (n_episodes is None or existing["n_episodes"] == n_episodes):
        log(f"[evaluate] {agent}: results for this checkpoint exist, skipped")
        return existing
    return None


def _log_progress(log: Any, label: str) -> Any:
    """A progress callback that logs every tenth of the work."""
    logged = -1

    def progress(done: int, total: int) -> None:
        nonlocal logged
        tenth = 10 * done // max(total, 1)
        if tenth != logged:
            logged = tenth
            log(f"{label}: {100 * done // max(total, 1)}%")

    return progress


def _evaluate_in_worker(*evaluation) -> dict:
    return _evaluate_one_batch(*evaluation, print)


def _evaluate_one_batch(agent, checkpoint, env, device, results_dir, seeds, n_episodes, n_tasks, log) -> dict:
    from icrl_bench.bench.harness import evaluate

    log(f"[evaluate] {agent} on {env} ({device})")
    settings = {"device": device} if device != "cpu" else {}
    with cpu_threads(1 if device == "cpu" else None):  # as `icrl-bench evaluate` does: on a busy CPU 2 threads were 3x slower
        results = evaluate(agent, checkpoint, env, seeds, n_episodes, settings, n_tasks=n_tasks)
    return _save_results(agent, results, results_dir)


def _save_results(agent: str, results: dict, results_dir: Path) -> dict:
    """`results` as results/<agent>.json and .png (the report's names)."""
    from icrl_bench.bench.harness import save_results

    path = results_dir / f"{agent}.json"
    json_path, _ = save_results(results, results_dir)
    os.replace(json_path, path)
    json_path.with_suffix(".png").replace(path.with_suffix(".png"))
    return results
