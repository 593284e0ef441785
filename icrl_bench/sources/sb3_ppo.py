"""stable-baselines3 PPO as a source, recording every transition of every stream.

The reference source: the paper's own (official gridworld/alg/ppo.py wraps SB3 PPO with an
MlpPolicy and these settings). Each task runs in its own process on one thread, which is
the fastest way to run SB3's tiny networks on a CPU (measured: ~1.5x faster than default
threads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from icrl_bench.sources import ProgressFn


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


class _Recorder:
    """Collects (obs, action, reward, next_obs, done) per step; builds SB3's callback lazily."""

    def __init__(self, progress: ProgressFn | None, rollout_size: int):
        from stable_baselines3.common.callbacks import BaseCallback

        recorder = self

        class Callback(BaseCallback):
            def _on_step(self) -> bool:
                recorder.record(self.locals)
                return True

            def _on_rollout_end(self) -> None:
                if progress is not None:
                    progress(rollout_size)

        self.callback = Callback()
        self.steps: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "done")}

    def record(self, local: dict) -> None:
        next_obs = np.array(local["new_obs"], copy=True)
        dones = np.asarray(local["dones"])
        # SB3 auto-resets: new_obs holds the reset cell where an episode ended; the true
        # terminal cell is in the info (the official recorder stored the reset cell here).
        for i in np.flatnonzero(dones):
            next_obs[i] = local["infos"][i]["terminal_observation"]
        self.steps["obs"].append(local["obs_tensor"].cpu().numpy())
        self.steps["action"].append(np.asarray(local["actions"]))
        self.steps["reward"].append(np.asarray(local["rewards"]))
        self.steps["next_obs"].append(next_obs)
        self.steps["done"].append(dones)

    def history(self) -> dict[str, np.ndarray]:
        """Arrays [stream, step, ...] (SB3 gives [step, stream, ...])."""
        return {k: np.swapaxes(np.stack(v), 0, 1) for k, v in self.steps.items()}


class SB3PPOSource:
    name = "sb3-ppo"
    config_cls = PPOConfig
    tasks_per_job = 1

    def run(self, family, params, seeds, config: PPOConfig, device="cpu", progress=None):
        return [self.run_task(family, p, s, config, device, progress) for p, s in zip(params, seeds)]

    def run_task(self, family: str, params: np.ndarray, seed: int, config: PPOConfig, device: str, progress: ProgressFn | None) -> dict[str, np.ndarray]:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        from icrl_bench.envs import get_family

        torch.set_num_threads(1)
        spec = get_family(family)
        kwargs = spec.env_kwargs(np.asarray(params))
        env_cls = __import__("gymnasium").spec(spec.gym_id).entry_point
        make = _env_factory(env_cls, kwargs)
        vec_env = DummyVecEnv([make] * config.n_streams)
        settings = asdict(config)
        total = settings.pop("total_timesteps")
        settings.pop("n_streams")
        model = PPO("MlpPolicy", vec_env, seed=int(seed), device=device, verbose=0, tensorboard_log=None, **settings)
        recorder = _Recorder(progress, config.n_steps * config.n_streams)
        model.learn(total_timesteps=total, callback=recorder.callback, progress_bar=False)
        vec_env.close()
        return recorder.history()


def _env_factory(entry_point: str, kwargs: dict):
    """A picklable zero-argument constructor of the bare env (no checker wrappers: speed)."""
    import importlib

    module, name = entry_point.split(":")
    env_cls = getattr(importlib.import_module(module), name)
    return lambda: env_cls(**kwargs)


SOURCE = SB3PPOSource()
