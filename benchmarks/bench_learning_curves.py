"""In-context return against training samples: when does in-context learning emerge, per layout?

Evaluates every snapshot a training run kept (`--set train.keep_every=N` keeps the agent's weights
in `snapshots/step-N/`), and its last checkpoint, under the env's standard protocol, and reports
the return at episodes 20 and 50 (mean over the goals, 95% bootstrap CI over seeds) against the
windows seen so far. A run without snapshots (a shipped checkpoint folder) is one point. With
two runs (say the official layout and the dense one) it prints, for a target return at episode
50, the windows each needed to reach it and their ratio. Usage:

    icrl-bench train --agent ad --dataset darkroom-v3 --preset laptop --set train.keep_every=1000 --threads 1
    icrl-bench train --agent ad --dataset darkroom-v3 --device cuda --set train.keep_every=1000
    python benchmarks/bench_learning_curves.py runs/ad-...-laptop-... runs/ad-...-paper-... --target 12.5 --jobs 2
    python benchmarks/bench_learning_curves.py --plot-only --out benchmarks/results/learning_curves   # redraw a saved sweep

Results: benchmarks/results/learning_curves.json and .png. These are test-goal numbers, for
reporting only: no recipe is chosen by them. To choose, train with `--set
train.hold_out_validation_goals=true` and sweep with `--env darkroom:validation-goals --out DIR`
(docs/training.md, "Choosing between runs").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from machine_facts import machine_facts
from rich.console import Console
from rich.table import Table

from icrl_bench.agents.checkpoint import META_FILE
from icrl_bench.agents.models import model_spec
from icrl_bench.bench.harness import evaluate
from icrl_bench.bench.protocols import VALIDATION_GOALS_SUFFIX, names_validation_goals
from icrl_bench.bench.reproduction_report import episode_cells
from icrl_bench.run_records import world_size
from icrl_bench.training.run_dir import CHECKPOINT_DIR, SNAPSHOTS_DIR

RESULTS = Path(__file__).parent / "results"


# Overrides that say how long or how a run was kept, not what recipe it trained, left out of its label
# (its batch is there already, as the global batch: a two-rank run sets the per-rank batch_size).
BOOKKEEPING = ("train.steps", "train.batch_size", "train.time_budget_s", "train.keep_every", "train.hold_out_validation_goals",
               "train.log_interval", "train.eval_interval", "train.ckpt_interval")


def run_label(run_dir: Path, run: dict) -> str:
    """The layout, device and batch, plus the run's recipe overrides: runs of one preset stay apart in a plot."""
    layout = run["config"]["model"].get("layout", "dicp")
    recipe = [o.split(".", 1)[1] for o in run.get("overrides", []) if o.split("=")[0] not in BOOKKEEPING]
    batch, ranks = run["config"]["train"]["batch_size"], world_size(run)
    batch_text = f"batch {batch * ranks} = {ranks} ranks x {batch}" if ranks > 1 else f"batch {batch}"
    return " ".join([f"{run['agent']} {layout} ({run['device']}, {batch_text})", *recipe])


def step_of(weights: Path) -> int:
    return json.loads((weights / META_FILE).read_text())["step"]


def snapshots_of(run_dir: Path) -> list[Path]:
    """The run's snapshots by step, then its last checkpoint if it is later than every snapshot."""
    snapshots = sorted((run_dir / SNAPSHOTS_DIR).glob("step-*"), key=step_of)
    last = run_dir / CHECKPOINT_DIR
    if (last / META_FILE).is_file() and (not snapshots or step_of(last) > step_of(snapshots[-1])):
        snapshots.append(last)
    if not snapshots:
        raise SystemExit(f"{run_dir} has no checkpoint or snapshots: give a run directory (train with --set train.keep_every=N for a curve)")
    return snapshots


def evaluate_snapshot(agent: str, snapshot: Path, env: str, seeds: list[int], episodes: int | None, tasks: int | None) -> dict:
    torch.set_num_threads(1)
    results = evaluate(agent, snapshot, env, seeds, episodes, n_tasks=tasks)
    return {e: {"mean": c.mean, "low": c.low, "high": c.high} for e, c in episode_cells(results, (20, 50)).items()}


