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
    params: tuple[int, ...]
    test: bool
    first_return: float  # mean over streams of the first episode's return
    last_return: float  # mean over streams of the last episode's return
    max_return: int  # the oracle's return on this task


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
    def mean_max(self) -> float:
        return float(np.mean([r.max_return for r in self.rows]))

    @property
    def n_improved(self) -> int:
        return sum(r.last_return > r.first_return for r in self.rows)


def learning_summary(ds: LearningHistoryDataset) -> LearningSummary:
    """First- and last-episode mean returns of every task, read one task at a time."""
    max_returns = get_family(ds.manifest["env"]).max_return(ds.task_params)
    rows = []
    for row in range(ds.n_tasks):
        returns = ds.episode_returns(row)  # [stream, episode]
        rows.append(
            TaskCurve(
                row=row,
                task=int(ds.task_index[row]),
                params=tuple(int(v) for v in ds.task_params[row]),
                test=bool(ds.split[row]),
                first_return=float(returns[:, 0].mean()) if returns.size else float("nan"),
                last_return=float(returns[:, -1].mean()) if returns.size else float("nan"),
                max_return=int(max_returns[row]),
            )
        )
    return LearningSummary(rows)
