"""The env side of the harness: every (seed, test task) row of a protocol, stepped as one batch.

Two kinds behind one interface (`EvalEnvs`): the grid worlds step all rows at once with torch
(`BatchedGridWorld`); Meta-World steps one Gymnasium env per row, in this process, one after
another (MuJoCo envs are cheap to step but slow to build: ~0.1 s each, so they are built once
per run). Every episode runs exactly `horizon` steps, so all rows end together and the harness
resets them together: no autoreset, and `next_obs` at an episode's end is its true last
observation, as the official code hands its agents (`info['terminal_observation']`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from icrl_bench.agents.base import TaskInfo
from icrl_bench.envs import get_family
from icrl_bench.envs.grid import N_ACTIONS
from icrl_bench.errors import IcrlBenchError


@dataclass
class RowsStep:
    """One step of every row; arrays have leading shape [num_envs]."""

    reward: np.ndarray
    next_obs: np.ndarray  # [num_envs, obs_dim]: the observation reached (the last one where done)
    done: np.ndarray  # bool: the episode ended at this step (the same for every row)
    success: np.ndarray  # bool: the episode counts as a success as of this step


class EvalEnvs(Protocol):
    """What the harness steps: `reset` starts an episode in every row, `step` advances them."""

    task_info: TaskInfo
    num_envs: int

    def reset(self) -> np.ndarray:
        """Observations [num_envs, obs_dim] at the start of an episode."""

    def action(self, action: np.ndarray) -> np.ndarray:
        """The agent's actions, checked (a one-line error names what is wrong)."""

    def step(self, action: np.ndarray) -> RowsStep: ...

    def close(self) -> None: ...


class GridRows:
    """A grid world's rows as one `BatchedGridWorld` (integer actions, integer task parameters)."""

    def __init__(self, env: str, params: np.ndarray):
        family = get_family(env)
        self.env = family.batched(params)
        self.num_envs = len(params)
        self.max_return = family.max_return(params)
        self.episode_return = np.zeros(self.num_envs)
        self.task_info = TaskInfo(env=env, num_actions=N_ACTIONS, obs_dim=2, horizon=family.horizon, task_params=params)

    def reset(self) -> np.ndarray:
        self.episode_return = np.zeros(self.num_envs)
        return self.env.reset().numpy()

    def action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action).reshape(-1)
        if action.shape != (self.num_envs,) or not np.issubdtype(action.dtype, np.integer) or ((action < 0) | (action >= N_ACTIONS)).any():
            raise IcrlBenchError(
                f"the agent's act() must return {self.num_envs} integer actions in [0, {N_ACTIONS}); got {action.dtype} {action.shape}."
            )
        return action

    def step(self, action: np.ndarray) -> RowsStep:
        step = self.env.step(torch.as_tensor(action))
        reward = step.reward.numpy()
        self.episode_return += reward
        # Dark Key-to-Door's success: the door reached, i.e. the episode earned its maximum.
        return RowsStep(reward, step.next_obs.numpy(), step.done.numpy(), self.episode_return >= self.max_return)

    def close(self) -> None:
        pass


class GymRows:
    """One Gymnasium env per row (Meta-World): float actions [num_envs, action_dim].

    Success is the env's `info["success"]` at the step; the harness ORs it over the episode.
    """

    def __init__(self, env: str, tasks: np.ndarray, params: np.ndarray, horizon: int):
        family = get_family(env)
        self.name = env
        self.horizon = horizon
        self.action_dim = family.action_dim
        self.num_envs = len(tasks)
        self.envs = [family.make_env(int(task)) for task in tasks]
        self.t = 0
        self.task_info = TaskInfo(
            env=env, num_actions=0, obs_dim=family.obs_dim, horizon=horizon, task_params=params, action_dim=family.action_dim
        )

    def reset(self) -> np.ndarray:
        self.t = 0
        return np.stack([env.reset()[0] for env in self.envs]).astype(np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action)
        shape = (self.num_envs, self.action_dim)
        if action.shape != shape or action.dtype.kind != "f" or not np.isfinite(action).all():
            raise IcrlBenchError(
                f"the agent's act() must return finite float actions of shape {list(shape)}; got {action.dtype} {list(action.shape)}."
            )
        return action.astype(np.float32)  # out-of-box actions are clipped by the env, as in the official code

    def step(self, action: np.ndarray) -> RowsStep:
        results = [env.step(a) for env, a in zip(self.envs, action)]
        self.t += 1
        done = self.t >= self.horizon
        if not done and any(terminated or truncated for _, _, terminated, truncated, _ in results):
            raise IcrlBenchError(
                f"a {self.name} episode ended after {self.t} steps, before the protocol's horizon of {self.horizon}; "
                "the env's time limit must match the protocol's."
            )
        return RowsStep(
            reward=np.array([r for _, r, *_ in results], dtype=np.float64),
            next_obs=np.stack([obs for obs, *_ in results]).astype(np.float32),
            done=np.full(self.num_envs, done),
            success=np.array([info["success"] > 0 for *_, info in results]),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_eval_envs(env: str, tasks: np.ndarray, params: np.ndarray, horizon: int) -> EvalEnvs:
    """The rows of one run: `tasks` [num_envs] canonical task indices, `params` [num_envs, k]."""
    if get_family(env).kind == "discrete":
        return GridRows(env, params)
    return GymRows(env, tasks, params, horizon)
