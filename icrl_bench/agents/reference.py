"""Reference agents: the floor (random), the ceiling (oracle) and the source algorithm.

They bracket every in-context learner: `random` and `oracle` fix 0 and 100 of the normalized
score, and `source` (PPO learning online from scratch on each test task, with the same
episodes the in-context learner gets) is the sample-efficiency reference of the AD and DICP
papers: an in-context learner is worth having if it beats its own source algorithm per episode.

On Meta-World (continuous actions) `random` is uniform in the action box and `oracle` is the
package's own scripted policy for the task type, told the hidden goal; both are measured, not
pinned, since no exact expectation exists there. The PPO `source` runs on the grid worlds only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from icrl_bench.agents.base import TaskInfo
from icrl_bench.errors import IcrlBenchError


class RandomAgent:
    """Uniform random actions; the 0 of the normalized score (grid worlds), or uniform in the
    action box (Meta-World).

    Args:
        seed: seed of the one generator that draws every env's actions.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.num_actions = 0
        self.box: tuple[np.ndarray, np.ndarray] | None = None

    def set_seed(self, seed: int) -> None:
        """The harness's seed for this run (derived from its seed list)."""
        self.seed = seed

    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.num_actions = task_info.num_actions
        self.box = None if self.num_actions > 0 else _action_box(task_info.env)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.box is None:
            return self.rng.integers(0, self.num_actions, size=len(obs))
        low, high = self.box
        return self.rng.uniform(low, high, size=(len(obs), len(low))).astype(np.float32)

    def observe(self, obs, action, reward, next_obs, done) -> None:
        pass


class OracleAgent:
    """The optimal policy, reading the privileged task parameters; the 100 of the normalized score.

    It uses the env family's own oracle (`BatchedGridWorld.optimal_action`, the official
    `get_optimal_action`), so its return equals `family.max_return` on every episode. In Dark
    Key-to-Door the right target depends on whether the key is held, which the oracle tracks
    from the rewards of the current episode (the first reward of an episode is always the key).
    On Meta-World it hands over to `ScriptedOracle`.
    """

    def __init__(self) -> None:
        self.env = None
        self.have_key: torch.Tensor | None = None
        self.scripted: ScriptedOracle | None = None

    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        from icrl_bench.envs import get_family

        params = np.asarray(task_info.task_params)
        if len(params) != num_envs:
            raise IcrlBenchError(f"the oracle needs one row of task_params per env: got {len(params)} for {num_envs} envs.")
        self.scripted = ScriptedOracle(task_info) if task_info.num_actions <= 0 else None
        if self.scripted is None:
            self.env = get_family(task_info.env).batched(params)
            self.have_key = torch.zeros(num_envs, dtype=torch.bool)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.scripted is not None:
            return self.scripted.act(obs)
        return self.env.optimal_action(torch.as_tensor(np.asarray(obs)), self.have_key).numpy()

    def observe(self, obs, action, reward, next_obs, done) -> None:
        if self.scripted is None:
            self.have_key |= torch.as_tensor(np.asarray(reward) > 0)
            self.have_key &= ~torch.as_tensor(np.asarray(done, dtype=bool))


