"""Executors without Ray: a dead local worker's job is run again, sharded evaluations merge, bad input.

The job functions below are module-level so that spawned workers can import them (tests/ is a
package); they kill their own process to make a real worker death, not a mocked one.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig, open_executor
from icrl_bench.executors.driver import Job, RetryPolicy, run_jobs


def dies_once(marker: str, value: int, progress=None) -> int:
    """SIGKILL this worker the first time any job runs (the marker file records it), then work."""
    if progress is not None:
        progress(1)
    if not os.path.exists(marker):
        Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return value * value


def raises_user_error(message: str, progress=None) -> None:
    raise IcrlBenchError(message)


def test_a_local_worker_killed_under_its_job_is_replaced_and_the_job_rerun(tmp_path):
    marker = str(tmp_path / "killed")
    results: dict[int, int] = {}
    steps: list[int] = []
    jobs = [Job((marker, v), units=1) for v in range(4)]
    with open_executor(ExecutorConfig("local", workers=2), len(jobs)) as executor:
        report = run_jobs(executor, dies_once, jobs, results.__setitem__, steps.append, RetryPolicy(errors=0, lost=2))
    assert Path(marker).is_file(), "no worker was killed"
    assert results == {0: 0, 1: 1, 2: 4, 3: 9} and not report.failures
    assert report.lost_workers >= 1 and report.retried == report.lost_workers
    assert sum(steps) == len(jobs)  # the killed attempts' progress was taken back


def test_a_job_that_keeps_raising_fails_after_its_retries():
    def always_raises(value, progress=None):
        raise RuntimeError("boom")

    with open_executor(ExecutorConfig("local", workers=1), 1) as executor:
        report = run_jobs(executor, always_raises, [Job((1,))], lambda i, v: None, retry=RetryPolicy(errors=2, lost=0))
    assert report.failures[0].tries == 3 and report.failures[0].error == "RuntimeError: boom"


def test_unknown_executor_and_misplaced_options_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from icrl_bench.cli import app

    with pytest.raises(IcrlBenchError, match=r"unknown executor 'rey'.*Did you mean 'ray'.*Known: local, ray"):
        ExecutorConfig("rey")
    with pytest.raises(IcrlBenchError, match="--address auto is for --executor ray"):
        ExecutorConfig("local", address="auto")
    runner = CliRunner()
    for args, message in [
        (["build-dataset", "darkroom", "--preset", "tiny", "--executor", "dask"], "unknown executor 'dask'"),
        (["evaluate", "--agent", "random", "--address", "auto"], "add --executor local or --executor ray"),
        (["evaluate", "--agent", "random", "--executor", "local", "--task-groups", "9", "--episodes", "1"], "--task-groups must be in 1..8"),
    ]:
        result = runner.invoke(app, [*args, "--out" if args[0] == "evaluate" else "--root", str(tmp_path / "out")])
        assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2  # one line, maybe wrapped


def test_executor_ray_without_the_extra_names_the_install(tmp_path, monkeypatch):
    from icrl_bench.data.build import build_dataset

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when the extra is not installed
    with pytest.raises(IcrlBenchError, match=r"--executor ray needs the ray extra .*pip install 'icrl-bench\[ray\]'"):
        build_dataset("darkroom", "tiny", root=tmp_path, executor="ray")
    assert not any(tmp_path.iterdir())  # said before anything was written


def test_sharded_evaluation_merges_to_the_single_seed_runs_and_keeps_deterministic_curves():
    """Whole-seed shards draw as `--seeds SEED` does; the oracle's curves do not depend on sharding at all."""
    from icrl_bench.bench.harness import evaluate

    here = ExecutorConfig("local", workers=1)
    sharded = evaluate("random", env="dark-key-to-door", seeds=[0, 3], n_episodes=2, n_tasks=4, executor=here)
    alone = [evaluate("random", env="dark-key-to-door", seeds=[s], n_episodes=2, n_tasks=4)["curves"]["return"] for s in (0, 3)]
    assert sharded["curves"]["return"] == alone[0] + alone[1]
    assert sharded["cost"]["shards"] == 2 and sharded["command"].endswith("--executor local --task-groups 1")
    groups = evaluate("oracle", env="darkroom", seeds=[0, 1], n_episodes=2, executor=here, task_groups=3)
    one_batch = evaluate("oracle", env="darkroom", seeds=[0, 1], n_episodes=2)
    assert groups["curves"] == one_batch["curves"] and groups["summary"] == one_batch["summary"]
    assert np.asarray(groups["curves"]["return"]).shape == (2, 8, 2)


