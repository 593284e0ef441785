"""Results documents after the evaluation: re-summarize them, export their score matrices.

`upgrade` recomputes a results file's summary from its raw curves under the current metric
definitions (`metrics`, results schema `RESULTS_SCHEMA_VERSION`): the curves are the data, the
summary is derived, so a change of definition never needs a re-run. `export_rliable` writes the
`{agent: [runs, tasks]}` score matrices that rliable's `get_interval_estimates`,
`create_performance_profile` and `probability_of_improvement` take.

Torch-free, like the leaderboard: only numpy, the pinned protocol facts and the metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icrl_bench.bench import metrics
from icrl_bench.bench.protocols import EvalProtocol, get_protocol
from icrl_bench.bench.reporting import RESULTS_SCHEMA_VERSION, agent_label, dumps_results, unique_labels
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import atomic_path, write_atomic

EXPORT_FORMATS = ("rliable",)
EXPORT_SUFFIXES = (".npz", ".json")


@dataclass(frozen=True)
class Curves:
    """A results document's raw data, checked against its protocol."""

    protocol: EvalProtocol
    returns: np.ndarray  # [seed, task, episode]
    success: np.ndarray | None  # the same shape, 0/1; None where the env has no success


def read_curves(data: dict, where: str) -> Curves:
    """The curves of a results document (any schema version), or a one-line error naming what is wrong."""
    try:
        protocol = get_protocol(data["protocol"]["name"])
        returns = np.asarray(data["curves"]["return"], dtype=np.float64)
        raw_success = data["curves"].get("success")
        success = None if raw_success is None else np.asarray(raw_success, dtype=np.float64)
        n_tasks, n_seeds = len(data["test_tasks"]["indices"]), len(data["seeds"])
        agent_label(data)  # an agent with a name
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise IcrlBenchError(f"{where} is not a results document of `icrl-bench evaluate` ({type(err).__name__}: {err}).") from None
    if returns.ndim != 3 or returns.shape[:2] != (n_seeds, n_tasks) or returns.shape[2] == 0:
        raise IcrlBenchError(f"{where}: curves.return must have shape [seed, task, episode] = ({n_seeds}, {n_tasks}, episodes), got {returns.shape}.")
    if success is not None and success.shape != returns.shape:
        raise IcrlBenchError(f"{where}: curves.success has shape {success.shape}, curves.return {returns.shape}; they must match.")
    if protocol.has_success and success is None:
        raise IcrlBenchError(f"{where}: {protocol.name} records success per episode, but curves.success is missing.")
    return Curves(protocol, returns, success)


def summarize(data: dict, where: str = "results") -> dict:
    """The summary of a results document, recomputed from its curves under its protocol."""
    curves = read_curves(data, where)
    return curves.protocol.summarize(curves.returns, curves.success)


def upgrade(path: str | os.PathLike) -> bool:
    """Rewrite a results file with its summary recomputed under the current schema; True if it changed.

    Only `schema_version` and `summary` change; the curves, provenance and everything else stay
    as the evaluation wrote them. Written atomically.
    """
    from icrl_bench.bench.leaderboard import (
        load_entry,  # size and JSON checks; the leaderboard imports nothing from here
    )

    path = Path(path)
    data = load_entry(path)
    version = data.get("schema_version")
    if version not in (1, RESULTS_SCHEMA_VERSION):
        raise IcrlBenchError(f"{path} has results schema {version!r}; this version of icrl-bench reads 1 and {RESULTS_SCHEMA_VERSION}.")
    summary = summarize(data, str(path))
    if version == RESULTS_SCHEMA_VERSION and not metrics.compare_summaries(data.get("summary") or {}, summary):
        return False
    upgraded = {**data, "schema_version": RESULTS_SCHEMA_VERSION, "summary": summary}
    write_atomic(path, dumps_results(upgraded).encode())
    return True


# --- export -----------------------------------------------------------------------------------


def score_matrix(data: dict, metric: str | None = None, where: str = "results") -> np.ndarray:
    """One results document's scores [runs (seeds), tasks] of `metric` (a summary key).

    Default: the protocol's headline (the normalized score in percent, 100 = oracle, on the grid
    worlds; the best-so-far success, 0/1 per task, on Meta-World).
    """
    curves = read_curves(data, where)
    protocol = curves.protocol
    metric = metric or protocol.headline
    if protocol.headline == "normalized_score":
        random_returns, oracle_returns = protocol.task_references(curves.returns.shape[1])
        matrices = metrics.score_matrices(curves.returns, random_returns, oracle_returns, curves.success, protocol.final_window)
    else:
        matrices = metrics.score_matrices(curves.returns, success=curves.success, final_window=protocol.final_window,
                                          steps_per_episode=protocol.horizon)
    if metric not in matrices:
        raise IcrlBenchError(f"{where}: no metric {metric!r} under {protocol.name}; it has {', '.join(matrices)}.")
    return matrices[metric]


@dataclass(frozen=True)
class Export:
    path: Path
    metric: str
    protocol: str
    shapes: dict[str, tuple[int, int]]  # agent -> (runs, tasks)


def export_rliable(documents: Sequence[tuple[str, dict]], out: str | os.PathLike, metric: str | None = None) -> Export:
    """Write `{agent: scores[runs, tasks]}` for rliable, as .npz (`dict(np.load(out))`) or .json.

    Every document must come from the same protocol and the same test tasks in the same order,
    so that column j is one task for every agent (rliable's stratified bootstrap needs that).
    """
    out = Path(out)
    if out.suffix not in EXPORT_SUFFIXES:
        raise IcrlBenchError(f"--out {out} must end in .npz or .json (the format of the score matrices).")
    if not documents:
        raise IcrlBenchError("nothing to export: give results files, or --env with a leaderboard that has entries for it.")
    protocols = {read_curves(data, where).protocol.name for where, data in documents}  # each one well formed
    if len(protocols) > 1:
        raise IcrlBenchError(f"the results come from several protocols ({', '.join(sorted(protocols))}); export one protocol at a time.")
    first_where, first = documents[0]
    tasks = first["test_tasks"]["indices"]
    for where, data in documents[1:]:
        if data["test_tasks"]["indices"] != tasks:
            raise IcrlBenchError(f"{where} ran other test tasks than {first_where} (a --tasks smoke run?); rliable needs the same tasks for every agent.")
    protocol = protocols.pop()
    metric = metric or get_protocol(protocol).headline
    labels = unique_labels([data for _, data in documents])
    scores = {label: score_matrix(data, metric, where) for label, (where, data) in zip(labels, documents)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if out.suffix == ".npz":
            with open(tmp, "wb") as handle:
                np.savez(handle, **scores)
        else:
            tmp.write_text(json.dumps({label: matrix.tolist() for label, matrix in scores.items()}) + "\n")
    return Export(out, metric, protocol, {label: m.shape for label, m in scores.items()})
