"""Meta-World ML1 and ML10 as task families, with the DICP paper's choices made explicit.

The paper (and its official metaworld/ code) fixes three things Meta-World leaves open:
- **Horizon**: episodes are truncated at 100 steps (`TimeLimit(env, 100)`), not Meta-World's 500.
- **Observation**: agents see only the first 11 of the 39 observation dims (hand position,
  gripper opening, first object's position and quaternion), or the first 18 (both objects) for
  hammer, stick-push and stick-pull; the goal dims are zero anyway in the ML benchmarks.
- **Success**: an episode succeeds if `info["success"]` is 1 at any step.

Tasks. ML1 of one task name has 50 train and 50 test goal variations; canonical task `i` is
`ML1(name, seed=0).train_tasks[i]` for i < 50 and `.test_tasks[i - 50]` above, so the split is
Meta-World's own (train 0..49, test 50..99). ML10 has 10 train task types and 5 test types with
50 goals each; canonical tasks are its 500 train tasks, then its 250 test tasks, in Meta-World's
order. A task's parameters are its goal position (ML10: the task type's index first), read from
the env after `set_task`.

Versions: `metaworld` 3.x ships only the v3 tasks; the paper used v2 (mujoco-py era). The v3
tasks fix reward and physics bugs of v2, so numbers are comparable in kind, not to the digit.
The `metaworld` package is an optional extra: `pip install 'icrl-bench[metaworld]'`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from icrl_bench.envs.split import TaskSplit
from icrl_bench.errors import IcrlBenchError, missing_extra, unknown

METAWORLD_VERSION_SUFFIX = "-v3"
BENCHMARK_SEED = 0  # the official cfg/env/ml1.yaml `mw_seed`
HORIZON = 100  # the official cfg/env/ml1.yaml `horizon`
ACTION_DIM = 4
FULL_OBS_DIM = 39
WIDE_OBS_TASKS = ("hammer", "stick-push", "stick-pull")  # the official model code's 18-dim tasks
SUCCESS_RULE = "an episode succeeds if info['success'] is 1 at any of its steps"

# The 50 Meta-World task names (without the version suffix), as `metaworld.env_dict.ALL_V3_ENVIRONMENTS`
# lists them; kept here so names can be checked and listed without importing MuJoCo.
ML1_TASKS: tuple[str, ...] = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown",
    "button-press-topdown-wall", "button-press", "button-press-wall", "coffee-button", "coffee-pull",
    "coffee-push", "dial-turn", "disassemble", "door-close", "door-lock", "door-open", "door-unlock",
    "hand-insert", "drawer-close", "drawer-open", "faucet-open", "faucet-close", "hammer",
    "handle-press-side", "handle-press", "handle-pull-side", "handle-pull", "lever-pull",
    "pick-place-wall", "pick-out-of-hole", "pick-place", "plate-slide", "plate-slide-side",
    "plate-slide-back", "plate-slide-back-side", "peg-insert-side", "peg-unplug-side", "soccer",
    "stick-push", "stick-pull", "push", "push-wall", "push-back", "reach", "reach-wall",
    "shelf-place", "sweep-into", "sweep", "window-open", "window-close",
)  # fmt: skip
ML1_PREFIX = "metaworld-ml1-"
ML10_NAME = "metaworld-ml10"


def _import_metaworld() -> Any:
    try:
        import metaworld
    except ImportError as err:
        raise missing_extra(err, "metaworld", "Meta-World") from None
    return metaworld


@functools.lru_cache(maxsize=8)
def _benchmark(benchmark: str, task: str | None) -> Any:
    """The Meta-World benchmark object (building it samples every goal: ~1 s ML1, ~7 s ML10)."""
    metaworld = _import_metaworld()
    if benchmark == "ml1":
        return metaworld.ML1(task + METAWORLD_VERSION_SUFFIX, seed=BENCHMARK_SEED)
    return metaworld.ML10(seed=BENCHMARK_SEED)


class _SliceObservation(gym.ObservationWrapper):
    """Keep the first `dim` observation dims (the paper's agents see no more)."""

    def __init__(self, env: gym.Env, dim: int):
        super().__init__(env)
        space = env.observation_space
        self.dim = dim
        self.observation_space = gym.spaces.Box(space.low[:dim].astype(np.float32), space.high[:dim].astype(np.float32), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation[: self.dim], dtype=np.float32)


@dataclass(frozen=True)
class MetaWorldFamily:
    """One Meta-World benchmark (ML1 of one task name, or ML10) as a task family."""

    name: str
    benchmark: str  # "ml1" | "ml10"
    task: str | None  # the ML1 task name (without -v3); None for ML10
    kind: str = "continuous"
    horizon: int = HORIZON
    action_dim: int = ACTION_DIM
    split_seed: int = BENCHMARK_SEED

    @property
    def obs_dim(self) -> int:
        return 18 if self.task in WIDE_OBS_TASKS else 11

    @property
    def param_names(self) -> tuple[str, ...]:
        goal = ("goal_x", "goal_y", "goal_z")
        return goal if self.benchmark == "ml1" else ("task_type",) + goal

    @property
    def gym_id(self) -> str:
        return f"Meta-World/ML1-{self.task}{METAWORLD_VERSION_SUFFIX}" if self.benchmark == "ml1" else "Meta-World/ML10"

    def _tasks(self) -> list[Any]:
        """Every Meta-World task object in canonical order: train tasks, then test tasks."""
        bench = _benchmark(self.benchmark, self.task)
        return list(bench.train_tasks) + list(bench.test_tasks)

    def _classes(self) -> dict[str, type]:
        bench = _benchmark(self.benchmark, self.task)
        return {**bench.train_classes, **bench.test_classes}

    def type_names(self) -> list[str]:
        """Task type names (with -v3), train types first: ML10's 15, ML1's one."""
        bench = _benchmark(self.benchmark, self.task)
        return list(bench.train_classes) + list(bench.test_classes)

    @property
    def n_tasks(self) -> int:
        return len(self._tasks())

    def split(self) -> TaskSplit:
        bench = _benchmark(self.benchmark, self.task)
        n_train = len(bench.train_tasks)
        return TaskSplit(train=np.arange(n_train), test=np.arange(n_train, self.n_tasks))

    def task_params(self) -> np.ndarray:
        """Goal position of every task [n_tasks, k] float32 (ML10: the type index first)."""
        return _task_params(self)

    def _check(self, task: int) -> None:
        if not 0 <= task < self.n_tasks:
            raise IcrlBenchError(f"{self.name} has tasks 0..{self.n_tasks - 1}, got {task}.")

    def make_source_env(self, task: int) -> gym.Env:
        """Task `task` as the source learner sees it: all 39 observation dims, 100-step episodes."""
        self._check(task)
        mw_task = self._tasks()[task]
        env = self._classes()[mw_task.env_name]()
        env.set_task(mw_task)
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.horizon)

    def make_env(self, task: int) -> gym.Env:
        """Task `task` as an in-context agent sees it: the first `obs_dim` dims, 100-step episodes."""
        return _SliceObservation(self.make_source_env(task), self.obs_dim)

    def recorded(self, obs: np.ndarray) -> np.ndarray:
        """The stored view of source observations [..., 39]: the dims agents see, float32."""
        return np.asarray(obs, dtype=np.float32)[..., : self.obs_dim]

    def env_facts(self) -> dict[str, Any]:
        """The paper's choices and the package version, for the dataset manifest and cards."""
        from importlib.metadata import version

        return {
            "benchmark": self.benchmark,
            "task": self.task,
            "task_types": self.type_names(),
            "benchmark_seed": BENCHMARK_SEED,
            "horizon_rule": f"episodes truncated at {self.horizon} steps (gymnasium TimeLimit, as the official code; Meta-World's own limit is 500)",
            "observation": f"the first {self.obs_dim} of {FULL_OBS_DIM} dims (official code: 11, or 18 for {', '.join(WIDE_OBS_TASKS)})",
            "success": SUCCESS_RULE,
            "metaworld_version": version("metaworld"),
            "task_version": "v3 (the DICP paper used v2; metaworld>=3 ships v3 only)",
        }


