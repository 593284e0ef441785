"""Which tasks an agent may train on and which it is tested on."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TaskSplit:
    """Task indices of each split, in the paper's shuffled order."""

    train: np.ndarray
    test: np.ndarray

    def labels(self, n_tasks: int) -> np.ndarray:
        """Per-task split label [n_tasks] uint8: 0 = train, 1 = test."""
        labels = np.zeros(n_tasks, dtype=np.uint8)
        labels[self.test] = 1
        return labels


def paper_split(n_tasks: int, seed: int, train_ratio: float) -> TaskSplit:
    """The official split: `random.seed(seed); random.shuffle(tasks)`, first round(n*ratio) train."""
    order = list(range(n_tasks))
    random.Random(seed).shuffle(order)
    n_train = round(n_tasks * train_ratio)
    return TaskSplit(train=np.array(order[:n_train], dtype=np.int64), test=np.array(order[n_train:], dtype=np.int64))