class ScriptedOracle:
    """Meta-World's scripted policy of each row's task type (`metaworld.policies`), told the goal.

    The policies read Meta-World's full 39-dim observation: this frame's 18 dims (hand, gripper,
    up to two objects), the previous frame's 18 and the goal. They get what the agent sees (the
    first `obs_dim` dims, the rest zero as Meta-World pads a missing second object), the same for
    the previous frame (no v3 policy reads it) and the goal from the privileged task parameters.
    Not optimal, but near 100% success on most tasks within 100 steps: a measured ceiling.
    """

    FRAME = 18  # observation dims per frame in Meta-World's 39 (18 current, 18 previous, 3 goal)

    def __init__(self, task_info: TaskInfo):
        from metaworld.policies import ENV_POLICY_MAP

        from icrl_bench.envs import get_family

        family = get_family(task_info.env)
        params = np.asarray(task_info.task_params, dtype=np.float64)
        types = family.type_names()
        # ML10's parameters start with the task type's index; ML1 has one type.
        names = [types[int(i)] for i in params[:, 0]] if family.param_names[0] == "task_type" else [types[0]] * len(params)
        policies = {name: ENV_POLICY_MAP[name]() for name in set(names)}
        self.policies = [policies[name] for name in names]
        self.goals = params[:, -3:]

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        full = np.zeros((len(obs), 2 * self.FRAME + 3))
        full[:, : obs.shape[1]] = obs
        full[:, self.FRAME : self.FRAME + obs.shape[1]] = obs
        full[:, -3:] = self.goals
        with warnings.catch_warnings():  # "Constant(s) may be too high": the clip below is the env's own
            warnings.simplefilter("ignore", UserWarning)
            actions = np.stack([policy.get_action(row) for policy, row in zip(self.policies, full)])
        return np.clip(actions, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class SourceConfig:
    """PPO settings of the `source` agent; unset fields come from `datasets/<env>.yaml`.

    Each env row gets its own PPO learner with one stream (the episodes the harness gives it),
    so the batch size is capped at the rollout length `n_steps`.
    """

    n_steps: int | None = None
    batch_size: int | None = None
    n_epochs: int | None = None
    learning_rate: float | None = None
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    seed: int | None = None  # None: the harness's seed for the run; learner i gets seed + i


class SourceAgent:
    """stable-baselines3 PPO learning online from scratch, one learner per env row.

    SB3's `learn()` drives its own env loop, so this agent runs the inside of SB3's
    `collect_rollouts` by hand through the act/observe protocol: `act` queries the policy (and
    keeps the value and log-probability), `observe` adds the transition to the learner's own
    rollout buffer, and a full buffer triggers SB3's `PPO.train()` exactly as `learn()` would.
    The paper's hyperparameters (n_steps, batch_size, n_epochs, learning_rate) are read from
    the dataset recipe of the env, the same ones that generated the training histories.

    Unlike the dataset's learners (100 parallel streams, 100K steps per task), each learner here
    sees one stream: the protocol's episodes and nothing more (1,000 steps on Darkroom, one PPO
    update per 20-step episode). That is the fair per-episode comparison the papers draw: the
    same experience the in-context learner gets. (SB3 seeds numpy's and Python's global RNGs
    when it builds a learner.)

    Cost: one small network per env, stepped one by one; fine for Darkroom (40 learners), slow
    for Dark Key-to-Door's 328 test tasks x 5 seeds.
    """

    def __init__(self, **settings) -> None:
        try:
            self.config = SourceConfig(**settings)
        except TypeError as err:
            raise IcrlBenchError(f"source agent: {err}; known settings: {', '.join(SourceConfig.__dataclass_fields__)}.") from None
        self.models: list = []
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.episode_start = np.ones(0, dtype=bool)
        self.forward_passes = 0
        self.run_seed = 0

    def set_seed(self, seed: int) -> None:
        """The harness's seed for this run; used unless the settings fix one."""
        self.run_seed = seed

    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        from stable_baselines3 import PPO
        from stable_baselines3.common.logger import Logger

        from icrl_bench.data.recipes import load_recipe
        from icrl_bench.envs import get_family

        if task_info.num_actions <= 0:
            raise IcrlBenchError(
                f"the source agent (SB3 PPO) runs on the grid worlds only; {task_info.env} has continuous actions: "
                "use --agent random, oracle or a trained agent there."
            )
        recipe = load_recipe(task_info.env).source
        config = self.config
        n_steps = config.n_steps or int(recipe["n_steps"])
        settings = {
            "n_steps": n_steps,
            "batch_size": min(config.batch_size or int(recipe["batch_size"]), n_steps),
            "n_epochs": config.n_epochs or int(recipe["n_epochs"]),
            "learning_rate": config.learning_rate or float(recipe.get("learning_rate", 3e-4)),
            "gamma": config.gamma,
            "gae_lambda": config.gae_lambda,
            "clip_range": config.clip_range,
            "ent_coef": config.ent_coef,
        }
        family = get_family(task_info.env)
        self.models = []
        for row, params in enumerate(np.asarray(task_info.task_params)):
            model = PPO("MlpPolicy", _make_env(family, params), seed=(self.run_seed if config.seed is None else config.seed) + row, device="cpu", verbose=0, **settings)
            model.set_logger(Logger(folder=None, output_formats=[]))
            model._current_progress_remaining = 1.0  # constant learning rate and clip range
            model.policy.set_training_mode(False)
            self.models.append(model)
        self.pending = []
        self.episode_start = np.ones(num_envs, dtype=bool)
        self.forward_passes = 0

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        actions = np.zeros(len(obs), dtype=np.int64)
        self.pending = []
        with _single_thread():
            for i, model in enumerate(self.models):
                action, value, log_prob = model.policy(torch.as_tensor(obs[i : i + 1]).float())
                self.pending.append((value, log_prob))
                actions[i] = int(action[0])
        self.forward_passes += 1
        return actions

    def observe(self, obs, action, reward, next_obs, done) -> None:
        done = np.asarray(done, dtype=bool)
        for i, model in enumerate(self.models):
            value, log_prob = self.pending[i]
            buffer = model.rollout_buffer
            buffer.add(obs[i : i + 1], np.asarray(action[i : i + 1]).reshape(1, 1), np.asarray(reward[i : i + 1], dtype=np.float32),
                       self.episode_start[i : i + 1], value, log_prob)
            if buffer.full:
                # The episode ends by termination at the horizon (no bootstrap there), as in the
                # official env; mid-episode the next state's value bootstraps the advantage.
                with torch.no_grad():
                    last_value = model.policy.predict_values(torch.as_tensor(next_obs[i : i + 1]).float())
                buffer.compute_returns_and_advantage(last_values=last_value, dones=done[i : i + 1])
                with _single_thread():
                    model.train()
                model.policy.set_training_mode(False)
                buffer.reset()
        self.episode_start = done.copy()


def _action_box(env: str) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of a continuous env's action space (read from one of its envs)."""
    from icrl_bench.envs import get_family

    family = get_family(env)
    probe = family.make_env(int(family.split().test[0]))
    space = probe.action_space
    probe.close()
    return np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)


@contextmanager
def _single_thread() -> Iterator[None]:
    """SB3's tiny networks run ~5x faster on one thread than on two busy ones (measured here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _make_env(family, params: np.ndarray):
    """The bare single-task env (used only for its spaces: the harness steps the batched env)."""
    import importlib

    import gymnasium as gym

    module, name = gym.spec(family.gym_id).entry_point.split(":")
    return getattr(importlib.import_module(module), name)(**family.env_kwargs(np.asarray(params)))
