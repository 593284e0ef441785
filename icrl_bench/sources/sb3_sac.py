"""stable-baselines3 SAC as a source for continuous-action tasks (Meta-World).

The official metaworld/alg/sac.py wraps SB3's SAC with an MlpPolicy, `n_stream` copies of the
task in one DummyVecEnv, lr 3e-4, a 1M buffer, learning_starts 100, batch 128, and
`train_freq=1, gradient_steps=10` (cfg/alg/sac_ml1.yaml). The paper's appendix states other
update settings; we follow the code, because the code is what produced the paper's data. With
`train_freq=1` SB3 counts one *vector* step, so every round collects one transition per stream
and then takes `gradient_steps` gradient steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icrl_bench.sources import ProgressFn
from icrl_bench.sources.sb3_recorder import learn_and_record


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters; defaults are the official cfg/alg/sac_ml1.yaml."""

    n_streams: int = 100  # parallel envs of one learner; each is one recorded stream
    total_timesteps: int = 1_000_000  # env steps per task, summed over streams
    learning_rate: float = 3e-4
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 128
    train_freq: int = 1  # vector steps between updates
    gradient_steps: int = 10
    gamma: float = 0.99
    tau: float = 0.005

    def __post_init__(self) -> None:
        for name in ("n_streams", "total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.total_timesteps % self.n_streams:
            raise ValueError(
                f"total_timesteps ({self.total_timesteps}) must be a multiple of n_streams ({self.n_streams}) "
                "so every stream records the same number of steps"
            )

    @property
    def steps_per_stream(self) -> int:
        return self.total_timesteps // self.n_streams


class SB3SACSource:
    name = "sb3-sac"
    config_cls = SACConfig
    tasks_per_job = 1

    def run(self, family, tasks, seeds, config: SACConfig, device="cpu", progress=None):
        return [self.run_task(family, t, s, config, device, progress) for t, s in zip(tasks, seeds)]

    def run_task(self, family: str, task: int, seed: int, config: SACConfig, device: str, progress: ProgressFn | None) -> dict[str, np.ndarray]:
        from stable_baselines3 import SAC

        from icrl_bench.envs import get_family
        from icrl_bench.errors import IcrlBenchError

        if get_family(family).kind != "continuous":
            raise IcrlBenchError(f"sb3-sac needs continuous actions; build {family} with --source sb3-ppo or batched-ppo.")
        return learn_and_record(SAC, family, task, seed, config, device, "actions", progress)


SOURCE = SB3SACSource()
