"""One training on a 2-core CPU: one process, two threads, or two torchrun ranks? Measured in one run.

A laptop budget is wall time on 2 cores. The networks are small (4 layers, width 32): one
step is many small kernels, which intra-op threads split badly. Two DDP ranks (gloo) each
take half of the batch instead, and pay one allreduce of ~50K gradients per step. This runs
`icrl-bench train` three ways with the same global batch and config, for the same steps:

  1 proc x 1 thread      batch B on one rank
  1 proc x 2 threads     batch B on one rank
  2 ranks x 1 thread     torchrun --nproc-per-node 2, batch B/2 per rank

and prints each one's steady training steps per second (from metrics.jsonl, warm-up left out)
and the ratio to the first. Nothing else should run meanwhile. Usage:

    python benchmarks/bench_cpu_ranks.py --dataset darkroom-v3 --root /work/data              # dicp-ad, laptop preset
    python benchmarks/bench_cpu_ranks.py --agent ad --set model.state_features=cell+xy

Results: benchmarks/results/cpu_ranks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine_facts import machine_facts
from rich.console import Console
from rich.table import Table

from icrl_bench.run_records import read_metrics
from icrl_bench.training.config import load_run_config, parse_overrides

RESULTS = Path(__file__).parent / "results" / "cpu_ranks.json"
WAYS = (("1 proc x 1 thread", 1, 1), ("1 proc x 2 threads", 1, 2), ("2 ranks x 1 thread", 2, 1))


def steady_steps_per_s(metrics: Path, skip_until: int) -> float:
    """Steps per second between the first logged step past `skip_until` and the last one."""
    rows = [r for r in read_metrics(metrics) if "elapsed_s" in r]
    first = next(r for r in rows if r["step"] > skip_until)
    return (rows[-1]["step"] - first["step"]) / (rows[-1]["elapsed_s"] - first["elapsed_s"])


def train(args, ranks: int, threads: int, batch: int, out: Path) -> float:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else [sys.executable]
    sets = [f"--set={s}" for s in [*args.set, f"train.batch_size={batch // ranks}", "train.warmup_steps=10",
                                   "train.log_interval=20", "train.eval_interval=100000", "train.ckpt_interval=100000"]]
    command = [*launcher, "-m", "icrl_bench", "train", "--agent", args.agent, "--dataset", args.dataset, "--preset", args.preset,
               "--steps", str(args.steps), "--threads", str(threads), "--out", str(out), "-q", *sets]
    if args.root:
        command += ["--root", args.root]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    (run_dir,) = out.iterdir()
    return steady_steps_per_s(run_dir / "metrics.jsonl", skip_until=args.steps // 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="dicp-ad")
    parser.add_argument("--dataset", default="darkroom-v3")
    parser.add_argument("--env", default="darkroom", help="the dataset's env (whose baseline config gives the batch)")
    parser.add_argument("--root")
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--set", action="append", default=[], help="config override, as `icrl-bench train --set`")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    config = load_run_config(args.agent, args.env, args.preset, overrides=parse_overrides(args.set))
    batch = config.train.batch_size
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-ranks-") as tmp:
        for i, (name, ranks, threads) in enumerate(WAYS):
            rate = train(args, ranks, threads, batch, Path(tmp) / str(i))
            rows.append({"way": name, "ranks": ranks, "threads": threads, "batch_per_rank": batch // ranks,
                         "steps_per_s": rate, "samples_per_s": rate * batch})
    for row in rows:
        row["speedup"] = row["steps_per_s"] / rows[0]["steps_per_s"]
    table = Table(title=f"{args.agent} ({args.preset}, {' '.join(args.set) or 'as configured'}) on {args.dataset}: global batch {batch}")
    for column in ("way", "steps/s", "samples/s", "x 1 proc x 1 thread"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["way"], f"{row['steps_per_s']:.2f}", f"{row['samples_per_s']:,.0f}", f"{row['speedup']:.2f}")
    console = Console()
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_facts(), "agent": args.agent, "preset": args.preset, "overrides": args.set,
                                    "dataset": args.dataset, "global_batch": batch, "steps": args.steps, "rows": rows}, indent=1) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
