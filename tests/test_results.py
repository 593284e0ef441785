"""Results files after the evaluation: `results upgrade` and `results export --format rliable`."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icrl_bench.bench import leaderboard, results
from icrl_bench.bench.protocols import get_protocol
from icrl_bench.cli import app
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import REPO_ROOT
from tests.test_manifest import shuffled  # any key order, as a JSON writer may produce

ENTRIES = REPO_ROOT / "leaderboard" / "entries"
runner = CliRunner()


def committed(pattern: str) -> list[Path]:
    return sorted(ENTRIES.glob(pattern))


def as_schema_1(data: dict) -> dict:
    """A document as schema 1 wrote it: no IQM intervals, a summary of other numbers."""
    old = copy.deepcopy(data)
    old["schema_version"] = 1
    for estimate in old["summary"].values():
        if isinstance(estimate, dict) and "iqm_ci_low" in estimate:
            del estimate["iqm_ci_low"], estimate["iqm_ci_high"]
            estimate["iqm"] += 1.0
    return old


def test_upgrade_recomputes_the_summary_from_the_curves(tmp_path):
    entry = committed("darkroom-v1--dpt--*.json")[0]
    current = json.loads(entry.read_text())
    path = tmp_path / "dpt.json"
    path.write_text(json.dumps(as_schema_1(current)))
    with pytest.raises(IcrlBenchError, match=r"results schema 1.*`icrl-bench results upgrade .*dpt.json`"):
        leaderboard.validate(json.loads(path.read_text()), where=str(path))
    assert results.upgrade(path) is True
    upgraded = json.loads(path.read_text())
    assert upgraded == current  # only schema_version and summary changed, back to what the evaluation would write now
    leaderboard.validate(upgraded, where=str(path))
    assert results.upgrade(path) is False  # already current: left as it is


def test_upgrade_spells_a_shipped_checkpoint_repo_relative(tmp_path):
    """An entry written with an absolute path into the repository reads the same on every machine after
    the upgrade: the path in the agent record and the command become what the harness writes now."""
    entry = committed("darkroom-v1--dpt--934b592b0173.json")[0]
    current = json.loads(entry.read_text())
    relative = current["agent"]["checkpoint"]
    absolute = str(REPO_ROOT / relative)
    written_elsewhere = {**current, "agent": {**current["agent"], "checkpoint": absolute},
                         "command": current["command"].replace(relative, absolute)}
    path = tmp_path / "dpt.json"
    path.write_text(json.dumps(written_elsewhere))
    assert results.upgrade(path) is True
    assert json.loads(path.read_text()) == current
    assert results.upgrade(path) is False


def test_relocate_points_results_at_a_copy_of_their_checkpoint_and_nothing_else_changes(tmp_path):
    """Results evaluated from a run directory, whose checkpoint was then shipped: the entry names the shipped copy."""
    entry = committed("darkroom-v1--dpt--934b592b0173.json")[0]
    current = json.loads(entry.read_text())
    shipped = current["agent"]["checkpoint"]
    run_dir = tmp_path / "runs" / "dpt-run"
    shutil.copytree(REPO_ROOT / shipped, run_dir)
    from_run = {**current, "agent": {**current["agent"], "checkpoint": str(run_dir)}, "command": current["command"].replace(shipped, str(run_dir))}
    path = tmp_path / "dpt.json"
    path.write_text(results.dumps_results(from_run))
    assert results.relocate(path, REPO_ROOT / shipped) == str(run_dir)
    assert json.loads(path.read_text()) == current
    another = next(d["agent"]["checkpoint"] for d in map(json.loads, map(Path.read_text, committed("darkroom-v1--dpt--*.json")))
                   if d["agent"]["checkpoint"] and d["agent"]["checkpoint_hash"] != current["agent"]["checkpoint_hash"])
    with pytest.raises(IcrlBenchError, match="but .* was made by"):  # another DPT: other weights
        results.relocate(path, REPO_ROOT / another)
    result = runner.invoke(app, ["results", "relocate", str(path), "--checkpoint", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "Traceback" not in result.output and json.loads(path.read_text()) == current


def test_relocate_pins_results_of_a_default_checkpoint_to_its_folder(tmp_path):
    """Results of `evaluate --agent dpt` (no --checkpoint) keep naming those weights once another checkpoint is the default."""
    entry = committed("darkroom-v1--dpt--934b592b0173.json")[0]
    current = json.loads(entry.read_text())
    shipped = current["agent"]["checkpoint"]
    of_default = {**current, "agent": {**current["agent"], "checkpoint": None}, "command": "icrl-bench evaluate --agent dpt --env darkroom"}
    path = tmp_path / "dpt.json"
    path.write_text(results.dumps_results(of_default))
    assert results.relocate(path, REPO_ROOT / shipped) is None
    pinned = json.loads(path.read_text())
    assert pinned["agent"]["checkpoint"] == shipped
    assert pinned["command"] == f"icrl-bench evaluate --agent dpt --checkpoint {shipped} --env darkroom"
    assert {k: v for k, v in pinned.items() if k not in ("agent", "command")} == {k: v for k, v in current.items() if k not in ("agent", "command")}


def test_upgrade_refuses_what_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "protocol": {"name": "darkroom/v1"}}))
    with pytest.raises(IcrlBenchError, match="is not a results document"):
        results.upgrade(bad)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"schema_version": 7}))
    with pytest.raises(IcrlBenchError, match="results schema 7"):
        results.upgrade(future)


def test_export_rliable_writes_score_matrices_npz_and_json(tmp_path):
    paths = committed("darkroom-v1--*.json")
    documents = [(str(p), json.loads(p.read_text())) for p in paths]
    export = results.export_rliable(documents, tmp_path / "scores.npz")
    scores = dict(np.load(export.path))
    assert export.metric == "normalized_score" and export.protocol == "darkroom/v1"
    assert len(scores) == len(paths)  # two dicp-ad entries share a checkpoint: told apart by their settings
    assert "dicp-ad @784b3227 beam_k=0" in scores and "dicp-ad @784b3227 beam_k=10" in scores
    assert all(matrix.shape == (5, 8) for matrix in scores.values())  # [runs (seeds), tasks]
    np.testing.assert_allclose(scores["oracle"], 100.0)
    # Each entry's matrix is what its summary was made from: its mean and IQM are the entry's.
    for label, (_, data) in zip(results.unique_labels([d for _, d in documents]), documents):
        assert scores[label].mean() == pytest.approx(data["summary"]["normalized_score"]["mean"], abs=1e-9)
    protocol = get_protocol("darkroom")
    returns = np.asarray(documents[0][1]["curves"]["return"], dtype=np.float64)
    by_hand = 100 * (returns[:, :, -5:].mean(axis=2) - protocol.random_returns) / (np.subtract(protocol.oracle_returns, protocol.random_returns))
    np.testing.assert_allclose(scores[results.unique_labels([d for _, d in documents])[0]], by_hand)
    as_json = results.export_rliable(documents, tmp_path / "scores.json", metric="final_return")
    loaded = json.loads(as_json.path.read_text())
    assert set(loaded) == set(scores) and np.asarray(loaded["oracle"]).shape == (5, 8)
    np.testing.assert_array_equal(loaded["oracle"], np.tile(get_protocol("darkroom").oracle_returns, (5, 1)))


def test_export_refuses_mixed_protocols_other_tasks_and_unknown_metrics(tmp_path):
    darkroom = json.loads(committed("darkroom-v1--oracle--*.json")[0].read_text())
    permuted = json.loads(committed("darkroom-permuted-v1--oracle--*.json")[0].read_text())
    with pytest.raises(IcrlBenchError, match="several protocols"):
        results.export_rliable([("a", darkroom), ("b", permuted)], tmp_path / "s.npz")
    fewer = copy.deepcopy(darkroom)
    fewer["test_tasks"]["indices"] = fewer["test_tasks"]["indices"][:3]
    fewer["curves"]["return"] = [seed[:3] for seed in fewer["curves"]["return"]]
    with pytest.raises(IcrlBenchError, match="ran other test tasks"):
        results.export_rliable([("a", darkroom), ("b", fewer)], tmp_path / "s.npz")
    with pytest.raises(IcrlBenchError, match="no metric 'best_success_rate' under darkroom/v1"):
        results.export_rliable([("a", darkroom)], tmp_path / "s.npz", metric="best_success_rate")
    with pytest.raises(IcrlBenchError, match="must end in .npz or .json"):
        results.export_rliable([("a", darkroom)], tmp_path / "s.csv")
    assert not list(tmp_path.iterdir())


def test_metaworld_exports_success_per_task():
    data = json.loads(committed("metaworld-ml1-reach-v1--idt--*.json")[0].read_text())
    solved = results.score_matrix(data)
    assert solved.shape == (3, 50) and set(np.unique(solved)) <= {0.0, 1.0}
    assert solved.mean() == pytest.approx(data["summary"]["best_success_rate"]["mean"])


def test_results_cli(tmp_path, monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (200, 50))
    board = tmp_path / "board"
    (board / "entries").mkdir(parents=True)
    for path in committed("darkroom-permuted-v1--oracle--*.json") + committed("darkroom-permuted-v1--random--*.json"):
        shutil.copy(path, board / "entries" / path.name)  # the reference agents: a board that later submissions do not change
    out = tmp_path / "scores.npz"
    result = runner.invoke(app, ["results", "export", "--format", "rliable", "--env", "darkroom-permuted", "--dir", str(board), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "normalized_score on darkroom-permuted/v1" in result.output and "oracle 5x12" in result.output
    assert sorted(np.load(out)) == ["oracle", "random"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(as_schema_1(json.loads(committed("darkroom-permuted-v1--random--*.json")[0].read_text()))))
    upgraded = runner.invoke(app, ["results", "upgrade", str(old)])
    assert upgraded.exit_code == 0 and "upgraded" in upgraded.output, upgraded.output
    again = runner.invoke(app, ["results", "upgrade", str(old)])
    assert again.exit_code == 0 and "is up to date" in again.output
    both = runner.invoke(app, ["results", "export", str(old), "--env", "darkroom"])
    assert both.exit_code == 1 and "not both" in both.output
    unknown = runner.invoke(app, ["results", "export", str(old), "--format", "csv"])
    assert unknown.exit_code == 1 and "unknown export format 'csv'" in unknown.output


def test_results_tasks_shows_each_test_task_and_the_mean_of_the_summary(tmp_path, monkeypatch):
    from icrl_bench import cli
    from icrl_bench.bench.reporting import per_task_returns

    monkeypatch.setattr(cli.console, "size", (200, 50))
    oracle = json.loads(committed("darkroom-v1--oracle--*.json")[0].read_text())
    failing = copy.deepcopy(oracle)  # an agent that never reaches the second test task in its last episodes
    failing["agent"]["name"] = "half-oracle"
    for seed in failing["curves"]["return"]:
        seed[1][-5:] = [0] * 5
    finals = per_task_returns(failing)
    assert finals.shape == (5, 8) and np.all(finals[:, 1] == 0)
    assert finals.mean() == pytest.approx(oracle["summary"]["final_return"]["mean"] - np.mean(oracle["curves"]["return"][0][1][-5:]) / 8)
    paths = [tmp_path / "oracle.json", tmp_path / "failing.json"]
    for path, data in zip(paths, (oracle, failing), strict=True):
        path.write_text(json.dumps(data))
    shown = runner.invoke(app, ["results", "tasks", *map(str, paths)])
    assert shown.exit_code == 0, shown.output
    second = next(line for line in shown.output.splitlines() if json.dumps(oracle["test_tasks"]["params"][1]) in line)
    assert "0.0 [0.0, 0.0]" in second and "half-oracle" in shown.output
    permuted = tmp_path / "permuted.json"
    permuted.write_text(committed("darkroom-permuted-v1--oracle--*.json")[0].read_text())
    mixed = runner.invoke(app, ["results", "tasks", str(paths[0]), str(permuted)])
    assert mixed.exit_code == 1 and "different protocols" in mixed.output
    too_many = runner.invoke(app, ["results", "tasks", str(paths[0]), "--last", "51"])
    assert too_many.exit_code == 1 and "--last must be in 1..50" in too_many.output


# --- the schema -------------------------------------------------------------------------------

REPRODUCED = sorted((REPO_ROOT / "reproduction").glob("**/results/*.json")) + sorted((REPO_ROOT / "reproduction").glob("**/run*/*-darkroom.json"))


@pytest.mark.parametrize("path", committed("*.json"), ids=lambda p: p.stem)
def test_every_committed_entry_reads_back_byte_for_byte(path: Path):
    text = path.read_text()
    parsed = results.parse_results(json.loads(text), str(path))
    assert results.dumps_results(parsed.to_dict()) == text


@pytest.mark.parametrize("path", REPRODUCED, ids=lambda p: "/".join(p.parts[-3:]))
def test_reproduction_results_upgrade_to_valid_entries(path: Path, tmp_path: Path):
    """Schema 1 (no IQM intervals, no env_steps, no protocol horizon): upgraded, it is a current document."""
    copy_path = tmp_path / path.name
    shutil.copy(path, copy_path)
    results.upgrade(copy_path)
    text = copy_path.read_text()
    upgraded = json.loads(text)
    assert results.dumps_results(results.parse_results(upgraded, str(copy_path)).to_dict()) == text
    if upgraded["agent"].get("dataset_hash") not in (None, *leaderboard.known_datasets().values()):
        # an experiment on a local rebuild that is not the published bytes (another CPU class: docs/datasets.md):
        # evidence in its folder, never a leaderboard entry
        with pytest.raises(IcrlBenchError, match="is not a known dataset"):
            leaderboard.validate(upgraded, where=str(copy_path))
        return
    leaderboard.validate(upgraded, where=str(copy_path))


def test_the_harness_writes_what_the_schema_reads_back():
    from icrl_bench.bench.harness import evaluate

    data = evaluate("random", env="darkroom", seeds=[0, 1], n_episodes=2)
    assert results.parse_results(data, "run").to_dict() == data
    assert list(data) == list(results.Results.model_fields)


SMALL = committed("darkroom-permuted-v1--random--*.json")[0]


@st.composite
def documents(draw) -> dict:
    """Results as any version of the harness wrote them: optional facts present or not, whole or
    fractional returns, any key order."""
    data = json.loads(SMALL.read_text())
    if draw(st.booleans()):
        data["agent"]["planner_revision"] = draw(st.integers(0, 9))
    if draw(st.booleans()):
        data["agent"]["label"] = draw(st.text(max_size=12))
    if draw(st.booleans()):
        data["cost"].update(executor="ray", workers=draw(st.integers(1, 64)), shards=5, task_groups=1, retried_shards=0)
    for part, key in (("cost", "env_steps"), ("protocol", "horizon"), ("protocol", "headline")):
        if draw(st.booleans()):
            data[part].pop(key, None)
    number = st.one_of(st.integers(0, 30), st.floats(0, 30, allow_nan=False).map(lambda v: round(v, 4)))
    data["curves"]["return"][0][0] = draw(st.lists(number, min_size=50, max_size=50))
    data["protocol"].update(draw(st.dictionaries(st.sampled_from(["note", "future_fact"]), st.text(max_size=8), max_size=2)))
    return shuffled(data, random.Random(draw(st.integers())))


@given(data=documents())
@settings(max_examples=40, deadline=None)
def test_any_results_document_round_trips_exactly(data):
    parsed = results.parse_results(data, "doc")
    assert json.dumps(parsed.to_dict()) == json.dumps(data)  # the same bytes, key order included
    assert leaderboard.curves_hash(parsed.to_dict()) == leaderboard.curves_hash(data)


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
        (lambda d: d["cost"].pop("torch_threads"), "cost.torch_threads: Field required"),
        (lambda d: d["agent"].update(name=""), "agent.name: String should have at least 1 character"),
        (lambda d: d["summary"]["final_return"].update(per_seed="high"), "summary.final_return.per_seed: Input should be a valid list"),
        (lambda d: d["provenance"].update(host="x"), "provenance.host: Extra inputs are not permitted"),
    ],
)
def test_a_corrupt_results_document_is_refused_in_one_line(corrupt, problem, tmp_path: Path):
    data = json.loads(SMALL.read_text())
    corrupt(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(IcrlBenchError) as info:
        leaderboard.submit(path, tmp_path / "board")
    assert str(info.value).startswith(f"{path} does not match the results schema: {problem}") and "\n" not in str(info.value)
