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

Resumable: with a `shard_dir` (the CLI uses `<--out>/.shards/`), each finished shard is written
there at once, under a name that hashes everything its curves depend on (protocol, agent,
checkpoint hash, settings, planner revision, episodes, seed, tasks, harness key), and a run with
the same arguments loads it instead of running it again. So an evaluation of hours (DICP planning
on Darkroom-Permuted on a CPU) can be stopped and continued, shard by shard. The files go when
the shards are merged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
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
from icrl_bench.fileio import write_json_atomic


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


def shard_file(shard_dir: Path, spec: dict[str, Any], checkpoint_hash: str | None) -> Path:
    """Where a finished shard of `spec` is kept: named by a hash of everything its curves depend on."""
    from icrl_bench.agents.planner import PLANNER_REVISION

    identity = {k: v for k, v in spec.items() if k not in ("checkpoint", "threads")}  # where the file is, how many threads: not what it is
    identity.update(checkpoint_hash=checkpoint_hash, planner_revision=PLANNER_REVISION, positions=list(spec["positions"]))
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return shard_dir / f"shard-{spec['seed']}-{digest}.json"


def save_shard(path: Path, output: dict[str, Any]) -> None:
    """A finished shard's rollout and agent record, written atomically (a killed run leaves no half file)."""
    rollout = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(output["rollout"]).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"rollout": rollout, "record": output["record"]})


