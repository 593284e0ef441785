"""How the leaderboard is shown: learned agents ranked, reference agents apart, training budgets,
and those rows as a terminal table, Markdown, CSV, JSON and the HTML page.

Reference agents (random, oracle, the source algorithm) mark the ends of the scale; ranking them
among learned agents would read as if they competed. A learned agent's row says what it cost to
train (windows seen, time, hardware) and links its checkpoint, read from the checkpoint's JSON
files and its folder's README only: torch-free, like the rest of the leaderboard.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.table import Table

from icrl_bench.bench.protocols import get_protocol
from icrl_bench.bench.reporting import (
    IQM_SUFFIX,
    RANK_KEYS,
    format_interval,
    format_value,
    metric,
    metric_columns,
    unique_labels,
)
from icrl_bench.paths import from_repo_relative, shipped
from icrl_bench.run_records import (
    read_metrics,
    shipped_hardware,
    training_seconds,
    warm_start_note,
    warm_start_source,
    world_size,
)

REFERENCE_AGENTS = ("random", "oracle", "source")  # the ends of the scale, shown apart and never ranked
FORMATS = ("table", "md", "csv", "json")

METRIC_KEY = (
    ("final return", "mean return of the last 5 in-context episodes, over the test tasks."),
    ("normalized", ("the final return per test task on a scale where uniform random is 0 and the optimal policy 100 "
                    "(each task's exact random and optimal returns, pinned in the protocol), averaged over seeds x tasks.")),
    ("normalized IQM", ("the interquartile mean of the per-(seed, task) normalized scores (rliable): robust to a few "
                        "outlying tasks or seeds.")),
    ("AUC", "the normalized score averaged over all episodes: rewards learning fast."),
    ("episodes to 90%", "first episode whose mean return reaches 90% of the oracle's (>N: never within the run)."),
    ("success (best so far)", ("Meta-World: test tasks solved (info['success'] at any step) in at least one episode by the "
                               "end of the run, DICP's measure.")),
    ("success at 10K steps", "Meta-World: the same after 100 episodes of 100 steps (equal experience for all tasks)."),
    ("success (last 5)", "Meta-World: successful episodes among the last 5."),
    ("[low, high]", "95% CI: stratified bootstrap over seeds within each task (rliable); n/a with fewer than 3 seeds."),
    ("budget", ("what training cost: windows seen (steps x batch), wall time and hardware, from the checkpoint's run record; "
                "a warm-started run names the checkpoint it started from, whose own training is not in the figures.")),
)


# --- rows ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What a checkpoint's training cost, from its run record."""

    steps: int
    batch_size: int
    world_size: int
    seconds: float | None
    device: str | None
    hardware: str | None  # as its README says ("one NVIDIA H200", "2-core CPU"); None where unsaid
    warm_start: str | None = None  # `dpt @d61fbd7e`: the checkpoint it started from, whose training is not counted here

    @property
    def samples(self) -> int:
        """Windows (training sequences) seen: steps x batch x processes."""
        return self.steps * self.batch_size * self.world_size

    def windows(self) -> str:
        """`4.04M`, `4.8K`."""
        n = self.samples
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)

    def text(self) -> str:
        """`4.04M windows (7,900 x 512), 189 s on one NVIDIA H200`; `(18,500 x 32 x 2 ranks)` under torchrun."""
        where = self.hardware or self.device
        ranks = f" x {self.world_size} ranks" if self.world_size > 1 else ""
        return (f"{self.windows()} windows ({self.steps:,} x {self.batch_size}{ranks})"
                + (f", {self.seconds:,.0f} s" if self.seconds is not None else "") + (f" on {where}" if where else "")
                + (f", {warm_start_note(self.warm_start)}" if self.warm_start else ""))


