"""Leaderboard submission, every kind of bad entry, rendering, verification, committed entries."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icrl_bench.bench import leaderboard
from icrl_bench.bench.harness import evaluate
from icrl_bench.bench.results import MAX_RESULTS_BYTES, load_results
from icrl_bench.cli import app
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import REPO_ROOT

COMMITTED = sorted((REPO_ROOT / "leaderboard" / "entries").glob("*.json"))
runner = CliRunner()


@pytest.fixture(scope="module")
def real_results() -> dict[str, dict]:
    """Standard Darkroom runs (5 seeds x 50 episodes) of the two reference agents, made once."""
    return {name: evaluate(name, env="darkroom") for name in ("random", "oracle")}


def write(tmp_path: Path, data: dict | str, name: str = "results.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def entry_files(board: Path) -> list[str]:
    """Everything in entries/, hidden temporary files included."""
    directory = board / "entries"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_submit_show_render(real_results, tmp_path):
    board = tmp_path / "board"
    for name, results in real_results.items():
        leaderboard.submit(write(tmp_path, results, f"{name}.json"), board)
    assert len(entry_files(board)) == 2 and all(f.startswith("darkroom-v1--") for f in entry_files(board))
    ranked = leaderboard.ranking("darkroom", board)["darkroom/v1"]
    assert [e["agent"]["name"] for e in ranked] == ["oracle", "random"]
    rendered = leaderboard.render(board)
    readme = rendered.readme.read_text()
    # Reference agents are listed apart, never ranked among learned agents.
    assert "## darkroom/v1" in readme and "| oracle | 17.25 [17.25, 17.25] | 100.0 [100.0, 100.0]" in readme
    assert "| 1 | oracle" not in readme and "**Reference agents" in readme
    assert "plots/darkroom-v1.png" in readme and rendered.plots[0].stat().st_size > 10_000
    assert "data:image/png;base64," in rendered.html.read_text()


def tamper_summary(data):
    data["summary"]["final_return"]["mean"] += 1.0


def tamper_curve(data):
    data["curves"]["return"][0][0][0] += 1.0  # the summary no longer matches (episode 1 feeds the AUC)


def unknown_dataset(data):
    data["agent"]["dataset_id"] = "darkroom-v1"
    data["agent"]["dataset_hash"] = "ab" * 32


def old_protocol(data):
    data["protocol"]["name"] = "darkroom/v0"


def schema_error(data):
    del data["curves"]


def wrong_type(data):
    data["seeds"] = "0-4"


def non_standard(data):
    data["seeds"] = data["seeds"][:3]


def other_test_tasks(data):
    data["test_tasks"]["params"][0] = [0, 0]


def above_the_optimum(data):
    first_seed = data["curves"]["return"][0]
    data["curves"]["return"][0] = [[25.0] * len(task) for task in first_seed]  # 20 steps can earn at most 20


def privileged(data):
    data["agent"]["settings"]["return_to_go"] = "task-optimum"  # IDT acting from each test goal's optimum: the official grid protocol


@pytest.mark.parametrize(
    "tamper, message",
    [
        (privileged, "ran with return_to_go=task-optimum, which reads the test tasks' parameters"),
        (tamper_summary, "summary does not match its curves (1 number(s) differ, first final_return.mean: "),
        (tamper_curve, "summary does not match its curves"),
        (unknown_dataset, "dataset hash abababababab (darkroom-v1) is not a known dataset"),
        (old_protocol, "unknown protocol version darkroom/v0; the current one is darkroom/v1"),
        (schema_error, "does not match the results schema: curves: Field required"),
        (wrong_type, "does not match the results schema: seeds: Input should be a valid list"),
        (non_standard, "is a non-standard run (3 seeds [0, 1, 2], 50 episodes, 8 test tasks)"),
        (other_test_tasks, "its test tasks are not those of darkroom/v1"),
        (above_the_optimum, "its mean return exceeds the optimal policy's"),
    ],
)
def test_submit_rejects_bad_entries_and_nothing_lands(real_results, tmp_path, tamper, message):
    board = tmp_path / "board"
    data = copy.deepcopy(real_results["random"])
    tamper(data)
    with pytest.raises(IcrlBenchError) as err:
        leaderboard.submit(write(tmp_path, data), board)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert entry_files(board) == []


def test_submit_rejects_malformed_json_and_duplicates(real_results, tmp_path):
    board = tmp_path / "board"
    with pytest.raises(IcrlBenchError, match="is not valid JSON"):
        leaderboard.submit(write(tmp_path, '{"schema_version": 1, "protocol": '), board)
    with pytest.raises(IcrlBenchError, match="is not a results document"):
        leaderboard.submit(write(tmp_path, "[1, 2]"), board)
    with pytest.raises(IcrlBenchError, match="no results file at"):
        leaderboard.submit(tmp_path / "missing.json", board)
    assert entry_files(board) == []
    first = leaderboard.submit(write(tmp_path, real_results["oracle"]), board)
    with pytest.raises(IcrlBenchError, match=f"duplicates the entry {first.name}"):
        leaderboard.submit(write(tmp_path, real_results["oracle"]), board)
    # A re-run of the same agent with other curves is still the same submission.
    rerun = copy.deepcopy(real_results["oracle"])
    rerun["provenance"]["created_at"] = "2030-01-01T00:00:00+00:00"
    with pytest.raises(IcrlBenchError, match="duplicates the entry"):
        leaderboard.submit(write(tmp_path, rerun), board)
    assert entry_files(board) == [first.name]


def test_a_known_dataset_hash_is_accepted(real_results, tmp_path, isolated_root, monkeypatch):
    """Known = built under the data root (read from its zarr.json) or listed in the catalog."""
    store = isolated_root / "datasets" / "darkroom-small-v1"
    store.mkdir(parents=True)
    shipped = json.loads((REPO_ROOT / "datasets" / "hub" / "darkroom" / "small-v3" / "icrl_bench" / "manifest.json").read_text())
    manifest = {**shipped, "dataset_id": "darkroom-small-v1", "content_hash": "cd" * 32}  # a whole manifest: a partial one names no dataset
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"icrl_bench": manifest}}))
    data = copy.deepcopy(real_results["random"])
    data["agent"].update(dataset_id="darkroom-small-v1", dataset_hash="cd" * 32)
    assert leaderboard.submit(write(tmp_path, data), tmp_path / "board").is_file()
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("format_version: 1\ndatasets:\n  darkroom-v1:\n    repo: ORG/icrl-darkroom\n    content_hash: " + "ef" * 32 + "\n")
    monkeypatch.setenv("ICRL_BENCH_CATALOG", str(catalog))
    data = copy.deepcopy(real_results["oracle"])  # other curves: not a duplicate of the first
    data["agent"].update(dataset_id="darkroom-v1", dataset_hash="ef" * 32)
    assert leaderboard.submit(write(tmp_path, data), tmp_path / "board").is_file()


def test_verify_reruns_an_entry(real_results, tmp_path):
    entry = leaderboard.submit(write(tmp_path, real_results["random"]), tmp_path / "board")
    result = leaderboard.verify(entry)
    assert result.identical and result.max_abs_diff == 0.0 and result.within_ci


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a CPU-only machine's answer")
def test_verify_reruns_a_gpu_entry_on_the_cpu_only_when_asked():
    """An entry evaluated on a GPU names its device; a CPU-only machine says so in one line, and with
    --device cpu re-runs it (not bit-identical across devices, but within the entry's CI)."""
    entry = REPO_ROOT / "leaderboard/entries/darkroom-v1--idt--a496c2f67b93.json"  # the H200 IDT, evaluated on cuda
    assert load_results(entry)["agent"]["settings"]["device"] == "cuda"
    with pytest.raises(IcrlBenchError, match="evaluated on cuda, which this machine lacks; .*--device cpu"):
        leaderboard.verify(entry)
    assert leaderboard.verify(entry, device="cpu").within_ci


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_every_committed_entry_validates(path):
    data = load_results(path)
    leaderboard.validate(data, where=str(path))
    assert path.name == leaderboard.entry_filename(data)


def test_committed_entries_are_distinct():
    hashes = [leaderboard.curves_hash(load_results(p)) for p in COMMITTED]
    assert len(set(hashes)) == len(hashes)


def test_leaderboard_cli(real_results, tmp_path, monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (200, 50))
    board = tmp_path / "board"
    results = write(tmp_path, real_results["oracle"])
    submitted = runner.invoke(app, ["leaderboard", "submit", str(results), "--dir", str(board)])
    assert submitted.exit_code == 0, submitted.output
    assert "accepted" in submitted.output
    again = runner.invoke(app, ["leaderboard", "submit", str(results), "--dir", str(board)])
    assert again.exit_code == 1 and "duplicates the entry" in again.output and "Traceback" not in again.output
    shown = runner.invoke(app, ["leaderboard", "show", "--env", "darkroom", "--dir", str(board)])
    assert shown.exit_code == 0 and "oracle" in shown.output and "100.0 [100.0, 100.0]" in shown.output
    empty = runner.invoke(app, ["leaderboard", "show", "--env", "dark-key-to-door", "--dir", str(board)])
    assert empty.exit_code == 0 and "No leaderboard entries for dark-key-to-door" in empty.output
    rendered = runner.invoke(app, ["leaderboard", "render", "--dir", str(board)])
    assert rendered.exit_code == 0 and (board / "README.md").is_file() and (board / "index.html").is_file()
    entry = next((board / "entries").glob("*.json"))
    verified = runner.invoke(app, ["leaderboard", "verify", str(entry)])
    assert verified.exit_code == 0 and "verified" in verified.output


def test_the_leaderboard_directory_comes_from_the_environment_and_a_user_default_is_seeded(real_results, tmp_path, monkeypatch):
    """$ICRL_BENCH_LEADERBOARD replaces the default; the user data directory an installed package
    defaults to starts as a copy of the shipped entries, once (an entry the user removed stays removed)."""
    from icrl_bench import paths

    chosen = tmp_path / "chosen"
    monkeypatch.setenv(paths.LEADERBOARD_ENV_VAR, str(chosen))
    submitted = runner.invoke(app, ["leaderboard", "submit", str(write(tmp_path, real_results["random"]))])
    assert submitted.exit_code == 0, submitted.output
    assert len(entry_files(chosen)) == 1  # an explicit directory is never seeded
    monkeypatch.delenv(paths.LEADERBOARD_ENV_VAR)
    user = tmp_path / "user-data" / "leaderboard"
    monkeypatch.setattr(paths, "default_leaderboard_dir", lambda: user)
    shipped = sorted(p.name for p in (leaderboard.SHIPPED_DIR / "entries").glob("*.json"))
    assert [p.name for p, _ in leaderboard.list_entries()] == shipped
    (user / "entries" / shipped[0]).unlink()
    assert [p.name for p, _ in leaderboard.list_entries()] == shipped[1:]
    assert not [p for p in user.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_the_leaderboard_and_metrics_never_import_torch():
    """The design's contract: scoring and ranking work without the deep-learning stack."""
    import subprocess
    import sys

    code = "import sys, icrl_bench, icrl_bench.bench.leaderboard, icrl_bench.bench.metrics, icrl_bench.bench.protocols; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_provenance_is_required_and_must_name_the_right_dataset(tmp_path, monkeypatch):
    """Entries without checkpoint/dataset hashes, or with another known dataset's hash, were accepted."""
    import yaml

    from icrl_bench.bench import leaderboard
    from icrl_bench.errors import IcrlBenchError

    shipped = json.loads(next(Path(leaderboard.SHIPPED_DIR, "entries").glob("darkroom-v1--ad--*.json")).read_text())
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"datasets": {
        shipped["agent"]["dataset_id"]: {"build": "x", "content_hash": shipped["agent"]["dataset_hash"]},
        "darkroom-small-v3": {"build": "y", "content_hash": "b" * 64},
    }}))
    monkeypatch.setenv("ICRL_BENCH_CATALOG", str(catalog))
    leaderboard.validate(shipped)  # as shipped: fine
    for key in ("checkpoint_hash", "dataset_hash", "dataset_id"):
        stripped = json.loads(json.dumps(shipped))
        stripped["agent"][key] = None
        with pytest.raises(IcrlBenchError, match=f"must carry its provenance.*agent.{key}"):
            leaderboard.validate(stripped)
    swapped = json.loads(json.dumps(shipped))
    swapped["agent"]["dataset_hash"] = "b" * 64  # a known hash, but darkroom-small-v3's
    with pytest.raises(IcrlBenchError, match="is not that of darkroom-v3"):
        leaderboard.validate(swapped)


def test_oversized_and_deeply_nested_files_are_one_line_errors(tmp_path):
    from icrl_bench.errors import IcrlBenchError

    big = tmp_path / "big.json"
    big.write_text('{"pad": "' + "x" * (MAX_RESULTS_BYTES + 1) + '"}')
    with pytest.raises(IcrlBenchError, match="more than an evaluation writes"):
        load_results(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(IcrlBenchError, match="nests too deeply"):
        load_results(deep)


def test_rendered_markdown_escapes_what_an_agent_name_carries():
    from icrl_bench.bench.leaderboard_view import _markdown_cell

    assert _markdown_cell("<img src=x onerror=alert(1)>|evil\nrow") == "&lt;img src=x onerror=alert(1)&gt;\\|evil row"
