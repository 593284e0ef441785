"""Reading a training run's records (metrics.jsonl, run.json), torch-free: the leaderboard, `reproduce`
and scripts/ship_baseline.py state a run's budget from them without importing the trainer."""

from __future__ import annotations

import json
import re
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


def warm_start_source(run: dict[str, Any]) -> str | None:
    """`dpt @d61fbd7e`: the checkpoint a warm-started run (`train --init-from`) began from, whose training its own figures leave out."""
    source = run.get("init_from") or {}
    return f"{source.get('agent')} @{str(source['weights_sha256'])[:8]}" if source.get("weights_sha256") else None


def warm_start_note(source: str | None) -> str:
    """What a budget's text adds for a warm-started run (`warm_start_source`): its source, not counted; "" otherwise."""
    return f"warm-started from {source} (its training not counted)" if source else ""


def shipped_hardware(folder: Path) -> str | None:
    """What a shipped checkpoint's README says it was trained on: the text after "<seconds> s on " of its
    "- training budget:" line (scripts/ship_baseline.py writes it), e.g. "cpu (one core, beside another
    training)"; None without such a line."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    for line in readme.read_text().splitlines():
        found = re.search(r"\d s on (.+)$", line) if line.startswith("- training budget:") else None
        if found:
            return found.group(1).strip()
    return None
