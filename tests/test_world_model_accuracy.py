"""scripts/world_model_accuracy.py: IDT's held-out accuracies by position are the trainer's own, split by block."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icrl_bench.errors import IcrlBenchError
from tests.test_train import run, tiny_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "world_model_accuracy.py"


def _script():
    spec = importlib.util.spec_from_file_location("world_model_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_by_position_splits_exactly_what_training_validated(tmp_path: Path, tiny_root: Path) -> None:
    # Validation at the last step (8): the checkpoint's val_acc_* were measured on these windows by these weights.
    result = run(tmp_path, tiny_root, "dicp-idt", config_path=tiny_config(tmp_path, "dicp-idt", eval_interval=8, ckpt_interval=8))
    measured = _script().accuracy_by_position(result.run_dir, root=tiny_root)
    assert measured["agent"] == "dicp-idt" and measured["step"] == 8 and measured["windows"] == 6  # 3 tasks x 1 stream x 2 windows
    for head in ("action", "reward", "next_state"):
        assert measured["overall"][head] == pytest.approx(result.val_metrics[f"val_acc_{head}"], abs=1e-4)
        by_block, by_step = measured["by_block"][head], measured["by_step"][head]
        assert len(by_block) == 2 and len(by_step) == 10  # n_transit 20 = 2 blocks of 10
        assert sum(by_block) / 2 == pytest.approx(measured["overall"][head], abs=1e-3)
        assert sum(by_step) / 10 == pytest.approx(measured["overall"][head], abs=1e-3)
        assert measured["last_block"][head] == pytest.approx(by_block[-1], abs=1e-4)
    plain = _script().accuracy_by_position(run(tmp_path / "idt", tiny_root, "idt").run_dir, root=tiny_root)
    assert set(plain["overall"]) == {"action"}  # no world model: its action head only


def test_other_agents_are_refused_in_one_line(tmp_path: Path, tiny_root: Path) -> None:
    dicp_ad = run(tmp_path, tiny_root, "dicp-ad").run_dir
    with pytest.raises(IcrlBenchError, match="is a dicp-ad checkpoint; this measures IDT's blocks"):
        _script().accuracy_by_position(dicp_ad, root=tiny_root)
    done = subprocess.run([sys.executable, str(SCRIPT), str(dicp_ad)], check=False, capture_output=True, text=True,
                          env={**os.environ, "ICRL_BENCH_ROOT": str(tiny_root)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "this measures IDT's blocks" in done.stderr
