"""Summaries of the learning histories in a dataset (what `datasets info` shows)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icrl_bench.data.dataset import LearningHistoryDataset
from icrl_bench.envs import get_family


@dataclass(frozen=True)
class TaskCurve:
    row: int
    task: int
    params: tuple[float, ...]
    test: bool
    first_return: float  # mean over streams of the first episode's return
    last_return: float  # mean over streams of the last episode's return
    max_return: float | None  # the oracle's return on this task (None: not known, Meta-World)
    first_success: float | None = None  # fraction of streams whose first episode succeeded
    last_success: float | None = None  # ... whose last episode succeeded (envs with success)


@dataclass(frozen=True)
class LearningSummary:
    rows: list[TaskCurve]

    @property
    def mean_first(self) -> float:
        return float(np.mean([r.first_return for r in self.rows]))

    @property
    def mean_last(self) -> float:
        return float(np.mean([r.last_return for r in self.rows]))

    @property
    def mean_max(self) -> float | None:
        return None if self.rows[0].max_return is None else float(np.mean([r.max_return for r in self.rows]))

    @property
    def has_success(self) -> bool:
        return self.rows[0].first_success is not None

    def mean_success(self, which: str) -> float:
        return float(np.mean([getattr(r, f"{which}_success") for r in self.rows]))

    @property
    def n_improved(self) -> int:
        return sum(r.last_return > r.first_return for r in self.rows)


def learning_summary(ds: LearningHistoryDataset) -> LearningSummary:
    """First- and last-episode mean returns of every task, read one task at a time."""
    family = get_family(ds.manifest.env)
    max_returns = family.max_return(ds.task_params) if family.kind == "discrete" else [None] * ds.n_tasks
    rows = []
    for row in range(ds.n_tasks):
        returns = ds.episode_returns(row)  # [stream, episode]
        success = episode_success(ds, row) if "success" in ds.array_names else None
        rows.append(
            TaskCurve(
                row=row,
                task=int(ds.task_index[row]),
                params=tuple(v.item() for v in ds.task_params[row]),
                test=bool(ds.split[row]),
                first_return=float(returns[:, 0].mean()) if returns.size else float("nan"),
                last_return=float(returns[:, -1].mean()) if returns.size else float("nan"),
                max_return=None if max_returns[row] is None else float(max_returns[row]),
                first_success=None if success is None else float(success[:, 0].mean()),
                last_success=None if success is None else float(success[:, -1].mean()),
            )
        )
    return LearningSummary(rows)


def episode_success(ds: LearningHistoryDataset, row: int) -> np.ndarray:
    """Whether each episode of task `row` succeeded at any step [stream, episode] (Meta-World's rule)."""
    success, done = ds["success"][row], ds["done"][row]
    ends = np.cumsum(done, axis=-1) - done  # episode number of each step
    n_episodes = int(done.sum(axis=-1).min())
    out = np.zeros((success.shape[0], n_episodes), dtype=bool)
    for stream in range(success.shape[0]):
        keep = ends[stream] < n_episodes
        np.logical_or.at(out[stream], ends[stream][keep], success[stream][keep])
    return out
