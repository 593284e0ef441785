"""Presenting results: learning-curve plots and rich tables.

Shared by the harness and the leaderboard, so it imports neither torch nor the envs: only
numpy, matplotlib (lazily) and rich.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from icrl_bench.bench import metrics
from icrl_bench.bench.protocols import names_validation_goals
from icrl_bench.errors import IcrlBenchError

# What ranks a protocol's entries, best first: its headline metric, then the tie-breakers.
RANK_KEYS = {
    "normalized_score": ("normalized_score", "auc"),
    "best_success_rate": ("best_success_rate", "success_rate", "final_return"),
}

PERCENT = "{:.1f}%"  # success rates are stored as fractions and shown as percentages
# (summary key, column title, format); a dotted key reads a nested estimate, and a key ending in
# IQM_SUFFIX shows the estimate's IQM (with its CI) instead of its mean.
IQM_SUFFIX = ":iqm"
METRIC_COLUMNS = (
    ("final_return", "final return", "{:.2f}"),
    ("normalized_score", "normalized", "{:.1f}"),
    ("normalized_score" + IQM_SUFFIX, "normalized IQM", "{:.1f}"),
    ("auc", "AUC", "{:.1f}"),
    ("episodes_to_90", "episodes to 90%", "{:.1f}"),
)
SUCCESS_COLUMNS = (  # protocols without exact references (Meta-World): success is the headline
    ("best_success_rate", "success (best so far)", PERCENT),
    ("best_success_at_steps.10000", "success at 10K steps", PERCENT),
    ("success_rate", "success (last 5)", PERCENT),
    ("final_return", "final return", "{:.1f}"),
)


CI_NOTE = (
    "IQM: interquartile mean of all seed x task scores; 95% CIs: stratified bootstrap over seeds within each task "
    "(rliable), n/a with fewer than 3 seeds"
)


def metric_columns(summary: dict) -> tuple[tuple[str, str, str], ...]:
    """The columns that rank a results document: by success where it has no normalized score."""
    return METRIC_COLUMNS if "normalized_score" in summary else SUCCESS_COLUMNS


def metric(summary: dict, key: str) -> dict | None:
    """The estimate at `key` ("best_success_at_steps.10000" reads a nested one); None if absent."""
    node = summary
    for part in key.removesuffix(IQM_SUFFIX).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def agent_label(results: dict) -> str:
    """How an agent is named in tables and legends: its name and a short checkpoint hash."""
    agent = results["agent"]
    label = agent.get("label") or agent["name"]
    if agent.get("checkpoint_hash"):
        label += f" @{agent['checkpoint_hash'][:8]}"
    return label


def unique_labels(documents: Sequence[dict]) -> list[str]:
    """Agent labels made distinct: by their settings where they clash (`dicp-ad @784b3227 beam_k=0`), then by a counter."""
    labels = [agent_label(d) for d in documents]
    clashing = {label for label, n in Counter(labels).items() if n > 1}
    for i, data in enumerate(documents):
        settings = data.get("agent", {}).get("settings") or {}
        if labels[i] in clashing and settings:
            labels[i] += " " + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(settings.items()))
    seen: Counter[str] = Counter()
    for i, label in enumerate(labels):
        seen[label] += 1
        labels[i] = label if seen[label] == 1 else f"{label} #{seen[label]}"
    return labels


def format_value(value: float, fmt: str) -> str:
    """One number; PERCENT shows a fraction as a percentage."""
    return fmt.format(100.0 * value if fmt == PERCENT else value)


def format_interval(low: float | None, high: float | None, fmt: str, sep: str = ", ") -> str:
    """`low, high`, or n/a where no interval was given (fewer than 3 seeds)."""
    return "n/a" if low is None or high is None else f"{format_value(low, fmt)}{sep}{format_value(high, fmt)}"


def results_table(results: dict) -> Table:
    """One evaluation's summary: each metric's mean, 95% CI and IQM over seeds."""
    protocol = results["protocol"]
    summary = results["summary"]
    table = Table(
        title=f"{agent_label(results)} on {protocol['name']}: {len(results['test_tasks']['params'])} "
        f"{'validation goals' if names_validation_goals(protocol['name']) else 'test tasks'} x "
        f"{len(results['seeds'])} seeds, {results['n_episodes']} episodes"
    )
    for column in ("metric", "mean", "95% CI", "IQM", "IQM 95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    if "normalized_score" in summary:
        rows = [c for c in METRIC_COLUMNS if not c[0].endswith(IQM_SUFFIX)]
        rows += [("success_rate", "success rate", "{:.2f}")] if "success_rate" in summary else []
    else:
        budgets = [(f"best_success_at_steps.{b}", f"success at {int(b):,} env steps", PERCENT) for b in summary["best_success_at_steps"]]
        rows = [SUCCESS_COLUMNS[0], *budgets, *SUCCESS_COLUMNS[2:]]
    for key, title, fmt in rows:
        est = metric(summary, key)
        def value(v: float, key: str = key, fmt: str = fmt) -> str:
            return f">{results['n_episodes']}" if key == "episodes_to_90" and v > results["n_episodes"] else format_value(v, fmt)

        def interval(low: float | None, high: float | None) -> str:
            return "n/a" if low is None or high is None else f"{value(low)} to {value(high)}"

        table.add_row(title, value(est["mean"]), interval(est["ci_low"], est["ci_high"]), value(est["iqm"]),
                      interval(est["iqm_ci_low"], est["iqm_ci_high"]))
    refs = protocol["references"]
    if refs:
        table.caption = (
            f"final return: mean of the last {protocol['final_window']} episodes; normalized per task: 0 = random, "
            f"100 = oracle (means over tasks {refs['random']:.3f} and {refs['oracle']:.3f}); {CI_NOTE}"
        )
    else:
        table.caption = (
            "success (best so far): test tasks solved in at least one episode so far (DICP's Meta-World measure); "
            f"last {protocol['final_window']}: successful episodes among the last {protocol['final_window']}; "
            f"returns raw (no exact references); {CI_NOTE}"
        )
    cost = results["cost"]
    passes = cost.get("forward_passes_per_action")
    table.caption += (
        f"; {cost['act_s_per_step'] * 1e3:.3f} ms per batched action ({cost['num_envs']} envs)"
        + ("" if passes is None else f", {passes:.2f} forward passes per action")
    )
    return table


def per_task_returns(results: dict, last: int | None = None) -> np.ndarray:
    """Each (seed, test task)'s mean return over its last `last` episodes (default: the protocol's
    final window) -> [seeds, tasks]: the final return before it is averaged over tasks."""
    returns = np.asarray(results["curves"]["return"], dtype=float)  # [seeds, tasks, episodes]
    last = results["protocol"]["final_window"] if last is None else last
    if not 1 <= last <= returns.shape[-1]:
        raise IcrlBenchError(f"--last must be in 1..{returns.shape[-1]} (the run's episodes), got {last}.")
    return metrics.final_return_scores(returns, last)


def per_task_table(documents: Sequence[dict], last: int | None = None) -> Table:
    """Final return per test task, one column per results document: which tasks an agent solves
    and which it never does, which the mean over tasks hides. The documents must share a protocol."""
    protocols = {(d["protocol"]["name"], d["protocol"]["test_tasks_sha256"]) for d in documents}
    if len(protocols) != 1:
        names = ", ".join(sorted(name for name, _ in protocols))
        raise IcrlBenchError(f"these results are of different protocols or test tasks ({names}); compare one protocol's at a time.")
    first = documents[0]
    window = first["protocol"]["final_window"] if last is None else last
    table = Table(title=f"Return per test task on {first['protocol']['name']}: mean over seeds of the last {window} episodes "
                        "(lowest to highest seed in brackets)")
    table.add_column("task")
    table.add_column("params")
    for label in unique_labels(documents):
        table.add_column(label, justify="right")
    finals = [per_task_returns(d, window) for d in documents]  # each [seeds, tasks]
    tasks = first["test_tasks"]
    for t, (index, params) in enumerate(zip(tasks["indices"], tasks["params"], strict=True)):
        cells = [f"{f[:, t].mean():.1f} [{f[:, t].min():.1f}, {f[:, t].max():.1f}]" for f in finals]
        table.add_row(str(index), json.dumps(params), *cells)
    table.add_row("mean", "", *(f"{f.mean():.2f}" for f in finals), end_section=True)
    return table


def plot_learning_curves(results: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """In-context learning curves (mean over test tasks; 95% bootstrap band over seeds) to a PNG.

    Grid worlds: return per episode, dashed lines at the protocol's random and oracle returns.
    Meta-World: the best-so-far success rate and the return against env steps per task, as the
    DICP paper plots them. The legend sits right of the curves, never over them.
    """
    import matplotlib.pyplot as plt

    fig = learning_curve_figure(results, title)
    path = Path(path)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curve_figure(results: Sequence[dict], title: str | None = None):
    """The figure `plot_learning_curves` saves (a matplotlib Figure, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_success = bool(results) and "best_success_curve" in results[0]["summary"]
    # Wide enough for the legend beside the curves (outside the axes: it never hides a curve).
    fig, axes = plt.subplots(1, 2 if by_success else 1, figsize=(13.0 if by_success else 9.0, 4.0), dpi=110, squeeze=False)
    if by_success:
        _plot_success(results, axes[0, 0], axes[0, 1])
    else:
        _plot_returns(results, axes[0, 0])
    if results:
        heading = title or f"In-context learning on {results[0]['protocol']['name']}"
        if by_success:
            fig.suptitle(heading)
        else:
            axes[0, 0].set_title(heading)
    fig.tight_layout()
    return fig


def _band(ax, x: np.ndarray, curve: np.ndarray, label: str, color) -> None:
    """The mean over seeds of `curve` [seed, point] with its 95% bootstrap band."""
    low, high = metrics.bootstrap_ci_curve(curve, n_resamples=2000)
    ax.plot(x, curve.mean(axis=0), label=label, linewidth=1.6, color=color)
    ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)


