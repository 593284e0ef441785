"""Turning a `--device` option into a torch device string, with one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from icrl_bench.errors import IcrlBenchError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device) -> str:
    """`auto` picks CUDA when present; `cuda` without a GPU is a user error, not a crash.

    The one place every command (build, train, evaluate) turns --device into a torch device.
    """
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise IcrlBenchError(
                f"--device {name} was asked for but CUDA is not available: torch sees no CUDA GPU here; use --device cpu (or auto)."
            )
        index = name.split(":")[1] if ":" in name else "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise IcrlBenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
        return name
    raise IcrlBenchError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N.")


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (None: leave them), then restore the caller's.

    Small networks and single-env PPO run fastest on one thread, above all on a CPU shared with
    other jobs (two threads there can be 10-40x slower); the builder and evaluations use it.
    """
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
