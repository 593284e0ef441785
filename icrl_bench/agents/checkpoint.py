"""Agent checkpoints: weights in safetensors (never pickle) plus a JSON of everything else.

A training run keeps its latest checkpoint in <run>/checkpoint/:

    <dir>/model.safetensors   the network's state dict
    <dir>/checkpoint.json     agent name, model config, training config, dataset id and content
                              hash, step, provenance (code version), and the weights' sha256

The sha256 makes a tampered or half-copied weights file an error instead of a silently different
agent; the JSON's own hash sits in the weights file's header, so an edited JSON (another
n_transit, a removed env) is refused too (checkpoints written before that binding load as before). Files are written under temporary names and renamed, JSON last, so an interrupted save
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from icrl_bench.agents.models import build_model, model_config, model_spec
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import atomic_path, file_sha256, write_json_atomic
from icrl_bench.provenance import provenance

WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
RUN_CHECKPOINT_DIR = "checkpoint"  # a training run's latest checkpoint (training/run_dir.py's layout)
FORMAT = "icrl-bench-checkpoint"
FORMAT_VERSION = 1


META_BINDING_KEY = "icrl_bench.meta_sha256"


def meta_binding(meta: dict[str, Any]) -> str:
    """sha256 of the checkpoint JSON's canonical form, less the weights' own hash (which covers it)."""
    bound = {k: v for k, v in meta.items() if k != "weights_sha256"}
    return hashlib.sha256(json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Write tensors to `path` via a temporary file (`atomic_path`); returns the file's sha256."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        digest = file_sha256(tmp)
    return digest


def save_checkpoint(
    directory: str | os.PathLike,
    agent: str,
    model: nn.Module,
    train_config: dict[str, Any],
    dataset: dict[str, Any],
    step: int,
    metrics: dict[str, float] | None = None,
    made_by: dict[str, Any] | None = None,
) -> Path:
    """Save `model` (the network of agent `agent`) and its metadata; returns the JSON's path.

    `made_by`: the provenance of the process that trained it (default: taken now). A trainer
    passes the one it took at its start: the code that ran, not the checkout at save time.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "agent": agent,
        "model_config": model.config.to_dict(),
        "train_config": train_config,
        "dataset": dataset,
        "step": step,
        "metrics": metrics or {},
        "weights_file": WEIGHTS_FILE,
        "provenance": made_by or provenance(),
    }
    # The JSON is bound to the weights: its hash goes into the weights file's header, whose sha256 the JSON holds.
    meta = json.loads(json.dumps(meta))  # exactly what the file will hold (tuples as lists)
    meta["weights_sha256"] = save_tensors_atomic(model.state_dict(), directory / WEIGHTS_FILE, {META_BINDING_KEY: meta_binding(meta)})
    write_json_atomic(directory / META_FILE, meta, indent=2, sort_keys=True)
    return directory / META_FILE


@dataclass
class LoadedCheckpoint:
    agent: str
    model: nn.Module
    meta: dict[str, Any]
    path: Path


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """The checkpoint.json of a run directory, a checkpoint directory, or either file."""
    path = Path(checkpoint).expanduser()
    if path.suffix == ".json":
        candidates = [path]
    elif path.suffix == ".safetensors":
        candidates = [path.with_name(META_FILE)]
    else:  # a checkpoint directory, or a run directory (its checkpoint/, or checkpoint.old/ mid-swap)
        candidates = [path / META_FILE, path / RUN_CHECKPOINT_DIR / META_FILE, path / f"{RUN_CHECKPOINT_DIR}.old" / META_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise IcrlBenchError(f"no checkpoint at {path} (expected {META_FILE} and {WEIGHTS_FILE}); pass a run directory made by `icrl-bench train`.")


def load_checkpoint(checkpoint: str | os.PathLike, agent: str | None = None, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load and verify a checkpoint; `agent`, if given, must be the agent it was trained as."""
    meta_path = resolve_checkpoint(checkpoint)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise IcrlBenchError(f"{meta_path} is not a readable checkpoint JSON ({err}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IcrlBenchError(f"{meta_path} is not an icrl-bench checkpoint (no format {FORMAT!r}).")
    trained_as = meta.get("agent")
    if agent is not None and trained_as != agent:
        raise IcrlBenchError(f"checkpoint {meta_path.parent} is of agent {trained_as!r}, not {agent!r}; load it as {trained_as!r}.")
    spec = model_spec(trained_as)
    weights = meta_path.parent / meta.get("weights_file", WEIGHTS_FILE)
    if not weights.is_file():
        raise IcrlBenchError(f"checkpoint {meta_path.parent} has no weights file {weights.name}.")
    if file_sha256(weights) != meta.get("weights_sha256"):
        raise IcrlBenchError(
            f"{weights} does not match the sha256 in {meta_path.name}: the file was modified or partly copied; copy the checkpoint again."
        )
    try:
        with safe_open(str(weights), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise IcrlBenchError(f"{weights} is not a readable safetensors file ({err}).") from None
    if META_BINDING_KEY in header and header[META_BINDING_KEY] != meta_binding(meta):
        raise IcrlBenchError(
            f"{meta_path} was changed after its weights were saved (its hash is bound into {weights.name}): "
            "the network would be rebuilt from other settings than it was trained with; copy the checkpoint again."
        )
    config = model_config(spec.name, meta["model_config"])
    model = build_model(spec.name, config)
    try:
        state = load_file(str(weights), device=str(map_location))
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError) as err:
        raise IcrlBenchError(f"{weights} does not fit a {trained_as} network of the recorded config: {str(err).splitlines()[0]}") from None
    model.eval()
    return LoadedCheckpoint(trained_as, model, meta, meta_path.parent)
