"""Finding and reading datasets the way Minari users expect: --version, show, list --remote,
load_dataset(download=True), episodes, the window sampler in one's own loop, import of an export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import icrl_bench
from icrl_bench.cli import app, datasets_app
from icrl_bench.data.catalog import catalog_path, load_catalog
from icrl_bench.data.dataset import load_dataset
from icrl_bench.errors import IcrlBenchError

TINY = "darkroom-tiny-v3"
SMALL = "darkroom-small-v3"  # shipped in the repository as a directory remote (datasets/hub/darkroom)
runner = CliRunner()


@pytest.fixture
def wide(monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (200, 50))


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_version():
    code, output = run("--version")
    assert code == 0 and output.startswith(f"icrl-bench {icrl_bench.__version__}")


def test_the_datasets_help_names_every_command():
    names = sorted(c.name for c in datasets_app.registered_commands)
    assert {"list", "show", "info", "download", "verify", "import", "export", "push", "delete"} <= set(names)
    summary = datasets_app.info.help
    assert all(name in summary for name in names), summary  # the group's one line (in `icrl-bench --help`) names them all
    code, output = run("datasets", "--help")
    assert code == 0 and all(name in output for name in names)


def test_show_a_local_dataset(tiny_root, wide):
    code, output = run("datasets", "show", TINY, "--root", str(tiny_root))
    assert code == 0, output
    assert "9 tasks x 4 streams x 200 steps (7,200 transitions)" in output
    assert "obs uint8 [9, 4, 200, 2]" in output and "batched-ppo (" in output
    manifest = load_dataset(TINY, root=tiny_root).manifest
    assert manifest["content_hash"] in output and "KB on disk" in output and "not in the catalog" in output


def test_show_a_catalog_dataset_that_is_not_here(tmp_path, wide):
    code, output = run("datasets", "show", SMALL, "--root", str(tmp_path))
    assert code == 0, output
    entry = load_catalog().datasets[SMALL]
    assert f"not under {tmp_path}" in output and "81 tasks x 10 streams x 1,000 steps" in output
    assert "1.2 MB to download" in output and entry.content_hash in output
    assert "obs uint8 [81, 10, 1000, 2]" in output  # read from the shipped export's manifest, no network
    assert f"icrl-bench datasets download {SMALL}" in output
    code, output = run("datasets", "show", "metaworld-ml1-reach-small-v1", "--root", str(tmp_path))
    assert code == 0 and "not published (build: icrl-bench build-dataset metaworld-ml1 --task reach --preset small)" in output
    code, output = run("datasets", "show", "darkroom-permuted-v3", "--root", str(tmp_path))  # pinned with the kernels it was built on
    assert code == 0 and "were built on ATen's AVX2 kernels, which build-dataset pins" in " ".join(output.split()), output
    code, output = run("datasets", "show", "darkroom-v9", "--root", str(tmp_path))
    assert code == 1 and "unknown dataset id 'darkroom-v9'" in output and "Traceback" not in output


def test_list_remote_has_steps_size_and_description(tmp_path, wide):
    code, output = run("datasets", "list", "--remote", "--root", str(tmp_path))
    assert code == 0, output
    row = next(line for line in output.splitlines() if line.startswith(f"│ {SMALL} "))
    assert "0.81M" in row and "1.2 MB" in row and "shipped" in row and "absent" in row and "batched-ppo learning histories" in row
    build_only = next(line for line in output.splitlines() if line.startswith("│ darkroom-v3 "))
    assert "8.10M" in build_only and "build-only" in build_only


def test_list_remote_fits_a_narrow_terminal(tmp_path, monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (80, 50))
    code, output = run("datasets", "list", "--remote", "--root", str(tmp_path))
    assert code == 0 and max(len(line) for line in output.splitlines()) <= 80
    assert f"{SMALL}: batched-ppo learning histories" in output  # descriptions below the table, whole


def test_the_catalog_shapes_and_sizes_are_true():
    """`shape` follows from each id's recipe; `download_bytes` is what the shipped export moves."""
    from icrl_bench.data.catalog import entry_directory
    from icrl_bench.data.recipes import parse_dataset_id

    for dataset_id, entry in load_catalog().datasets.items():
        assert entry.shape is not None, dataset_id
        plan = parse_dataset_id(dataset_id)
        if plan is not None:
            settings = plan.source_settings
            assert (entry.shape.n_tasks, entry.shape.n_streams, entry.shape.n_steps) == (
                len(plan.tasks), settings["n_streams"], settings["total_timesteps"] // settings["n_streams"]), dataset_id
        folder = entry_directory(entry)
        if folder is not None:
            export = json.loads((folder / "icrl_bench" / "export.json").read_text())
            assert export["shape"] == entry.shape.model_dump(), dataset_id
            moved = sum(record["size"] for record in export["files"].values()) + (folder / "icrl_bench" / "export.json").stat().st_size
            assert entry.download_bytes == moved, dataset_id
        assert (entry.download_bytes is not None) == (entry.repo is not None and entry.repo.startswith("./")), dataset_id
    assert catalog_path().is_file()


@pytest.mark.parametrize("args", [["datasets", "list"], ["datasets", "list", "--remote"], ["datasets", "show", SMALL]])
def test_listing_and_showing_never_import_torch(args, tmp_path):
    code = (
        "import sys\n"
        "from icrl_bench.cli import main\n"
        f"sys.argv = ['icrl-bench', *{args!r}, '--root', {str(tmp_path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    run_ = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert run_.returncode == 0, run_.stderr
    assert run_.stdout.strip().endswith("torch imported: False"), run_.stdout


def test_load_dataset_downloads_from_the_catalog(tmp_path):
    with pytest.raises(IcrlBenchError, match=f"download it with `icrl-bench datasets download {SMALL}`"):
        icrl_bench.load_dataset(SMALL, root=tmp_path)
    ds = icrl_bench.load_dataset(SMALL, root=tmp_path, download=True)
    assert ds.manifest["content_hash"] == load_catalog().datasets[SMALL].content_hash
    assert ds.path == tmp_path / "datasets" / SMALL
    assert icrl_bench.load_dataset(SMALL, root=tmp_path, download=True).path == ds.path  # present: no second download


def test_episodes_walk_every_history_in_order(tiny_dataset):
    ds = tiny_dataset
    episodes = list(ds.episodes("train", arrays=("obs", "action", "reward")))
    horizon = ds.manifest["env_spec"]["horizon"]
    per_stream = ds.n_steps // horizon
    assert len(episodes) == len(ds.train_rows) * ds.n_streams * per_stream
    first = episodes[0]
    assert (first.task_row, first.stream, first.index) == (int(ds.train_rows[0]), 0, 0)
    assert set(first.arrays) == {"obs", "action", "reward"} and first.arrays["obs"].shape == (horizon, 2)
    np.testing.assert_array_equal(first.arrays["action"], ds["action"][first.task_row, 0, :horizon])
    returns = np.array([e.arrays["reward"].sum() for e in episodes if e.task_row == first.task_row]).reshape(ds.n_streams, per_stream)
    np.testing.assert_array_equal(returns, ds.episode_returns(first.task_row))
    assert {e.task_row for e in ds.episodes(None, arrays=("done",))} == set(range(ds.n_tasks))
    assert len(list(ds.episodes("test", arrays=("done",)))) == len(ds.test_rows) * ds.n_streams * per_stream
    with pytest.raises(IcrlBenchError, match="unknown split 'val'"):
        next(ds.episodes("val"))
    with pytest.raises(IcrlBenchError, match="no per-step array task_params"):
        next(ds.episodes("train", arrays=("task_params",)))


def test_the_window_sampler_feeds_a_users_own_loop(tiny_root):
    import torch

    sampler = icrl_bench.WindowSampler(TINY, root=tiny_root, config=icrl_bench.SamplerConfig(window=20, batch_size=8))
    assert isinstance(sampler, torch.utils.data.IterableDataset)
    loader = torch.utils.data.DataLoader(sampler, batch_size=None)  # already batched
    batches = [batch for _, batch in zip(range(3), loader)]
    assert batches[0]["obs"].shape == (8, 20, 2) and batches[0]["action"].shape == (8, 20) and batches[0]["row"].shape == (8,)
    again = next(iter(icrl_bench.make_loader(sampler)))
    assert torch.equal(again["obs"], batches[0]["obs"])  # batches are a pure function of (seed, step)


def test_import_detects_an_export_folder_and_round_trips(tiny_root, tmp_path, wide):
    export = tmp_path / "export"
    code, output = run("datasets", "export", TINY, "--out", str(export), "--root", str(tiny_root))
    assert code == 0, output
    other = tmp_path / "other-root"
    code, output = run("datasets", "import", str(export), "--root", str(other))  # no --env, no --format
    assert code == 0 and "imported" in output, output
    original = load_dataset(TINY, root=tiny_root).manifest["content_hash"]
    imported = load_dataset(TINY, root=other)
    assert imported.manifest["content_hash"] == original and imported.verify() == original
    code, output = run("datasets", "import", str(export), "--root", str(other))
    assert code == 0 and "already at" in output
    code, output = run("datasets", "import", str(export), "--id", "mine-v1", "--root", str(tmp_path / "third"))
    assert code == 1 and "drop --id" in output
    code, output = run("datasets", "import", str(tmp_path), "--root", str(tmp_path / "third"))
    assert code == 1 and "is not an icrl-bench dataset export" in output
    code, output = run("datasets", "import", str(tmp_path / "file.hdf5"), "--root", str(tmp_path / "third"))
    assert code == 1 and "--env is needed for a dicp-hdf5 file" in output
    assert not Path(tmp_path / "third").exists() or not any((tmp_path / "third").rglob("zarr.json"))
