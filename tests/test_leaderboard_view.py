"""The leaderboard as people read it: the page, the README, `leaderboard show` in every format."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icrl_bench.bench import leaderboard, leaderboard_view
from icrl_bench.cli import app
from icrl_bench.paths import REPO_ROOT

ENTRIES = REPO_ROOT / "leaderboard" / "entries"
runner = CliRunner()


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """A copy of the committed entries, rendered once (links are relative to this folder)."""
    directory = tmp_path_factory.mktemp("board")
    shutil.copytree(ENTRIES, directory / "entries")
    leaderboard.render(directory)
    return directory


def test_reference_agents_are_apart_and_learned_agents_ranked():
    groups = leaderboard.ranking("darkroom")
    learned, references = leaderboard_view.split_rows(groups["darkroom/v1"])
    assert {r.entry["agent"]["name"] for r in references} == {"random", "oracle", "source"}
    assert [r.rank for r in learned] == list(range(1, len(learned) + 1)) and all(r.rank is None for r in references)
    assert not {r.entry["agent"]["name"] for r in learned} & set(leaderboard_view.REFERENCE_AGENTS)
    labels = [r.label for r in learned]
    assert len(set(labels)) == len(labels)  # two dicp-ad entries of one checkpoint are told apart by their settings


def test_every_learned_row_has_its_budget_and_checkpoint():
    """The shipped checkpoints are here, so every learned entry links one and says what it cost."""
    for entries in leaderboard.ranking().values():
        learned, _ = leaderboard_view.split_rows(entries)
        for row in learned:
            assert row.checkpoint is not None and row.budget is not None, row.label
            meta = json.loads((row.checkpoint / "checkpoint" / "checkpoint.json").read_text())
            assert meta["weights_sha256"] == row.entry["agent"]["checkpoint_hash"]
            ranks = json.loads((row.checkpoint / "run.json").read_text()).get("world_size") or 1  # batch_size is per torchrun rank
            assert row.budget.samples == meta["step"] * meta["train_config"]["batch_size"] * ranks > 0
    ad = next(r for r in leaderboard_view.split_rows(leaderboard.ranking("darkroom")["darkroom/v1"])[0] if r.label == "ad @74b56e9c")
    assert ad.budget.text() == "4.04M windows (7,900 x 512), 189 s on one NVIDIA H200"
    # The laptop DICP-DPT run was resumed: its wall time is every segment's, not the last segment's elapsed_s.
    dicp_dpt = next(r for r in leaderboard_view.split_rows(leaderboard.ranking("darkroom")["darkroom/v1"])[0] if r.label.startswith("dicp-dpt @118eb035"))
    records = [json.loads(line) for line in (dicp_dpt.checkpoint / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last_segment = [r["elapsed_s"] for r in records if "elapsed_s" in r][-1]
    assert dicp_dpt.budget.seconds > last_segment and "2,519 s" in dicp_dpt.budget.text()
    ddp = next(r for r in leaderboard_view.split_rows(leaderboard.ranking("darkroom")["darkroom/v1"])[0] if r.label.startswith("dicp-ad @b9bd7e50"))
    assert ddp.budget.text().startswith("1.18M windows (18,500 x 32 x 2 ranks), 3,318 s")  # trained by two torchrun ranks
    warm = next(r for r in leaderboard_view.split_rows(leaderboard.ranking("darkroom-permuted")["darkroom-permuted/v1"])[0]
                if r.label.startswith("dicp-dpt @dcbf1fd3"))
    assert warm.budget.text().endswith("warm-started from dpt @d61fbd7e (its training not counted)")  # the shipped DPT
    assert "warm-started" not in ad.budget.text()


def test_a_checkpoint_with_other_weights_gets_no_budget(tmp_path):
    entry = json.loads(next(ENTRIES.glob("darkroom-v1--dpt--*.json")).read_text())
    entry["agent"]["checkpoint_hash"] = "0" * 64
    assert leaderboard_view.checkpoint_folder(entry) is None
    entry["agent"]["checkpoint"] = str(tmp_path / "gone")
    assert leaderboard_view.checkpoint_folder(entry) is None


def test_the_page_is_valid_html_with_viewport_and_table_markup(board):
    html5lib = pytest.importorskip("html5lib")
    text = (board / "index.html").read_text()
    parser = html5lib.HTMLParser(strict=True)  # raises on any parse error (misnested or unclosed markup)
    document = parser.parse(text)
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    assert document.find(".//h:meta[@name='viewport']", ns) is not None
    tables = document.findall(".//h:table", ns)
    assert tables and all(t.find("h:thead", ns) is not None and t.find("h:tbody", ns) is not None for t in tables)
    for table in tables:
        head = len(table.findall("h:thead/h:tr/h:th", ns))
        assert all(len(tr.findall("h:td", ns)) == head for tr in table.findall("h:tbody/h:tr", ns))
    split = [leaderboard_view.split_rows(entries) for entries in leaderboard.ranking().values()]  # the committed entries, as copied
    assert text.count("Reference agents (not ranked") == sum(bool(refs) for _, refs in split) == 4
    assert text.count("Learned agents, ranked") == sum(bool(learned) for learned, _ in split) >= 2
    assert "<dl>" in text and "normalized IQM" in text and "data:image/png;base64," in text
    links = [a.get("href") for a in document.findall(".//h:a", ns) if a.get("href", "").endswith(("/ad", "/dpt"))]
    assert links and all((board / href).resolve().is_dir() for href in links)


def test_the_readme_ranks_learned_agents_and_lists_references_apart(board):
    readme = (board / "README.md").read_text()
    section = readme.split("## darkroom/v1")[1].split("## darkroom-permuted/v1")[0]
    learned, references = section.split("**Reference agents")
    assert "| 1 | [" in learned and "[ad @74b56e9c](" in learned and "| oracle |" not in learned and "| random |" not in learned
    assert "| oracle | 17.25 [17.25, 17.25] | 100.0 [100.0, 100.0]" in references
    assert "4.04M windows (7,900 x 512), 189 s on one NVIDIA H200" in learned
    assert "**Metric key.**" in readme and "- **normalized IQM**" in readme


def test_show_fits_80_columns_and_has_every_format(board, monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (80, 50))
    shown = runner.invoke(app, ["leaderboard", "show", "--dir", str(board)])
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 80
    assert "ad @74b56e9c" in shown.output and "89.5 [87.2, 91.5]" in shown.output and "reference agents (not ranked)" in shown.output
    monkeypatch.setattr(cli.console, "size", (200, 50))
    wide = runner.invoke(app, ["leaderboard", "show", "--dir", str(board), "--env", "darkroom"])
    assert wide.exit_code == 0 and "episodes to 90%" in wide.output and "darkroom-v3" in wide.output
    as_json = runner.invoke(app, ["leaderboard", "show", "--dir", str(board), "--format", "json"])
    records = json.loads(as_json.output)
    assert {r["group"] for r in records} == {"learned", "reference"} and records[0]["rank"] == 1
    assert records[0]["metrics"]["normalized_score"]["iqm_ci_low"] is not None and records[0]["budget"]["windows"] > 0
    as_csv = runner.invoke(app, ["leaderboard", "show", "--dir", str(board), "--env", "darkroom", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(rows) == len(list(ENTRIES.glob("darkroom-v1--*.json"))) and rows[0]["normalized_score.mean"]
    as_md = runner.invoke(app, ["leaderboard", "show", "--dir", str(board), "--env", "darkroom", "--format", "md"])
    assert as_md.output.startswith("## darkroom/v1") and "| rank | agent |" in as_md.output
    bad = runner.invoke(app, ["leaderboard", "show", "--format", "xml"])
    assert bad.exit_code == 1 and "unknown format 'xml'" in bad.output


@pytest.mark.parametrize("env", ["darkroom", "metaworld-ml1-reach"])
def test_the_plot_legend_sits_outside_the_curves(env):
    """The legend's box lies right of every axes, so it hides no curve."""
    import matplotlib.pyplot as plt

    from icrl_bench.bench.reporting import learning_curve_figure

    entries = next(iter(leaderboard.ranking(env).values()))
    fig = learning_curve_figure(entries)
    try:
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1
        right_edge = max(ax.get_window_extent().x1 for ax in fig.axes)
        assert legends[0].get_window_extent().x0 >= right_edge
    finally:
        plt.close(fig)
