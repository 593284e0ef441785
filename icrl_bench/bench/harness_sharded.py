"""A sharded evaluation: one job per seed x group of test tasks, on any executor, merged.

Why: the paper-size Meta-World protocols take hours of one core (ML1 pick-place: 50 goals x
3 seeds x 2,000 episodes, ~4 h). Shards run anywhere the build's jobs run (local processes or
a Ray cluster) and merge into one rollout, with the curves `[seed, task, episode]` in the
protocol's order; the harness documents it as one results document, the summary recomputed from
the curves as always, and the sharding recorded in `cost` and in the `command` that reproduces
the run.

What a shard's curves depend on: the agent, its checkpoint and settings, the seed and the
shard's tasks, never the executor, the worker or the other shards. Each shard seeds the
harness with its own key: a whole-seed shard (`task_groups=1`) with the key of a run of that
one seed (so its curves equal `icrl-bench evaluate --seeds SEED`), a smaller group with a key
of (seed, its task positions). So a sharded run gives the same JSON curves on every executor
and worker count. It is not the curves of the one-batch run of all seeds together: that run
draws every row's actions from one generator seeded by the whole seed list, so which rows
share a batch changes the draws of a stochastic agent (a deterministic agent, the oracle,
gives the same curves either way). The statistics are the same; the draws are not.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icrl_bench.agents.base import agent_record
from icrl_bench.bench.protocols import EvalProtocol
from icrl_bench.bench.rollout import ProgressFn, Rollout, protocol_tasks, run_protocol, seed_list_key
from icrl_bench.devices import cpu_threads
from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig, open_executor
from icrl_bench.executors.driver import Job, RetryPolicy, run_jobs


@dataclass(frozen=True)
class Shard:
    """One job of a sharded evaluation: one seed, a contiguous group of the run's test tasks."""

    seed_index: int  # position in the run's seed list
    seed: int
    positions: tuple[int, ...]  # positions in the run's test-task list

    def key(self, n_tasks: int) -> int:
        """The harness seed of this shard: a whole seed draws as a run of that seed alone does."""
        if len(self.positions) == n_tasks:
            return seed_list_key([self.seed])
        text = json.dumps({"seed": self.seed, "task_positions": list(self.positions)})
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def plan_shards(seeds: list[int], n_tasks: int, task_groups: int) -> list[Shard]:
    """Seeds x `task_groups` balanced contiguous groups of the `n_tasks` test tasks."""
    if not 1 <= task_groups <= n_tasks:
        raise IcrlBenchError(f"--task-groups must be in 1..{n_tasks} (the run's test tasks), got {task_groups}.")
    groups = [tuple(int(p) for p in group) for group in np.array_split(np.arange(n_tasks), task_groups)]
    return [Shard(i, seed, group) for i, seed in enumerate(seeds) for group in groups]


