"""The evaluation harness: one agent, one protocol, every test task x seed in one batched loop.

    >>> from icrl_bench.bench.harness import evaluate
    >>> results = evaluate("oracle", env="darkroom")          # results JSON as a dict
    >>> results["summary"]["normalized_score"]["mean"]
    100.0

The harness knows agents only through the Agent protocol (reset / act / observe) and envs only
through `icrl_bench.bench.harness_envs` (the batched grid world, or one Gymnasium env per row for
Meta-World); it never imports the trainer. Rows of the batch are ordered [seed, task]: row
`s * n_tasks + t` is test task `t` in seed replica `s`. Every episode runs to the protocol's
horizon, so all rows end together, are reset together, and the episode returns and successes
fall out as [seed, task, episode] arrays, the raw material of every metric (`icrl_bench.bench.metrics`).
Grid agents act with integers [num_envs]; Meta-World agents with floats [num_envs, action_dim]
(`TaskInfo.num_actions == 0`), which the env clips to its box.

What an agent may expose besides the protocol, all optional attributes read once per run:
`env` (the env its checkpoint was trained on; a mismatch is refused), `checkpoint_hash`,
`dataset_id`, `dataset_hash` (recorded in the results; the leaderboard checks the dataset hash),
and `forward_passes` (an int counter of model forward passes; reported per action).

Randomness: one integer is derived from the seed list; the harness seeds torch's global RNG
with it (inside `torch.random.fork_rng`, so the caller's state is left alone) and hands it to
the agent's optional `set_seed(seed)` before `reset`, for agents that keep their own generator.
So the same agent, checkpoint and seed list give the same curves again, and another seed list
gives other draws.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icrl_bench.agents.base import Agent
from icrl_bench.bench.harness_envs import make_eval_envs
from icrl_bench.bench.protocols import EvalProtocol, get_protocol
from icrl_bench.bench.reporting import RESULTS_SCHEMA_VERSION, dumps_results
from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig
from icrl_bench.fileio import atomic_path, write_atomic
from icrl_bench.paths import repo_relative
from icrl_bench.provenance import provenance

RETURN_DECIMALS = 4  # non-integer (Meta-World) returns are stored, and scored, to this precision
ProgressFn = Callable[[int, int], None]
"""Called with (episodes done, episodes in all) after every episode."""


@dataclass
class Rollout:
    """What one run of the protocol produced, before any summarizing."""

    returns: np.ndarray  # [seed, task, episode] float64
    success: np.ndarray | None  # [seed, task, episode] bool, for envs with success
    steps: int  # batched steps (decisions for all envs at once)
    num_envs: int
    act_seconds: float
    observe_seconds: float
    env_seconds: float
    total_seconds: float
    forward_passes: int | None  # the agent's own count, if it keeps one


def run_protocol(
    agent: Agent,
    protocol: EvalProtocol,
    seeds: list[int] | None = None,
    n_episodes: int | None = None,
    progress: ProgressFn | None = None,
    n_tasks: int | None = None,
    task_positions: list[int] | None = None,
    seed_key: int | None = None,
) -> Rollout:
    """Run `agent` from an empty context on every test task x seed for `n_episodes` episodes.

    `n_tasks` keeps only the first test tasks (a smoke run; it cannot be submitted).
    `task_positions` (positions in that task list) and `seed_key` (instead of the seed list's)
    make the run one shard of a sharded evaluation (`icrl_bench.bench.harness_sharded`).
    """
    seeds = list(protocol.seeds if seeds is None else seeds)
    n_episodes = protocol.n_episodes if n_episodes is None else n_episodes
    if not seeds or n_episodes <= 0:
        raise IcrlBenchError(f"need at least one seed and one episode; got seeds {seeds} and {n_episodes} episodes.")
    tasks, params = _test_tasks(protocol, n_tasks)
    if task_positions is not None:
        tasks, params = tasks[list(task_positions)], params[list(task_positions)]
    rows = np.tile(params, (len(seeds), 1))  # [seed * task, k], row s * n_tasks + t
    envs = make_eval_envs(protocol.env, np.tile(tasks, len(seeds)), rows, protocol.horizon)
    num_envs = envs.num_envs
    returns = np.zeros((n_episodes, num_envs))
    success = np.zeros((n_episodes, num_envs), dtype=bool)
    timers = {"act": 0.0, "observe": 0.0, "env": 0.0}
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            key = _seed_key(seeds) if seed_key is None else seed_key
            torch.manual_seed(key)
            if callable(getattr(agent, "set_seed", None)):
                agent.set_seed(key)
            agent.reset(num_envs, envs.task_info)
            passes_before = getattr(agent, "forward_passes", None)
            steps = 0
            for episode in range(n_episodes):
                t0 = time.perf_counter()
                obs = envs.reset()
                timers["env"] += time.perf_counter() - t0
                done = np.zeros(num_envs, dtype=bool)
                while not done.all():
                    t0 = time.perf_counter()
                    raw = agent.act(obs)
                    t1 = time.perf_counter()
                    action = envs.action(raw)
                    step = envs.step(action)
                    t2 = time.perf_counter()
                    agent.observe(obs, action, step.reward, step.next_obs, step.done)
                    t3 = time.perf_counter()
                    timers["act"] += t1 - t0
                    timers["env"] += t2 - t1
                    timers["observe"] += t3 - t2
                    steps += 1
                    returns[episode] += step.reward
                    success[episode] |= step.success
                    obs, done = step.next_obs, step.done
                if progress is not None:
                    progress(episode + 1, n_episodes)
            passes_after = getattr(agent, "forward_passes", None)
    finally:
        envs.close()
    forward_passes = None
    if isinstance(passes_before, int) and isinstance(passes_after, int):
        forward_passes = passes_after - passes_before
    shape = (len(seeds), len(tasks), n_episodes)
    return Rollout(
        returns=returns.T.reshape(shape),
        success=success.T.reshape(shape) if protocol.has_success else None,
        steps=steps,
        num_envs=num_envs,
        act_seconds=timers["act"],
        observe_seconds=timers["observe"],
        env_seconds=timers["env"],
        total_seconds=time.perf_counter() - start,
        forward_passes=forward_passes,
    )


def _test_tasks(protocol: EvalProtocol, n_tasks: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The canonical indices [n] and parameters [n, k] of the run's test tasks."""
    tasks, params = protocol.test_tasks(), protocol.test_task_params()
    if n_tasks is None:
        return tasks, params
    if not 1 <= n_tasks <= len(tasks):
        raise IcrlBenchError(f"--tasks must be in 1..{len(tasks)} ({protocol.name} has {len(tasks)} test tasks), got {n_tasks}.")
    return tasks[:n_tasks], params[:n_tasks]


def evaluate(
    agent: str,
    checkpoint: str | os.PathLike | None = None,
    env: str = "darkroom",
    seeds: list[int] | None = None,
    n_episodes: int | None = None,
    agent_settings: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    beam_k: int | None = None,
    n_tasks: int | None = None,
    executor: ExecutorConfig | None = None,
    task_groups: int = 1,
) -> dict:
    """Make agent `agent` (by registry name or `module:Class`), run the protocol, return results.

    Args:
        env: an env name (its current protocol) or a protocol name such as `darkroom/v1`.
        seeds, n_episodes: the protocol's unless given (a non-standard run cannot be submitted).
        n_tasks: only the first test tasks (a smoke run; cannot be submitted either).
        agent_settings: keyword settings for the agent's constructor.
        beam_k: DICP's beam size (0 = no planning; default: the agent's, the paper's 10 for dicp-*).
            Planning needs a world model, so a positive beam for any other agent is refused.
        executor, task_groups: run sharded, one job per seed x group of test tasks, on that
            executor (`icrl_bench.bench.harness_sharded`); None: one batch in this process.
    """
    from icrl_bench.agents.registry import make_agent, plans

    protocol = get_protocol(env)
    settings = dict(agent_settings or {})
    if beam_k is not None:
        if beam_k < 0:
            raise IcrlBenchError(f"--beam must be >= 0 (0 = no planning), got {beam_k}.")
        if plans(agent):
            settings["beam_k"] = beam_k
        elif beam_k > 0:
            raise IcrlBenchError(f"--beam {beam_k}: only the DICP agents (dicp-ad, dicp-dpt, dicp-idt) plan; {agent!r} has no world model (use --beam 0 or a dicp-* agent).")
    instance = make_agent(agent, checkpoint, env=protocol.env, **settings)
    # Record how DICP planned, defaults included, so results are explicit: the beam on the grid
    # worlds, the number of sampled candidates on continuous-action envs.
    for knob in ("beam_k", "samples"):
        if plans(agent) and getattr(instance, knob, None):
            settings[knob] = getattr(instance, knob)
    if executor is not None:
        from icrl_bench.bench.harness_sharded import evaluate_sharded

        return evaluate_sharded(instance, protocol, agent, checkpoint, seeds, n_episodes, settings, progress, n_tasks, executor, task_groups)
    return evaluate_agent(instance, protocol, agent, checkpoint, seeds, n_episodes, settings, progress, n_tasks)


def evaluate_agent(
    agent: Agent,
    protocol: EvalProtocol,
    name: str,
    checkpoint: str | os.PathLike | None = None,
    seeds: list[int] | None = None,
    n_episodes: int | None = None,
    settings: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    n_tasks: int | None = None,
    rollout: Rollout | None = None,
) -> dict:
    """Run an already-made agent under `protocol` and build its results document.

    A `rollout` already run (the merged shards of a sharded evaluation) is documented as is.
    """
    record, seeds = check_evaluation(agent, protocol, name, seeds)
    n_episodes = protocol.n_episodes if n_episodes is None else n_episodes
    tasks, params = _test_tasks(protocol, n_tasks)
    rollout = run_protocol(agent, protocol, seeds, n_episodes, progress, n_tasks) if rollout is None else rollout
    # Grid-world returns are whole numbers, stored as integers (half the size); Meta-World's are
    # stored to 1e-4, and every metric is computed from exactly what is stored.
    integral = (rollout.returns % 1 == 0).all()
    returns = rollout.returns.astype(int) if integral else np.round(rollout.returns, RETURN_DECIMALS)
    summary = protocol.summarize(returns, rollout.success)
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "protocol": protocol.describe(),
        "env": protocol.env,
        "agent": {
            "name": name,
            "checkpoint": portable_path(checkpoint),
            "checkpoint_hash": record["checkpoint_hash"],
            "dataset_id": record["dataset_id"],
            "dataset_hash": record["dataset_hash"],
            "settings": dict(settings or {}),
            **({"planner_revision": revision} if (revision := getattr(agent, "planner_revision", None)) is not None else {}),
        },
        "standard": seeds == list(protocol.seeds) and n_episodes == protocol.n_episodes and len(tasks) == protocol.n_test_tasks,
        "test_tasks": {"indices": [int(i) for i in tasks], "params": params.tolist()},
        "seeds": seeds,
        "n_episodes": n_episodes,
        "curves": {
            "return": returns.tolist(),
            "success": None if rollout.success is None else rollout.success.astype(int).tolist(),
        },
        "summary": summary,
        "cost": {
            "num_envs": rollout.num_envs,
            "steps": rollout.steps,
            "env_steps": rollout.steps * rollout.num_envs,
            "act_s_per_step": rollout.act_seconds / rollout.steps,
            "act_s_per_action": rollout.act_seconds / (rollout.steps * rollout.num_envs),
            "observe_s_per_step": rollout.observe_seconds / rollout.steps,
            "env_s_per_step": rollout.env_seconds / rollout.steps,
            "total_s": rollout.total_seconds,
            "forward_passes_per_action": None if rollout.forward_passes is None else rollout.forward_passes / rollout.steps,
            "torch_threads": torch.get_num_threads(),
        },
        "command": reproduce_command(name, checkpoint, protocol, seeds, n_episodes, settings or {}, n_tasks),
        "provenance": provenance(),
    }


