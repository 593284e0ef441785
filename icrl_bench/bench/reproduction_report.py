"""The reproduction report: our curves beside a paper's, per agent and paper episode.

`icrl-bench reproduce` (reproduction.py) runs the stages; this module turns their results into
`reproduction/<env>/README.md` (ours [95% CI] / the paper's value / a verdict per cell, and the
budget each agent spent) and `curves.png` (our curves with their bands over the paper's points).
The paper's numbers are data, `reproduction/paper_results.yaml`, with their source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from icrl_bench.bench import metrics
from icrl_bench.paths import require_shipped
from icrl_bench.run_records import read_metrics, training_seconds, warm_start_note, warm_start_source, world_size

# ---- the paper's numbers and ours, side by side -----------------------------------------------------


@dataclass(frozen=True)
class PaperCurve:
    episodes: tuple[int, ...]
    returns: tuple[float, ...]
    ci95_ep50: float | None  # half-width at episode 50 where the paper gives it


def paper_results(env: str, path: Path | None = None) -> tuple[str, dict[str, PaperCurve]]:
    """The paper's curves for `env`, by agent, and the citation they come from (default: the shipped reproduction/paper_results.yaml)."""
    raw = yaml.safe_load((path or require_shipped("reproduction", "paper_results.yaml")).read_text())
    episodes = tuple(raw["episodes"])
    curves = {agent: PaperCurve(episodes, tuple(v["returns"]), v.get("ci95_ep50")) for agent, v in raw["envs"].get(env, {}).items()}
    return raw["source"], curves


@dataclass(frozen=True)
class Cell:
    mean: float
    low: float
    high: float
    n_seeds: int

    def text(self) -> str:
        ci = f" [{self.low:.2f}, {self.high:.2f}]" if self.n_seeds >= 3 else " [n/a]"
        return f"{self.mean:.2f}{ci}"


def episode_cells(results: dict, episodes: tuple[int, ...]) -> dict[int, Cell]:
    """Mean return over test tasks at each episode, with a 95% bootstrap CI over seeds."""
    returns = np.asarray(results["curves"]["return"], dtype=np.float64)  # [seed, task, episode]
    per_seed = returns.mean(axis=1)  # [seed, episode]
    cells = {}
    for episode in episodes:
        if episode <= per_seed.shape[1]:
            values = per_seed[:, episode - 1]
            low, high = metrics.bootstrap_ci(values)
            cells[episode] = Cell(float(values.mean()), low, high, len(values))
    return cells


def verdict(ours: Cell, paper: float, paper_ci: float | None) -> str:
    """`within` where our CI meets the paper's (or its value, where it gives no CI), else above/below."""
    if ours.n_seeds < 3:
        return "n/a"
    half = paper_ci or 0.0
    if ours.low > paper + half:
        return "above"
    if ours.high < paper - half:
        return "below"
    return "within"


# ---- the report ------------------------------------------------------------------------------------


@dataclass
class AgentRecord:
    agent: str
    results: dict
    budget: dict[str, Any] = field(default_factory=dict)  # steps, batch_size, windows, wall_s, device, preset, ...


