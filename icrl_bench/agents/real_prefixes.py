"""Planning windows' real parts, encoded at one real step and extended at the next.

DICP's imagined context slides (planner.py): at level d of a search, a beam's window starts d - 1
transitions later than the real context's. So the real part of level d + 1's window at real step
t starts at the same real transition as level d's at step t + 1, and ends one transition earlier.
A causal prefix does not depend on what follows it, so that cache, extended by the one new real
transition, is exactly the prefix step t + 1 needs: one token encoded instead of a window
(n_transit - 1 tokens on the grid worlds).

Keys say what a prefix holds: (env, query cell, absolute start) for DPT, whose query state comes
first and so is part of every prefix (the cell is -1 for AD, whose prefixes are context only).
Only the last real step's prefixes are kept (what may be extended next), and the current step's
(levels with the same start share them while the window is not yet full). On Darkroom 59% of the
shipped DICP-DPT's prefixes were found this way, which halved its acting time: the rest are cells
the last search did not imagine one level deeper (benchmarks/bench_real_prefixes.py). Extending a
kept prefix gives the same numbers as encoding it again up to float rounding (one token attends to
the cache instead of being computed in a batch of the window's tokens); that benchmark checks that
the actions are the same on the shipped checkpoints, and tests/test_planner.py that they equal the
full-recompute reference's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from icrl_bench.agents.transformer import KVCache

Key = tuple[int, int, int]  # (env, query cell or -1, absolute start)

# encode(rows, None) -> the cache of those rows' real parts from their start;
# encode(rows, (cache, n)) -> `cache` (of those rows) extended by the last n real transitions of the rows.
Encoder = Callable[[torch.Tensor, "tuple[KVCache, int] | None"], KVCache]


class RealPrefixes:
    """What an agent keeps between its real steps so that planning encodes each real transition once per prefix."""

    def __init__(self) -> None:
        self._end: int | None = None  # the absolute end (real transitions seen) of the current step's prefixes
        self._previous: dict[Key, tuple[KVCache, int, int]] = {}  # key -> (a level's cache, its row, absolute end)
        self._current: dict[Key, tuple[KVCache, int, int]] = {}
        self.found = 0  # prefixes extended or reused (for benchmarks and tests)
        self.encoded = 0  # prefixes encoded from their start

    def prefixes(self, keys: list[Key], end: int, encode: Encoder, device: torch.device | str = "cpu") -> KVCache:
        """The caches [len(keys)] of the prefixes `keys`, each ending at absolute real transition `end`.

        Every key must have the same start, so that the caches have one length.
        """
        index = lambda rows: torch.tensor(rows, device=device)
        if end != self._end:  # a new real step: what the last one encoded is what may be extended now
            self._previous, self._current, self._end = self._current, {}, end
        kept = [self._current.get(key) or self._previous.get(key) for key in keys]
        parts: list[KVCache] = []
        order: list[int] = []
        missing = [row for row, entry in enumerate(kept) if entry is None]
        if missing:
            parts.append(encode(index(missing), None))
            order += missing
        by_source: dict[tuple[int, int], list[int]] = defaultdict(list)  # (id of the level's cache, its end) -> rows
        for row, entry in enumerate(kept):
            if entry is not None:
                by_source[(id(entry[0]), entry[2])].append(row)
        for (_, kept_end), rows in by_source.items():
            source = kept[rows[0]][0]
            cache = source.index_select(index([kept[row][1] for row in rows]))
            if kept_end < end:
                cache = encode(index(rows), (cache, end - kept_end))
            parts.append(cache)
            order += rows
        self.encoded += len(missing)
        self.found += len(keys) - len(missing)
        cache = parts[0] if len(parts) == 1 else KVCache.cat(parts)
        if order != list(range(len(keys))):
            cache = cache.index_select(torch.argsort(index(order)))
        for row, key in enumerate(keys):
            self._current[key] = (cache, row, end)
        return cache


__all__ = ["RealPrefixes"]
