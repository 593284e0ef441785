"""One trainer for every in-context agent, on CPU or GPU: set up, then a loop that reads top to bottom.

    icrl-bench train --agent dicp-ad --dataset darkroom-small-v3 --preset cpu
    icrl-bench train --agent ad --dataset darkroom-v3 --device cuda          # the paper's config
    icrl-bench train --resume runs/dicp-ad-darkroom-small-v3-cpu-20260101-120000
    icrl-bench train --agent dicp-ad --dataset metaworld-ml1-reach-small-v1 --preset cpu --threads 1
    torchrun --nproc-per-node 4 -m icrl_bench train --agent ad --dataset darkroom-v3   # DDP

Configs: config.py. The run directory and what makes `--resume` exact: run_dir.py. `--time-budget`:
budget.py. Metrics go to metrics.jsonl and, with `--log`, to TensorBoard or W&B (tracking.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Self

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from icrl_bench.agents.models import build_model, model_spec
from icrl_bench.bench.protocols import validation_goals
from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.sampler import SamplerConfig, WindowSampler, make_loader, validation_batches
from icrl_bench.devices import resolve_device
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import write_json_atomic
from icrl_bench.provenance import provenance
from icrl_bench.tracking import close_trackers, open_trackers, parse_log
from icrl_bench.training.budget import TimeBudget
from icrl_bench.training.config import (
    RunConfig,
    TrainConfig,
    env_kind,
    fit_to_dataset,
    load_run_config,
    parse_overrides,
)
from icrl_bench.training.ranks import check_resumable_on
from icrl_bench.training.run_dir import (
    METRICS_FILE,
    RUN_FILE,
    drop_metrics_after,
    latest_checkpoint,
    load_trainer_state,
    new_run_dir,
    read_run_record,
    record_fitted_steps,
    saved_step,
    write_checkpoint,
)
from icrl_bench.training.warm_start import init_from_checkpoint


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    wall_time_s: float
    samples_per_s: float
    final_metrics: dict[str, float] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """What the loop needs, set up by `train`: the run, its network, its data and where it goes."""

    config: RunConfig
    dataset_id: str
    dataset_info: dict[str, Any]
    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    start: int
    made_by: dict
    rank: int = 0
    world: int = 1
    trackers: list[str] = field(default_factory=list)
    resumed_from: Path | None = None  # the checkpoint a resumed run continues from (its trainer state is restored in `_data`)

    @property
    def resumed(self) -> bool:
        return self.resumed_from is not None


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
    init_from: str | os.PathLike | None = None,
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
        time_budget_s: fit the run into this many seconds of training (budget.py); run.json
            records the fitted total and the config's. Default: the config's `train.time_budget_s`, if any.
        init_from: a checkpoint whose weights start the new run (warm_start.py; run.json records it).
    """
    if time_budget_s is not None and time_budget_s <= 0:
        raise IcrlBenchError(f"--time-budget must be > 0 seconds, got {time_budget_s}.")
    trackers = parse_log(log_to)  # an unknown or uninstalled tracker fails before any work
    if threads is not None:
        if threads < 1:
            raise IcrlBenchError(f"--threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
    rank, world = _distributed()
    dev = _device(device, world)
    run_meta = None
    if resume is not None:
        run_meta, config = read_run_record(Path(resume))
        check_resumable_on(Path(resume), world, run_meta)
        dataset, root = run_meta["dataset"]["id"], run_meta["dataset"].get("root") if root is None else root
        trackers = trackers or parse_log(run_meta.get("log"))
        if init_from is not None:
            raise IcrlBenchError("--init-from starts a new run; a resumed run continues from its own checkpoint (drop --init-from).")
    elif agent is None or dataset is None:
        raise IcrlBenchError("pass --agent and --dataset (or --resume RUN_DIR).")
    else:
        model_spec(agent)  # unknown agent: fail before touching the dataset
    ds = load_dataset(dataset, root)
    if run_meta is None:
        config = _new_config(agent, ds, preset, config_path, overrides, steps)
        if time_budget_s is None and config.train.time_budget_s > 0:  # the preset's budget (the laptop presets': 45 min)
            time_budget_s = config.train.time_budget_s
    elif ds.manifest.content_hash != run_meta["dataset"]["content_hash"]:
        raise IcrlBenchError(f"dataset {dataset} changed since the run started (content hash differs); it cannot be resumed on it.")
    dataset_info = {"id": ds.dataset_id, "content_hash": ds.manifest.content_hash, "env": ds.manifest.env,
                    "root": str(root) if root is not None else None}
    torch.manual_seed(config.train.seed)
    model = build_model(config.agent, config.model)
    warm = None
    if run_meta is None and (init_from is not None or config.train.init_from):
        config.train.init_from = str(init_from) if init_from is not None else config.train.init_from  # the checkpoint records it
        warm = init_from_checkpoint(model, config.agent, config.model, config.train.init_from)
    model = model.to(dev)
    run = Run(config, ds.dataset_id, dataset_info, Path(resume) if resume is not None else Path(), model, make_optimizer(model, config.train),
              dev, 0, provenance(), rank, world, trackers)
    if resume is None:
        run.run_dir = _create_run_dir(run, out, overrides, on_run_dir, warm)
    else:
        run.start = _restore_weights(run)
    return _loop(run, root, console or Console(stderr=True), show_progress, stop_after, time_budget_s)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _from_rank0(value, world: int):
    """Rank 0's `value` on every rank: what the ranks must agree on (the run directory, the fitted steps)."""
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """Whether `flag` is set on any rank: a signal reaches the ranks at different steps, and a rank
    that stopped alone would leave the others at their next allreduce."""
    if world == 1:
        return flag
    box = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(box, op=torch.distributed.ReduceOp.MAX)
    return bool(box.item())


def _device(device: str, world: int) -> torch.device:
    dev = torch.device(resolve_device(device))
    if world > 1 and dev.type == "cuda":  # one GPU per torchrun rank
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return dev


def _new_config(agent: str, ds, preset: str | None, config_path, overrides: list[str] | None, steps: int | None) -> RunConfig:
    """A new run's config: the baseline YAML (or `config_path`), its preset, `--set`, `--steps`, fitted to the dataset."""
    env = ds.manifest.env
    config = load_run_config(agent, env, preset, config_path, env_kind(env, ds.manifest), parse_overrides(overrides or []))
    if steps is not None:
        try:
            config.train = TrainConfig(**{**asdict(config.train), "steps": steps})
        except ValueError as err:
            raise IcrlBenchError(f"bad --steps: {err}") from None
    config.model = fit_to_dataset(config.model, ds)
    if config.train.hold_out_validation_goals:
        validation_goals(env)  # an env without them is refused before the run directory exists
    return config


def _create_run_dir(run: Run, out, overrides: list[str] | None, on_run_dir: Callable[[Path], None] | None,
                    init_from: dict[str, Any] | None = None) -> Path:
    c = run.config
    claimed = [None]
    if run.rank == 0:
        claimed[0] = run_dir = new_run_dir(out, c.agent, run.dataset_id, c.preset, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
        record = {"agent": c.agent, "env": c.env, "preset": c.preset, "dataset": run.dataset_info, "config": c.to_dict(),
                  "overrides": list(overrides or []), "device": str(run.device), "log": run.trackers, "world_size": run.world,
                  "provenance": run.made_by}
        if init_from is not None:
            record["init_from"] = init_from
        write_json_atomic(run_dir / RUN_FILE, record, indent=2, sort_keys=True)
        if on_run_dir is not None:
            on_run_dir(run_dir)
    return Path(_from_rank0(claimed[0], run.world))


def _restore_weights(run: Run) -> int:
    """The latest checkpoint's weights into `run.model` (it becomes `run.resumed_from`); returns its step."""
    from icrl_bench.agents.checkpoint import load_checkpoint

    checkpoint_dir = run.resumed_from = latest_checkpoint(run.run_dir)
    loaded = load_checkpoint(checkpoint_dir, agent=run.config.agent, map_location="cpu")
    run.model.load_state_dict(loaded.model.state_dict())
    step = saved_step(checkpoint_dir)
    if step != loaded.meta["step"]:
        raise IcrlBenchError(f"{checkpoint_dir}: the weights (step {loaded.meta['step']}) and trainer state (step {step}) disagree; "
                             "the run cannot be resumed exactly.")
    return step


def _data(run: Run, root) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    """Training batches (a pure function of (seed, step); each DDP rank draws its own stream) and validation batches.

    The loader is made before the RNG state is restored: making its iterator draws from the torch RNG.
    """
    tc, spec = run.config.train, model_spec(run.config.agent)
    sampler_config = _sampler_config(tc, run.config.env, run.config.model.n_transit, tc.seed + 1_000_003 * run.rank)
    transform = spec.transform(run.config.model) if spec.transform else None
    sampler = WindowSampler(run.dataset_id, root, sampler_config, arrays=spec.arrays, transform=transform, start_step=run.start)
    batches = iter(make_loader(sampler, tc.num_workers, pin_memory=run.device.type == "cuda"))
    if run.resumed:
        load_trainer_state(run.resumed_from, run.optimizer, run.device)
    val = run_validation_batches(run.config.agent, run.config.model, tc, run.config.env, run.dataset_id, root) if run.rank == 0 else []
    return batches, val


def _sampler_config(tc: TrainConfig, env: str, window: int, seed: int) -> SamplerConfig:
    return SamplerConfig(window=window, batch_size=tc.batch_size, seed=seed, pool_size=tc.pool_size, refresh_every=tc.refresh_every,
                         holdout_streams=tc.holdout_streams, start_every=tc.window_start_every,
                         exclude_tasks=tuple(validation_goals(env)) if tc.hold_out_validation_goals else ())


def run_validation_batches(agent: str, model: Any, tc: TrainConfig, env: str, dataset_id: str, root) -> list[dict[str, torch.Tensor]]:
    """The fixed held-out windows a run validates on (rank 0), rebuilt from its configs: so that a
    finished checkpoint can be measured on exactly the windows behind its `val_*` metrics."""
    spec = model_spec(agent)
    transform = spec.transform(model) if spec.transform else None
    return validation_batches(dataset_id, root, _sampler_config(tc, env, model.n_transit, tc.seed), spec.arrays, transform,
                              max_tasks=tc.val_max_tasks, windows_per_task=tc.val_windows_per_task)


class MetricsLog:
    """metrics.jsonl (rank 0), mirrored record for record to the run's trackers."""

    def __init__(self, run: Run):
        self.file, self.trackers = None, []
        if run.rank != 0:
            return
        if run.resumed:
            drop_metrics_after(run.run_dir / METRICS_FILE, run.start)  # lines written after the checkpoint we resume from
        self.file = open(run.run_dir / METRICS_FILE, "a")  # noqa: SIM115 - closed by close()
        try:
            c = run.config
            tracked = {"agent": c.agent, "env": c.env, "preset": c.preset, "dataset": run.dataset_info, **c.to_dict()}
            self.trackers = open_trackers(run.trackers, run.run_dir, tracked, run.start)
        except BaseException:
            self.file.close()
            raise

    def emit(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        for tracker in self.trackers:  # the same record, the same step
            tracker.log(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        close_trackers(self.trackers)


def _loop(run: Run, root, console: Console, show_progress: bool, stop_after: int | None, time_budget_s: float | None) -> TrainResult:
    """The training loop: step, log, validate, checkpoint; a clean stop on Ctrl-C or SIGTERM."""
    tc, model, optimizer, dev = run.config.train, run.model, run.optimizer, run.device
    batches, val = _data(run, root)
    if run.resumed and run.start >= tc.steps:
        console.print(f"{run.run_dir} already finished ({run.start}/{tc.steps} steps).")
    net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if run.world > 1 else model
    autocast = dev.type == "cuda"  # bf16 autocast on GPU; fp32 on CPU
    stop_at = None if stop_after is None else run.start + stop_after
    step, end = run.start, tc.steps if stop_at is None else min(tc.steps, stop_at)
    last, val_metrics = {}, {}
    t_start = t_window = time.perf_counter()
    samples_window = 0
    budget, stopping = None, False  # stopping: every rank agreed to stop at this step boundary
    if time_budget_s is not None and not run.resumed:
        config_steps = tc.steps

        def record(fitted: int, timed_to: int) -> None:
            if run.rank == 0:
                record_fitted_steps(run.run_dir, config_steps, fitted, time_budget_s, timed_to)

        budget = TimeBudget(time_budget_s, run.start, t_start, record)
    progress = _progress_bar(run, console, show_progress)
    log = MetricsLog(run)

    saved_at = run.start if run.resumed else None  # the step of the newest checkpoint (a fresh run stopped at once saves step 0)

    def save() -> None:  # a checkpoint at the current step
        nonlocal saved_at
        write_checkpoint(run.run_dir, step, run.config, model, optimizer, dev, run.dataset_info, {**last, **val_metrics}, run.made_by)
        saved_at = step

    def stop_here() -> NoReturn:  # a clean stop at a step boundary
        console.print(f"[yellow]stopped at step {step}[/]; resume with: icrl-bench train --resume {run.run_dir}")
        raise KeyboardInterrupt from None  # not the loader's error, when that is how the stop showed

    net.train()
    try:
        with progress, StopRequest() as stop:
            task = progress.add_task("train", total=tc.steps, completed=run.start, info="")
            while step < end:
                try:
                    batch = next(batches)
                except Exception:
                    if not stop.requested:
                        raise
                    # A group signal (preemption, `timeout`) also stopped the loader's workers, and the
                    # batch in flight went with them: a rank that lost its batch stops here, so every rank does.
                # Ctrl-C or SIGTERM on any rank: all stop at this boundary, before the step (a signal reaches the
                # ranks at different moments; one that stopped alone would leave the others at their next allreduce).
                stopping = _any_rank(stop.requested, run.world, dev)
                if stopping:
                    if run.rank == 0 and saved_at != step:
                        save()
                    stop_here()
                metrics, grad_norm = _train_step(net, model, optimizer, _to_device(batch, dev), lr_at(step, tc), tc.grad_clip, autocast)
                step += 1
                samples_window += tc.batch_size * run.world
                fitted = budget.after_step(step, tc) if budget is not None else None
                if fitted is not None:
                    fitted = _from_rank0(fitted, run.world)  # each rank timed its own probe: a rank that stopped early would hang the rest
                    tc.steps, end = fitted, fitted if stop_at is None else min(stop_at, fitted)
                    progress.update(task, total=fitted)
                if step % tc.log_interval == 0 or step == end:
                    now = time.perf_counter()
                    last = {k: float(v) for k, v in metrics.items()}
                    throughput = samples_window / max(now - t_window, 1e-9)
                    t_window, samples_window = now, 0
                    log.emit({"step": step, "lr": lr_at(step - 1, tc), "grad_norm": float(grad_norm), "samples_per_s": throughput,
                              "elapsed_s": now - t_start, **last})
                    progress.update(task, info=_progress_info(last, throughput))
                if val and (step % tc.eval_interval == 0 or step == tc.steps):
                    val_metrics = validation_metrics(model, val, dev, autocast)
                    log.emit({"step": step, **val_metrics})
                keep = tc.keep_every and step % tc.keep_every == 0
                if run.rank == 0 and (step % tc.ckpt_interval == 0 or step == end or keep):
                    save()
                progress.update(task, completed=step)
    except KeyboardInterrupt:
        if not stopping:  # a second Ctrl-C mid-step: the last checkpoint stands (a mid-step state would not resume exactly)
            console.print(f"[yellow]interrupted[/]; resume from the last checkpoint with: icrl-bench train --resume {run.run_dir}")
        raise
    finally:
        log.close()
    wall = time.perf_counter() - t_start
    return TrainResult(run.run_dir, step, wall, (step - run.start) * tc.batch_size * run.world / max(wall, 1e-9), last, val_metrics)


def _train_step(net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], lr: float,
                grad_clip: float, autocast: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer step at learning rate `lr`: (metrics, gradient norm before clipping)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        loss, metrics = net(batch)  # the model's forward is its training loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else torch.tensor(0.0)
    optimizer.step()
    return metrics, grad_norm


def _progress_bar(run: Run, console: Console, show: bool) -> Progress:
    return Progress(TextColumn(f"[bold]{run.config.agent}[/] {run.dataset_id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=not show or run.rank != 0)


def _progress_info(last: dict[str, float], throughput: float) -> str:
    fit = f"acc {last['acc_action']:.3f}" if "acc_action" in last else f"mse {last.get('mse_action', float('nan')):.3f}"
    return f"loss {last['loss']:.3f} {fit} {throughput:,.0f} samples/s"


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def validation_metrics(model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device, autocast: bool = False) -> dict[str, float]:
    """Mean of every training metric over the held-out validation windows (weighted by batch size), as val_*."""
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
