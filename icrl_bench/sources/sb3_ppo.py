"""stable-baselines3 PPO as a source, recording every transition of every stream.

The reference source: the paper's own (official gridworld/alg/ppo.py and metaworld/alg/ppo.py
wrap SB3 PPO with an MlpPolicy and these settings), for the grid worlds and Meta-World. Each task runs in its own process on one thread, which is
the fastest way to run SB3's tiny networks on a CPU (measured: ~1.5x faster than default
threads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icrl_bench.sources import ProgressFn
from icrl_bench.sources.sb3_recorder import learn_and_record


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are SB3's, recipes set the paper's (cfg/alg/ppo_*.yaml)."""

    n_streams: int = 100  # parallel envs of one learner; each is one recorded stream
    total_timesteps: int = 100_000  # env steps per task, summed over streams
    n_steps: int = 20  # rollout length per stream between updates
    batch_size: int = 50  # minibatch size
    n_epochs: int = 20  # passes over each rollout
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_streams", "total_timesteps", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        rollout = self.n_steps * self.n_streams
        if self.total_timesteps % rollout:
            raise ValueError(
                f"total_timesteps ({self.total_timesteps}) must be a multiple of n_steps * n_streams ({rollout}) "
                "so every stream records the same number of steps"
            )

    @property
    def steps_per_stream(self) -> int:
        return self.total_timesteps // self.n_streams


class SB3PPOSource:
    name = "sb3-ppo"
    config_cls = PPOConfig
    tasks_per_job = 1

    def run(self, family, tasks, seeds, config: PPOConfig, device="cpu", progress=None):
        return [self.run_task(family, t, s, config, device, progress) for t, s in zip(tasks, seeds)]

    def run_task(self, family: str, task: int, seed: int, config: PPOConfig, device: str, progress: ProgressFn | None) -> dict[str, np.ndarray]:
        from stable_baselines3 import PPO

        return learn_and_record(PPO, family, task, seed, config, device, "clipped_actions", progress)


SOURCE = SB3PPOSource()
