"""What defines a training run: the optimisation settings, the model config, and where they come from.

The paper's hyperparameters live in baselines/<env>/<agent>.yaml (from the official
gridworld/cfg/model/*.yaml and metaworld/cfg/model/*_ml1.yaml; every Meta-World ML1 task shares
baselines/metaworld-ml1/): AdamW, betas (0.9, 0.99), weight decay 0.01, cosine schedule,
gradient clipping at 1, 50K steps. A named preset (`cpu`, `laptop`) overrides some of them, and
`--set train.KEY=VALUE` / `model.KEY=VALUE` any one, validated like the YAML. The dataset decides
the network's kind: discrete actions (grid worlds) or continuous ones (its manifest's
`env_spec.kind`, or its env family's `kind`), and its shapes (`fit_to_dataset`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from icrl_bench.agents.models import model_config, model_spec
from icrl_bench.agents.spaces import ModelConfig
from icrl_bench.data.manifest import Manifest
from icrl_bench.envs.metaworld import ML1_PREFIX
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import require_shipped, shipped

BASELINES_DIR = shipped("baselines")  # the checkout's, or the installed package's copy


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
    window_start_every: int = 1  # windows start at multiples of this step (1: anywhere, the papers'; IDT's low_per_high: blocks as acting cuts them, worse on Darkroom: docs/agents.md)
    log_interval: int = 50  # steps between metrics lines [summary_interval]
    eval_interval: int = 1000  # steps between validations [eval_interval]
    ckpt_interval: int = 1000  # steps between checkpoints
    keep_every: int = 0  # also keep the agent's weights every this many steps in snapshots/step-N/ (learning-curve sweeps; 0: no)
    val_max_tasks: int = 64
    val_windows_per_task: int = 16
    time_budget_s: float = 0.0  # fit the run into this many seconds of training, as --time-budget (which wins); 0: the steps as given
    hold_out_validation_goals: bool = False  # never train on the protocol's validation goals (`evaluate --goals validation` chooses runs)
    init_from: str = ""  # a checkpoint whose weights start a new run, on disk or in the shipped tree (baselines/...), as --init-from (which wins); "": fresh

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML hands over strings as readily as numbers: name the key
            value = getattr(self, f.name)
            if f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if f.type == "int" and value != int(value):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
        if not isinstance(self.init_from, str):
            raise TypeError(f"init_from must be a checkpoint path, got {self.init_from!r}")
        if not isinstance(self.hold_out_validation_goals, bool):
            raise TypeError(f"hold_out_validation_goals must be true or false, got {self.hold_out_validation_goals!r}")
        if not isinstance(self.betas, (list, tuple)) or not all(isinstance(b, (int, float)) for b in self.betas):
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        self.betas = tuple(self.betas)
        positive = ("lr", "batch_size", "steps", "log_interval", "eval_interval", "ckpt_interval", "pool_size", "refresh_every",
                    "window_start_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "num_workers", "holdout_streams", "grad_clip", "keep_every", "time_budget_s"):
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


# ---- where configs come from ----------------------------------------------------------------------

def baseline_env(env: str) -> str:
    """The baselines/ folder of env `env`: its own, except that every Meta-World ML1 task
    (`metaworld-ml1-<task>`) shares `metaworld-ml1` (the paper trains one model per task, with
    one set of hyperparameters)."""
    return ML1_PREFIX.removesuffix("-") if env.startswith(ML1_PREFIX) else env


def baseline_path(env: str, agent: str) -> Path:
    return BASELINES_DIR / baseline_env(env) / f"{agent}.yaml"


def env_kind(env: str, manifest: Manifest | None = None) -> str:
    """The env's kind: continuous if the dataset's manifest (`env_spec.kind`) or the env family says
    so, else discrete (manifests written before continuous actions existed have no kind)."""
    from icrl_bench.envs import get_family

    if manifest is not None and manifest.env_spec.kind == "continuous":
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
    if config_path is None:
        require_shipped("baselines")  # an installation without its configs says so, not "no config for darkroom"
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
        arrays = ds.manifest.arrays
        values.update(obs_dim=arrays["obs"].shape[-1], action_dim=arrays["action"].shape[-1])
    if hasattr(model, "horizon"):
        horizon = ds.manifest.env_spec.horizon
        if model.kind == "continuous":
            target_return = model.reward_max * horizon
        else:
            from icrl_bench.envs.families import get_family

            target_return = float(get_family(ds.manifest.env).max_return(ds.task_params[ds.train_rows]).max())
        values.update(horizon=horizon, target_return=target_return)
    try:
        return type(model).from_dict(values)
    except ValueError as err:
        raise IcrlBenchError(f"{ds.dataset_id} does not fit this model config: {err}") from None
