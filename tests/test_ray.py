"""The Ray executor on a local Ray instance (2 CPUs, no network): the local bytes, a killed worker, sharded evaluation.

Skipped where the `ray` extra is not installed; the dev extra installs it, so CI runs these.
Ray starts once for the module (~7 s); each test's first job on a worker imports torch (~3 s).
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from icrl_bench.data.build import build_dataset
from icrl_bench.data.dataset import load_dataset
from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig
from tests.test_golden_hashes import GOLDEN


def test_an_address_where_no_cluster_listens_is_one_line_before_anything_is_written(tmp_path):
    """Before the module's Ray starts: a connected process would use its own cluster and never dial."""
    from typer.testing import CliRunner

    from icrl_bench.cli import app

    assert not ray.is_initialized()
    result = CliRunner().invoke(app, ["build-dataset", "darkroom", "--preset", "tiny", "--executor", "ray",
                                      "--address", "127.0.0.1:1", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "no Ray cluster answers at --address 127.0.0.1:1" in " ".join(result.output.split())
    assert "ray start --head" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("family", ["darkroom", "dark-key-to-door"])
def test_a_ray_build_has_the_local_content_hash(local_ray, family, tmp_path, monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # as `build-dataset` pins it: the Ray workers, started before, are told
    result = build_dataset(family, "tiny", root=tmp_path, executor="ray", show_progress=False)
    assert result.content_hash == GOLDEN[family][1]
    build = load_dataset(result.dataset_id, root=tmp_path).manifest["build"]
    assert build["executor"] == "ray" and build["torch_threads"] == 1
    if platform.machine().lower() in {"x86_64", "amd64"}:
        assert build["torch_cpu_capability"] in {"AVX2", "DEFAULT"}  # the job's runtime env pinned ATen's kernels


def _kill_first_job(raylet_socket: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first build job seen running (process title `ray::icrl_bench_job`) under this test's raylet.

    Only a child of our raylet: another Ray on the machine (another test run) is not ours to touch.
    """
    while not stop.is_set() and not killed:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if not cmdline.read_bytes().startswith(b"ray::icrl_bench_job"):
                    continue
                status = (cmdline.parent / "status").read_text()
                parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
                if raylet_socket.encode() not in Path(f"/proc/{parent}/cmdline").read_bytes():
                    continue
            except (OSError, StopIteration):
                continue
            os.kill(int(cmdline.parent.name), signal.SIGKILL)
            killed.append(int(cmdline.parent.name))
            return
        time.sleep(0.01)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_a_worker_killed_mid_build_is_retried_to_the_same_hash(local_ray, tmp_path):
    killed: list[int] = []
    stop = threading.Event()
    raylet_socket = ray.nodes()[0]["RayletSocketName"]  # in our raylet's command line, which is the workers' parent
    killer = threading.Thread(target=_kill_first_job, args=(raylet_socket, killed, stop), daemon=True)
    killer.start()
    try:
        result = build_dataset("darkroom", "tiny", root=tmp_path, executor="ray", show_progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "the job ended before its worker could be killed"
    assert result.retried_jobs == 1 and result.content_hash == GOLDEN["darkroom"][1]
    assert load_dataset(result.dataset_id, root=tmp_path).manifest["build"]["retried_jobs"] == 1


def test_a_sharded_evaluation_on_ray_equals_the_local_one(local_ray):
    from icrl_bench.bench.harness import evaluate

    run = {"env": "darkroom", "seeds": [0, 1], "n_episodes": 2, "task_groups": 2}
    local = evaluate("random", executor=ExecutorConfig("local", workers=1), **run)
    on_ray = evaluate("random", executor=ExecutorConfig("ray"), **run)
    assert on_ray["curves"] == local["curves"] and on_ray["summary"] == local["summary"]
    assert (on_ray["cost"]["executor"], on_ray["cost"]["shards"]) == ("ray", 4)
    assert on_ray["command"].replace("--executor ray", "--executor local") == local["command"]


def test_a_user_error_raised_in_a_ray_job_reaches_the_driver_as_itself(local_ray):
    """Not a RayTaskError with a remote traceback: the job's own IcrlBenchError, one line at the CLI."""
    from icrl_bench.executors import open_executor
    from icrl_bench.executors.driver import Job, run_jobs
    from tests.test_executors import raises_user_error

    with pytest.raises(IcrlBenchError, match="^the job's own words$"), open_executor(ExecutorConfig("ray"), 1) as executor:
        run_jobs(executor, raises_user_error, [Job(("the job's own words",))], lambda index, value: None)
