"""One trainer for every in-context agent, on CPU or GPU.

    icrl-bench train --agent dicp-ad --dataset darkroom-small-v3 --preset cpu
    icrl-bench train --agent ad --dataset darkroom-v3 --device cuda          # the paper's config
    icrl-bench train --resume runs/dicp-ad-darkroom-small-v3-cpu-20260101-120000
    icrl-bench train --agent dicp-ad --dataset metaworld-ml1-reach-small-v1 --preset cpu --threads 1
    torchrun --nproc-per-node 4 -m icrl_bench.train --agent ad --dataset darkroom-v3   # DDP

The paper's hyperparameters live in baselines/<env>/<agent>.yaml (from the official
gridworld/cfg/model/*.yaml and metaworld/cfg/model/*_ml1.yaml; every Meta-World ML1 task shares
baselines/metaworld-ml1/): AdamW, betas (0.9, 0.99), weight decay 0.01, cosine schedule,
gradient clipping at 1, 50K steps. A named preset (`cpu`) overrides some of them to fit a
2-core CPU. The dataset decides the network's kind: discrete actions (grid worlds) or continuous
ones (its manifest's `env_spec.kind`, or its env family's `kind`), and its shapes.

A run directory holds run.json (configs, dataset, provenance), metrics.jsonl (mirrored to
TensorBoard or W&B with `--log`, see tracking.py) and checkpoint/:
the agent (model.safetensors + checkpoint.json) and the trainer state (optimizer moments, RNG
states, step; trainer_state.safetensors + .json), written as a new directory and swapped in. Batches are a pure function of (seed, step)
(see data/sampler.py) and the schedule a pure function of the step, so `--resume` continues
exactly where the last checkpoint was taken: same batches, same dropout masks, same weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file
from torch import nn

from icrl_bench.agents.checkpoint import META_FILE, WEIGHTS_FILE, save_checkpoint, save_tensors_atomic
from icrl_bench.agents.models import build_model, model_config, model_spec
from icrl_bench.agents.tokens import ModelConfig
from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.sampler import SamplerConfig, WindowSampler, make_loader, validation_batches
from icrl_bench.devices import resolve_device
from icrl_bench.envs.metaworld import ML1_PREFIX
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import file_sha256, write_json_atomic, write_text_atomic
from icrl_bench.paths import REPO_ROOT
from icrl_bench.provenance import provenance
from icrl_bench.tracking import close_trackers, open_trackers, parse_log

log = logging.getLogger(__name__)

BASELINES_DIR = REPO_ROOT / "baselines"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "trainer_state.safetensors"
STATE_META_FILE = "trainer_state.json"
CHECKPOINT_DIR = "checkpoint"  # the latest checkpoint: agent weights + trainer state, swapped in whole
SNAPSHOTS_DIR = "snapshots"  # the agent's weights at every `keep_every` steps (no trainer state)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (official keys in brackets)."""

    lr: float = 1e-2  # [lr]
    betas: tuple[float, float] = (0.9, 0.99)  # [beta1, beta2]
    weight_decay: float = 0.01  # [weight_decay]
    batch_size: int = 512  # [train_batch_size]
    steps: int = 50_000  # [train_timesteps]
    warmup_steps: int = 0  # [num_warmup_steps]; then cosine decay to 0 at `steps`
    grad_clip: float = 1.0  # max gradient norm (the official accelerator.clip_grad_norm_(..., 1))
    seed: int = 0
    num_workers: int = 0  # DataLoader workers feeding the sampler's batches
    pool_size: int = 16  # task rows each sampler worker holds in memory
    refresh_every: int = 4  # batches between replacing one pooled task
    holdout_streams: int = 1  # streams per train task kept for validation
    log_interval: int = 50  # steps between metrics lines [summary_interval]
    eval_interval: int = 1000  # steps between validations [eval_interval]
    ckpt_interval: int = 1000  # steps between checkpoints
    keep_every: int = 0  # also keep the agent's weights every this many steps in snapshots/step-N/ (learning-curve sweeps; 0: no)
    val_max_tasks: int = 64
    val_windows_per_task: int = 16

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML hands over strings as readily as numbers: name the key
            value = getattr(self, f.name)
            if f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if f.type == "int" and value != int(value):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
        if not isinstance(self.betas, (list, tuple)) or not all(isinstance(b, (int, float)) for b in self.betas):
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        self.betas = tuple(self.betas)
        positive = ("lr", "batch_size", "steps", "log_interval", "eval_interval", "ckpt_interval", "pool_size", "refresh_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "num_workers", "holdout_streams", "grad_clip", "keep_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})")


