"""Running the protocol: one agent, every test task x seed in one batched loop, as a `Rollout`.

The runner knows agents only through the Agent protocol (reset / act / observe) and envs only
through `icrl_bench.bench.harness_envs` (the batched grid world, or one Gymnasium env per row for
Meta-World); it never imports the trainer. Rows of the batch are ordered [seed, task]: row
`s * n_tasks + t` is test task `t` in seed replica `s`. Every episode runs to the protocol's
horizon, so all rows end together, are reset together, and the episode returns and successes
fall out as [seed, task, episode] arrays, the raw material of every metric (`icrl_bench.bench.metrics`).
Grid agents act with integers [num_envs]; Meta-World agents with floats [num_envs, action_dim]
(`TaskInfo.num_actions == 0`), which the env clips to its box.

Randomness: one integer is derived from the seed list; the runner seeds torch's global RNG
with it (inside `torch.random.fork_rng`, so the caller's state is left alone) and hands it to
the agent's optional `set_seed(seed)` before `reset`, for agents that keep their own generator.
So the same agent, checkpoint and seed list give the same curves again, and another seed list
gives other draws.

Both ways of evaluating build on this module: the one batch of `icrl_bench.bench.harness` and the
shards of `icrl_bench.bench.harness_sharded`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from icrl_bench.agents.base import Agent
from icrl_bench.bench.harness_envs import make_eval_envs
from icrl_bench.bench.protocols import EvalProtocol
from icrl_bench.errors import IcrlBenchError

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
    tasks, params = protocol_tasks(protocol, n_tasks)
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
            key = seed_list_key(seeds) if seed_key is None else seed_key
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


def protocol_tasks(protocol: EvalProtocol, n_tasks: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The canonical indices [n] and parameters [n, k] of the run's test tasks."""
    tasks, params = protocol.test_tasks(), protocol.test_task_params()
    if n_tasks is None:
        return tasks, params
    if not 1 <= n_tasks <= len(tasks):
        raise IcrlBenchError(f"--tasks must be in 1..{len(tasks)} ({protocol.name} has {len(tasks)} test tasks), got {n_tasks}.")
    return tasks[:n_tasks], params[:n_tasks]


def seed_list_key(seeds: list[int]) -> int:
    """One seed for a whole run, determined by the seed list (31 bits: numpy and SB3 take < 2**32)."""
    return int.from_bytes(hashlib.sha256(json.dumps(list(map(int, seeds))).encode()).digest()[:4], "little") & 0x7FFFFFFF
