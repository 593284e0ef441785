"""One training as several torchrun ranks, launched from Python (`icrl-bench reproduce --ranks N`).

On a 2-core CPU one training goes furthest as two ranks of one thread each (docs/training.md:
1.55x the steps of one process), and some shipped checkpoints were trained that way. `reproduce`
must rebuild them as they were made, and keep its promise to resume a killed run: so the ranks run
`icrl-bench train` under `torch.distributed.run` in child processes, the new run directory is
found as soon as rank 0 writes it (for state.json), and a resumed run must have as many ranks as
it started with (each rank draws its own window stream: another count would not resume exactly).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from icrl_bench.errors import IcrlBenchError
from icrl_bench.run_records import world_size
from icrl_bench.training.run_dir import RUN_FILE


def per_rank_batch(batch_size: int, ranks: int) -> int:
    """The batch each rank draws so that `ranks` of them make `batch_size` (`batch_size` is per rank)."""
    if ranks < 1:
        raise IcrlBenchError(f"--ranks must be at least 1, got {ranks}.")
    if batch_size % ranks:
        raise IcrlBenchError(f"a batch of {batch_size} does not split into {ranks} equal ranks; choose --ranks dividing it.")
    return batch_size // ranks


def check_resumable_on(run_dir: Path, ranks: int, run: dict | None = None) -> None:
    """Refuse to resume `run_dir` (its run.json: `run`) on another number of ranks than it was trained with."""
    trained_on = world_size(run if run is not None else json.loads((run_dir / RUN_FILE).read_text()))
    if trained_on != ranks:
        raise IcrlBenchError(f"{run_dir} was trained on {trained_on} rank(s), not {ranks}; resume it on {trained_on} (`reproduce --ranks "
                             f"{trained_on}`, or `torchrun --nproc-per-node {trained_on}`): another count would draw other windows.")


def torchrun_command(ranks: int, train_args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m icrl_bench train ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", "icrl_bench", "train", *train_args]


def train_on_ranks(ranks: int, train_args: list[str], runs_dir: Path, agent: str,
                   on_run_dir: Callable[[Path], None] | None = None, poll_s: float = 0.5) -> Path:
    """Train under torchrun with `ranks` single-thread ranks; returns the run directory.

    A new run (no `--resume` in `train_args`) is the directory that appears in `runs_dir` for
    `agent`; `on_run_dir` is called with it as soon as rank 0 has written its run.json. If this
    process is interrupted, the ranks get SIGTERM: they checkpoint at a step boundary and stop.
    """
    before = {path.name for path in runs_dir.iterdir()} if runs_dir.is_dir() else set()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(torchrun_command(ranks, train_args), env=env)
    resuming = "--resume" in train_args
    found: Path | None = Path(train_args[train_args.index("--resume") + 1]) if resuming else None

    def look() -> None:
        nonlocal found
        if found is None and (found := _new_run_dir(runs_dir, before, agent)) is not None and on_run_dir is not None:
            on_run_dir(found)

    try:
        while process.poll() is None:
            look()
            time.sleep(poll_s)
    except BaseException:
        process.send_signal(signal.SIGTERM)  # torchrun passes it to the ranks, which checkpoint and stop
        process.wait()
        raise
    look()
    if process.returncode != 0:
        raise IcrlBenchError(f"training {agent} on {ranks} torchrun ranks failed (exit {process.returncode}); its output is above.")
    if found is None:
        raise IcrlBenchError(f"training {agent} on {ranks} torchrun ranks left no run directory in {runs_dir}.")
    return found


def _new_run_dir(runs_dir: Path, before: set[str], agent: str) -> Path | None:
    """The run directory for `agent` that appeared in `runs_dir` since `before`, once its run.json is written."""
    if not runs_dir.is_dir():
        return None
    for path in sorted(runs_dir.iterdir()):
        if path.name in before or not (path / RUN_FILE).is_file():
            continue
        try:
            if json.loads((path / RUN_FILE).read_text()).get("agent") == agent:
                return path
        except (OSError, ValueError):
            continue  # being written (write_json_atomic makes this rare)
    return None
