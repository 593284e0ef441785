"""Timing a kernel the same way in every micro-benchmark: one warm-up call, then the mean of `repeats`."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call_ms(fn: Callable, *args, repeats: int) -> float:
    """Milliseconds per call of `fn(*args)`, after one untimed call (allocations, lazy init)."""
    fn(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return 1e3 * (time.perf_counter() - start) / repeats
