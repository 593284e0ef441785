"""Training throughput vs. the window sampler's delivery rate, in one run.

The sampler must deliver at least 5x the samples per second the trainer consumes, so data
never limits training. For every agent this measures:

  trainer   samples/s of full training steps (forward, backward, AdamW) on pre-made batches;
  sampler   samples/s the WindowSampler delivers in-process (pool gathers, Zarr loads included);

and prints the ratio. Usage:

    python benchmarks/bench_training.py                          # the tiny preset, built in a temp root
    python benchmarks/bench_training.py --dataset darkroom-small-v3 --preset cpu --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from icrl_bench.agents.models import MODEL_SPECS, build_model, model_spec
from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.recipes import resolve
from icrl_bench.data.sampler import SamplerConfig, WindowSampler
from icrl_bench.training.config import fit_to_dataset, load_run_config
from icrl_bench.training.loop import make_optimizer

TINY = resolve("darkroom", "tiny").dataset_id


def trainer_rate(config, batches: list[dict], steps: int) -> float:
    agent = config.agent
    torch.manual_seed(0)
    model = build_model(agent, config.model).train()
    optimizer = make_optimizer(model, config.train)
    warmup = 2
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss, _ = model(batches[i % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
    return steps * config.train.batch_size / (time.perf_counter() - start)


def sampler_rate(sampler: WindowSampler, seconds: float = 2.0) -> float:
    start, n, step = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        batch = sampler.batch(step)
        n += len(batch["row"])
        step += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=TINY)
    parser.add_argument("--root", default=None)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per agent")
    parser.add_argument("--agents", default=",".join(sorted(MODEL_SPECS)))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    root = args.root
    if args.dataset == TINY and root is None:
        from icrl_bench.data.build import build_dataset

        root = tempfile.mkdtemp(prefix="icrl-bench-bench-")
        build_dataset("darkroom", "tiny", root=root, workers=1, show_progress=False)
    ds = load_dataset(args.dataset, root)
    env = ds.manifest["env"]
    table = Table(title=f"Training vs. sampler on {args.dataset} ({args.preset or 'paper'} config, {torch.get_num_threads()} torch threads)")
    for column in ("agent", "batch", "n_transit", "trainer samples/s", "sampler samples/s", "ratio", ">= 5x"):
        table.add_column(column, justify="right")
    for agent in args.agents.split(","):
        spec = model_spec(agent)
        config = load_run_config(agent, env, args.preset)
        config.model = fit_to_dataset(config.model, ds)
        window = config.model.n_transit
        transform = spec.transform(config.model) if spec.transform else None
        sampler = WindowSampler(args.dataset, root, SamplerConfig(window=window, batch_size=config.train.batch_size), spec.arrays, transform)
        delivered = sampler_rate(sampler)
        batches = [sampler.batch(i) for i in range(4)]
        consumed = trainer_rate(config, batches, args.steps)
        ratio = delivered / consumed
        table.add_row(agent, str(config.train.batch_size), str(window), f"{consumed:,.0f}", f"{delivered:,.0f}", f"{ratio:,.0f}x",
                      "[green]yes[/]" if ratio >= 5 else "[red]no[/]")
    console.print(table)


if __name__ == "__main__":
    main()
