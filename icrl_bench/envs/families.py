"""The grid-world families: task sets, the paper's train/test split, oracle and ceilings.

Each family is the single source of truth for its constants (horizon, split seed, train
ratio, task parameters), taken from the official DICP configs (gridworld/cfg/env/*.yaml).
Tasks are numbered in the official code's unshuffled order, the order of the groups in
its HDF5 files, so task `i` here is group `str(i)` there.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from icrl_bench.envs.batched import BatchedGridWorld
from icrl_bench.envs.grid import GRID_SIZE, PERMUTATIONS
from icrl_bench.envs.metaworld import MetaWorldFamily, metaworld_family
from icrl_bench.envs.split import TaskSplit, paper_split
from icrl_bench.errors import unknown


@dataclass(frozen=True)
class GridWorldFamily:
    """One grid world of the paper and everything fixed about its task set."""

    name: str
    gym_id: str
    horizon: int
    split_seed: int
    train_ratio: float
    param_names: tuple[str, ...]
    kind = "discrete"  # actions are indices (Meta-World's are "continuous")
    obs_dim = 2  # a grid cell (x, y)
    action_dim = 0  # actions are indices, not vectors

    def task_params(self) -> np.ndarray:
        """Parameters of every task [n_tasks, len(param_names)] int64, in canonical order."""
        raise NotImplementedError

    @property
    def n_tasks(self) -> int:
        return len(self.task_params())

    def split(self) -> TaskSplit:
        return paper_split(self.n_tasks, self.split_seed, self.train_ratio)

    def env_kwargs(self, params: np.ndarray) -> dict:
        """Keyword arguments of the Gymnasium env for one task's parameters."""
        raise NotImplementedError

    def make_env(self, task: int) -> gym.Env:
        """The Gymnasium env of canonical task `task`."""
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"{self.name} has tasks 0..{self.n_tasks - 1}, got {task}")
        return gym.make(self.gym_id, **self.env_kwargs(self.task_params()[task]))

    def make_source_env(self, task: int) -> gym.Env:
        """The bare env of canonical task `task`, without Gymnasium's checker wrappers (speed)."""
        return gym.spec(self.gym_id).make(**self.env_kwargs(self.task_params()[task])).unwrapped

    def recorded(self, obs: np.ndarray) -> np.ndarray:
        """The stored view of source observations: the grid cell itself."""
        return np.asarray(obs)

    def env_facts(self) -> dict:
        """Facts about the env beyond the spec, for the dataset manifest (none for grid worlds)."""
        return {}

    def batched(self, params: np.ndarray, device: str | torch.device = "cpu") -> BatchedGridWorld:
        """A batched env with one episode per row of `params` [B, k]."""
        raise NotImplementedError

    def max_return(self, params: np.ndarray) -> np.ndarray:
        """The oracle's episode return for each row of `params` [B, k]."""
        raise NotImplementedError

    def optimal_actions(self, params: np.ndarray, obs: np.ndarray, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The oracle's action at every recorded step (DPT's labels).

        Args:
            params: [B, k] one task's parameters per history.
            obs: [B, ..., N, 2] cells acted on; reward and done: [B, ..., N].
        """
        obs = np.asarray(obs)
        steps_per_history = int(np.prod(obs.shape[1:-1]))
        # One episode row per recorded step: each history's task repeated along its steps.
        env = self.batched(np.repeat(np.asarray(params), steps_per_history, axis=0))
        have_key = torch.as_tensor(_key_held_before(reward, done).reshape(-1))
        actions = env.optimal_action(torch.as_tensor(obs.reshape(-1, 2)), have_key)
        return actions.reshape(obs.shape[:-1]).numpy().astype(np.uint8)


def _key_held_before(reward: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Whether a reward was already earned earlier in the same episode, at each step.

    In Dark Key-to-Door the first reward of an episode is always the key, so this is
    "the key is held" (as the official annotation pass computes it).
    """
    reward = np.asarray(reward, dtype=np.int64)
    before = np.cumsum(reward, axis=-1) - reward  # reward earned before each step
    starts = np.ones_like(reward, dtype=bool)
    starts[..., 1:] = np.asarray(done)[..., :-1]
    at_start = np.maximum.accumulate(np.where(starts, before, 0), axis=-1)
    return (before - at_start) >= 1


