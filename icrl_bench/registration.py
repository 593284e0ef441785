"""Gymnasium ids of the grid worlds, registered when `icrl_bench` is imported.

Kept apart from `icrl_bench.envs` (which needs torch for the batched envs) so that
importing the package, the leaderboard or the metrics stays torch-free; the env classes
load only when `gym.make` builds one.
"""

from __future__ import annotations

import gymnasium as gym

ENTRY_POINTS = {
    "icrl_bench/Darkroom-v0": "icrl_bench.envs.darkroom:DarkroomEnv",
    "icrl_bench/DarkroomPermuted-v0": "icrl_bench.envs.darkroom:DarkroomPermutedEnv",
    "icrl_bench/DarkKeyToDoor-v0": "icrl_bench.envs.key_to_door:DarkKeyToDoorEnv",
}


def register_envs() -> None:
    """Register every id once (re-importing must not warn about re-registration)."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gym.registry:
            # No TimeLimit wrapper: each env ends its episodes at its own horizon, as in the paper.
            gym.register(env_id, entry_point=entry_point)
