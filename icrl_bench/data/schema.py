"""The arrays of a learning-history dataset: names, dtypes, shapes.

Per-step arrays are indexed [task, stream, step, ...]; per-task arrays [task, ...]. Grid
coordinates, actions and rewards fit in uint8 (the smallest dtype that holds them); Meta-World's
observations, actions and rewards are float32, with its per-step success flag beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    tail: tuple[int, ...] = ()  # shape after [task, stream, step] (or after [task])
    per_task: bool = False
    doc: str = ""

    def shape(self, n_tasks: int, n_streams: int, n_steps: int) -> tuple[int, ...]:
        lead = (n_tasks,) if self.per_task else (n_tasks, n_streams, n_steps)
        return lead + self.tail

    def cast(self, values: np.ndarray) -> np.ndarray:
        """`values` in this array's dtype, refusing values the dtype cannot hold."""
        values = np.asarray(values)
        target = np.dtype(self.dtype)
        if target.kind in "ui" and values.size:
            info = np.iinfo(target)
            if values.min() < info.min or values.max() > info.max:
                raise ValueError(f"{self.name}: values outside the range of {target} ({values.min()}..{values.max()})")
        return values.astype(target)


def grid_world_arrays(n_params: int) -> list[ArraySpec]:
    """The schema of the DICP grid worlds' datasets."""
    return [
        ArraySpec("obs", "uint8", (2,), doc="cell acted on"),
        ArraySpec("action", "uint8", doc="action taken (0..4)"),
        ArraySpec("reward", "uint8", doc="reward received"),
        ArraySpec("next_obs", "uint8", (2,), doc="cell reached; the true terminal cell at an episode's end"),
        ArraySpec("done", "bool", doc="the episode ended at this step"),
        ArraySpec("optimal_action", "uint8", doc="the oracle's action at obs (DPT's label)"),
        ArraySpec("task_index", "int32", per_task=True, doc="canonical task index in the env's task list"),
        ArraySpec("task_params", "uint8", (n_params,), per_task=True, doc="the task's parameters (goal, key, permutation)"),
        ArraySpec("split", "uint8", per_task=True, doc="0 = train task, 1 = test task (the paper's split)"),
    ]


def continuous_arrays(obs_dim: int, action_dim: int, n_params: int) -> list[ArraySpec]:
    """The schema of Meta-World's datasets (continuous observations and actions)."""
    return [
        ArraySpec("obs", "float32", (obs_dim,), doc="observation acted on (the dims agents see)"),
        ArraySpec("action", "float32", (action_dim,), doc="action the env executed, in [-1, 1]"),
        ArraySpec("reward", "float32", doc="reward received"),
        ArraySpec("next_obs", "float32", (obs_dim,), doc="observation reached; the true terminal observation at an episode's end"),
        ArraySpec("done", "bool", doc="the episode ended at this step (truncated at the horizon)"),
        ArraySpec("success", "bool", doc="Meta-World's info['success'] at this step"),
        ArraySpec("task_index", "int32", per_task=True, doc="canonical task index in the env's task list"),
        ArraySpec("task_params", "float32", (n_params,), per_task=True, doc="the task's goal position (ML10: task type index first)"),
        ArraySpec("split", "uint8", per_task=True, doc="0 = train task, 1 = test task (Meta-World's split)"),
    ]


def family_arrays(family) -> list[ArraySpec]:
    """The schema of a dataset of env family `family` (a grid world or Meta-World)."""
    if family.kind == "continuous":
        return continuous_arrays(family.obs_dim, family.action_dim, len(family.param_names))
    return grid_world_arrays(len(family.param_names))
