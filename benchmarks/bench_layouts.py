"""Two token layouts of one agent in one run: training speed and supervised decisions per second.

AD: the official (DICP) layout teaches one action per window, the dense layout (`model.layout:
dense`) one per position. IDT (`--agent idt`): both layouts teach every step's action; the dense
one gives each step one Decisions-to-Go token instead of four. For the same network, batch and
threads this measures both layouts' full training steps (forward, backward, AdamW) on the same
pre-made batches and prints

  samples/s     windows per second;
  decisions/s   supervised actions per second (windows x actions taught per window);

and the ratios dense / official. Usage:

    python benchmarks/bench_layouts.py                                   # AD on darkroom-tiny-v3, built in a temp root
    python benchmarks/bench_layouts.py --dataset darkroom-v3 --batch-size 64 --steps 20
    python benchmarks/bench_layouts.py --agent idt --dataset darkroom-v3 --batch-size 16 --steps 20

Results: benchmarks/results/layouts.json (AD), layouts_idt.json (IDT).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from machine_facts import machine_facts
from rich.console import Console
from rich.table import Table

from icrl_bench.agents.models import build_model, model_spec
from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.sampler import SamplerConfig, WindowSampler
from icrl_bench.training.config import fit_to_dataset, load_run_config, parse_overrides
from icrl_bench.training.loop import make_optimizer

RESULTS = Path(__file__).parent / "results" / "layouts.json"


def measure(agent: str, layout: str, dataset_id: str, root, batch_size: int, steps: int) -> dict:
    ds = load_dataset(dataset_id, root)
    config = load_run_config(agent, ds.manifest["env"], overrides=parse_overrides(
        [f"model.layout={layout}", "model.transformer.attn_dropout=0.0", f"train.batch_size={batch_size}"]))
    config.model = fit_to_dataset(config.model, ds)
    spec = model_spec(agent)
    transform = spec.transform(config.model) if spec.transform else None
    sampler = WindowSampler(dataset_id, root, SamplerConfig(window=config.model.n_transit, batch_size=batch_size, seed=0), spec.arrays, transform)
    batches = [sampler.batch(i) for i in range(steps + 2)]
    torch.manual_seed(0)
    model = build_model(agent, config.model).train()
    optimizer = make_optimizer(model, config.train)
    for i, batch in enumerate(batches):
        if i == 2:
            start = time.perf_counter()
        loss, _ = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    samples = steps * batch_size / seconds
    per_window = config.model.n_transit if layout == "dense" or spec.family == "idt" else 1  # the official AD teaches its query only
    return {"layout": layout, "n_transit": config.model.n_transit, "s_per_step": seconds / steps, "samples_per_s": samples,
            "decisions_per_s": samples * per_window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="ad", choices=["ad", "idt"])
    parser.add_argument("--dataset")
    parser.add_argument("--root")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/layouts.json, layouts_idt.json for IDT)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or (RESULTS if args.agent == "ad" else RESULTS.with_name(f"layouts_{args.agent}.json"))
    root, dataset_id = args.root, args.dataset
    if dataset_id is None:
        from icrl_bench.data.build import build_dataset

        root = tempfile.mkdtemp(prefix="bench-layouts-")
        dataset_id = build_dataset("darkroom", "tiny", root=root, workers=1, show_progress=False).dataset_id
    rows = [measure(args.agent, layout, dataset_id, root, args.batch_size, args.steps) for layout in ("dicp", "dense")]
    table = Table(title=f"{args.agent.upper()} on {dataset_id}: batch {args.batch_size}, {args.threads} thread(s), {args.steps} steps")
    for column in ("layout", "s/step", "samples/s", "decisions/s"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["layout"], f"{row['s_per_step']:.3f}", f"{row['samples_per_s']:,.0f}", f"{row['decisions_per_s']:,.0f}")
    console = Console()
    console.print(table)
    ratio = {k: rows[1][k] / rows[0][k] for k in ("samples_per_s", "decisions_per_s")}
    console.print(f"dense / official: {ratio['samples_per_s']:.2f}x samples/s, {ratio['decisions_per_s']:.1f}x supervised decisions/s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_facts(), "agent": args.agent, "dataset": dataset_id, "batch_size": args.batch_size, "steps": args.steps,
                                    "threads": args.threads, "rows": rows, "ratio_dense_over_official": ratio}, indent=1) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
