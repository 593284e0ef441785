"""Recording every transition of an SB3 learner, for both of SB3's training loops.

SB3 calls a callback's `_on_step` right after `env.step`, before it moves `_last_obs` on, so at
that moment `model._last_obs` holds the observations acted on, for PPO (on-policy loop) and SAC
(off-policy loop) alike. What is recorded:
- `action`: the action the env executed (PPO's clipped sample; SAC's action in the env's box);
  the official recorder stored PPO's unclipped sample, which the env never saw.
- `next_obs`: the true terminal observation where an episode ended (SB3 has already
  auto-reset there; the official recorder stored the reset observation).
- `success`: Meta-World's `info["success"]` at each step, for envs that report it.
Observations are stored in the family's recorded view (`family.recorded`): Meta-World keeps
the dims agents see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from icrl_bench.sources import ProgressFn

PROGRESS_EVERY = 1000  # env steps between progress reports (a report crosses a process queue)


class Recorder:
    """Collects one learner's transitions per step; `callback` is the SB3 callback to pass to learn()."""

    def __init__(self, recorded: Callable[[np.ndarray], np.ndarray], action_key: str, progress: ProgressFn | None):
        from stable_baselines3.common.callbacks import BaseCallback

        recorder = self

        class Callback(BaseCallback):
            def _on_step(self) -> bool:
                recorder.record(self.model._last_obs, self.locals)
                return True

            def _on_training_end(self) -> None:
                recorder.flush_progress()

        self.callback = Callback()
        self.recorded = recorded
        self.action_key = action_key
        self.progress = progress
        self.unreported = 0
        self.steps: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "done", "success")}

    def record(self, obs: np.ndarray, local: dict[str, Any]) -> None:
        infos = local["infos"]
        dones = np.asarray(local["dones"])
        next_obs = np.array(local["new_obs"], copy=True)
        for i in np.flatnonzero(dones):
            next_obs[i] = infos[i]["terminal_observation"]
        self.steps["obs"].append(self.recorded(obs))
        self.steps["action"].append(np.array(local[self.action_key], copy=True))
        self.steps["reward"].append(np.array(local["rewards"], copy=True))
        self.steps["next_obs"].append(self.recorded(next_obs))
        self.steps["done"].append(dones)
        if "success" in infos[0]:
            self.steps["success"].append(np.array([bool(info["success"]) for info in infos]))
        self.unreported += len(dones)
        if self.unreported >= PROGRESS_EVERY:
            self.flush_progress()

    def flush_progress(self) -> None:
        if self.progress is not None and self.unreported:
            self.progress(self.unreported)
        self.unreported = 0

    def history(self) -> dict[str, np.ndarray]:
        """Arrays [stream, step, ...] (SB3 gives [step, stream, ...])."""
        return {k: np.swapaxes(np.stack(v), 0, 1) for k, v in self.steps.items() if v}


def learn_and_record(
    algorithm: type, family: str, task: int, seed: int, config: Any, device: str, action_key: str, progress: ProgressFn | None
) -> dict[str, np.ndarray]:
    """Train SB3 `algorithm` from scratch on `config.n_streams` copies of one task and return every transition.

    The learner runs on one thread (the fastest way to run SB3's tiny networks on a CPU) in SB3's
    in-process vector env, as the official DummyVecEnv; `config`'s other fields are the
    algorithm's keyword arguments.
    """
    import torch
    from stable_baselines3.common.vec_env import DummyVecEnv

    from icrl_bench.envs import get_family

    torch.set_num_threads(1)
    spec = get_family(family)
    settings = asdict(config)
    total = settings.pop("total_timesteps")
    vec_env = DummyVecEnv([lambda: spec.make_source_env(task)] * settings.pop("n_streams"))
    model = algorithm("MlpPolicy", vec_env, seed=int(seed), device=device, verbose=0, tensorboard_log=None, **settings)
    recorder = Recorder(spec.recorded, action_key, progress)
    model.learn(total_timesteps=total, callback=recorder.callback, progress_bar=False)
    vec_env.close()
    return recorder.history()
