"""Training under torchrun on a CPU (gloo): two ranks, one run directory, one fitted budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import REPO_ROOT
from icrl_bench.training import train
from icrl_bench.training.run_dir import latest_checkpoint, saved_step
from tests.test_train import tiny_config

# Each rank's clock advances (1 + rank) "seconds" per reading, so the two ranks time their
# --time-budget probes differently and, on their own, would fit different totals: the rank
# that stopped first would leave the other waiting at its next allreduce for ever.
SKEWED_CLOCKS = textwrap.dedent("""
    import os
    import icrl_bench.training.budget as budget
    budget.BUDGET_WARMUP_STEPS, budget.BUDGET_PROBE_STEPS = 2, 4
    clock = iter(range(0, 10**9, 1 + int(os.environ["RANK"])))
    budget.time.perf_counter = lambda: float(next(clock))
""")


def train_on_two_ranks(tmp_path: Path, tiny_root: Path, patch: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`icrl-bench train` of a tiny AD under torchrun (2 gloo ranks), each rank running `patch` first; (process, --out)."""
    config = tiny_config(tmp_path, "ad", steps=100_000, log_interval=2, eval_interval=1_000, ckpt_interval=1_000)
    driver = tmp_path / "driver.py"
    driver.write_text(patch + 'import sys\nfrom icrl_bench.cli import main\nsys.argv = ["icrl-bench", *sys.argv[1:]]\nmain()\n')
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver),
               "train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", str(config), "--device", "cpu",
               "--threads", "1", "--root", str(tiny_root), "--out", str(out), "-q", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300), out


def test_two_ranks_share_one_run_directory_and_rank_0s_fitted_budget(tmp_path: Path, tiny_root: Path) -> None:
    done, out = train_on_two_ranks(tmp_path, tiny_root, SKEWED_CLOCKS, "--time-budget", "40")
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = out.iterdir()  # rank 1 claimed no directory of its own
    record = json.loads((run_dir / "run.json").read_text())
    fitted = record["time_budget"]["fitted_steps"]
    assert record["world_size"] == 2 and record["config"]["train"]["steps"] == fitted
    assert 6 <= fitted < 100 and saved_step(latest_checkpoint(run_dir)) == fitted
    with pytest.raises(IcrlBenchError, match=r"trained on 2 rank\(s\), not 1; resume it on 2"):  # one process would draw other windows
        train(resume=run_dir, root=tiny_root, show_progress=False)


# Rank 1 alone gets SIGTERM after its 5th step (as when a scheduler signals one process): both
# ranks must stop after the same step, with rank 0's checkpoint there, instead of rank 1 leaving
# rank 0 at an allreduce it never answers.
SIGNAL_RANK_1 = textwrap.dedent("""
    import os, signal
    import icrl_bench.training.loop as loop
    train_step, calls = loop._train_step, [0]
    def counted(*args, **kwargs):
        out = train_step(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 5 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)
        return out
    loop._train_step = counted
""")


# Rank 1 alone is signalled while it fetches its 6th batch, which is lost with its loader's workers
# (what a group signal does to a rank with workers), and rank 0's fetch succeeds: rank 1 cannot take
# step 6, so rank 0 must not start it either (its gradient allreduce would never be answered).
LOST_BATCH_ON_RANK_1 = textwrap.dedent("""
    import os, signal
    import icrl_bench.training.loop as loop
    make_loader = loop.make_loader
    def losing(*args, **kwargs):
        batches = iter(make_loader(*args, **kwargs))
        for fetched, batch in enumerate(batches, start=1):
            if fetched == 6 and os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGTERM)
                raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
            yield batch
    loop.make_loader = losing
""")


@pytest.mark.parametrize("patch", [SIGNAL_RANK_1, LOST_BATCH_ON_RANK_1], ids=["signal-after-a-step", "batch-lost-with-the-signal"])
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path: Path, tiny_root: Path, patch: str) -> None:
    done, out = train_on_two_ranks(tmp_path, tiny_root, patch)
    assert done.returncode != 0  # stopped, not finished
    (run_dir,) = out.iterdir()
    assert saved_step(latest_checkpoint(run_dir)) == 5, done.stderr[-2000:]
    assert done.stderr.count("stopped at step 5") == 2  # both ranks, the same step