def test_several_evaluations_in_one_pool_give_each_its_own_sharded_curves():
    """`reproduce` puts every agent's shards in one pool: which evaluations share it, and how many
    workers run it, changes no agent's draws."""
    from icrl_bench.bench.harness import evaluate, evaluate_sharded, prepare_agent

    run = {"seeds": [0, 3], "n_episodes": 2, "n_tasks": 3}
    agents = [prepare_agent(name, env="dark-key-to-door") for name in ("random", "oracle")]
    pooled = evaluate_sharded(agents, ExecutorConfig("local", workers=2), **run)
    for name, results in zip(("random", "oracle"), pooled, strict=True):
        alone = evaluate(name, env="dark-key-to-door", executor=ExecutorConfig("local", workers=1), **run)
        assert results["agent"]["name"] == name and results["curves"] == alone["curves"]
        assert results["cost"]["shards"] == 2 and results["cost"]["workers"] == 2
    assert pooled[0]["curves"] != pooled[1]["curves"]


def test_a_stopped_sharded_evaluation_continues_from_its_finished_shards(tmp_path, monkeypatch):
    """Finished shards are kept; a re-run runs only the missing ones, merges to the same curves, and
    cleans up. A file that is not a shard is refused with the fix."""
    from icrl_bench.bench import harness_sharded
    from icrl_bench.bench.harness import evaluate

    here = ExecutorConfig("local", workers=1)
    run = {"env": "dark-key-to-door", "seeds": [0, 3], "n_episodes": 2, "n_tasks": 4, "executor": here}
    whole = evaluate("random", **run)
    shards = tmp_path / ".shards"
    merge = harness_sharded._merge

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # stopped after every shard finished, before the merge

    monkeypatch.setattr(harness_sharded, "_merge", stopped)
    with pytest.raises(KeyboardInterrupt):
        evaluate("random", shard_dir=shards, **run)
    monkeypatch.setattr(harness_sharded, "_merge", merge)
    kept = sorted(shards.glob("shard-*.json"))
    assert [p.name.split("-")[1] for p in kept] == ["0", "3"]
    kept[1].unlink()  # as if stopped while seed 3 ran
    ran = []
    run_jobs = harness_sharded.run_jobs
    monkeypatch.setattr(harness_sharded, "run_jobs", lambda pool, fn, jobs, *a, **k: ran.append(len(jobs)) or run_jobs(pool, fn, jobs, *a, **k))
    resumed = evaluate("random", shard_dir=shards, **run)
    assert ran == [1] and resumed["curves"] == whole["curves"]
    assert resumed["cost"]["resumed_shards"] == 1 and whole["cost"]["resumed_shards"] == 0  # the cost says the run was resumed
    assert not list(shards.glob("shard-*.json"))  # merged: the shards are gone
    kept[0].write_text("{not json")
    with pytest.raises(IcrlBenchError, match="not a finished shard.*delete it"):
        evaluate("random", shard_dir=shards, **run)


def test_kept_shards_outlive_a_failed_save_of_the_results(tmp_path):
    """The shards go only once the results are saved: a crash while saving them (here a full disk)
    leaves every finished shard, and the re-run only merges and saves."""
    from icrl_bench.bench.harness import evaluate

    shards = tmp_path / ".shards"
    run = {"env": "dark-key-to-door", "seeds": [0, 3], "n_episodes": 2, "n_tasks": 4, "executor": ExecutorConfig("local", workers=1),
           "shard_dir": shards}

    def disk_full(results):
        assert len(list(shards.glob("shard-*.json"))) == 2  # still there while the results are saved
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        evaluate("random", save=disk_full, **run)
    assert len(list(shards.glob("shard-*.json"))) == 2
    saved = []
    resumed = evaluate("random", save=saved.append, **run)
    assert saved == [resumed] and resumed["cost"]["resumed_shards"] == 2
    assert not list(shards.glob("shard-*.json"))


def test_a_build_whose_jobs_ran_on_different_cpu_kernels_says_so():
    """On a cluster the workers' kernels make the bytes; a mix matches no one-machine build."""
    from icrl_bench.data.build import _workers_numerics

    avx2, avx512 = ({"torch_threads": 1, "torch_cpu_capability": kernel} for kernel in ("AVX2", "AVX512"))
    assert _workers_numerics({"numerics": [avx512]}, "cpu") == avx512  # the workers', not the driver's
    mixed = _workers_numerics({"numerics": [avx512, avx2]}, "cpu")
    assert mixed["torch_cpu_capability"] == "mixed: AVX2, AVX512" and mixed["workers_numerics"] == [avx512, avx2]