def run_shard(spec: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """One shard, in a worker: make the agent from its name and checkpoint, run, return the rollout.

    Every node must see the checkpoint at the same path (a shared file system, or a copy).
    """
    from icrl_bench.agents.registry import make_agent
    from icrl_bench.bench.protocols import get_protocol

    protocol = get_protocol(spec["protocol"])
    with cpu_threads(spec["threads"]):
        agent = make_agent(spec["agent"], spec["checkpoint"], env=protocol.env, **spec["settings"])
        rollout = run_protocol(agent, protocol, [spec["seed"]], spec["n_episodes"],
                               progress=None if progress is None else lambda done, total: progress(1),
                               n_tasks=spec["n_tasks"], task_positions=list(spec["positions"]), seed_key=spec["seed_key"])
    return {"rollout": rollout, "record": agent_record(agent)}


@dataclass(frozen=True)
class Sharded:
    """A sharded run: the merged rollout, and how it was sharded (for the results' cost and command)."""

    rollout: Rollout
    cost: dict[str, Any]  # executor, workers, shards, task_groups, retried_shards
    command: str  # what the reproducing command adds


def run_sharded(
    protocol: EvalProtocol,
    name: str,
    checkpoint: str | os.PathLike | None,
    checkpoint_hash: str | None,
    seeds: list[int],
    n_episodes: int | None,
    settings: dict[str, Any],
    progress: ProgressFn | None,
    n_tasks: int | None,
    executor: ExecutorConfig,
    task_groups: int = 1,
) -> Sharded:
    """Run the protocol as seeds x task-group shards on `executor` and merge them into one rollout.

    The caller has checked the agent (env, checkpoint) before; every shard must report
    `checkpoint_hash`, the checkpoint the caller's own copy of the agent was made from.
    """
    if not seeds:
        raise IcrlBenchError("need at least one seed; got none.")
    n_episodes = protocol.n_episodes if n_episodes is None else n_episodes
    if n_episodes <= 0:
        raise IcrlBenchError(f"need at least one episode; got {n_episodes}.")
    tasks, _ = protocol_tasks(protocol, n_tasks)
    shards = plan_shards(seeds, len(tasks), task_groups)
    base = {"protocol": protocol.name, "agent": name, "checkpoint": None if checkpoint is None else str(checkpoint),
            "settings": settings, "n_episodes": n_episodes, "n_tasks": n_tasks, "threads": torch.get_num_threads()}
    jobs = [Job(({**base, "seed": s.seed, "positions": s.positions, "seed_key": s.key(len(tasks))},), units=n_episodes)
            for s in shards]
    outputs: dict[int, dict[str, Any]] = {}
    done, total = 0, len(shards) * n_episodes

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    started = time.perf_counter()
    with open_executor(executor, len(jobs)) as pool:
        report = run_jobs(pool, run_shard, jobs, outputs.__setitem__, advance, RetryPolicy(errors=0, lost=3))
    if report.failures:
        index, failure = next(iter(report.failures.items()))
        raise IcrlBenchError(f"shard seed {shards[index].seed}, tasks {list(shards[index].positions)} failed "
                             f"{failure.tries} times: {failure.error}")
    merged = _merge(shards, outputs, len(seeds), len(tasks), n_episodes, time.perf_counter() - started)
    for output in outputs.values():
        if output["record"]["checkpoint_hash"] != checkpoint_hash:
            raise IcrlBenchError(f"a shard ran checkpoint {output['record']['checkpoint_hash']}, not {checkpoint_hash}: "
                                 f"every node must see the same file at {checkpoint}.")
    cost = {"executor": executor.name, "workers": pool.slots, "shards": len(shards), "task_groups": task_groups,
            "retried_shards": report.retried}
    return Sharded(merged, cost, f" --executor {executor.name} --task-groups {task_groups}")


def _merge(shards: list[Shard], outputs: dict[int, dict[str, Any]], n_seeds: int, n_tasks: int, n_episodes: int,
           wall_s: float) -> Rollout:
    """One rollout `[seed, task, episode]` from the shards'; costs summed over shards, wall time the driver's."""
    rollouts = [outputs[i]["rollout"] for i in range(len(shards))]
    returns = np.zeros((n_seeds, n_tasks, n_episodes))
    with_success = rollouts[0].success is not None
    success = np.zeros((n_seeds, n_tasks, n_episodes), dtype=bool)
    for shard, rollout in zip(shards, rollouts):
        returns[shard.seed_index, list(shard.positions)] = rollout.returns[0]
        if with_success:
            success[shard.seed_index, list(shard.positions)] = rollout.success[0]
    passes = [r.forward_passes for r in rollouts]
    return Rollout(
        returns=returns,
        success=success if with_success else None,
        steps=max(r.steps for r in rollouts),  # every shard takes the same batched steps (episodes x horizon)
        num_envs=sum(r.num_envs for r in rollouts),
        act_seconds=sum(r.act_seconds for r in rollouts),
        observe_seconds=sum(r.observe_seconds for r in rollouts),
        env_seconds=sum(r.env_seconds for r in rollouts),
        total_seconds=wall_s,
        forward_passes=None if None in passes else round(float(np.mean(passes))),  # per shard: a pass serves its whole batch
    )