@functools.lru_cache(maxsize=8)
def _task_params(family: MetaWorldFamily) -> np.ndarray:
    classes = family._classes()
    type_index = {name: i for i, name in enumerate(family.type_names())}
    envs: dict[str, Any] = {}
    rows = []
    for mw_task in family._tasks():
        env = envs.get(mw_task.env_name) or envs.setdefault(mw_task.env_name, classes[mw_task.env_name]())
        env.set_task(mw_task)
        env.reset()
        goal = [float(v) for v in env._target_pos]
        rows.append(goal if family.benchmark == "ml1" else [float(type_index[mw_task.env_name])] + goal)
    for env in envs.values():
        env.close()
    return np.asarray(rows, dtype=np.float32)


def metaworld_family(name: str) -> MetaWorldFamily:
    """`metaworld-ml1-<task>` or `metaworld-ml10`; unknown task names are listed."""
    if name == ML10_NAME:
        return MetaWorldFamily(ML10_NAME, "ml10", None)
    if name.startswith(ML1_PREFIX):
        task = name[len(ML1_PREFIX) :].removesuffix(METAWORLD_VERSION_SUFFIX)
        if task not in ML1_TASKS:
            raise unknown("Meta-World ML1 task", task, ML1_TASKS)
        return MetaWorldFamily(ML1_PREFIX + task, "ml1", task)
    raise unknown("Meta-World env", name, [ML10_NAME] + [ML1_PREFIX + t for t in ML1_TASKS])
