"""Turning a `--device` option into a torch device string, with one-line errors."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


# glibc's mallopt parameters and the environment variables that set them in a new process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 32 << 20), "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 1 << 30)}


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks (up to 32 MiB each, 1 GiB in all) for reuse, in this process and the ones it starts.

    Why: by default glibc hands large freed blocks back to the kernel, so a planner that allocates
    and frees tens of MB of caches per level faults every page in again: on the 2-core CPU that was
    10% of `reproduce --from-shipped`'s CPU time, in the kernel (benchmarks/bench_allocator.py).
    Set through mallopt here and through MALLOC_*_ variables for child processes (spawned
    workers, torchrun ranks), unless the user set those. False where the C library is not glibc.
    """
    if os.name != "posix":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    for variable, (parameter, value) in HEAP_SETTINGS.items():
        if variable not in os.environ:
            mallopt(parameter, value)
            os.environ[variable] = str(value)
    return True