@dataclass(frozen=True)
class Row:
    rank: int | None  # None: a reference agent
    label: str
    entry: dict
    checkpoint: Path | None  # the checkpoint's folder, where it is here with the entry's weights
    budget: Budget | None


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_folder(entry: dict) -> Path | None:
    """The folder of an entry's checkpoint (its path, else the shipped baselines/<env>/<agent>/), if
    it is on this machine and holds the very weights the entry names."""
    agent = entry.get("agent") or {}
    if not agent.get("checkpoint_hash"):
        return None
    given = agent.get("checkpoint")
    folder = from_repo_relative(given) if given else shipped("baselines", str(entry.get("env")), str(agent.get("name")))
    for meta_path in (folder / "checkpoint" / "checkpoint.json", folder / "checkpoint.json"):
        meta = _json(meta_path)
        if meta is not None and meta.get("weights_sha256") == agent["checkpoint_hash"]:
            return folder
    return None


def training_budget(folder: Path) -> Budget | None:
    """Steps, batch, time and hardware of the run that made the checkpoint in `folder`."""
    meta = _json(folder / "checkpoint" / "checkpoint.json") or _json(folder / "checkpoint.json")
    if meta is None or not isinstance(meta.get("step"), int) or not isinstance((meta.get("train_config") or {}).get("batch_size"), int):
        return None
    run = _json(folder / "run.json") or {}
    metrics_file = folder / "metrics.jsonl"
    seconds = training_seconds(read_metrics(metrics_file)) if metrics_file.is_file() else None  # every segment of a resumed run
    said = shipped_hardware(folder) or ""  # "cuda (one NVIDIA H200, two trainings ...)"
    found = re.search(r"^\S+ \(([^,()]+)", said)
    hardware = found[1].strip() if found else None
    return Budget(meta["step"], meta["train_config"]["batch_size"], world_size(run),
                  float(seconds) if isinstance(seconds, (int, float)) else None, run.get("device"), hardware, warm_start_source(run))


def split_rows(entries: Sequence[dict]) -> tuple[list[Row], list[Row]]:
    """Entries of one protocol, in rank order, as (learned agents ranked 1..n, reference agents)."""
    labels = unique_labels(entries)
    learned: list[Row] = []
    references: list[Row] = []
    for label, entry in zip(labels, entries):
        folder = checkpoint_folder(entry)
        budget = training_budget(folder) if folder is not None else None
        if entry["agent"]["name"] in REFERENCE_AGENTS:
            references.append(Row(None, label, entry, folder, budget))
        else:
            learned.append(Row(len(learned) + 1, label, entry, folder, budget))
    return learned, references


def metric_cells(entry: dict) -> list[tuple[str, str]]:
    """(value, `low, high`) per metric column of the entry's protocol kind."""
    cells = []
    for key, _, fmt in metric_columns(entry["summary"]):
        estimate = metric(entry["summary"], key)
        if estimate is None:
            cells.append(("-", ""))
            continue
        stat = "iqm" if key.endswith(IQM_SUFFIX) else "mean"
        prefix = "" if stat == "mean" else "iqm_"
        if key == "episodes_to_90" and estimate[stat] > entry["n_episodes"]:
            cells.append((f">{entry['n_episodes']}", ""))
            continue
        cells.append((format_value(estimate[stat], fmt), format_interval(estimate[prefix + "ci_low"], estimate[prefix + "ci_high"], fmt)))
    return cells


def link(folder: Path | None, base: Path) -> str | None:
    """`folder` relative to `base` (a page's directory), for links that work in a checkout and on GitHub."""
    return None if folder is None else os.path.relpath(folder, base)


def protocol_intro(name: str) -> str:
    protocol = get_protocol(name)
    return f"{protocol.n_test_tasks} test tasks x {len(protocol.seeds)} seeds, {protocol.n_episodes} episodes; " + (
        f"random {protocol.random_return:.3f}, oracle {protocol.oracle_return:.3f} (expected return, means over tasks)."
        if protocol.references()
        else f"{protocol.horizon} steps each ({protocol.n_episodes * protocol.horizon:,} env steps per task); Meta-World v3 tasks."
    )


def _settings(entry: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted((entry["agent"].get("settings") or {}).items()))


# --- terminal, Markdown, CSV, JSON -------------------------------------------------------------------


NARROW_KEYS = ("normalized_score", "normalized_score" + IQM_SUFFIX, "auc", "best_success_rate", "best_success_at_steps.10000", "success_rate")
SHORT_TITLES = {"normalized IQM": "IQM", "success (best so far)": "success", "success at 10K steps": "at 10K", "success (last 5)": "last 5"}


