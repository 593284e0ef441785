"""The evaluation harness: make an agent, run the protocol on it, document the run as results.

    >>> from icrl_bench.bench.harness import evaluate
    >>> results = evaluate("oracle", env="darkroom")          # results JSON as a dict
    >>> results["summary"]["normalized_score"]["mean"]
    100.0

The run itself is `icrl_bench.bench.rollout.run_protocol` (every test task x seed in one batch),
or its shards on an executor (`icrl_bench.bench.harness_sharded`); either way this module turns
the rollout into one results document (`icrl_bench.bench.results.Results`), summarized from its curves.

What an agent may expose besides the protocol, all optional attributes read once per run
(`icrl_bench.agents.base.agent_record`): `env` (the env its checkpoint was trained on; a mismatch
is refused), `checkpoint_hash`, `dataset_id`, `dataset_hash` (recorded in the results; the
leaderboard checks the dataset hash), and `forward_passes` (an int counter of model forward
passes; reported per action).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icrl_bench.agents.base import Agent, agent_record, privileged_settings
from icrl_bench.bench.harness_sharded import Sharded, ShardedEvaluation, discard_shards, run_sharded
from icrl_bench.bench.protocols import EvalProtocol, get_protocol, names_validation_goals
from icrl_bench.bench.results import RESULTS_SCHEMA_VERSION, Results, dumps_results
from icrl_bench.bench.rollout import ProgressFn, Rollout, protocol_tasks, run_protocol
from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig, require
from icrl_bench.fileio import atomic_path, write_atomic
from icrl_bench.paths import repo_relative
from icrl_bench.provenance import provenance

RETURN_DECIMALS = 4  # non-integer (Meta-World) returns are stored, and scored, to this precision


@dataclass(frozen=True)
class PreparedAgent:
    """An agent made for a protocol, with the checkpoint and settings its results will name."""

    name: str
    instance: Agent
    protocol: EvalProtocol
    checkpoint: str | os.PathLike | None
    settings: dict[str, Any]


def prepare_agent(
    agent: str,
    checkpoint: str | os.PathLike | None = None,
    env: str = "darkroom",
    agent_settings: dict[str, Any] | None = None,
    beam_k: int | None = None,
) -> PreparedAgent:
    """Make agent `agent` (registry name or `module:Class`) for `env`'s protocol (arguments as `evaluate`'s)."""
    from icrl_bench.agents.registry import checkpoint_for, make_agent, plans

    protocol = get_protocol(env)
    settings = dict(agent_settings or {})
    if beam_k is not None:
        if beam_k < 0:
            raise IcrlBenchError(f"--beam must be >= 0 (0 = no planning), got {beam_k}.")
        if plans(agent):
            settings["beam_k"] = beam_k
        elif beam_k > 0:
            raise IcrlBenchError(f"--beam {beam_k}: only the DICP agents (dicp-ad, dicp-dpt, dicp-idt) plan; {agent!r} has no world model (use --beam 0 or a dicp-* agent).")
    # The shipped default, named: the results keep pointing at these weights after another becomes the default.
    checkpoint = checkpoint_for(agent, checkpoint, protocol.env)
    instance = make_agent(agent, checkpoint, env=protocol.env, **settings)
    # Record how DICP planned, defaults included, so results are explicit: the beam on the grid
    # worlds, the number of sampled candidates on continuous-action envs.
    for knob in ("beam_k", "samples"):
        if plans(agent) and getattr(instance, knob, None):
            settings[knob] = getattr(instance, knob)
    return PreparedAgent(agent, instance, protocol, checkpoint, settings)


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
    shard_dir: str | os.PathLike | None = None,
    save: Callable[[dict], Any] | None = None,
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
        shard_dir: with an executor, keep finished shards there so a stopped run continues.
        save: called with the results before the kept shards are deleted (a crash while saving
            leaves them to resume from).
    """
    prepared = prepare_agent(agent, checkpoint, env, agent_settings, beam_k)
    if executor is None:
        results = evaluate_agent(prepared.instance, prepared.protocol, agent, prepared.checkpoint, seeds, n_episodes, prepared.settings,
                                 progress, n_tasks)
        if save is not None:
            save(results)
        return results
    (results,) = evaluate_sharded([prepared], executor, seeds, n_episodes, n_tasks, task_groups, shard_dir, progress,
                                  save=None if save is None else lambda made: save(made[0]))
    return results