def check_evaluation(agent: Agent, protocol: EvalProtocol, name: str, seeds: list[int] | None) -> tuple[dict, list[int]]:
    """The agent's record and the run's seeds, once the agent is known to fit the protocol's env."""
    record = agent_record(agent)
    trained_on = record["env"]
    if trained_on is not None and trained_on != protocol.env:
        raise IcrlBenchError(
            f"agent {name!r} was trained on {trained_on} but is evaluated on {protocol.env}; use --env {trained_on} or a {protocol.env} checkpoint."
        )
    seeds = list(protocol.seeds if seeds is None else seeds)
    if len(set(seeds)) != len(seeds):
        raise IcrlBenchError(f"seeds must be distinct, got {seeds}.")
    return record, seeds


def portable_path(path: str | os.PathLike | None) -> str | None:
    """A checkpoint path as results record it: relative to the repository when inside it (a shipped
    baseline reads the same on every machine), else as given."""
    return None if path is None else repo_relative(path)


def reproduce_command(
    name: str, checkpoint, protocol: EvalProtocol, seeds: list[int], n_episodes: int, settings: dict, n_tasks: int | None = None
) -> str:
    """The CLI command that re-runs an evaluation."""
    parts = ["icrl-bench evaluate", f"--agent {name}", f"--env {protocol.env}"]
    if checkpoint is not None:
        parts.append(f"--checkpoint {portable_path(checkpoint)}")
    if seeds != list(protocol.seeds):
        parts.append("--seeds " + ",".join(map(str, seeds)))
    if n_episodes != protocol.n_episodes:
        parts.append(f"--episodes {n_episodes}")
    if n_tasks is not None and n_tasks != protocol.n_test_tasks:
        parts.append(f"--tasks {n_tasks}")
    parts += [f"--set {k}={json.dumps(v)}" for k, v in sorted(settings.items())]
    return " ".join(parts)