def terminal_tables(name: str, entries: Sequence[dict], width: int) -> list[Table]:
    """The ranking and the reference rows as rich tables that fit `width` columns.

    From 160 columns on: every metric with its CI, the budget and the dataset. Narrower (80 is
    enough): the headline metric with its CI, two more as values, the windows trained on.
    """
    learned, references = split_rows(entries)
    columns = metric_columns(entries[0]["summary"])
    wide = width >= 160
    shown = [i for i, (key, _, _) in enumerate(columns) if wide or key in NARROW_KEYS]
    label_width = min(28, max(len(row.label) for row in learned + references))
    tables = []
    for rows, heading in ((learned, f"{name}: learned agents, ranked (mean [95% CI])"), (references, f"{name}: reference agents (not ranked)")):
        if not rows:
            continue
        table = Table(title=heading, box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("agent", overflow="fold", min_width=label_width)
        for i in shown:
            title = columns[i][1]
            table.add_column(title if wide else SHORT_TITLES.get(title, title), justify="right", no_wrap=True)
        ranked = rows is learned
        if ranked:
            table.add_column("budget" if wide else "windows", justify="right", no_wrap=not wide)
        if ranked and wide:
            table.add_column("dataset", no_wrap=True)
        for row in rows:
            cells = metric_cells(row.entry)
            values = [f"{cells[i][0]} [{cells[i][1]}]" if cells[i][1] and (wide or n == 0) else cells[i][0] for n, i in enumerate(shown)]
            budget = "-" if row.budget is None else row.budget.text() if wide else row.budget.windows()
            extra = ([budget] + ([row.entry["agent"].get("dataset_id") or "-"] if wide else [])) if ranked else []
            table.add_row(str(row.rank) if row.rank else "-", row.label, *values, *extra)
        tables.append(table)
    return tables


def markdown(groups: dict[str, list[dict]], base: Path) -> str:
    """One section per protocol: learned agents ranked, then reference agents; links relative to `base`."""
    lines: list[str] = []
    for name, entries in groups.items():
        learned, references = split_rows(entries)
        titles = [title for _, title, _ in metric_columns(entries[0]["summary"])]
        lines += [f"## {name}", "", protocol_intro(name), ""]
        for rows, heading in ((learned, "Learned agents"), (references, "Reference agents (not ranked: the ends of the scale)")):
            if not rows:
                continue
            header = ["rank", "agent", *titles, "budget", "dataset", "command"] if rows[0].rank else ["agent", *titles, "command"]
            lines += [f"**{heading}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for row in rows:
                agent = _markdown_cell(row.label)
                where = link(row.checkpoint, base)
                agent = f"[{agent}]({where})" if where else agent
                cells = [_markdown_cell(f"{v} [{ci}]" if ci else v) for v, ci in metric_cells(row.entry)]
                command = f"`{_markdown_cell(row.entry['command'])}`"
                if row.rank:
                    budget = _markdown_cell(row.budget.text()) if row.budget else "-"
                    lines.append("| " + " | ".join([str(row.rank), agent, *cells, budget, _markdown_cell(row.entry["agent"].get("dataset_id") or "-"), command]) + " |")
                else:
                    lines.append("| " + " | ".join([agent, *cells, command]) + " |")
            lines.append("")
        lines += [f"![{name} learning curves](plots/{name.replace('/', '-')}.png)", ""]
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    """A table cell that neither ends the cell (`|`), breaks the row (newlines) nor carries raw HTML."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def records(groups: dict[str, list[dict]], base: Path) -> list[dict]:
    """Every row as plain data (the JSON and CSV formats)."""
    out = []
    for name, entries in groups.items():
        learned, references = split_rows(entries)
        for row in learned + references:
            summary = row.entry["summary"]
            out.append({
                "protocol": name,
                "group": "learned" if row.rank else "reference",
                "rank": row.rank,
                "agent": row.entry["agent"]["name"],
                "label": row.label,
                "settings": row.entry["agent"].get("settings") or {},
                "checkpoint_hash": row.entry["agent"].get("checkpoint_hash"),
                "checkpoint": link(row.checkpoint, base),
                "dataset_id": row.entry["agent"].get("dataset_id"),
                "budget": None if row.budget is None else {
                    "windows": row.budget.samples, "steps": row.budget.steps, "batch_size": row.budget.batch_size,
                    "seconds": row.budget.seconds, "device": row.budget.device, "hardware": row.budget.hardware},
                "metrics": {key.removesuffix(IQM_SUFFIX): metric(summary, key) for key, _, _ in metric_columns(summary)},
                "seeds": row.entry["seeds"],
                "command": row.entry["command"],
            })
    return out


def to_csv(groups: dict[str, list[dict]], base: Path) -> str:
    """One line per entry; each metric as mean, ci_low, ci_high (and the normalized IQM with its CI)."""
    rows = records(groups, base)
    metric_keys = list(dict.fromkeys(key for row in rows for key in row["metrics"]))
    columns = ["protocol", "group", "rank", "label", "dataset_id", "windows", "seconds", "hardware", "checkpoint"]
    for key in metric_keys:
        columns += [f"{key}.mean", f"{key}.ci_low", f"{key}.ci_high"] + ([f"{key}.iqm", f"{key}.iqm_ci_low", f"{key}.iqm_ci_high"] if key == "normalized_score" else [])
    columns.append("command")
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        budget = row["budget"] or {}
        line = {k: row.get(k) for k in ("protocol", "group", "rank", "label", "dataset_id", "checkpoint", "command")}
        line.update(windows=budget.get("windows"), seconds=budget.get("seconds"), hardware=budget.get("hardware") or budget.get("device"))
        for key, estimate in row["metrics"].items():
            for stat in ("mean", "ci_low", "ci_high", "iqm", "iqm_ci_low", "iqm_ci_high"):
                if f"{key}.{stat}" in columns and estimate is not None:
                    line[f"{key}.{stat}"] = estimate.get(stat)
        writer.writerow(line)
    return out.getvalue()


# --- the HTML page -----------------------------------------------------------------------------------

STYLE = """
:root{color-scheme:light;--muted:#5b6270;--line:#d9dde3;--head:#f3f5f8;--accent:#1f5fbf}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:0 auto;max-width:80rem;padding:1.2rem}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{font-size:1.3rem;margin:2rem 0 .3rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1.2rem 0 .4rem;color:var(--muted)}
p,dl{max-width:60rem}a{color:var(--accent)}
nav{display:flex;flex-wrap:wrap;gap:.2rem 1rem}nav a{white-space:nowrap}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;text-align:left;color:var(--muted);font-size:.85rem;padding:.4rem .6rem}
th,td{padding:.35rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
thead th{background:var(--head);font-weight:600;white-space:nowrap;position:sticky;top:0}
td.num,th.num{text-align:right;white-space:nowrap}
td.num .ci{display:block;color:var(--muted);font-size:.8rem}
td.agent{white-space:nowrap;position:sticky;left:0;background:#fff;z-index:1}td.agent .sub{display:block;color:var(--muted);font-size:.8rem}
td.nowrap{white-space:nowrap}
td.budget{min-width:12rem;font-size:.85rem}
details{font-size:.8rem;color:var(--muted)}details code{display:block;white-space:pre-wrap;word-break:break-all;max-width:28rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:.85rem}
dt{font-weight:600}dd{margin:0 0 .5rem 1rem;color:#333}
@media (max-width:40rem){body{padding:.7rem;font-size:14px}th,td{padding:.3rem .45rem}
td.agent{white-space:normal;min-width:8.5rem;max-width:10rem;box-shadow:2px 0 3px -2px rgba(0,0,0,.25)}}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(rows: list[Row], titles: list[str], base: Path, caption: str, order: list[int]) -> str:
    """`order`: the metric columns to show, by index into `titles` (the headline first: what a phone shows beside the name)."""
    ranked = bool(rows and rows[0].rank)
    titles = [titles[i] for i in order]
    head = (["#"] if ranked else []) + ["agent"] + titles + (["budget", "dataset"] if ranked else [])
    numeric = set(titles) | {"#"}
    parts = ["<div class='scroll'><table>", f"<caption>{_e(caption)}</caption>", "<thead><tr>"]
    parts += [f"<th scope='col' class='{'num' if h in numeric else 'text'}'>{_e(h)}</th>" for h in head]
    parts.append("</tr></thead><tbody>")
    for row in rows:
        where = link(row.checkpoint, base)
        checkpoint_hash = row.entry["agent"].get("checkpoint_hash")
        sub = []
        if checkpoint_hash:
            weights = f"weights {_e(checkpoint_hash[:8])}"
            sub.append(f"<a href='{_e(where)}'>checkpoint</a> ({weights})" if where else weights)
        if row.entry["agent"].get("settings"):
            sub.append(_e(_settings(row.entry)))
        agent = (f"<td class='agent'><strong>{_e(row.entry['agent'].get('label') or row.entry['agent']['name'])}</strong>"
                 + "".join(f"<span class='sub'>{s}</span>" for s in sub)
                 + f"<details><summary>command</summary><code>{_e(row.entry['command'])}</code></details></td>")
        cells = "".join(f"<td class='num'>{_e(v)}" + (f"<span class='ci'>[{_e(ci)}]</span>" if ci else "") + "</td>"
                        for v, ci in (metric_cells(row.entry)[i] for i in order))
        line = "<tr>" + (f"<td class='num'>{row.rank}</td>" if ranked else "") + agent + cells
        if ranked:
            budget = _e(row.budget.text()) if row.budget else "-"
            line += f"<td class='budget'>{budget}</td><td class='nowrap'>{_e(row.entry['agent'].get('dataset_id') or '-')}</td>"
        parts.append(line + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def html_page(groups: dict[str, list[dict]], base: Path, plots: dict[str, tuple[str, int, int]], intro: str) -> str:
    """The whole page: a section per protocol (ranking, reference agents, plot), then the metric key.

    `plots`: protocol name -> (`src` of its learning-curve image, width, height in pixels).
    """

    nav = "".join(f"<a href='#{_e(name.replace('/', '-'))}'>{_e(name)}</a>" for name in groups) + "<a href='#key'>metric key</a>"
    body = [f"<header><h1>icrl-bench leaderboard</h1><p>{_e(intro)}</p><nav>{nav}</nav></header><main>"]
    for name, entries in groups.items():
        learned, references = split_rows(entries)
        titles = [title for _, title, _ in metric_columns(entries[0]["summary"])]
        ci = "each cell: mean (IQM in the IQM column), its 95% CI below (stratified bootstrap over seeds within each task)"
        rank_keys = RANK_KEYS[get_protocol(name).headline]
        columns = metric_columns(entries[0]["summary"])
        ranked_by = ", then ".join(next(t for key, t, _ in columns if key == k) for k in rank_keys)
        headline = next(i for i, (key, _, _) in enumerate(columns) if key == rank_keys[0])
        order = [headline] + [i for i in range(len(columns)) if i != headline]
        body.append(f"<section id='{_e(name.replace('/', '-'))}'><h2>{_e(name)}</h2><p>{_e(protocol_intro(name))}</p>")
        if learned:
            body.append("<h3>Learned agents, ranked</h3>" + _html_table(learned, titles, base, f"Ranked by {ranked_by}; {ci}.", order))
        if references:
            body.append("<h3>Reference agents (not ranked: the ends of the scale)</h3>"
                        + _html_table(references, titles, base, f"Uniform random, the optimal policy and the source RL algorithm; {ci}.", order))
        if name in plots:
            src, width, height = plots[name]
            full = f"plots/{name.replace('/', '-')}.png"  # the same image as a file, to open full size
            body.append(f"<figure><a href='{_e(full)}'><img src='{_e(src)}' alt='{_e(name)} in-context learning curves' width='{width}' height='{height}'></a>"
                        f"<figcaption>In-context learning curves on {_e(name)}: mean over test tasks, 95% bootstrap band over seeds.</figcaption></figure>")
        body.append("</section>")
    body.append("<section id='key'><h2>Metric key</h2><dl>" + "".join(f"<dt>{_e(t)}</dt><dd>{_e(d)}</dd>" for t, d in METRIC_KEY) + "</dl></section></main>")
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>icrl-bench leaderboard</title><style>{STYLE}</style></head><body>" + "".join(body) + "</body></html>\n")
