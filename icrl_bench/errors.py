"""The one exception type the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class IcrlBenchError(Exception):
    """A user mistake or a broken input, with a message that names the problem and the fix."""


def unknown(kind: str, name: str, known: Iterable[str]) -> IcrlBenchError:
    """An error for a name that is not one of `known`, suggesting the closest ones."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if known else "none"
    return IcrlBenchError(f"unknown {kind} {name!r}.{hint} Known: {listing}.")


def missing_extra(err: ImportError, extra: str, purpose: str) -> IcrlBenchError:
    """An error for an optional extra that is not installed, with the pip command that fixes it."""
    return IcrlBenchError(f"{purpose} needs the {extra} extra ({err.name} is not installed): pip install 'icrl-bench[{extra}]'")
