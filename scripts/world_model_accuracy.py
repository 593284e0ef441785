"""A DICP-IDT checkpoint's held-out accuracy (action, reward, next state) by where it stands in the window.

    .venv/bin/python scripts/world_model_accuracy.py RUN_OR_CHECKPOINT [...] [--json FILE]

Uses the run's own validation windows (the held-out streams behind its `val_acc_*` metrics,
rebuilt from the checkpoint's configs: the dataset must be in ICRL_BENCH_ROOT or the default data
root) and prints each head's accuracy per block of the window and per step within a block. IDT's
Decisions-to-Go sees only its block, so a prediction in a window's last block had the most
context: that is the one planning relies on once the context is full.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from icrl_bench.agents.checkpoint import load_checkpoint
from icrl_bench.agents.idt import IDT
from icrl_bench.errors import IcrlBenchError
from icrl_bench.training.config import TrainConfig
from icrl_bench.training.loop import run_validation_batches


def accuracy_by_position(checkpoint: str | Path, root: str | Path | None = None) -> dict:
    """{"windows": N, "overall"/"by_block"/"by_step"/"last_block": {head: accuracy}} of one checkpoint."""
    loaded = load_checkpoint(checkpoint)
    model, meta = loaded.model, loaded.meta
    if not isinstance(model, IDT):
        raise IcrlBenchError(f"{checkpoint} is a {loaded.agent} checkpoint; this measures IDT's blocks (idt, dicp-idt).")
    train = TrainConfig(**{k: v for k, v in meta["train_config"].items() if k != "preset"})
    dataset = meta["dataset"]
    batches = run_validation_batches(loaded.agent, model.config, train, dataset["env"], dataset["id"], root)
    if not batches:
        raise IcrlBenchError(f"{checkpoint}'s run held out no streams (holdout_streams 0): it has no validation windows.")
    hits: dict[str, torch.Tensor] = {}
    for batch in batches:
        for name, count in model.hits_by_position(batch).items():
            hits[name] = hits.get(name, 0) + count.double()
    windows = sum(len(batch["reward"]) for batch in batches)
    return {
        "checkpoint": str(checkpoint), "agent": loaded.agent, "step": meta["step"], "windows": windows,
        "overall": {k: round(float(h.mean() / windows), 4) for k, h in hits.items()},
        "last_block": {k: round(float(h[-1].mean() / windows), 4) for k, h in hits.items()},
        "by_block": {k: _rounded(h.mean(1) / windows) for k, h in hits.items()},
        "by_step": {k: _rounded(h.mean(0) / windows) for k, h in hits.items()},
    }


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(v, 4) for v in values.tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    console = Console()
    torch.set_num_threads(1)
    try:
        results = [accuracy_by_position(c) for c in args.checkpoints]
    except IcrlBenchError as err:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {err}")
        raise SystemExit(2) from None
    for result in results:
        table = Table(title=f"{result['checkpoint']} ({result['agent']}, step {result['step']}, {result['windows']} held-out windows)")
        for column in ("head", "overall", "last block", "by block (first ... last)", "by step in block"):
            table.add_column(column)
        for head, overall in result["overall"].items():
            by_block, by_step = result["by_block"][head], result["by_step"][head]
            table.add_row(head, f"{overall:.3f}", f"{result['last_block'][head]:.3f}",
                          " ".join(f"{v:.2f}" for v in by_block), " ".join(f"{v:.2f}" for v in by_step))
        console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