def results_stem(results: dict) -> str:
    """File name stem of a results document: `<agent>-<env>` (plus a tag for non-standard runs)."""
    agent = results["agent"]["name"].replace(":", "-").replace(".", "-").replace("/", "-")
    stem = f"{agent}-{results['env']}"
    if not results.get("standard", True):
        stem += f"-s{len(results['seeds'])}-e{results['n_episodes']}"
        n_tasks = len(results["test_tasks"]["indices"])
        stem += f"-t{n_tasks}" if n_tasks != results["protocol"]["n_test_tasks"] else ""
    return stem


def save_results(results: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<stem>.json` and its learning-curve plot `<stem>.png` atomically into `out_dir`."""
    from icrl_bench.bench.reporting import plot_learning_curves  # matplotlib only when plotting

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(results)
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    write_atomic(json_path, dumps_results(results).encode())
    with atomic_path(png_path) as tmp:
        plot_learning_curves([results], tmp)
    return json_path, png_path


def agent_record(agent: Agent) -> dict[str, str | None]:
    """The env, checkpoint hash and dataset an agent was made from, as far as it says.

    Explicit attributes win; otherwise a checkpoint-backed agent's `meta` (the checkpoint JSON:
    `weights_sha256`, `dataset.{id, content_hash, env}`) is read.
    """
    meta = getattr(agent, "meta", None)
    meta = meta if isinstance(meta, dict) else {}
    dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    fallback = {
        "env": dataset.get("env"),
        "checkpoint_hash": meta.get("weights_sha256"),
        "dataset_id": dataset.get("id"),
        "dataset_hash": dataset.get("content_hash"),
    }
    record = {}
    for key, default in fallback.items():
        value = getattr(agent, key, None)
        value = default if value is None else value
        record[key] = None if value is None else str(value)
    return record


def _seed_key(seeds: list[int]) -> int:
    """One seed for a whole run, determined by the seed list (31 bits: numpy and SB3 take < 2**32)."""
    return int.from_bytes(hashlib.sha256(json.dumps(list(map(int, seeds))).encode()).digest()[:4], "little") & 0x7FFFFFFF
