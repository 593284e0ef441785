"""Experiment tracking: every record of a run's metrics.jsonl, mirrored to TensorBoard or W&B.

metrics.jsonl stays the record of a run (resume trims it, `reproduce` reads it); a tracker gets
each record as it is written, with the same keys and values at the same step, so a curve in
TensorBoard or W&B is the curve in the file. Both are optional extras:

    pip install 'icrl-bench[tensorboard]'   # runs/<run>/tensorboard/: tensorboard --logdir runs
    pip install 'icrl-bench[wandb]'         # runs/<run>/wandb/: offline; `wandb sync` uploads it

W&B runs offline unless WANDB_MODE says otherwise: no account and no network needed to train.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Protocol

from icrl_bench.errors import IcrlBenchError, unknown

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # --log name -> the module its extra installs
TENSORBOARD_DIR = "tensorboard"
WANDB_PROJECT = "icrl-bench"


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record ({"step": N, name: value, ...})."""
        ...

    def close(self) -> None: ...


def parse_log(values: list[str] | None) -> list[str]:
    """`["tensorboard,wandb"]` or `["tensorboard", "wandb"]` -> the trackers, checked to be installed."""
    names = list(dict.fromkeys(n.strip() for value in values or [] for n in value.split(",") if n.strip()))
    for name in names:
        if name not in TRACKERS:
            raise unknown("--log tracker", name, TRACKERS)
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise IcrlBenchError(f"--log {name} needs the {name} extra ({TRACKERS[name]} is not installed): pip install 'icrl-bench[{name}]'")
    return names


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers (not its step): what both trackers log."""
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker:
    """Scalars under runs/<run>/tensorboard/, one tag per metrics.jsonl key."""

    def __init__(self, run_dir: Path, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops the events written after its checkpoint at start_step, as metrics.jsonl
        # does (TensorBoard hides every event from purge_step on, written before the restart).
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict[str, Any]) -> None:
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per run directory (offline by default), its config the run's configs."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import wandb

        # W&B ids allow letters, digits, '-' and '_' (64 at most); the run directory's name is unique.
        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", run_dir.name)[-64:]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=run_dir.name, id=run_id, dir=str(run_dir),
            config=config, mode=os.environ.get("WANDB_MODE", "offline"), resume="allow",
        )

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(_scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


def open_trackers(names: list[str], run_dir: Path, config: dict[str, Any], start_step: int = 0) -> list[Tracker]:
    """The trackers `names` (from `parse_log`) for a run directory; a resumed run passes its step."""
    trackers: list[Tracker] = []
    try:
        for name in names:
            trackers.append(TensorBoardTracker(run_dir, start_step) if name == "tensorboard" else WandbTracker(run_dir, config))
    except BaseException:
        close_trackers(trackers)
        raise
    return trackers


def close_trackers(trackers: list[Tracker]) -> None:
    for tracker in trackers:
        tracker.close()