@dataclass
class RunConfig:
    """Everything that defines a training run, as read from a baseline YAML (+ preset)."""

    agent: str
    env: str
    preset: str | None
    model: ModelConfig
    train: TrainConfig
    source: str = ""  # the YAML it came from

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "env": self.env, "preset": self.preset, "source": self.source,
                "model": self.model.to_dict(), "train": asdict(self.train)}


# ---- configs -------------------------------------------------------------------------------------


def baseline_env(env: str) -> str:
    """The baselines/ folder of env `env`: its own, except that every Meta-World ML1 task
    (`metaworld-ml1-<task>`) shares `metaworld-ml1` (the paper trains one model per task, with
    one set of hyperparameters)."""
    return ML1_PREFIX.removesuffix("-") if env.startswith(ML1_PREFIX) else env


def baseline_path(env: str, agent: str) -> Path:
    return BASELINES_DIR / baseline_env(env) / f"{agent}.yaml"


def env_kind(env: str, manifest: dict[str, Any] | None = None) -> str:
    """The env's kind: continuous if the dataset's manifest (`env_spec.kind`) or the env family says
    so, else discrete (manifests written before continuous actions existed have no kind)."""
    from icrl_bench.envs import get_family

    if manifest is not None and manifest.get("env_spec", {}).get("kind") == "continuous":
        return "continuous"
    return "continuous" if getattr(get_family(env), "kind", "discrete") == "continuous" else "discrete"


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _check_override_kinds(config: dict, overrides: dict, path: str = "") -> None:
    """Refuse a `--set` that replaces a group of settings with one value (`model.transformer=3`): it would fail mid-run."""
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else key
        current = config.get(key) if isinstance(config, dict) else None
        if isinstance(current, dict) and not isinstance(value, dict):
            raise IcrlBenchError(f"--set {where}={value!r} replaces a group of settings; set one of its keys instead, "
                                 f"e.g. {where}.{next(iter(current), 'KEY')}=VALUE.")
        if isinstance(value, dict) and isinstance(current, dict):
            _check_override_kinds(current, value, where)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.lr=3e-3", "model.transformer.n_layer=6"]` -> a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or parts[0] not in ("model", "train") or not all(parts):
            raise IcrlBenchError(f"--set takes model.KEY=VALUE or train.KEY=VALUE (e.g. train.lr=3e-3), got {pair!r}.")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _override_value(value)
    return out