def load_shard(path: Path) -> dict[str, Any]:
    """A shard that `save_shard` wrote; a file that is not one is refused, naming the fix."""
    try:
        data = json.loads(path.read_text())
        fields = data["rollout"]
        rollout = Rollout(**{**fields, "returns": np.asarray(fields["returns"], dtype=np.float64),
                             "success": None if fields["success"] is None else np.asarray(fields["success"], dtype=bool)})
        return {"rollout": rollout, "record": dict(data["record"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise IcrlBenchError(f"{path} is not a finished shard of this evaluation ({err}); delete it and run again.") from None


@dataclass(frozen=True)
class ShardedEvaluation:
    """One evaluation to run as shards: everything its shards' curves depend on.

    The caller has checked the agent (env, checkpoint) before; every shard must report
    `checkpoint_hash`, the checkpoint the caller's own copy of the agent was made from.
    """

    protocol: EvalProtocol
    name: str
    checkpoint: str | os.PathLike | None
    checkpoint_hash: str | None
    seeds: list[int]
    n_episodes: int | None
    settings: dict[str, Any]
    n_tasks: int | None = None


@dataclass(frozen=True)
class Sharded:
    """A sharded run: the merged rollout, and how it was sharded (for the results' cost and command)."""

    rollout: Rollout
    cost: dict[str, Any]  # executor, workers, shards, task_groups, retried_shards, resumed_shards
    command: str  # what the reproducing command adds
    files: list[Path]  # the kept shard files, for `discard_shards` once the results are saved


@dataclass
class _Plan:
    """One evaluation's shards: their specs, their files, and the outputs finished so far."""

    evaluation: ShardedEvaluation
    n_episodes: int
    n_tasks: int  # the run's test tasks
    shards: list[Shard]
    specs: list[dict[str, Any]]
    files: list[Path | None]
    outputs: dict[int, dict[str, Any]]

    @property
    def units(self) -> int:
        return len(self.shards) * self.n_episodes


def _plan(evaluation: ShardedEvaluation, task_groups: int, shard_dir: Path | None) -> _Plan:
    if not evaluation.seeds:
        raise IcrlBenchError("need at least one seed; got none.")
    protocol = evaluation.protocol
    n_episodes = protocol.n_episodes if evaluation.n_episodes is None else evaluation.n_episodes
    if n_episodes <= 0:
        raise IcrlBenchError(f"need at least one episode; got {n_episodes}.")
    tasks, _ = protocol_tasks(protocol, evaluation.n_tasks)
    shards = plan_shards(evaluation.seeds, len(tasks), task_groups)
    base = {"protocol": protocol.name, "agent": evaluation.name,
            "checkpoint": None if evaluation.checkpoint is None else str(evaluation.checkpoint), "settings": evaluation.settings,
            "n_episodes": n_episodes, "n_tasks": evaluation.n_tasks, "threads": torch.get_num_threads()}
    specs = [{**base, "seed": s.seed, "positions": s.positions, "seed_key": s.key(len(tasks))} for s in shards]
    files = [None if shard_dir is None else shard_file(shard_dir, spec, evaluation.checkpoint_hash) for spec in specs]
    outputs = {i: load_shard(f) for i, f in enumerate(files) if f is not None and f.is_file()}
    return _Plan(evaluation, n_episodes, len(tasks), shards, specs, files, outputs)


def run_sharded(
    evaluations: list[ShardedEvaluation],
    executor: ExecutorConfig,
    task_groups: int = 1,
    shard_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> list[Sharded]:
    """Run every evaluation as seeds x task-group shards, all in one pool on `executor`; merge each.

    The shards of all evaluations share the pool's workers, in the order given (put the longest
    evaluations first), so several evaluations end together instead of one after another.
    `shard_dir`: keep finished shards there, and take the ones a stopped run left (module docstring).
    """
    plans = [_plan(evaluation, task_groups, shard_dir) for evaluation in evaluations]
    resumed = [len(plan.outputs) for plan in plans]
    todo = [(p, i) for p, plan in enumerate(plans) for i in range(len(plan.shards)) if i not in plan.outputs]
    jobs = [Job((plans[p].specs[i],), units=plans[p].n_episodes) for p, i in todo]
    done = sum(len(plan.outputs) * plan.n_episodes for plan in plans)
    total = sum(plan.units for plan in plans)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def finished(job: int, output: dict[str, Any]) -> None:
        p, i = todo[job]
        if plans[p].files[i] is not None:
            save_shard(plans[p].files[i], output)
        plans[p].outputs[i] = output

    if done:  # shards a stopped run left
        advance(0)
    started = time.perf_counter()
    with open_executor(executor, max(len(jobs), 1)) as pool:
        report = run_jobs(pool, run_shard, jobs, finished, advance, RetryPolicy(errors=0, lost=3))
    if report.failures:
        job, failure = next(iter(report.failures.items()))
        p, i = todo[job]
        shard = plans[p].shards[i]
        raise IcrlBenchError(f"{plans[p].evaluation.name}: shard seed {shard.seed}, tasks {list(shard.positions)} failed "
                             f"{failure.tries} times: {failure.error}")
    wall_s = time.perf_counter() - started
    cost = {"executor": executor.name, "workers": pool.slots, "task_groups": task_groups, "retried_shards": report.retried}
    return [_finish(plan, wall_s, {**cost, "shards": len(plan.shards), "resumed_shards": n}) for plan, n in zip(plans, resumed, strict=True)]


def discard_shards(runs: list[Sharded]) -> None:
    """Delete the runs' kept shard files: only once their results are saved, or a crash between would lose them all."""
    for run in runs:
        for file in run.files:
            file.unlink(missing_ok=True)


def _finish(plan: _Plan, wall_s: float, cost: dict[str, Any]) -> Sharded:
    """Merge one evaluation's shards and check they ran its checkpoint."""
    evaluation = plan.evaluation
    merged = _merge(plan.shards, plan.outputs, len(evaluation.seeds), plan.n_tasks, plan.n_episodes, wall_s)
    for output in plan.outputs.values():
        if output["record"]["checkpoint_hash"] != evaluation.checkpoint_hash:
            raise IcrlBenchError(f"a shard ran checkpoint {output['record']['checkpoint_hash']}, not {evaluation.checkpoint_hash}: "
                                 f"every node must see the same file at {evaluation.checkpoint}.")
    return Sharded(merged, cost, f" --executor {cost['executor']} --task-groups {cost['task_groups']}",
                   [file for file in plan.files if file is not None])


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
