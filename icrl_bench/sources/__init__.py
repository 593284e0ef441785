"""Source RL algorithms whose learning histories become datasets.

A source runs one or more tasks from scratch and returns, for each task, every transition
of every stream as arrays [stream, step, ...]. Sources are looked up by name; the recipe's
`source` block holds the name and the hyperparameters, checked by the source's config
dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from icrl_bench.errors import IcrlBenchError, unknown

ProgressFn = Callable[[int], None]
"""Called with the number of env steps just taken (summed over streams)."""


class Source(Protocol):
    """What the dataset builder needs of a source algorithm."""

    name: str
    config_cls: type
    tasks_per_job: int  # 1: one task per worker process; more: batched in one process

    def run(
        self,
        family: str,
        tasks: list[int],
        seeds: list[int],
        config: Any,
        device: str,
        progress: ProgressFn | None,
    ) -> list[dict[str, np.ndarray]]:
        """Learn each canonical task of `family` from scratch (seeded by `seeds`) and return its history."""
        ...


@dataclass(frozen=True)
class SourceInfo:
    name: str
    module: str
    description: str


SOURCES: dict[str, SourceInfo] = {
    "sb3-ppo": SourceInfo("sb3-ppo", "icrl_bench.sources.sb3_ppo", "stable-baselines3 PPO, one process per task"),
    "sb3-sac": SourceInfo("sb3-sac", "icrl_bench.sources.sb3_sac", "stable-baselines3 SAC, one process per task (continuous actions)"),
    "batched-ppo": SourceInfo(
        "batched-ppo",
        "icrl_bench.sources.batched_ppo",
        "SB3's PPO, one learner per task, all tasks batched in one process",
    ),
}


def get_source(name: str) -> Source:
    """The source called `name` (imported lazily: SB3 and torch load only when used)."""
    import importlib

    if name not in SOURCES:
        raise unknown("source", name, SOURCES)
    return importlib.import_module(SOURCES[name].module).SOURCE


def make_config(config_cls: type, settings: dict[str, Any], where: str) -> Any:
    """Build a source config dataclass from recipe settings, with one-line errors."""
    known = {f.name for f in fields(config_cls)}
    extra = sorted(set(settings) - known)
    if extra:
        raise IcrlBenchError(f"{where}: unknown setting(s) {', '.join(extra)}; known: {', '.join(sorted(known))}.")
    try:
        return config_cls(**settings)
    except (TypeError, ValueError) as err:
        raise IcrlBenchError(f"{where}: {err}") from None
