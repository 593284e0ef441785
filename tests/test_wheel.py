"""`pip install icrl-bench` is a working install: the wheel carries its configs, checkpoints and data.

The sdist is built with setuptools' own build hook and the wheel from it, as `python -m build`
does (so MANIFEST.in is tested too); no network. The wheel goes into a fresh venv outside the
repository with `--no-deps`, and this venv's packages (torch, zarr, ...) are made visible to it by
a .pth file instead of being installed again: the test needs no network and takes about a minute
on a busy 2-core machine. The installed `icrl-bench` then runs from a temporary directory, with
its data root and user data directory there too: the packaged dataset's download (hashes
verified), a few training steps, an evaluation of a shipped checkpoint, `reproduce` from the
shipped checkpoints, and a leaderboard submission that lands in the user data directory. Nothing
may be written inside the installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from icrl_bench.paths import REPO_ROOT

TIMEOUT_S = 600  # per command: a hang fails the test instead of stalling the suite
STAY_AGENT = '''
import numpy as np


class Stay:
    """Never moves: a standard run no shipped entry duplicates, at the cost of a random agent's."""

    def reset(self, num_envs, task_info):
        pass

    def act(self, obs):
        return np.full(len(obs), 4)

    def observe(self, obs, action, reward, next_obs, done):
        pass
'''


@dataclass(frozen=True)
class Installed:
    venv: Path
    package: Path  # the installed icrl_bench/
    work: Path  # the cwd of every command
    env: dict[str, str]

    def run(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """`icrl-bench ARGS` of the installed wheel; its output, after asserting it succeeded."""
        done = subprocess.run([str(self.venv / "bin" / "icrl-bench"), *args], cwd=self.work, env={**self.env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        assert done.returncode == 0, f"icrl-bench {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr


def _call(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _package_files(package: Path) -> set[str]:
    return {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from this checkout (through its sdist), installed into a fresh venv outside it."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert REPO_ROOT not in tmp.parents, "the venv must live outside the repository"
    dist = tmp / "dist"
    sdist = _call(sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_sdist({str(dist)!r}))", cwd=REPO_ROOT).split()[-1]
    _call(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", "-w", dist, dist / sdist)
    (wheel,) = dist.glob("icrl_bench-*.whl")
    venv = tmp / "venv"
    _call(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(_call(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "_icrl_bench_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., not icrl_bench
    _call(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", "--quiet", wheel)
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICRL_BENCH_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"ICRL_BENCH_ROOT": str(tmp / "data"), "XDG_DATA_HOME": str(tmp / "user-data"), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return Installed(venv, site / "icrl_bench", work, env)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    where = _call(installed.venv / "bin" / "python", "-c",
                  "import icrl_bench.paths as p; print(p.__file__, p.SHIPPED_ROOT, p.IN_CHECKOUT)", cwd=installed.work).split()
    assert where == [str(installed.package / "paths.py"), str(installed.package / "_shipped"), "False"]
    shipped = installed.package / "_shipped"
    assert (shipped / "baselines" / "darkroom" / "ad.yaml").is_file()
    assert not list(shipped.rglob("*.png")), "MANIFEST.in keeps pictures out of the wheel"
    resume_only = [p for p in shipped.rglob("*") if p.name.startswith("trainer_state.") or p.name in ("snapshots", "state.json")]
    assert not resume_only, f"optimizer state, snapshots and reproduce state stay out of the wheel: {resume_only[:3]}"
    # A committed reproduction ships the final weights of the runs its results were made from.
    for results in (shipped / "reproduction").glob("*/*/results/*.json"):
        checkpoint = json.loads(results.read_text())["agent"]["checkpoint"]
        if checkpoint.startswith("reproduction/"):
            assert (shipped / checkpoint / "checkpoint" / "model.safetensors").is_file(), f"{results} names {checkpoint}"
    version = installed.run("--version")
    assert version.startswith("icrl-bench ") and "(code" not in version  # no git commit outside a checkout


def test_download_train_evaluate_reproduce_and_submit_from_the_wheel(installed):
    before = _package_files(installed.package)
    data = Path(installed.env["ICRL_BENCH_ROOT"])

    downloaded = installed.run("datasets", "download", "darkroom-small-v3")
    assert "verified" in downloaded and "4918c4ddb5ce" in downloaded and (data / "datasets" / "darkroom-small-v3").is_dir()

    trained = installed.run("train", "--agent", "ad", "--dataset", "darkroom-small-v3", "--preset", "cpu", "--steps", "2", "--threads", "1", "-q")
    assert "trained to step 2" in trained and list((installed.work / "runs").glob("ad-darkroom-small-v3-cpu-*"))

    installed.run("evaluate", "--agent", "ad", "--env", "darkroom", "--seeds", "0", "--episodes", "2", "--tasks", "2", "--out", "results", "-q")
    (results,) = (installed.work / "results").glob("ad-darkroom-*.json")
    shipped = json.loads((installed.package / "_shipped" / "baselines" / "darkroom" / "ad" / "checkpoint" / "checkpoint.json").read_text())
    assert json.loads(results.read_text())["agent"]["checkpoint_hash"] == shipped["weights_sha256"]

    reproduced = installed.run("reproduce", "darkroom", "--from-shipped", "--agents", "dpt", "--seeds", "0", "--episodes", "1", "--tasks", "1")
    assert f"writing to {installed.work / 'reproduction' / 'darkroom'}" in reproduced
    assert (installed.work / "reproduction" / "darkroom" / "README.md").is_file()

    plugins = installed.work / "plugins"
    plugins.mkdir()
    (plugins / "stay_agent.py").write_text(STAY_AGENT)
    installed.run("evaluate", "--agent", "stay_agent:Stay", "--env", "darkroom", "--out", "standard", "-q", extra_env={"PYTHONPATH": str(plugins)})
    (standard,) = (installed.work / "standard").glob("*.json")
    submitted = installed.run("leaderboard", "submit", str(standard))
    board = Path(installed.env["XDG_DATA_HOME"]) / "icrl-bench" / "leaderboard" / "entries"
    shipped_entries = {p.name for p in (installed.package / "_shipped" / "leaderboard" / "entries").glob("*.json")}
    mine = {p.name for p in board.glob("*.json")} - shipped_entries
    assert len(mine) == 1 and str(board) in submitted.replace("\n", "")  # the user's board: the shipped entries, seeded, and the new one
    shown = installed.run("leaderboard", "show", "--env", "darkroom", "--format", "csv")
    assert "stay_agent:Stay" in shown and ",oracle," in shown

    assert _package_files(installed.package) == before, "a command wrote inside the installed package"


def test_an_installation_without_its_shipped_tree_says_so_in_one_line(tmp_path, monkeypatch):
    """A wheel built without its data (an old build, a broken MANIFEST.in) fails naming what is missing."""
    from icrl_bench import paths
    from icrl_bench.bench.reproduction_report import paper_results
    from icrl_bench.errors import IcrlBenchError
    from icrl_bench.training import load_run_config

    monkeypatch.setattr(paths, "SHIPPED_ROOT", tmp_path / "_shipped")
    with pytest.raises(IcrlBenchError, match=r"^baselines is missing from this installation .* reinstall icrl-bench"):
        load_run_config("ad", "darkroom")
    with pytest.raises(IcrlBenchError, match=r"^reproduction/paper_results.yaml is missing from this installation"):
        paper_results("darkroom")
