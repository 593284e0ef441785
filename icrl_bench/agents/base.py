"""The Agent protocol: all the evaluation harness knows about an agent.

Everything in-context (the context window, the KV cache, planning) lives behind these
three calls. The harness steps `num_envs` episodes at once (all test tasks x seeds), so
every call is batched over environments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TaskInfo:
    """What an agent may know about the tasks it is about to face.

    `task_params` is privileged: only reference agents (the oracle) may read it; an
    in-context learner must infer the task from rewards.
    """

    env: str  # env family name, e.g. "darkroom"
    num_actions: int  # discrete actions (0 for continuous)
    obs_dim: int
    horizon: int  # steps per episode
    task_params: np.ndarray  # [num_envs, k]
    action_dim: int = 0  # continuous action size (0 for discrete actions)


# Agent settings (setting, value) that read `TaskInfo.task_params`: IDT's return-to-go from each test task's
# optimal return (the official grid evaluation). A run made with one compares with a paper that did the
# same, never with the leaderboard (its results are not standard).
PRIVILEGED_SETTINGS = (("return_to_go", "task-optimum"),)


def privileged_settings(settings: dict) -> list[str]:
    """The `KEY=VALUE` agent settings among `settings` that read the privileged task parameters."""
    return [f"{key}={value}" for (key, value) in PRIVILEGED_SETTINGS if settings.get(key) == value]


@runtime_checkable
class Agent(Protocol):
    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        """Forget everything: a new set of tasks begins (in-context learning starts empty)."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for observations [num_envs, obs_dim]: indices [num_envs] (discrete), or float32
        [num_envs, action_dim] within the env's action box (continuous)."""

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        """One transition per env ([num_envs, ...]); `next_obs` is the true terminal cell where done."""


def agent_record(agent: Agent) -> dict[str, str | None]:
    """The env, checkpoint hash and dataset an agent was made from, as far as it says: what the
    harness records in the results and checks against the protocol's env and every shard's.

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