def _override_value(text: str) -> Any:
    """A `--set` value as YAML, except that `3e-3` is a number (YAML 1.1 wants `3.0e-3`, users don't)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(parsed, str):
        try:
            return float(parsed) if parsed.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity") else parsed
        except ValueError:
            return parsed
    return parsed


def load_run_config(agent: str, env: str, preset: str | None = None, config_path: str | os.PathLike | None = None,
                    kind: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config of `agent` on `env`: baselines/<env>/<agent>.yaml (or `config_path`) plus `preset`,
    plus `overrides` (nested like the YAML, from `--set`; unknown keys are refused like the YAML's).

    `kind` ("discrete" or "continuous") picks the network; default: the env family's.
    """
    spec = model_spec(agent)
    folder = BASELINES_DIR / baseline_env(env)
    path = Path(config_path) if config_path else baseline_path(env, agent)
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        hint = f" Configs for {env}: {', '.join(known)}." if known else f" No configs for env {env!r} under {BASELINES_DIR}."
        raise IcrlBenchError(f"no training config {path}.{hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise IcrlBenchError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise IcrlBenchError(f"{path} must be a mapping of agent, env, model, train, presets; it is a {type(raw).__name__}.")
    for key in ("model", "train", "presets"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise IcrlBenchError(f"{path}: `{key}` must be a mapping of settings, not a {type(raw[key]).__name__}.")
    if raw.get("agent", agent) != agent:
        raise IcrlBenchError(f"{path} is a config for agent {raw.get('agent')!r}, not {agent!r}.")
    if raw.get("env", baseline_env(env)) not in (env, baseline_env(env)):
        raise IcrlBenchError(
            f"{path} is a config for env {raw.get('env')!r} but the dataset is {env!r}; use baselines/{baseline_env(env)}/{agent}.yaml or a {raw.get('env')} dataset."
        )
    presets = raw.get("presets") or {}
    if preset is not None:
        if preset not in presets:
            raise IcrlBenchError(f"{path} has no preset {preset!r}; presets: {', '.join(sorted(presets)) or 'none'}.")
        raw = _merge(raw, presets[preset])
    if overrides:
        _check_override_kinds(raw, overrides)
        raw = _merge(raw, overrides)
    unknown_top = sorted(set(raw) - {"agent", "env", "model", "train", "presets", "description"})
    if unknown_top:
        raise IcrlBenchError(f"{path}: unknown key(s) {', '.join(unknown_top)}; known: agent, env, model, train, presets.")
    train_values = raw.get("train") or {}
    known_train = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(train_values) - known_train)
    if bad:
        raise IcrlBenchError(f"{path}: unknown train key(s) {', '.join(bad)}; known: {', '.join(sorted(known_train))}.")
    try:
        train = TrainConfig(**train_values)
    except (TypeError, ValueError) as err:
        raise IcrlBenchError(f"{path}: bad train config: {err}") from None
    try:
        model = model_config(spec.name, raw.get("model") or {}, kind or env_kind(env))
    except IcrlBenchError as err:
        raise IcrlBenchError(f"{path}: {err}") from None
    return RunConfig(agent=agent, env=env, preset=preset, model=model, train=train, source=str(path))


def fit_to_dataset(model: ModelConfig, ds) -> ModelConfig:
    """Fill what a model config takes from the dataset.

    Continuous: the observation and action sizes (from the arrays). IDT: the horizon, and the
    return-to-go to act from (grid: the best return in the train tasks; continuous: reward_max per
    step over the horizon, the official `10 * horizon`).
    """
    values = model.to_dict()
    if model.kind == "continuous":
        arrays = ds.manifest["arrays"]
        values.update(obs_dim=int(arrays["obs"]["shape"][-1]), action_dim=int(arrays["action"]["shape"][-1]))
    if hasattr(model, "horizon"):
        horizon = int(ds.manifest["env_spec"]["horizon"])
        if model.kind == "continuous":
            target_return = model.reward_max * horizon
        else:
            from icrl_bench.envs.families import get_family

            target_return = float(get_family(ds.manifest["env"]).max_return(ds.task_params[ds.train_rows]).max())
        values.update(horizon=horizon, target_return=target_return)
    try:
        return type(model).from_dict(values)
    except ValueError as err:
        raise IcrlBenchError(f"{ds.dataset_id} does not fit this model config: {err}") from None


# ---- devices and schedule ---------------------------------------------------------------------------


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 0 at `config.steps` (transformers' cosine schedule)."""
    if step < config.warmup_steps:
        return config.lr * step / max(1, config.warmup_steps)
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; on CUDA the fused kernel (one launch per step instead of dozens: the model is tiny)."""
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, fused=fused)


# ---- the trainer state (optimizer, RNG, step) in safetensors + JSON --------------------------------


def save_trainer_state(run_dir: Path, step: int, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": value for index, entry in state["state"].items() for key, value in entry.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    digest = save_tensors_atomic(tensors, run_dir / STATE_FILE)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    write_json_atomic(run_dir / STATE_META_FILE, {"step": step, "param_groups": groups, "sha256": digest}, indent=2, sort_keys=True)


def latest_checkpoint(run_dir: Path) -> Path:
    """checkpoint/ of a run, or checkpoint.old/ if a save was cut off while swapping them."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        if (run_dir / name / STATE_META_FILE).is_file():
            return run_dir / name
    raise IcrlBenchError(f"{run_dir} has no checkpoint yet: it stopped before its first one; start the run again.")


def saved_step(run_dir: Path) -> int:
    meta_path = run_dir / STATE_META_FILE
    if not meta_path.is_file():
        raise IcrlBenchError(f"{run_dir} has no trainer state ({STATE_META_FILE}) yet: it stopped before its first checkpoint; start it again.")
    return int(json.loads(meta_path.read_text())["step"])


def load_trainer_state(run_dir: Path, optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    meta_path, path = run_dir / STATE_META_FILE, run_dir / STATE_FILE
    if not meta_path.is_file() or not path.is_file():
        raise IcrlBenchError(f"{run_dir} has no trainer state ({STATE_FILE}); it cannot be resumed.")
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


# ---- the loop -------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    wall_time_s: float
    samples_per_s: float
    final_metrics: dict[str, float] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device, autocast: bool = False) -> dict[str, float]:
    """Mean of every metric over the validation windows (weighted by batch size)."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            _, metrics = model.loss(_to_device(batch, device))
        n = len(batch["row"])
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value) * n
        count += n
    model.train(was_training)
    return {f"val_{k}": v / count for k, v in totals.items()} if count else {}


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def train(
    agent: str | None = None,
    dataset: str | None = None,
    preset: str | None = None,
    device: str = "auto",
    out: str | os.PathLike = "runs",
    root: str | os.PathLike | None = None,
    steps: int | None = None,
    resume: str | os.PathLike | None = None,
    config_path: str | os.PathLike | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    overrides: list[str] | None = None,
    time_budget_s: float | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
    log_to: list[str] | None = None,
) -> TrainResult:
    """Train `agent` on `dataset` (or continue the run in `resume`); returns where it went.

    Args:
        steps: override the config's total steps (the cosine schedule follows it).
        stop_after: stop (with a checkpoint) after this many steps of this call, as an
            interruption would; the run can then be resumed.
        threads: torch CPU threads (default: torch's choice). On a CPU shared with other jobs,
            1 thread can be several times faster than 2 (threads wait on each other).
        overrides: config values as `train.lr=3e-3` or `model.transformer.n_layer=6`, validated
            like the YAML and recorded in run.json.
        on_run_dir: called with a new run's directory as soon as it exists (so a caller can resume it
            after a kill).
        log_to: trackers that mirror metrics.jsonl: "tensorboard", "wandb" (optional extras; W&B
            offline unless WANDB_MODE says otherwise). A resumed run keeps its own unless given.
        time_budget_s: fit the run into this many seconds of training: after BUDGET_PROBE_STEPS
            steps the measured speed sets the total steps (at most the config's), and the cosine
            schedule follows the fitted total. run.json records both totals.
    """
    if time_budget_s is not None and time_budget_s <= 0:
        raise IcrlBenchError(f"--time-budget must be > 0 seconds, got {time_budget_s}.")
    trackers_wanted = parse_log(log_to)  # an unknown or uninstalled tracker fails before any work
    if threads is not None:
        if threads < 1:
            raise IcrlBenchError(f"--threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
    console = console or Console(stderr=True)
    rank, world = _distributed()
    dev = torch.device(resolve_device(device))
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / RUN_FILE).is_file():
            raise IcrlBenchError(f"{run_dir} is not a training run directory (no {RUN_FILE}).")
        try:
            run_meta = json.loads((run_dir / RUN_FILE).read_text())
            recorded = run_meta["config"]  # the run's own configs, not today's YAML
            config = RunConfig(agent=run_meta["agent"], env=run_meta["env"], preset=run_meta["preset"],
                               model=model_config(run_meta["agent"], recorded["model"]), train=TrainConfig(**recorded["train"]),
                               source=recorded.get("source", ""))
            dataset, root = run_meta["dataset"]["id"], run_meta["dataset"].get("root") if root is None else root
            trackers_wanted = trackers_wanted or parse_log(run_meta.get("log"))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise IcrlBenchError(f"{run_dir / RUN_FILE} is not a readable run record ({type(err).__name__}: {err}); "
                                 "start a new run instead of resuming this one.") from None
    else:
        if agent is None or dataset is None:
            raise IcrlBenchError("pass --agent and --dataset (or --resume RUN_DIR).")
        model_spec(agent)  # unknown agent: fail before touching the dataset
    ds = load_dataset(dataset, root)
    if resume is None:
        config = load_run_config(agent, ds.manifest["env"], preset, config_path, env_kind(ds.manifest["env"], ds.manifest),
                                 parse_overrides(overrides or []))
        if steps is not None:
            try:
                config.train = TrainConfig(**{**asdict(config.train), "steps": steps})
            except ValueError as err:
                raise IcrlBenchError(f"bad --steps: {err}") from None
        config.model = fit_to_dataset(config.model, ds)
    elif ds.manifest["content_hash"] != run_meta["dataset"]["content_hash"]:
        raise IcrlBenchError(f"dataset {dataset} changed since the run started (content hash differs); it cannot be resumed on it.")
    spec = model_spec(config.agent)
    tc = config.train

    # -- data: batches are a pure function of (seed, step); each DDP rank draws its own stream
    sampler_config = SamplerConfig(
        window=config.model.n_transit, batch_size=tc.batch_size, seed=tc.seed + 1_000_003 * rank,
        pool_size=tc.pool_size, refresh_every=tc.refresh_every, holdout_streams=tc.holdout_streams,
    )
    val_config = SamplerConfig(**{**asdict(sampler_config), "seed": tc.seed})
    dataset_info = {"id": ds.dataset_id, "content_hash": ds.manifest["content_hash"], "env": ds.manifest["env"],
                    "root": str(root) if root is not None else None}

    made_by = provenance()  # the code that runs in this process, also for checkpoints saved later
    torch.manual_seed(tc.seed)
    model = build_model(config.agent, config.model).to(dev)
    optimizer = make_optimizer(model, tc)
    start = 0
    if resume is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = Path(out) / f"{config.agent}-{ds.dataset_id}-{preset or 'paper'}-{stamp}"
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=False)
            write_json_atomic(run_dir / RUN_FILE, {"agent": config.agent, "env": config.env, "preset": preset, "dataset": dataset_info,
                                                   "config": config.to_dict(), "overrides": list(overrides or []), "device": str(dev),
                                                   "log": trackers_wanted,
                                                   "world_size": world, "provenance": made_by}, indent=2, sort_keys=True)
            if on_run_dir is not None:
                on_run_dir(run_dir)
    else:
        from icrl_bench.agents.checkpoint import load_checkpoint

        ckpt_dir = latest_checkpoint(run_dir)
        loaded = load_checkpoint(ckpt_dir, agent=config.agent, map_location="cpu")
        model.load_state_dict(loaded.model.state_dict())
    ddp_model = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    if resume is not None:
        start = saved_step(ckpt_dir)
        if start != loaded.meta["step"]:
            raise IcrlBenchError(f"{ckpt_dir}: the weights (step {loaded.meta['step']}) and trainer state (step {start}) disagree; the run cannot be resumed exactly.")
    # The loader is made before restoring the RNG state: making its iterator draws from the torch RNG.
    transform = spec.transform(config.model) if spec.transform else None
    sampler = WindowSampler(ds.dataset_id, root, sampler_config, arrays=spec.arrays, transform=transform, start_step=start)
    batches = iter(make_loader(sampler, tc.num_workers, pin_memory=dev.type == "cuda"))
    if resume is not None:
        load_trainer_state(ckpt_dir, optimizer, dev)
        if start >= tc.steps:
            console.print(f"{run_dir} already finished ({start}/{tc.steps} steps).")
    val = validation_batches(ds.dataset_id, root, val_config, spec.arrays, transform, max_tasks=tc.val_max_tasks,
                             windows_per_task=tc.val_windows_per_task) if rank == 0 else []
    autocast = dev.type == "cuda"  # bf16 autocast on GPU; fp32 on CPU
    if resume is not None and rank == 0:
        _drop_metrics_after(run_dir / METRICS_FILE, start)  # lines written after the checkpoint we resume from
    metrics_file = open(run_dir / METRICS_FILE, "a") if rank == 0 else None  # noqa: SIM115 - closed by the loop's finally
    try:
        tracked_config = {"agent": config.agent, "env": config.env, "preset": config.preset, "dataset": dataset_info, **config.to_dict()}
        trackers = open_trackers(trackers_wanted, run_dir, tracked_config, start) if rank == 0 else []
    except BaseException:
        if metrics_file is not None:
            metrics_file.close()
        raise

    def checkpoint(step: int, metrics: dict[str, float]) -> None:
        """Write weights + trainer state to checkpoint.new/, then swap it in for checkpoint/."""
        if rank != 0:
            return
        new, current, old = run_dir / f"{CHECKPOINT_DIR}.new", run_dir / CHECKPOINT_DIR, run_dir / f"{CHECKPOINT_DIR}.old"
        shutil.rmtree(new, ignore_errors=True)
        save_checkpoint(new, config.agent, model, {**asdict(tc), "preset": config.preset}, dataset_info, step, metrics, made_by)
        save_trainer_state(new, step, optimizer, dev)
        if current.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(current, old)
        os.replace(new, current)
        shutil.rmtree(old, ignore_errors=True)
        if tc.keep_every and step % tc.keep_every == 0:  # the agent's two files of the checkpoint just written
            snapshot = run_dir / SNAPSHOTS_DIR / f"step-{step}"
            shutil.rmtree(snapshot, ignore_errors=True)
            snapshot.mkdir(parents=True)
            for name in (WEIGHTS_FILE, META_FILE):
                shutil.copy2(current / name, snapshot / name)

    def emit(record: dict[str, Any]) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
        for tracker in trackers:  # the same record, the same step
            tracker.log(record)

    step, last = start, {}
    val_metrics: dict[str, float] = {}
    end = tc.steps if stop_after is None else min(tc.steps, start + stop_after)
    t_start = time.perf_counter()
    t_window, samples_window = t_start, 0
    progress = Progress(
        TextColumn(f"[bold]{config.agent}[/] {ds.dataset_id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=not show_progress or rank != 0,
    )
    ddp_model.train()
    try:
        with progress, StopRequest() as stop:
            task = progress.add_task("train", total=tc.steps, completed=start, info="")
            while step < end:
                batch = _to_device(next(batches), dev)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, tc)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    loss, metrics = ddp_model(batch)  # the model's forward is its training loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else torch.tensor(0.0)
                optimizer.step()
                step += 1
                samples_window += tc.batch_size * world
                if time_budget_s is not None and resume is None:
                    if step == start + BUDGET_WARMUP_STEPS:
                        t_probe = time.perf_counter()  # the first steps pay for CUDA and loader start-up
                    elif step == start + BUDGET_WARMUP_STEPS + BUDGET_PROBE_STEPS:
                        now = time.perf_counter()
                        fitted = fit_steps(tc, step, (now - t_probe) / BUDGET_PROBE_STEPS, time_budget_s - (now - t_start))
                        if rank == 0:
                            _record_fitted_steps(run_dir, tc.steps, fitted, time_budget_s, step)
                        tc.steps, end = fitted, min(end, fitted)
                        progress.update(task, total=fitted)
                if step % tc.log_interval == 0 or step == end:
                    now = time.perf_counter()
                    last = {k: float(v) for k, v in metrics.items()}
                    throughput = samples_window / max(now - t_window, 1e-9)
                    t_window, samples_window = now, 0
                    emit({"step": step, "lr": lr_at(step - 1, tc), "grad_norm": float(grad_norm), "samples_per_s": throughput,
                          "elapsed_s": now - t_start, **last})
                    fit = f"acc {last['acc_action']:.3f}" if "acc_action" in last else f"mse {last.get('mse_action', float('nan')):.3f}"
                    progress.update(task, info=f"loss {last['loss']:.3f} {fit} {throughput:,.0f} samples/s")
                if val and (step % tc.eval_interval == 0 or step == tc.steps):
                    val_metrics = evaluate(model, val, dev, autocast)
                    emit({"step": step, **val_metrics})
                keep = tc.keep_every and step % tc.keep_every == 0
                if step % tc.ckpt_interval == 0 or step == end or stop.requested or keep:
                    checkpoint(step, {**last, **val_metrics})
                progress.update(task, completed=step)
                if stop.requested:  # Ctrl-C or SIGTERM: stopped at a step boundary, with a checkpoint there
                    console.print(f"[yellow]stopped at step {step}[/]; resume with: icrl-bench train --resume {run_dir}")
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if not stop.requested:  # a second Ctrl-C mid-step: the last checkpoint stands (a mid-step state would not resume exactly)
            console.print(f"[yellow]interrupted[/]; resume from the last checkpoint with: icrl-bench train --resume {run_dir}")
        raise
    finally:
        if metrics_file is not None:
            metrics_file.close()
        close_trackers(trackers)
    wall = time.perf_counter() - t_start
    done_steps = step - start
    return TrainResult(run_dir, step, wall, done_steps * tc.batch_size * world / max(wall, 1e-9), last, val_metrics)


class StopRequest:
    """SIGINT and SIGTERM ask the loop to stop at the next step boundary (a second SIGINT stops at once).

    A checkpoint taken mid-step would hold an RNG state and weights from two different moments,
    and the resumed run would not equal an uninterrupted one.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step`, so a resumed run does not repeat steps."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


BUDGET_WARMUP_STEPS = 10  # not timed: start-up costs
BUDGET_PROBE_STEPS = 50  # timed: their speed fixes the total steps
BUDGET_SAFETY = 0.9  # validations and checkpoints cost time the probe did not see


def fit_steps(tc: TrainConfig, step: int, per_step_s: float, remaining_s: float) -> int:
    """The total steps that fit: `step` done, then `remaining_s` at `per_step_s` (at most the config's)."""
    fitted = step + int(max(remaining_s, 0.0) * BUDGET_SAFETY / max(per_step_s, 1e-9))
    if fitted >= tc.log_interval:
        fitted -= fitted % tc.log_interval
    return max(step, tc.warmup_steps + 1, min(tc.steps, fitted))


def _record_fitted_steps(run_dir: Path, before: int, fitted: int, budget_s: float, probe_steps: int) -> None:
    meta = json.loads((run_dir / RUN_FILE).read_text())
    meta["config"]["train"]["steps"] = fitted
    meta["time_budget"] = {"seconds": budget_s, "config_steps": before, "fitted_steps": fitted, "probe_steps": probe_steps}
    write_json_atomic(run_dir / RUN_FILE, meta, indent=2, sort_keys=True)


def main() -> None:
    """`python -m icrl_bench.train` / torchrun entry: the same options as `icrl-bench train`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent")
    parser.add_argument("--dataset")
    parser.add_argument("--preset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--root")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--config")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--set", action="append", dest="overrides")
    parser.add_argument("--time-budget", type=float)
    parser.add_argument("--log", action="append")
    args = parser.parse_args()
    try:
        result = train(args.agent, args.dataset, args.preset, args.device, args.out, args.root, args.steps, args.resume, args.config,
                       threads=args.threads, overrides=args.overrides, time_budget_s=args.time_budget, log_to=args.log)
    except IcrlBenchError as err:
        raise SystemExit(f"error: {err}") from None
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained to step {result.step} in {result.wall_time_s:.0f} s: {result.run_dir}")


if __name__ == "__main__":
    main()
