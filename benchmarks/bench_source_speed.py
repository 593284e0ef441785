"""How much faster is the batched PPO source? The paper-size Darkroom build, both sources, one run.

Why: the batched source exists to make regenerating datasets cheap; this measures it. The
paper-size Darkroom dataset is 81 goals x 100 streams x 100K env steps per goal (the
recipe's settings, read from datasets/darkroom.yaml). The batched source builds all of it
(through `build_dataset`, so Zarr writes and oracle labels are included); SB3 learns 1-2
goals and is extrapolated per goal (every goal costs it the same: the work is fixed by the
settings). Both run on this machine in this process, SB3 on one thread as its source does.

Reported: wall and CPU seconds, and the ratios
- per core: SB3's seconds per goal x 81 (one single-thread process) / batched build;
- per machine: the same with SB3 in one worker per core (the builder's default) / batched.
CPU seconds are printed because on a shared machine wall time depends on the neighbours.

    .venv/bin/python benchmarks/bench_source_speed.py                 # full build, ~5-10 min
    .venv/bin/python benchmarks/bench_source_speed.py --fraction 0.1  # first 10% of training, extrapolated
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from icrl_bench.data.recipes import resolve
from icrl_bench.envs import get_family
from icrl_bench.sources import batched_ppo
from icrl_bench.sources.sb3_ppo import SOURCE as SB3_SOURCE
from icrl_bench.sources.sb3_ppo import PPOConfig


def timed(fn, *args, **kwargs):
    """fn's result, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sb3-goals", type=int, default=1, help="goals SB3 learns (extrapolated to all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the batched source")
    parser.add_argument("--fraction", type=float, default=1.0, help="run this fraction of the training and extrapolate")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="builder workers (full build only)")
    args = parser.parse_args()

    plan = resolve("darkroom", source="batched-ppo")
    settings = plan.source_settings
    config = PPOConfig(**settings)
    n_goals = len(plan.tasks)
    rollout = config.n_steps * config.n_streams
    n_rollouts = config.total_timesteps // rollout
    run_rollouts = max(1, round(n_rollouts * args.fraction))
    scale = n_rollouts / run_rollouts
    short = PPOConfig(**(settings | {"total_timesteps": run_rollouts * rollout}))
    print(f"Darkroom paper size: {n_goals} goals x {config.n_streams} streams x {config.total_timesteps} steps; "
          f"running {run_rollouts}/{n_rollouts} rollouts (x{scale:.1f} extrapolated); cpus: {os.cpu_count()}", flush=True)  # fmt: skip

    torch.set_num_threads(args.threads)
    family = get_family("darkroom")
    params = family.task_params()[plan.tasks]
    seeds = [plan.task_seed(t) for t in plan.tasks]
    if run_rollouts == n_rollouts:
        from icrl_bench.data.build import build_dataset

        with tempfile.TemporaryDirectory() as root:
            _, b_wall, b_cpu = timed(
                build_dataset, "darkroom", source="batched-ppo", root=root, workers=args.workers, show_progress=False
            )
        what = f"build_dataset, {args.workers} worker(s) (training + labels + Zarr)"
        if args.workers > 1:
            b_cpu = float("nan")  # spent in worker processes: not this process's CPU time
    else:
        _, b_wall, b_cpu = timed(batched_ppo.SOURCE.run, "darkroom", params, seeds, short, "cpu", None)
        b_wall, b_cpu = b_wall * scale, b_cpu * scale
        what = f"the source's training in this process ({args.threads} thread(s)), extrapolated"
    print(f"batched-ppo, all {n_goals} goals, {what}: {b_wall:.1f} s wall, {b_cpu:.1f} s CPU", flush=True)

    walls, cpus = [], []
    for i in range(args.sb3_goals):
        _, wall, cpu = timed(SB3_SOURCE.run_task, "darkroom", params[i], seeds[i], short, "cpu", None)
        walls.append(wall * scale)
        cpus.append(cpu * scale)
        goal = tuple(int(v) for v in params[i])
        print(f"sb3-ppo (1 thread), goal {goal}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s CPU", flush=True)
    s_wall, s_cpu = float(np.mean(walls)), float(np.mean(cpus))
    cores = os.cpu_count() or 1
    sb3_total = s_wall * n_goals
    print(
        f"\nsb3-ppo: {s_wall:.1f} s per goal ({s_cpu:.1f} s CPU); {n_goals} goals in one process: {sb3_total / 60:.1f} min"
    )
    print(f"batched-ppo: {n_goals} goals in {b_wall / 60:.2f} min wall ({b_cpu / 60:.2f} min CPU)")
    if not np.isnan(b_cpu):
        print(f"speed-up core for core (CPU seconds, SB3 x {n_goals} goals / batched): {s_cpu * n_goals / b_cpu:.0f}x")
    print(f"speed-up, wall: SB3 in one process / batched as run: {sb3_total / b_wall:.0f}x")
    print(f"speed-up, wall: SB3 in {cores} workers (one per core) / batched as run: {sb3_total / cores / b_wall:.0f}x")
    steps = n_goals * config.total_timesteps
    print(
        f"throughput: batched {steps / b_wall:,.0f} env steps/s; sb3 {config.total_timesteps / s_wall:,.0f} per process"
    )


if __name__ == "__main__":
    main()
