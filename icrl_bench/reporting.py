"""Presenting results: learning-curve plots, rich tables, atomic file writes.

Shared by the harness and the leaderboard, so it imports neither torch nor the envs: only
numpy, matplotlib (lazily) and rich.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.table import Table

from icrl_bench import metrics

FILE_MODE = 0o644  # mkstemp makes 0600 files; results and entries are meant to be shared
METRIC_COLUMNS = (
    ("final_return", "final return", "{:.2f}"),
    ("normalized_score", "normalized", "{:.1f}"),
    ("auc", "AUC", "{:.1f}"),
    ("episodes_to_90", "episodes to 90%", "{:.1f}"),
)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed into place only if the block succeeds.

    A reader (or a crash) never sees a half-written file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def dumps_results(data: dict) -> str:
    """JSON for results and entries: indented, but each innermost list of numbers on one line.

    Dark Key-to-Door curves hold 82,000 numbers; one per line would make a 1.5 MB entry.
    """
    text = json.dumps(data, indent=1)
    flat = lambda m: "[" + ",".join(v.strip() for v in m.group(1).split(",")) + "]"  # noqa: E731
    return re.sub(r"\[([^\[\]{}\"]+)\]", flat, text) + "\n"


def agent_label(results: dict) -> str:
    """How an agent is named in tables and legends: its name and a short checkpoint hash."""
    agent = results["agent"]
    label = agent.get("label") or agent["name"]
    if agent.get("checkpoint_hash"):
        label += f" @{agent['checkpoint_hash'][:8]}"
    return label


def format_estimate(estimate: dict, fmt: str = "{:.2f}", censored_above: float | None = None) -> str:
    """`mean [low, high]`, with `>n` where a censored metric was never reached."""
    if censored_above is not None and estimate["mean"] > censored_above:
        return f">{censored_above:g}"
    return f"{fmt.format(estimate['mean'])} [{fmt.format(estimate['ci_low'])}, {fmt.format(estimate['ci_high'])}]"


def results_table(results: dict) -> Table:
    """One evaluation's summary: each metric's mean, 95% CI and IQM over seeds."""
    protocol = results["protocol"]
    table = Table(
        title=f"{agent_label(results)} on {protocol['name']}: {len(results['test_tasks']['params'])} test tasks x "
        f"{len(results['seeds'])} seeds, {results['n_episodes']} episodes"
    )
    for column in ("metric", "mean", "95% CI", "IQM"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = list(METRIC_COLUMNS) + ([("success_rate", "success rate", "{:.2f}")] if "success_rate" in results["summary"] else [])
    for key, title, fmt in rows:
        est = results["summary"][key]
        value = lambda v: f">{results['n_episodes']}" if key == "episodes_to_90" and v > results["n_episodes"] else fmt.format(v)  # noqa: E731
        table.add_row(title, value(est["mean"]), f"{value(est['ci_low'])} to {value(est['ci_high'])}", value(est["iqm"]))
    refs = protocol["references"]
    table.caption = (
        f"final return: mean of the last {protocol['final_window']} episodes; normalized: 0 = random "
        f"({refs['random']:.3f}), 100 = oracle ({refs['oracle']:.3f}); CI: bootstrap over seeds"
    )
    cost = results["cost"]
    passes = cost.get("forward_passes_per_action")
    table.caption += (
        f"; {cost['act_s_per_step'] * 1e3:.3f} ms per batched action ({cost['num_envs']} envs)"
        + ("" if passes is None else f", {passes:.2f} forward passes per action")
    )
    return table


def leaderboard_table(entries: Sequence[dict], title: str) -> Table:
    """A ranking: entries are expected in rank order."""
    table = Table(title=title)
    for column in ("rank", "agent", *(c[1] for c in METRIC_COLUMNS), "seeds", "dataset", "submitted"):
        table.add_column(column, justify="right" if column not in ("agent", "dataset", "submitted") else "left")
    for rank, entry in enumerate(entries, 1):
        table.add_row(str(rank), agent_label(entry), *leaderboard_cells(entry), str(len(entry["seeds"])),
                      entry["agent"].get("dataset_id") or "-", entry["provenance"]["created_at"][:10])
    return table


def leaderboard_cells(entry: dict) -> list[str]:
    """The metric cells of one entry (mean [95% CI])."""
    cells = []
    for key, _, fmt in METRIC_COLUMNS:
        censored = float(entry["n_episodes"]) if key == "episodes_to_90" else None
        cells.append(format_estimate(entry["summary"][key], fmt, censored))
    return cells


def plot_learning_curves(results: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """In-context learning curves (mean over test tasks; 95% bootstrap band over seeds) to a PNG.

    Dashed lines mark the protocol's random and oracle returns.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for result in results:
        curve = metrics.return_curve(np.asarray(result["curves"]["return"]))  # [seed, episode]
        x = np.arange(1, curve.shape[1] + 1)
        low, high = metrics.bootstrap_ci_curve(curve, n_resamples=2000)
        (line,) = ax.plot(x, curve.mean(axis=0), label=agent_label(result), linewidth=1.6)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if results:
        refs = results[0]["protocol"]["references"]
        ax.axhline(refs["oracle"], color="black", linestyle="--", linewidth=0.8, label="oracle (expected)")
        ax.axhline(refs["random"], color="grey", linestyle=":", linewidth=0.8, label="random (expected)")
        ax.set_title(title or f"In-context learning on {results[0]['protocol']['name']}")
    ax.set_xlabel("in-context episode")
    ax.set_ylabel("return (mean over test tasks)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
