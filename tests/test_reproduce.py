"""`icrl-bench reproduce`: stages that skip when done, resume after a kill, a report beside the paper."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import icrl_bench.training as train_module
from icrl_bench.bench import harness, harness_sharded, reproduction
from icrl_bench.bench.reproduction import GRID_AGENTS, reproduce
from icrl_bench.bench.reproduction_report import AgentRecord, Cell, episode_cells, paper_results, render_report, verdict
from icrl_bench.cli import app
from icrl_bench.errors import IcrlBenchError
from icrl_bench.executors import ExecutorConfig
from icrl_bench.training import BASELINES_DIR

SMOKE = {"seeds": [0, 1, 2], "n_episodes": 2, "n_tasks": 2}


def test_paper_results_cover_every_grid_env_and_agent():
    for env in ("darkroom", "darkroom-permuted", "dark-key-to-door"):
        source, curves = paper_results(env)
        assert "arXiv 2502.19009" in source and set(curves) == set(GRID_AGENTS)
        assert all(c.episodes == (1, 5, 10, 20, 30, 50) and len(c.returns) == 6 for c in curves.values())
    assert paper_results("darkroom")[1]["dicp-ad"].returns[-1] == 15.43


def test_cells_and_verdicts():
    returns = np.zeros((4, 2, 50))
    returns[:, :, 19] = [[10, 12], [11, 11], [12, 10], [11, 11]]  # every seed averages 11 at episode 20
    cells = episode_cells({"curves": {"return": returns.tolist()}}, (20, 50, 60))
    assert cells[20] == Cell(11.0, 11.0, 11.0, 4) and cells[50].mean == 0.0 and 60 not in cells
    ours = Cell(10.0, 9.0, 11.0, 5)
    assert verdict(ours, 10.5, None) == "within" and verdict(ours, 8.0, None) == "above" and verdict(ours, 12.0, None) == "below"
    assert verdict(ours, 12.0, 1.5) == "within"  # the paper's CI meets ours
    assert verdict(Cell(10.0, 10.0, 10.0, 2), 3.0, None) == "n/a"  # no interval from fewer than 3 seeds
    assert Cell(1.0, 1.0, 1.0, 2).text() == "1.00 [n/a]"


def test_the_hardware_of_a_shipped_checkpoint_is_read_whole_from_its_readme(tmp_path):
    from icrl_bench.run_records import shipped_hardware

    (tmp_path / "README.md").write_text("# ad\n\n- training budget: 3150 steps x batch 64 = 201,600 windows, lr 0.002, "
                                        "2838 s on cpu (one core, beside a training on the other core)\n")
    assert shipped_hardware(tmp_path) == "cpu (one core, beside a training on the other core)"


def test_the_report_says_which_evaluations_ran_on_a_gpu_and_their_acting_seconds():
    def record(agent: str, settings: dict) -> AgentRecord:
        results = {"curves": {"return": np.ones((3, 2, 50)).tolist()}, "cost": {"total_s": 50.0, "act_s_per_step": 0.0444, "steps": 1000},
                   "agent": {"name": agent, "settings": settings, "checkpoint_hash": "ab" * 32}}
        return AgentRecord(agent, results, {"steps": 10, "batch_size": 4, "train_s": 5.0, "hardware": "here"})

    rows = render_report("darkroom", [record("idt", {"device": "cuda"}), record("ad", {})]).splitlines()
    assert "| 44 on cuda | `abababababab` |" in next(r for r in rows if r.startswith("| idt | dicp"))
    assert "| 44 | `abababababab` |" in next(r for r in rows if r.startswith("| ad | dicp"))


def test_the_report_names_a_warm_start_source_beside_the_hardware():
    from icrl_bench.bench.reproduction_report import budget_of

    shipped = BASELINES_DIR / "darkroom-permuted" / "dicp-dpt"  # warm-started from the shipped DPT (train --init-from)
    budget = budget_of(shipped, "one core")
    assert budget["warm_start"] == "dpt @d61fbd7e"
    results = {"curves": {"return": np.ones((3, 2, 50)).tolist()}, "cost": {}, "agent": {"name": "dicp-dpt", "settings": {}}}
    rows = render_report("darkroom-permuted", [AgentRecord("dicp-dpt", results, budget)]).splitlines()
    assert "| one core; warm-started from dpt @d61fbd7e (its training not counted) |" in next(r for r in rows if r.startswith("| dicp-dpt | dicp"))
    assert budget_of(BASELINES_DIR / "darkroom-permuted" / "dpt")["warm_start"] is None


def test_tiny_run_writes_the_report_and_a_rerun_skips_finished_stages(tmp_path, monkeypatch):
    out, root, logs = tmp_path / "rep", tmp_path / "root", []
    real_evaluate, threads = harness.evaluate, []
    monkeypatch.setattr(harness, "evaluate", lambda *a, **k: threads.append(torch.get_num_threads()) or real_evaluate(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's threads: the evaluation takes one whatever they are
    try:
        report = reproduce("darkroom", "ad,dicp-ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)
    finally:
        torch.set_num_threads(before)
    assert threads == [1, 1]  # Darkroom: one batch per agent, on one thread as `icrl-bench evaluate`
    monkeypatch.setattr(harness, "evaluate", real_evaluate)
    text = report.read_text()
    assert "| ad | 0." in text and "| dicp-ad |" in text and "/ 0.65" in text and (out / "curves.png").stat().st_size > 0
    assert "--seeds 0,1,2 --episodes 2 --tasks 2`" in text and "Not the standard protocol" in text  # a smoke run says so
    results = json.loads((out / "results" / "ad.json").read_text())
    assert results["seeds"] == [0, 1, 2] and results["agent"]["dataset_id"] == "darkroom-tiny-v3"
    logs.clear()
    reproduce("darkroom", "ad,dicp-ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)
    assert sum("finished" in line and "skipped" in line for line in logs) == 2
    assert sum("results for this checkpoint exist, skipped" in line for line in logs) == 2
    planned = json.loads((out / "results" / "dicp-ad.json").read_text())["agent"]
    assert planned["planner_revision"] == 2 and "planner_revision" not in results["agent"]  # only planning agents carry it
    reproduce("darkroom", "ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)  # a partial run on the same folder
    text = report.read_text()
    assert "| ad | 0." in text and "| dicp-ad |" in text  # reports what the folder holds, not only its own agents
    assert text.index("| ad |") < text.index("| dicp-ad |")
    logs.clear()
    monkeypatch.setattr("icrl_bench.agents.planner.PLANNER_REVISION", 3)  # the planning code changed since
    reproduce("darkroom", "ad,dicp-ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)
    assert any("dicp-ad: results were planned by planner revision 2, now 3: re-evaluating" in line for line in logs)
    assert sum("results for this checkpoint exist, skipped" in line for line in logs) == 1  # ad does not plan


def killed_in_training(env: str, out: Path, root: Path, monkeypatch) -> str:
    """`reproduce ENV --agents ad` killed once its training checkpointed step 2 (ckpt_interval 2): ad's run as state.json records it."""
    real_train = train_module.train

    def killed_after_two_steps(*args, **kwargs):
        real_train(*args, stop_after=2, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", killed_after_two_steps)
    with pytest.raises(KeyboardInterrupt):
        reproduce(env, "ad", "tiny", out=out, root=root, log=lambda _: None, **SMOKE)
    monkeypatch.setattr(train_module, "train", real_train)
    return json.loads((out / "state.json").read_text())["runs"]["ad"]


def test_a_kill_in_training_and_one_in_evaluation_resume(tmp_path, monkeypatch):
    """Darkroom-Permuted evaluates seed by seed on a CPU (`EVAL_BY_SEED`): a kill there loses one seed at most."""
    out, root = tmp_path / "rep", tmp_path / "root"
    recorded = killed_in_training("darkroom-permuted", out, root, monkeypatch)
    assert recorded.startswith("runs/")  # relative: the folder resumes after a move (or a commit and a fresh clone)
    out = out.rename(tmp_path / "moved")
    run_dir = out / recorded

    real_run_shard = harness_sharded.run_shard
    ran = []

    def killed_in_the_second_seed(spec, progress=None):
        ran.append(spec["seed"])
        if len(ran) == 2:
            raise KeyboardInterrupt  # killed while seed 1 ran: seed 0 is kept
        return real_run_shard(spec, progress)

    monkeypatch.setattr(harness_sharded, "run_shard", killed_in_the_second_seed)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        reproduce("darkroom-permuted", "ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)
    assert any(f"resuming {run_dir} at step 2" in line for line in logs)
    assert [p.name.split("-")[1] for p in (out / "results" / ".shards").glob("shard-*.json")] == ["0"]
    ran.clear()
    monkeypatch.setattr(harness_sharded, "run_shard", lambda spec, progress=None: ran.append(spec["seed"]) or real_run_shard(spec, progress))
    logs.clear()
    reproduce("darkroom-permuted", "ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)
    assert any("ad: finished (4 steps), skipped" in line for line in logs)
    assert ran == [1, 2]  # the evaluation continued from its kept seed
    results = json.loads((out / "results" / "ad.json").read_text())
    assert results["cost"]["resumed_shards"] == 1 and not list((out / "results" / ".shards").glob("shard-*.json"))
    # the curves are those of `icrl-bench evaluate --executor local` of the same checkpoint
    sharded = harness.evaluate("ad", run_dir, "darkroom-permuted", executor=ExecutorConfig("local", workers=1), **SMOKE)
    assert sharded["curves"] == results["curves"] and results["command"].endswith("--executor local --task-groups 1")
    # Everything finished: a rerun (a fresh machine, say, without the dataset) needs no dataset at all.
    logs.clear()
    reproduce("darkroom-permuted", "ad", "tiny", out=out, root=tmp_path / "no-data", log=logs.append, **SMOKE)
    assert "[dataset] every agent's training is finished: the dataset is not needed" in logs
    assert not (tmp_path / "no-data").exists() and any("results for this checkpoint exist, skipped" in line for line in logs)


def test_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    for args, message in [
        (["reproduce", "darkroomm"], "unknown env 'darkroomm'. Did you mean 'darkroom'"),
        (["reproduce", "darkroom", "--agents", "ad,dtp"], "unknown agent 'dtp'"),
        (["reproduce", "darkroom", "--budget", "huge"], "unknown budget 'huge'"),
    ]:
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["reproduce", "darkroom", "--device", "cuda", "--out", str(tmp_path / "o")])
        assert result.exit_code == 1 and "torch sees no CUDA GPU" in result.output
    with pytest.raises(IcrlBenchError, match="no shipped ad checkpoint for dark-key-to-door"):
        reproduce("dark-key-to-door", "ad", from_shipped=True, out=tmp_path / "o", log=lambda _: None)


def test_parallel_trainings_and_evaluations_give_the_same_curves(tmp_path):
    logs = []
    one = reproduce("darkroom", "ad,dpt", "tiny", out=tmp_path / "one", root=tmp_path / "root", log=logs.append, **SMOKE)
    two = reproduce("darkroom", "ad,dpt", "tiny", out=tmp_path / "two", root=tmp_path / "root", log=logs.append, jobs=2, **SMOKE)
    assert any("[train] 2 agents, 2 at a time" in line for line in logs) and any("[evaluate] 2 agents, 2 at a time" in line for line in logs)
    runs = json.loads((two.parent / "state.json").read_text())["runs"]  # both processes recorded their run: a rerun resumes either
    assert sorted(runs) == ["ad", "dpt"] and all((two.parent / run / "run.json").is_file() for run in runs.values())
    progress = []  # what the parent logs while parallel trainings run: each run's steps, from its metrics.jsonl
    report = reproduction._training_progress(two.parent / "state.json", ["ad", "dpt", "idt"], progress.append)
    report()
    report()  # no run moved by a tenth since: nothing more
    assert progress == ["[train] ad 4/4, dpt 4/4"]
    for agent in ("ad", "dpt"):
        a = json.loads((one.parent / "results" / f"{agent}.json").read_text())
        b = json.loads((two.parent / "results" / f"{agent}.json").read_text())
        assert a["curves"] == b["curves"]  # same weights (the checkpoint hashes differ: their JSON's creation times are bound in)
    with pytest.raises(IcrlBenchError, match="--jobs must be at least 1"):
        reproduce("darkroom", "ad", "tiny", out=tmp_path / "x", jobs=0, log=lambda _: None)


def test_parallel_stages_run_one_per_process():
    """A process runs one stage and exits, so a worker never takes up a queued agent after its own."""
    pids = reproduction._in_processes(os.getpid, {"a": (), "b": (), "c": ()}, jobs=2)
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()


def _orphan_child(ready: str, stopped: str) -> None:
    """A reproduce worker: SIGTERM (from its watcher, once its parent is gone) writes `stopped`."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (Path(stopped).write_text("stopped"), os._exit(0)))
    reproduction._stop_when_orphaned(os.getppid(), every_s=0.1)
    Path(ready).write_text("ready")
    time.sleep(60)


def test_a_worker_stops_when_its_reproduce_is_killed(tmp_path):
    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    parent = (
        "import multiprocessing, os, time\n"
        "from pathlib import Path\n"
        "from tests.test_reproduce import _orphan_child\n"
        "if __name__ == '__main__':\n"
        f"    multiprocessing.get_context('spawn').Process(target=_orphan_child, args=({str(ready)!r}, {str(stopped)!r})).start()\n"
        f"    while not Path({str(ready)!r}).exists(): time.sleep(0.05)\n"
        "    os._exit(0)  # killed: no cleanup, no join\n"
    )
    subprocess.run([sys.executable, "-c", parent], cwd=Path(__file__).parents[1], timeout=120, check=True)
    deadline = time.monotonic() + 30
    while not stopped.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stopped.read_text() == "stopped"


def test_a_laptop_budget_warm_starts_dicp_dpt_where_its_shipped_recipe_does():
    """The budget reproduces what is shipped: Darkroom-Permuted's DICP-DPT was trained by its `laptop-warm`
    preset from the shipped DPT, so reproduce trains that preset, after DPT, from the DPT it trains."""
    from icrl_bench.bench.reproduction import GRID_AGENTS, training_waves, warm_sources

    assert warm_sources(list(GRID_AGENTS), "darkroom-permuted", "laptop") == {"dicp-dpt": "dpt"}
    assert warm_sources(list(GRID_AGENTS), "darkroom", "laptop") == {"dicp-idt": "idt"}  # Darkroom's DICP-IDT starts from IDT
    assert warm_sources(["dicp-dpt"], "darkroom-permuted", None) == {}
    waves = training_waves(["ad", "dicp-dpt", "dpt"], {"dicp-dpt": "dpt"})
    assert waves == [["ad", "dpt"], ["dicp-dpt"]]
    assert training_waves(["dicp-dpt"], {"dicp-dpt": "dpt"}) == [["dicp-dpt"]]  # its source is not trained here: the shipped one


def test_a_warm_started_agent_trains_from_the_run_of_its_source(tmp_path, monkeypatch):
    """DPT trains in the first wave and DICP-DPT starts from its checkpoint (the run records it); a partial run
    of DICP-DPT alone starts from the folder's finished DPT, an earlier partial run's, not from the shipped one."""
    from icrl_bench.bench import reproduction

    monkeypatch.setattr(reproduction, "warm_sources", lambda names, env, preset: {"dicp-dpt": "dpt"} if "dicp-dpt" in names else {})

    def init_from(out: Path) -> tuple[Path, Path]:
        state = json.loads((out / "state.json").read_text())["runs"]
        run = json.loads((out / state["dicp-dpt"] / "run.json").read_text())
        return Path(run["config"]["train"]["init_from"]).resolve(), (out / state["dpt"]).resolve()

    root = tmp_path / "root"
    report = reproduce("darkroom", "dicp-dpt,dpt", "tiny", out=tmp_path / "both", root=root, log=lambda _: None, jobs=2, **SMOKE)
    started, dpt = init_from(tmp_path / "both")
    assert started == dpt and "dicp-dpt: warm-started from this run's dpt (runs/" in report.read_text()
    reproduce("darkroom", "dpt", "tiny", out=tmp_path / "parts", root=root, log=lambda _: None, **SMOKE)
    reproduce("darkroom", "dicp-dpt", "tiny", out=tmp_path / "parts", root=root, log=lambda _: None, **SMOKE)
    started, dpt = init_from(tmp_path / "parts")
    assert started == dpt


def test_a_run_without_a_checkpoint_trains_again_and_a_corrupt_checkpoint_is_refused(tmp_path, monkeypatch):
    """One rule for a recorded run: a checkpoint past step 0 resumes, a corrupt one is refused (not
    silently replaced by a new run), none at all trains again."""
    out, root = tmp_path / "rep", tmp_path / "root"
    recorded = killed_in_training("darkroom", out, root, monkeypatch)
    checkpoint = out / recorded / "checkpoint"
    (checkpoint / "trainer_state.safetensors").unlink()  # the step is recorded, the optimizer state lost
    with pytest.raises(IcrlBenchError, match="no trainer state"):
        reproduce("darkroom", "ad", "tiny", out=out, root=root, log=lambda _: None, **SMOKE)
    assert json.loads((out / "state.json").read_text())["runs"]["ad"] == recorded
    shutil.rmtree(checkpoint)
    logs = []
    reproduce("darkroom", "ad", "tiny", out=out, root=root, log=logs.append, **SMOKE)
    assert any(f"ad: {out / recorded} stopped before its first checkpoint; starting again" in line for line in logs)
    again = json.loads((out / "state.json").read_text())["runs"]["ad"]
    assert again != recorded and (out / again / "checkpoint").is_dir()


def test_ranks_train_each_agent_as_torchrun_ranks_and_resume_on_them(tmp_path, monkeypatch):
    """`--ranks 2` trains one run on two gloo ranks splitting the budget's batch (how shipped two-rank
    checkpoints were made); an unfinished run is resumed on as many ranks as it started with, and refused
    on another count."""
    out, root, logs = tmp_path / "rep", tmp_path / "root", []
    report = reproduce("darkroom", "ad", "tiny", out=out, root=root, log=logs.append, ranks=2, **SMOKE)
    recorded = json.loads((out / "state.json").read_text())["runs"]["ad"]
    run = json.loads((out / recorded / "run.json").read_text())
    assert run["world_size"] == 2 and run["config"]["train"]["batch_size"] == 2  # the tiny budget's 4, split
    assert any("2 torchrun ranks x batch 2" in line for line in logs)
    assert "| ad | dicp | 4 x 4 (2 ranks) | 16 |" in report.read_text()

    (out / recorded / "run.json").write_text(json.dumps({**run, "config": {**run["config"], "train": {**run["config"]["train"], "steps": 6}}}))
    with pytest.raises(IcrlBenchError, match=r"trained on 2 rank\(s\), not 3; resume it on 2 \(`reproduce --ranks 2`"):
        reproduce("darkroom", "ad", "tiny", out=out, root=root, log=lambda _: None, ranks=3, **SMOKE)
    logs.clear()
    reproduce("darkroom", "ad", "tiny", out=out, root=root, log=logs.append, ranks=2, **SMOKE)
    assert any(f"resuming {out / recorded} at step 4 on 2 torchrun ranks" in line for line in logs)
    from icrl_bench.training.run_dir import latest_checkpoint, saved_step

    assert saved_step(latest_checkpoint(out / recorded)) == 6
    assert json.loads((out / "state.json").read_text())["runs"]["ad"] == recorded  # the same run, continued


def test_ranks_must_split_the_batch():
    from icrl_bench.training.ranks import per_rank_batch

    assert per_rank_batch(64, 2) == 32 and per_rank_batch(5, 1) == 5
    with pytest.raises(IcrlBenchError, match="a batch of 4 does not split into 3 equal ranks"):
        per_rank_batch(4, 3)
    with pytest.raises(IcrlBenchError, match="--ranks must be at least 1"):
        reproduce("darkroom", "ad", "tiny", out=Path("unused"), ranks=0, log=lambda _: None)