def sweep(run_dir: Path, cells_by_snapshot: dict[Path, dict]) -> dict:
    run = json.loads((run_dir / "run.json").read_text())
    n_transit = run["config"]["model"]["n_transit"]
    # Supervised actions per window: one (the official AD/DPT query) or all (the dense layout; IDT always).
    every_action = run["config"]["model"].get("layout", "dicp") == "dense" or model_spec(run["agent"]).family == "idt"
    points = []
    for snapshot in snapshots_of(run_dir):
        step = step_of(snapshot)
        windows = step * run["config"]["train"]["batch_size"] * world_size(run)  # batch_size is per torchrun rank
        points.append({"step": step, "windows": windows, "decisions": windows * (n_transit if every_action else 1),
                       **{f"ep{e}": cell for e, cell in cells_by_snapshot[snapshot].items()}})
    return {"run": run_dir.name, "label": run_label(run_dir, run), "agent": run["agent"], "points": points}


def windows_to_reach(curve: dict, target: float, episode: str = "ep50") -> int | None:
    return next((p["windows"] for p in curve["points"] if episode in p and p[episode]["mean"] >= target), None)


def plot(curves: list[dict], path: Path, env: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6 + 0.22 * len(curves)), dpi=110)
    for ax, episode in zip(axes, ("ep20", "ep50")):
        if not any(episode in p for curve in curves for p in curve["points"]):
            ax.set_title(f"no episode {episode[2:]} in these evaluations")
            continue
        for curve in curves:
            pts = [p for p in curve["points"] if episode in p]
            x = np.array([p["windows"] for p in pts])
            mean = np.array([p[episode]["mean"] for p in pts])
            (line,) = ax.plot(x, mean, "o-", label=curve["label"], markersize=3)
            ax.fill_between(x, [p[episode]["low"] for p in pts], [p[episode]["high"] for p in pts], color=line.get_color(), alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("training windows")
        ax.set_ylabel(f"return at episode {episode[2:]}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=1, frameon=False)  # below the panels: never over a curve
    goals = "validation goals" if names_validation_goals(env) else "test goals"
    fig.suptitle(f"In-context return vs training samples ({env.removesuffix(VALIDATION_GOALS_SUFFIX)}, {goals}, 95% CI over seeds)")
    fig.tight_layout(rect=(0, 0.05 + 0.045 * len(curves), 1, 1))
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--env", default="darkroom")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--episodes", type=int)
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--target", type=float, default=12.5, help="return at episode 50 to reach (AD's target on Darkroom)")
    parser.add_argument("--out", type=Path, default=RESULTS / "learning_curves")
    parser.add_argument("--jobs", type=int, default=1, help="snapshots evaluated at once, one single-thread process each")
    parser.add_argument("--plot-only", action="store_true", help="redraw OUT.png from OUT.json, evaluating nothing")
    args = parser.parse_args()
    if args.plot_only:
        if not args.out.with_suffix(".json").is_file():
            parser.error(f"--plot-only: no {args.out.with_suffix('.json')} to redraw; run the sweep first")
        saved = json.loads(args.out.with_suffix(".json").read_text())
        plot(saved["curves"], args.out.with_suffix(".png"), saved["env"])
        return
    if not args.runs:
        parser.error("give at least one run directory (or --plot-only)")
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = [(json.loads((run / "run.json").read_text())["agent"], snapshot) for run in args.runs for snapshot in snapshots_of(run)]
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(evaluate_snapshot, agent, snap, args.env, seeds, args.episodes, args.tasks) for agent, snap in work]
            cells = {snap: future.result() for (_, snap), future in zip(work, futures)}
    else:
        cells = {snap: evaluate_snapshot(agent, snap, args.env, seeds, args.episodes, args.tasks) for agent, snap in work}
    curves = [sweep(run, cells) for run in args.runs]
    table = Table(title=f"windows to reach return {args.target} at episode 50 on {args.env}")
    for column in ("run", "snapshots", "best ep20", "best ep50", "windows to target"):
        table.add_column(column)
    for curve in curves:
        reach = windows_to_reach(curve, args.target)
        best = {e: max((p[e]["mean"] for p in curve["points"] if e in p), default=float("nan")) for e in ("ep20", "ep50")}
        table.add_row(curve["label"], str(len(curve["points"])), f"{best['ep20']:.2f}", f"{best['ep50']:.2f}", f"{reach:,}" if reach else "not reached")
    console = Console()
    console.print(table)
    reached = [windows_to_reach(c, args.target) for c in curves]
    if len(curves) == 2 and all(reached):
        console.print(f"ratio of windows to reach {args.target}: {reached[0] / reached[1]:.2f} ({curves[0]['label']} / {curves[1]['label']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine_facts(), "env": args.env, "seeds": seeds, "target": args.target,
                                                         "curves": curves}, indent=1) + "\n")
    plot(curves, args.out.with_suffix(".png"), args.env)
    console.print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
