"""Reading a training run's records (metrics.jsonl, run.json), torch-free: the leaderboard, `reproduce`
and scripts/ship_baseline.py state a run's budget from them without importing the trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def training_seconds(records: list[dict[str, Any]]) -> float | None:
    """A run's training wall time from its metrics records, over every segment of a resumed run
    (`elapsed_s` restarts at each resume); None without timed records."""
    total, last, seen = 0.0, 0.0, False
    for record in records:
        if not isinstance(record.get("elapsed_s"), (int, float)):
            continue
        if record["elapsed_s"] < last:  # a new segment began
            total += last
        last, seen = record["elapsed_s"], True
    return total + last if seen else None


def world_size(run: dict[str, Any]) -> int:
    """The torchrun ranks that trained a run (its run.json), each on its own `batch_size`; 1 where unrecorded."""
    return int(run.get("world_size") or 1)