def _cells(n_axes: int) -> np.ndarray:
    """All combinations of n_axes grid coordinates in the official nested-loop order."""
    return np.array(np.meshgrid(*[np.arange(GRID_SIZE)] * n_axes, indexing="ij")).reshape(n_axes, -1).T


def _as_int(params: np.ndarray, k: int) -> np.ndarray:
    """Task parameters as int64 rows [B, k]: stored datasets hold them as uint8, whose
    arithmetic would wrap around (0 - 4 = 252)."""
    return np.asarray(params, dtype=np.int64).reshape(-1, k)


def _stack(rows: list[int], params: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(np.tile(rows, (len(params), 1)), device=device)


class _Darkroom(GridWorldFamily):
    def task_params(self) -> np.ndarray:
        return _cells(2)

    def env_kwargs(self, params: np.ndarray) -> dict:
        return {"goal": tuple(int(v) for v in params), "horizon": self.horizon}

    def batched(self, params, device="cpu") -> BatchedGridWorld:
        params = _as_int(params, 2)
        centre = GRID_SIZE // 2
        return BatchedGridWorld(
            start=_stack([centre, centre], params, device),
            goal=torch.as_tensor(params, device=device),
            perm=_stack(list(range(5)), params, device),
            key=None,
            horizon=self.horizon,
        )

    def max_return(self, params) -> np.ndarray:
        distance = np.abs(_as_int(params, 2) - GRID_SIZE // 2).sum(-1)
        return np.clip(self.horizon + 1 - distance, 0, self.horizon)


class _DarkroomPermuted(GridWorldFamily):
    def task_params(self) -> np.ndarray:
        return np.arange(len(PERMUTATIONS)).reshape(-1, 1)

    def env_kwargs(self, params: np.ndarray) -> dict:
        return {"perm_idx": int(params[0]), "horizon": self.horizon}

    def batched(self, params, device="cpu") -> BatchedGridWorld:
        params = _as_int(params, 1)
        corner = GRID_SIZE - 1
        return BatchedGridWorld(
            start=_stack([0, 0], params, device),
            goal=_stack([corner, corner], params, device),
            perm=torch.as_tensor(PERMUTATIONS[params[:, 0]], device=device),
            key=None,
            horizon=self.horizon,
        )

    def max_return(self, params) -> np.ndarray:
        n = len(_as_int(params, 1))
        return np.full(n, self.horizon + 1 - 2 * (GRID_SIZE - 1))


class _DarkKeyToDoor(GridWorldFamily):
    def task_params(self) -> np.ndarray:
        return _cells(4)

    def env_kwargs(self, params: np.ndarray) -> dict:
        return {"key": tuple(int(v) for v in params[:2]), "goal": tuple(int(v) for v in params[2:]), "horizon": self.horizon}

    def batched(self, params, device="cpu") -> BatchedGridWorld:
        params = _as_int(params, 4)
        centre = GRID_SIZE // 2
        return BatchedGridWorld(
            start=_stack([centre, centre], params, device),
            goal=torch.as_tensor(params[:, 2:], device=device),
            perm=_stack(list(range(5)), params, device),
            key=torch.as_tensor(params[:, :2], device=device),
            horizon=self.horizon,
        )

    def max_return(self, params) -> np.ndarray:
        return np.full(len(_as_int(params, 4)), 2)


# Constants from the official gridworld/cfg/env/{darkroom,darkroom_permuted,dark_key_to_door}.yaml.
FAMILIES: dict[str, GridWorldFamily] = {
    f.name: f
    for f in (
        _Darkroom("darkroom", "icrl_bench/Darkroom-v0", 20, 0, 0.9, ("goal_x", "goal_y")),
        _DarkroomPermuted("darkroom-permuted", "icrl_bench/DarkroomPermuted-v0", 50, 4, 0.9, ("perm_idx",)),
        _DarkKeyToDoor("dark-key-to-door", "icrl_bench/DarkKeyToDoor-v0", 50, 4, 0.95, ("key_x", "key_y", "goal_x", "goal_y")),
    )
}


def get_family(name: str) -> GridWorldFamily | MetaWorldFamily:
    """The family called `name` (a grid world, `metaworld-ml1-<task>` or `metaworld-ml10`),
    or an error listing the known ones."""
    if name.startswith("metaworld-"):
        return metaworld_family(name)
    try:
        return FAMILIES[name]
    except KeyError:
        raise unknown("environment", name, [*FAMILIES, "metaworld-ml1-<task>", "metaworld-ml10"]) from None
