"""Dark Key-to-Door (DICP paper, Appendix B; official gridworld/env/dark_key_to_door.py).

The agent must first step on a hidden key (reward 1, once) and then on a hidden door
(reward 1, once) within 50 steps. The observation is only the cell: whether the key is
held is not observed, so the task needs memory of the episode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from icrl_bench.envs.grid import GRID_SIZE, MOVES, N_ACTIONS


class DarkKeyToDoorEnv(gym.Env[np.ndarray, int]):
    """One Dark Key-to-Door task.

    Args:
        key: the key cell (x, y).
        goal: the door cell (x, y).
        horizon: steps per episode (50 in the paper).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        key: tuple[int, int] | np.ndarray,
        goal: tuple[int, int] | np.ndarray,
        horizon: int = 50,
        grid_size: int = GRID_SIZE,
    ):
        self.grid_size = grid_size
        self.horizon = horizon
        self.key = np.asarray(key, dtype=np.int32)
        self.goal = np.asarray(goal, dtype=np.int32)
        for name, cell in (("key", self.key), ("goal", self.goal)):
            if cell.shape != (2,) or (cell < 0).any() or (cell >= grid_size).any():
                raise ValueError(f"{name} must be a cell (x, y) with 0 <= x, y < {grid_size}, got {cell!r}")
        self.start = np.array([grid_size // 2, grid_size // 2], dtype=np.int32)
        self.observation_space = spaces.Box(0, grid_size - 1, shape=(2,), dtype=np.int32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._state = self.start.copy()
        self._t = horizon
        self.have_key = False
        self.reached_goal = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._state = self.start.copy()
        self.have_key = False
        self.reached_goal = False
        return self._state.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._t >= self.horizon:
            raise RuntimeError("the episode has ended: call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {N_ACTIONS}), got {action!r}")
        self._state = np.clip(self._state + MOVES[int(action)], 0, self.grid_size - 1).astype(np.int32)
        reward = 0.0
        if not self.have_key and np.array_equal(self._state, self.key):
            self.have_key, reward = True, 1.0
        elif self.have_key and not self.reached_goal and np.array_equal(self._state, self.goal):
            self.reached_goal, reward = True, 1.0
        self._t += 1
        done = self._t >= self.horizon
        return self._state.copy(), reward, done, done, {"success": self.reached_goal}

    def optimal_action(self, state: np.ndarray, have_key: bool) -> int:
        """The oracle's action: towards the key, or the door once the key is held."""
        dx, dy = (self.goal if have_key else self.key) - np.asarray(state)
        return 0 if dx > 0 else 1 if dx < 0 else 2 if dy > 0 else 3 if dy < 0 else 4

    def max_return(self) -> int:
        """Key and door are always both reachable within the horizon on a 9x9 grid."""
        return 2
