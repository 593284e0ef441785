"""Darkroom and Darkroom-Permuted (DICP paper, Appendix B; official gridworld/env/darkroom.py).

The agent sees only its own cell in a 9x9 grid and earns reward 1 on every step it stands
on the hidden goal. The horizon ends every episode as a termination, as in the official
code (which returns ``done, done``): source PPO therefore never bootstraps at the horizon,
and our histories learn the way the paper's did.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from icrl_bench.envs.grid import GRID_SIZE, MOVES, N_ACTIONS, PERMUTATIONS


class DarkroomEnv(gym.Env[np.ndarray, int]):
    """One Darkroom task: start in the centre, find the goal, stay on it.

    Args:
        goal: the goal cell (x, y).
        horizon: steps per episode (20 in the paper).
        grid_size: side of the square grid (9 in the paper).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, goal: tuple[int, int] | np.ndarray, horizon: int = 20, grid_size: int = GRID_SIZE):
        self.grid_size = grid_size
        self.horizon = horizon
        self.goal = np.asarray(goal, dtype=np.int32)
        if self.goal.shape != (2,) or (self.goal < 0).any() or (self.goal >= grid_size).any():
            raise ValueError(f"goal must be a cell (x, y) with 0 <= x, y < {grid_size}, got {goal!r}")
        self.start = np.array([grid_size // 2, grid_size // 2], dtype=np.int32)
        self.observation_space = spaces.Box(0, grid_size - 1, shape=(2,), dtype=np.int32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._state = self.start.copy()
        self._t = horizon  # must reset before stepping

    def effective_action(self, action: int) -> int:
        """The movement an action causes (Darkroom-Permuted remaps it)."""
        return int(action)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._state = self.start.copy()
        return self._state.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._t >= self.horizon:
            raise RuntimeError("the episode has ended: call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {N_ACTIONS}), got {action!r}")
        delta = MOVES[self.effective_action(action)]
        self._state = np.clip(self._state + delta, 0, self.grid_size - 1).astype(np.int32)
        reward = 1.0 if np.array_equal(self._state, self.goal) else 0.0
        self._t += 1
        done = self._t >= self.horizon
        return self._state.copy(), reward, done, done, {}

    def optimal_action(self, state: np.ndarray) -> int:
        """The oracle's action: x towards the goal first, then y, then stay."""
        dx, dy = self.goal - np.asarray(state)
        effective = 0 if dx > 0 else 1 if dx < 0 else 2 if dy > 0 else 3 if dy < 0 else 4
        return self.action_for(effective)

    def action_for(self, effective: int) -> int:
        """The action that causes the movement `effective` (the identity here)."""
        return effective

    def max_return(self) -> int:
        """Return of the oracle: reward on every step from first reaching the goal."""
        distance = int(np.abs(self.goal - self.start).sum())
        return int(np.clip(self.horizon + 1 - distance, 0, self.horizon))


class DarkroomPermutedEnv(DarkroomEnv):
    """Darkroom with the goal fixed in the far corner and the actions permuted per task.

    Args:
        perm_idx: which of the 120 action permutations (itertools order) this task uses.
        horizon: steps per episode (50 in the paper).
    """

    def __init__(self, perm_idx: int, horizon: int = 50, grid_size: int = GRID_SIZE):
        if not 0 <= int(perm_idx) < len(PERMUTATIONS):
            raise ValueError(f"perm_idx must be in [0, {len(PERMUTATIONS)}), got {perm_idx!r}")
        super().__init__(goal=(grid_size - 1, grid_size - 1), horizon=horizon, grid_size=grid_size)
        self.perm_idx = int(perm_idx)
        self.perm = PERMUTATIONS[self.perm_idx]
        self.start = np.array([0, 0], dtype=np.int32)

    def effective_action(self, action: int) -> int:
        return int(self.perm[action])

    def action_for(self, effective: int) -> int:
        return int(np.flatnonzero(self.perm == effective)[0])
