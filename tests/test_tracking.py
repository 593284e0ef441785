"""`train --log tensorboard|wandb`: the trackers get exactly the records of metrics.jsonl.

The extras are optional: each test skips cleanly where its package is absent (tensorboard is in
the dev extra, so CI runs its test; wandb is not).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icrl_bench.cli import app
from icrl_bench.errors import IcrlBenchError
from icrl_bench.tracking import TENSORBOARD_DIR, parse_log
from tests.test_train import run, tiny_config


def scalars_of(metrics_file: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as {key: [(step, value), ...]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                out.setdefault(key, []).append((record["step"], float(value)))
    return out


def test_tensorboard_events_hold_the_metrics_of_metrics_jsonl(tmp_path: Path, tiny_root: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(tmp_path, tiny_root, "dicp-ad", log_to=["tensorboard"])
    events = result.run_dir / TENSORBOARD_DIR
    assert list(events.glob("events.out.tfevents.*")), "no event file written"
    accumulator = EventAccumulator(str(events)).Reload()
    expected = scalars_of(result.run_dir / "metrics.jsonl")
    assert set(accumulator.Tags()["scalars"]) == set(expected) and {"loss", "lr", "val_acc_action"} <= set(expected)
    for key, points in expected.items():
        logged = [(e.step, e.value) for e in accumulator.Scalars(key)]
        assert [s for s, _ in logged] == [s for s, _ in points], key
        assert all(v == pytest.approx(w, rel=1e-6, abs=1e-7) for (_, v), (_, w) in zip(logged, points)), key  # float32 in the event file
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert meta["log"] == ["tensorboard"]


def test_a_resumed_run_keeps_its_tracker_and_drops_events_after_the_checkpoint(tmp_path: Path, tiny_root: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = run(tmp_path, tiny_root, "ad", stop_after=4, log_to=["tensorboard"])
    resumed = run(tmp_path, tiny_root, "ad", resume=first.run_dir)  # no --log: the run's own
    assert resumed.step == 8
    losses = [e.step for e in EventAccumulator(str(resumed.run_dir / TENSORBOARD_DIR)).Reload().Scalars("loss")]
    assert losses == [s for s, _ in scalars_of(resumed.run_dir / "metrics.jsonl")["loss"]] == [2, 4, 6, 8]


def test_wandb_runs_offline_and_logs_the_same_records(tmp_path: Path, tiny_root: Path) -> None:
    """In a subprocess: W&B starts a service process, and must need no network or account."""
    pytest.importorskip("wandb")
    config = tiny_config(tmp_path, "ad")
    code = (
        "import json, sys\n"
        "from icrl_bench.training import train\n"
        f"result = train('ad', 'darkroom-tiny-v3', device='cpu', out={str(tmp_path / 'runs')!r}, root={str(tiny_root)!r}, "
        f"config_path={str(config)!r}, show_progress=False, log_to=['wandb'])\n"
        "print(result.run_dir)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_SILENT="true", WANDB_API_KEY="", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # no way out
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    history = wandb_history(next(offline[0].glob("*.wandb")))
    expected: dict[int, dict[str, float]] = {}  # W&B merges the records of one step (train, then validation) into one row
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        expected.setdefault(record.pop("step"), {}).update(record)
    assert [row.pop("_step") for row in history] == list(expected)
    for row, (step, values) in zip(history, expected.items()):
        assert {k: v for k, v in row.items() if not k.startswith("_")} == pytest.approx(values), step


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file, read with W&B's own record reader."""
    try:
        from wandb.proto import wandb_internal_pb2
        from wandb.sdk.internal import datastore
    except ImportError as err:  # an internal module of another W&B release
        pytest.skip(f"this wandb cannot read its run files here ({err})")
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    rows = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def test_bad_or_missing_trackers_fail_before_any_work(tmp_path: Path, tiny_root: Path, monkeypatch) -> None:
    with pytest.raises(IcrlBenchError, match="unknown --log tracker 'tensorbord'. Did you mean 'tensorboard'"):
        parse_log(["tensorbord"])
    if _has("tensorboard"):
        assert parse_log(["tensorboard,tensorboard", " tensorboard"]) == ["tensorboard"]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(IcrlBenchError, match=r"--log wandb needs the wandb extra .*pip install 'icrl-bench\[wandb\]'"):
        run(tmp_path, tiny_root, "ad", log_to=["wandb"])
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
    result = CliRunner().invoke(app, ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--root", str(tiny_root),
                                      "--out", str(tmp_path / "runs"), "--log", "mlflow"])
    assert result.exit_code == 1 and "unknown --log tracker 'mlflow'" in result.output and "Traceback" not in result.output


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_set_refuses_replacing_a_group_and_unknown_keys(tmp_path: Path, tiny_root: Path) -> None:
    with pytest.raises(IcrlBenchError, match=r"--set model.transformer=3 replaces a group of settings; .*e.g. model\.transformer\.\w+=VALUE"):
        run(tmp_path, tiny_root, "ad", overrides=["model.transformer=3"])
    with pytest.raises(IcrlBenchError, match="unknown transformer config key.*n_layers"):
        run(tmp_path, tiny_root, "ad", overrides=["model.transformer.n_layers=2"])
    with pytest.raises(IcrlBenchError, match="unknown model config key.*nope"):
        run(tmp_path, tiny_root, "ad", overrides=["model.nope=1"])
    assert not (tmp_path / "runs").exists()