def evaluate_sharded(
    agents: list[PreparedAgent],
    executor: ExecutorConfig,
    seeds: list[int] | None = None,
    n_episodes: int | None = None,
    n_tasks: int | None = None,
    task_groups: int = 1,
    shard_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    save: Callable[[list[dict]], Any] | None = None,
) -> list[dict]:
    """Several agents' evaluations as shards in one pool on `executor`, each one's results as `evaluate`'s.

    Every agent's shards share the workers (in the order given: the longest first), so the
    evaluations end together; each agent's curves are those of its own sharded `evaluate`.
    The kept shards are deleted once every agent's results are merged and `save`d: a refused
    merge or a failed save leaves them all to resume from.
    """
    require(executor)  # a missing extra or an unreachable cluster, before any work
    evaluations = []
    for prepared in agents:  # every agent checked before any shard starts
        record, run_seeds = check_evaluation(prepared.instance, prepared.protocol, prepared.name, seeds)
        evaluations.append(ShardedEvaluation(prepared.protocol, prepared.name, prepared.checkpoint, record["checkpoint_hash"],
                                             run_seeds, n_episodes, prepared.settings, n_tasks))
    runs = run_sharded(evaluations, executor, task_groups, None if shard_dir is None else Path(shard_dir), progress)
    results = [evaluate_agent(prepared.instance, prepared.protocol, prepared.name, prepared.checkpoint, evaluation.seeds, n_episodes,
                              prepared.settings, None, n_tasks, sharded=sharded)
               for prepared, evaluation, sharded in zip(agents, evaluations, runs, strict=True)]
    if save is not None:
        save(results)
    discard_shards(runs)
    return results


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
    sharded: Sharded | None = None,
) -> dict:
    """Run an already-made agent under `protocol` and build its results document (`Results`, as JSON data).

    A `sharded` run (the merged shards of `harness_sharded.run_sharded`) is documented as is, with
    its sharding in the cost and in the command that reproduces it.
    """
    record, seeds = check_evaluation(agent, protocol, name, seeds)
    n_episodes = protocol.n_episodes if n_episodes is None else n_episodes
    tasks, params = protocol_tasks(protocol, n_tasks)
    rollout = run_protocol(agent, protocol, seeds, n_episodes, progress, n_tasks) if sharded is None else sharded.rollout
    # Grid-world returns are whole numbers, stored as integers (half the size); Meta-World's are
    # stored to 1e-4, and every metric is computed from exactly what is stored.
    integral = (rollout.returns % 1 == 0).all()
    returns = rollout.returns.astype(int) if integral else np.round(rollout.returns, RETURN_DECIMALS)
    revision = getattr(agent, "planner_revision", None)
    results = Results(
        schema_version=RESULTS_SCHEMA_VERSION,
        protocol=protocol.describe(),
        env=protocol.env,
        agent={
            "name": name,
            "checkpoint": portable_path(checkpoint),
            "checkpoint_hash": record["checkpoint_hash"],
            "dataset_id": record["dataset_id"],
            "dataset_hash": record["dataset_hash"],
            "settings": dict(settings or {}),
            **({"planner_revision": revision} if revision is not None else {}),
        },
        standard=(seeds == list(protocol.seeds) and n_episodes == protocol.n_episodes and len(tasks) == protocol.n_test_tasks
                  and protocol.goals == "test" and not privileged_settings(settings or {})),
        test_tasks={"indices": [int(i) for i in tasks], "params": params.tolist()},
        seeds=seeds,
        n_episodes=n_episodes,
        curves={"return": returns.tolist(), "success": None if rollout.success is None else rollout.success.astype(int).tolist()},
        summary=protocol.summarize(returns, rollout.success),
        cost=run_cost(rollout, sharded),
        command=reproduce_command(name, checkpoint, protocol, seeds, n_episodes, settings or {}, n_tasks) + (sharded.command if sharded else ""),
        provenance=provenance(),
    )
    return results.to_dict()


def run_cost(rollout: Rollout, sharded: Sharded | None = None) -> dict[str, Any]:
    """What a run cost: batched steps, seconds per step and per action (`ResultsCost`); a sharded run adds how it was sharded."""
    return {
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
        **(sharded.cost if sharded is not None else {}),
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
    parts = ["icrl-bench evaluate", f"--agent {name}", f"--env {protocol.env}"] + (["--goals validation"] if protocol.goals == "validation" else [])
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
    stem = f"{agent}-{results['env']}" + ("-validation-goals" if names_validation_goals(results["protocol"]["name"]) else "")
    protocol, n_tasks = results["protocol"], len(results["test_tasks"]["indices"])
    if results["seeds"] != protocol["seeds"] or results["n_episodes"] != protocol["n_episodes"] or n_tasks != protocol["n_test_tasks"]:
        stem += f"-s{len(results['seeds'])}-e{results['n_episodes']}"
        stem += f"-t{n_tasks}" if n_tasks != protocol["n_test_tasks"] else ""
    return stem + ("-privileged" if privileged_settings(results["agent"].get("settings", {})) else "")


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


