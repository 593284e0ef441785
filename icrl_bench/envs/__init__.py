"""The DICP grid worlds, registered with Gymnasium under the `icrl_bench/` namespace.

    >>> import gymnasium as gym, icrl_bench
    >>> env = gym.make("icrl_bench/Darkroom-v0", goal=(2, 7))
"""

from __future__ import annotations

import gymnasium as gym

from icrl_bench.envs.batched import BatchedGridWorld, BatchedStep
from icrl_bench.envs.darkroom import DarkroomEnv, DarkroomPermutedEnv
from icrl_bench.envs.families import FAMILIES, GridWorldFamily, TaskSplit, get_family, paper_split
from icrl_bench.envs.key_to_door import DarkKeyToDoorEnv


def make_env(name: str, task: int) -> gym.Env:
    """The Gymnasium env of task `task` (canonical index) of grid world `name`."""
    return get_family(name).make_env(task)


__all__ = [
    "FAMILIES",
    "BatchedGridWorld",
    "BatchedStep",
    "DarkKeyToDoorEnv",
    "DarkroomEnv",
    "DarkroomPermutedEnv",
    "GridWorldFamily",
    "TaskSplit",
    "get_family",
    "make_env",
    "paper_split",
]
