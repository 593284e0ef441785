"""scripts/gpu_reproduce.sh and scripts/fetch_wheels.sh on CPU: the GPU path, dry-run at a tiny budget.

The GPU machine has no network: dependencies come as wheels installed offline with --no-index.
The test makes a small real wheel, hands it over as the wheel directory, and checks that it was
installed where the script puts its packages, and that the whole path (dataset, concurrent
training, evaluation, archive) runs and writes what the GPU run is committed from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_reproduce.sh"


def _probe_wheel(tmp_path: Path) -> Path:
    """A wheel of a one-module package, built offline with the installed setuptools."""
    src = tmp_path / "probe-src"
    (src / "icrl_probe").mkdir(parents=True)
    (src / "icrl_probe" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text('[project]\nname = "icrl-probe"\nversion = "1.0"\n[build-system]\nrequires = ["setuptools"]\n'
                                        'build-backend = "setuptools.build_meta"\n')
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(src)],
                   check=True, capture_output=True)
    return wheels


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_cpu_dry_run_installs_offline_trains_evaluates_and_archives(tmp_path):
    wheels = _probe_wheel(tmp_path)
    out = tmp_path / "out"
    done = run_script(str(out), "--device", "cpu", "--budget", "tiny", "--wheels", str(wheels), "--agents", "ad,dicp-dpt,idt")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "work" / "site" / "icrl_probe" / "__init__.py").is_file()  # installed from the wheel dir, offline
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["runs"]) == set(timings["results"]) == {"ad", "dicp-dpt", "idt"}
    assert all(run["steps"] == 4 for run in timings["runs"].values()) and timings["device"] == "cpu"
    with tarfile.open(out / "icrl-bench-gpu.tar.gz") as archive:
        names = archive.getnames()
    for agent in ("ad", "dicp-dpt", "idt"):
        assert any(n.startswith(f"runs/{agent}-darkroom-tiny-v3-") and n.endswith("checkpoint/model.safetensors") for n in names)
        assert any(n.startswith(f"results/{agent}-darkroom") and n.endswith(".json") for n in names)
    assert "summary.md" in names and "| dicp-dpt | 4 x 4 |" in (out / "summary.md").read_text()


def test_bad_input_is_one_line(tmp_path):
    for args, message in [
        ((), "usage: bash scripts/gpu_reproduce.sh OUTDIR"),
        ((str(tmp_path / "o"), "--budget", "huge"), "--budget is paper or tiny"),
        ((str(tmp_path / "o"), "--frobnicate", "1"), "unknown option --frobnicate"),
        ((str(tmp_path / "o"), "--env", "mars"), "--env is darkroom or darkroom-permuted"),
        ((str(tmp_path / "o"), "--wheels", str(tmp_path)), "holds no wheels"),
    ]:
        done = run_script(*args)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    done = run_script(str(tmp_path / "o"), "--device", "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 1 and "torch sees no CUDA GPU" in done.stderr
