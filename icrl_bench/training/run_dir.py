"""A training run's directory: its layout, in one place, and the files that make a run resumable.

    <run>/run.json            configs, dataset, provenance (and the fitted steps of a time budget)
    <run>/metrics.jsonl       one line per log interval and per validation
    <run>/checkpoint/         the latest checkpoint: the agent (model.safetensors + checkpoint.json)
                              and the trainer state (optimizer moments, RNG states, step;
                              trainer_state.safetensors + .json), written as checkpoint.new/ and
                              swapped in whole
    <run>/snapshots/step-N/   the agent's weights every `keep_every` steps (no trainer state)

Batches are a pure function of (seed, step) (data/sampler.py) and the schedule a pure function of
the step, so a resumed run continues exactly where its last checkpoint was taken.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from icrl_bench.agents.checkpoint import (
    META_FILE,
    RUN_CHECKPOINT_DIR,
    WEIGHTS_FILE,
    save_checkpoint,
    save_tensors_atomic,
)
from icrl_bench.agents.models import model_config
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import file_sha256, write_json_atomic, write_text_atomic
from icrl_bench.training.config import RunConfig, TrainConfig

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "trainer_state.safetensors"
STATE_META_FILE = "trainer_state.json"
CHECKPOINT_DIR = RUN_CHECKPOINT_DIR  # the latest checkpoint: agent weights + trainer state, swapped in whole
SNAPSHOTS_DIR = "snapshots"  # the agent's weights at every `keep_every` steps (no trainer state)


def new_run_dir(out: str | os.PathLike, agent: str, dataset_id: str, preset: str | None, stamp: str) -> Path:
    """Creates and returns `<out>/<agent>-<dataset>-<preset>-<stamp>`; two runs started in the same second
    (a sweep, a test fixture) get `-2`, `-3`, ... instead of colliding."""
    base = Path(out) / f"{agent}-{dataset_id}-{preset or 'paper'}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        run_dir = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise IcrlBenchError(f"{base}: a thousand runs already carry this name; pass another --out.")


def read_run_record(run_dir: Path) -> tuple[dict[str, Any], RunConfig]:
    """run.json and the run's own configs (not today's YAML), or a one-line error."""
    if not (run_dir / RUN_FILE).is_file():
        raise IcrlBenchError(f"{run_dir} is not a training run directory (no {RUN_FILE}).")
    try:
        meta = json.loads((run_dir / RUN_FILE).read_text())
        recorded = meta["config"]
        config = RunConfig(agent=meta["agent"], env=meta["env"], preset=meta["preset"], model=model_config(meta["agent"], recorded["model"]),
                           train=TrainConfig(**recorded["train"]), source=recorded.get("source", ""))
        if not isinstance(meta["dataset"]["id"], str):
            raise TypeError("dataset.id is not a dataset id")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise IcrlBenchError(f"{run_dir / RUN_FILE} is not a readable run record ({type(err).__name__}: {err}); "
                             "start a new run instead of resuming this one.") from None
    return meta, config


def record_fitted_steps(run_dir: Path, before: int, fitted: int, budget_s: float, probe_steps: int) -> None:
    """run.json after a time budget fixed the total steps: the fitted total, and the config's
    (a refit at the warm-up's end keeps the probe's total as `first_fitted_steps`)."""
    meta = json.loads((run_dir / RUN_FILE).read_text())
    meta["config"]["train"]["steps"] = fitted
    first = meta.get("time_budget", {})
    meta["time_budget"] = {"seconds": budget_s, "config_steps": before, "fitted_steps": fitted, "probe_steps": probe_steps}
    if first:
        meta["time_budget"]["first_fitted_steps"] = first.get("first_fitted_steps", first["fitted_steps"])
    write_json_atomic(run_dir / RUN_FILE, meta, indent=2, sort_keys=True)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step`, so a resumed run does not repeat steps."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


# ---- checkpoints: the agent, plus the trainer state in safetensors + JSON ---------------------------


def write_checkpoint(run_dir: Path, step: int, config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     device: torch.device, dataset_info: dict, metrics: dict[str, float], made_by: dict) -> None:
    """Weights + trainer state to checkpoint.new/, swapped in for checkpoint/; a snapshot at `keep_every` steps."""
    new, current, old = run_dir / f"{CHECKPOINT_DIR}.new", run_dir / CHECKPOINT_DIR, run_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(new, ignore_errors=True)
    save_checkpoint(new, config.agent, model, {**asdict(config.train), "preset": config.preset}, dataset_info, step, metrics, made_by)
    save_trainer_state(new, step, optimizer, device)
    if current.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(current, old)
    os.replace(new, current)
    shutil.rmtree(old, ignore_errors=True)
    keep = config.train.keep_every
    if keep and step % keep == 0:  # the agent's two files of the checkpoint just written
        snapshot = run_dir / SNAPSHOTS_DIR / f"step-{step}"
        shutil.rmtree(snapshot, ignore_errors=True)
        snapshot.mkdir(parents=True)
        for name in (WEIGHTS_FILE, META_FILE):
            shutil.copy2(current / name, snapshot / name)


def save_trainer_state(checkpoint_dir: Path, step: int, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": value for index, entry in state["state"].items() for key, value in entry.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    digest = save_tensors_atomic(tensors, checkpoint_dir / STATE_FILE)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    write_json_atomic(checkpoint_dir / STATE_META_FILE, {"step": step, "param_groups": groups, "sha256": digest}, indent=2, sort_keys=True)


def latest_checkpoint(run_dir: Path) -> Path:
    """checkpoint/ of a run, or checkpoint.old/ if a save was cut off while swapping them."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        if (run_dir / name / STATE_META_FILE).is_file():
            return run_dir / name
    raise IcrlBenchError(f"{run_dir} has no checkpoint yet: it stopped before its first one; start the run again.")


def saved_step(checkpoint_dir: Path) -> int:
    meta_path = checkpoint_dir / STATE_META_FILE
    if not meta_path.is_file():
        raise IcrlBenchError(f"{checkpoint_dir} has no trainer state ({STATE_META_FILE}) yet: it stopped before its first checkpoint; start it again.")
    return int(json.loads(meta_path.read_text())["step"])


def load_trainer_state(checkpoint_dir: Path, optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    meta_path, path = checkpoint_dir / STATE_META_FILE, checkpoint_dir / STATE_FILE
    if not meta_path.is_file() or not path.is_file():
        raise IcrlBenchError(f"{checkpoint_dir} has no trainer state ({STATE_FILE}); it cannot be resumed.")
    meta = json.loads(meta_path.read_text())
    if file_sha256(path) != meta["sha256"]:
        raise IcrlBenchError(f"{path} does not match its recorded sha256 (modified or partly written); the run cannot be resumed.")
    tensors = load_file(str(path))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            per_param.setdefault(int(index), {})[key] = value.to(device) if key != "step" else value
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return int(meta["step"])