def render_report(env: str, records: list[AgentRecord], header: str = "") -> str:
    """The Markdown report: per agent and paper episode, ours [95% CI] | paper | verdict."""
    source, paper = paper_results(env)
    episodes = next(iter(paper.values())).episodes if paper else (1, 5, 10, 20, 30, 50)
    lines = [f"# Reproduction: {env}", ""]
    if header:
        lines += [header, ""]
    legend = (f"Mean return per episode over the test tasks; ours: 95% bootstrap CI over evaluation seeds (the paper's split). "
              f"Paper: {source} (averages 5 train/test splits). Verdict: `within` where our CI meets the paper's value "
              "(or its CI, where given), else `above` or `below`.")
    lines += [
        legend,
        "",
        "| agent | " + " | ".join(f"ep {e}" for e in episodes) + " |",
        "|---|" + "---|" * len(episodes),
    ]
    for record in records:
        cells = episode_cells(record.results, episodes)
        theirs = paper.get(record.agent)
        row = []
        for i, episode in enumerate(episodes):
            if episode not in cells:
                row.append("n/a")
                continue
            if theirs is None:
                row.append(cells[episode].text())
                continue
            ci = theirs.ci95_ep50 if episode == 50 else None
            row.append(f"{cells[episode].text()} / {theirs.returns[i]:.2f} {verdict(cells[episode], theirs.returns[i], ci)}")
        lines.append(f"| {record.agent} | " + " | ".join(row) + " |")
    lines += ["", "Each cell: ours [CI] / paper verdict.", "", "## Budget spent", "",
              ("Acting s: the evaluation's seconds spent choosing actions (a sharded evaluation's summed over its shards, "
               "which may have run side by side)."), "",
              "| agent | layout | steps x batch | windows | train wall s | trained on | acting s | checkpoint |", "|---|---|---|---|---|---|---|---|"]
    for record in records:
        b = record.budget
        windows = f"{b['steps'] * b['batch_size']:,}" if b.get("steps") and b.get("batch_size") else "n/a"
        steps = f"{b.get('steps', 'n/a')} x {b.get('batch_size', 'n/a')}" + (f" ({b['world_size']} ranks)" if b.get("world_size", 1) > 1 else "")
        wall = f"{b['train_s']:.0f}" if b.get("train_s") is not None else "n/a"
        spent = record.results.get("cost", {})
        cost = spent["act_s_per_step"] * spent["steps"] if "act_s_per_step" in spent else None
        cost_text = f"{cost:.0f}" if cost is not None else "n/a"
        eval_device = record.results["agent"].get("settings", {}).get("device", "cpu")
        cost_text += f" on {eval_device}" if cost is not None and eval_device != "cpu" else ""
        weights = str(record.results["agent"].get("checkpoint_hash") or "")[:12]
        trained_on = b.get("hardware", "n/a") + (f"; {warm_start_note(b['warm_start'])}" if b.get("warm_start") else "")
        lines.append(f"| {record.agent} | {b.get('layout', 'dicp')} | {steps} | {windows} | {wall} | {trained_on} | "
                     f"{cost_text} | `{weights}` |")
    return "\n".join(lines) + "\n"


def plot_against_paper(env: str, records: list[AgentRecord], path: Path) -> Path:
    """One panel per agent: our curve with its 95% band, the paper's points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, paper = paper_results(env)
    n = max(1, len(records))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False)
    for ax, record in zip(axes.ravel(), records):
        returns = np.asarray(record.results["curves"]["return"], dtype=np.float64).mean(axis=1)  # [seed, episode]
        x = np.arange(1, returns.shape[1] + 1)
        low, high = metrics.bootstrap_ci_curve(returns, n_resamples=2000)
        (line,) = ax.plot(x, returns.mean(axis=0), label="icrl-bench", linewidth=1.6)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if record.agent in paper:
            ax.plot(paper[record.agent].episodes, paper[record.agent].returns, "o--", color="black", label="paper", markersize=4)
        ax.set_title(record.agent)
        ax.set_xlabel("episode")
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(records):]:
        ax.axis("off")
    fig.suptitle(f"{env}: ours (95% band over seeds) vs the DICP paper")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def budget_of(run_dir: Path, hardware: str | None = None) -> dict[str, Any]:
    """Steps, global batch, wall time (every segment of a resumed run) and device of a training run (or a shipped baseline folder)."""
    run = json.loads((run_dir / "run.json").read_text())
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = max((r["step"] for r in records), default=0)
    train_s = training_seconds(records)
    world = world_size(run)  # batch_size is per torchrun rank
    return {"steps": steps, "batch_size": run["config"]["train"]["batch_size"] * world, "world_size": world, "train_s": train_s, "device": run["device"],
            "preset": run.get("preset"), "layout": run["config"]["model"].get("layout", "dicp"),
            "hardware": hardware or run["device"], "warm_start": warm_start_source(run)}