def _colors(n: int) -> list:
    """One distinct colour per curve: matplotlib's 10-colour cycle, tab20 beyond 10 (it would repeat)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _plot_returns(results: Sequence[dict], ax) -> None:
    for result, label, color in zip(results, unique_labels(results), _colors(len(results))):
        curve = metrics.return_curve(np.asarray(result["curves"]["return"]))  # [seed, episode]
        _band(ax, np.arange(1, curve.shape[1] + 1), curve, label, color)
    if results:
        refs = results[0]["protocol"]["references"]
        ax.axhline(refs["oracle"], color="black", linestyle="--", linewidth=0.8, label="oracle (expected)")
        ax.axhline(refs["random"], color="grey", linestyle=":", linewidth=0.8, label="random (expected)")
    ax.set_xlabel("in-context episode")
    ax.set_ylabel("return (mean over test tasks)")
    _legend_outside(ax)
    ax.grid(alpha=0.3)


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, top-aligned: beside the curves, never over them."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _plot_success(results: Sequence[dict], success_ax, return_ax) -> None:
    for result, label, color in zip(results, unique_labels(results), _colors(len(results))):
        horizon = result["protocol"]["horizon"]
        success = 100.0 * metrics.best_success_curve(np.asarray(result["curves"]["success"]))  # [seed, episode]
        returns = metrics.return_curve(np.asarray(result["curves"]["return"]))
        x = horizon * np.arange(1, success.shape[1] + 1)  # env steps per task at each episode's end
        _band(success_ax, x, success, label, color)
        _band(return_ax, x, returns, label, color)
    success_ax.set_ylabel("success rate, best so far (%)")
    success_ax.set_ylim(-2, 102)
    return_ax.set_ylabel("episode return (mean over test tasks)")
    for ax in (success_ax, return_ax):
        ax.set_xlabel("env steps per test task")
        ax.grid(alpha=0.3)
    _legend_outside(return_ax)  # one legend for both panels (the same agents, the same colours)
