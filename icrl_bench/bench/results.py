"""Results documents: their schema, reading and writing them, re-summarizing, exporting scores.

`Results` is the one schema of what `icrl-bench evaluate` writes: the harness builds it
(`harness.evaluate_agent`) and the leaderboard validates entries against it (`leaderboard.validate`,
which then checks the numbers against the protocol). Like the dataset manifest it gives back
exactly the JSON it was built from or read (`to_dict`), so validating an entry changes no byte of
it. Fields added after schema 2 began (a shard's cost, the planner revision) are optional.

`upgrade` recomputes a results file's summary from its raw curves under the current metric
definitions (`metrics`, results schema `RESULTS_SCHEMA_VERSION`): the curves are the data, the
summary is derived, so a change of definition never needs a re-run. `export_rliable` writes the
`{agent: [runs, tasks]}` score matrices that rliable's `get_interval_estimates`,
`create_performance_profile` and `probability_of_improvement` take.

Torch-free, like the leaderboard: only numpy, pydantic, the pinned protocol facts and the metrics.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from icrl_bench.bench import metrics
from icrl_bench.bench.protocols import EvalProtocol, get_protocol
from icrl_bench.bench.reporting import agent_label, unique_labels
from icrl_bench.documents import Document, OpenDocument, first_problem
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import atomic_path, write_atomic
from icrl_bench.paths import repo_relative
from icrl_bench.provenance import Provenance

# Results documents: 2 since the summary follows rliable (IQM over all seed x task scores, stratified
# bootstrap CIs, per-task normalization); 1 took the IQM of per-seed means (`icrl-bench results upgrade`).
RESULTS_SCHEMA_VERSION = 2
MAX_RESULTS_BYTES = 4 << 20  # the largest protocol (Meta-World ML1, 50 tasks x 3 seeds x 2,000 episodes) writes ~1 MB
Number = int | float  # as the JSON has it: grid returns and cells are whole numbers, written without a fraction


# --- schema ------------------------------------------------------------------------------------


class ResultsEstimate(Document):
    mean: float
    ci_low: float | None  # None: fewer than 3 seeds (`metrics.MIN_SEEDS_FOR_CI`)
    ci_high: float | None
    iqm: float
    iqm_ci_low: float | None
    iqm_ci_high: float | None
    per_seed: list[float]


class ResultsSummary(Document):
    """Which of the optional numbers a document must carry is its protocol's business: the
    recomputed summary is compared key by key (`metrics.compare_summaries`)."""

    final_return: ResultsEstimate
    normalized_score: ResultsEstimate | None = None  # the grid worlds (exact references)
    auc: ResultsEstimate | None = None
    episodes_to_90: ResultsEstimate | None = None
    return_curve: list[float]
    success_rate: ResultsEstimate | None = None  # envs with success
    best_success_rate: ResultsEstimate | None = None  # Meta-World
    best_success_curve: list[float] | None = None
    best_success_at_steps: dict[str, ResultsEstimate] | None = None


class ResultsProtocol(OpenDocument):
    """`EvalProtocol.describe()`: the protocol's pinned facts as the run saw them."""

    name: str
    env: str
    version: int
    n_episodes: int
    seeds: list[int]
    sample_actions: bool
    final_window: int
    n_test_tasks: int
    test_tasks_sha256: str
    horizon: int | None = None  # absent from documents made before 2026-11-22 (schema 1, upgraded)
    headline: str | None = None
    references: dict[str, Number]
    measured: str


class ResultsAgent(Document):
    name: str = Field(min_length=1)
    label: str | None = None
    checkpoint: str | None = None
    checkpoint_hash: str | None = None
    dataset_id: str | None = None
    dataset_hash: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    planner_revision: int | None = None  # absent from results made before revisions were recorded


class ResultsTasks(Document):
    indices: list[int]
    params: list[list[Number]]  # grid cells (whole numbers) or Meta-World goals


class ResultsCurves(Document):
    returns: list[list[list[Number]]] = Field(alias="return")  # [seed, task, episode]
    success: list[list[list[int]]] | None = None  # 0/1, the same shape; None where the env has no success


class ResultsCost(Document):
    """What the run cost: batched steps, seconds per step and per action, and how it was sharded."""

    num_envs: int
    steps: int
    env_steps: int | None = None  # absent from documents made before 2026-11-22 (schema 1, upgraded)
    act_s_per_step: float
    act_s_per_action: float
    observe_s_per_step: float
    env_s_per_step: float
    total_s: float
    forward_passes_per_action: float | None
    torch_threads: int
    executor: str | None = None  # a sharded run (`harness_sharded`): where, with how many workers and shards
    workers: int | None = None
    shards: int | None = None
    task_groups: int | None = None
    retried_shards: int | None = None
    resumed_shards: int | None = None  # shards a stopped run had finished, loaded instead of run (since 2026-11-30)


class Results(Document):
    """A results document of `icrl-bench evaluate` (schema version 2)."""

    schema_version: Literal[RESULTS_SCHEMA_VERSION]
    protocol: ResultsProtocol
    env: str
    agent: ResultsAgent
    standard: bool
    test_tasks: ResultsTasks
    seeds: list[int]
    n_episodes: int = Field(gt=0)
    curves: ResultsCurves
    summary: ResultsSummary
    cost: ResultsCost
    command: str
    provenance: Provenance


def parse_results(data: Any, where: str) -> Results:
    """`data` as `Results`, or a one-line error naming `where` and the first problem."""
    try:
        return Results.model_validate(data)
    except ValidationError as err:
        raise IcrlBenchError(f"{where} does not match the results schema: {first_problem(err)}.") from None


def load_results(path: str | os.PathLike) -> dict:
    """Read a results (or leaderboard entry) JSON file as any schema version wrote it, or fail in one line."""
    path = Path(path)
    if not path.is_file():
        raise IcrlBenchError(f"no results file at {path}; make one with `icrl-bench evaluate --agent NAME`.")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise IcrlBenchError(f"{path} is {path.stat().st_size:,} bytes, more than an evaluation writes ({MAX_RESULTS_BYTES:,}); "
                             "submit the file `icrl-bench evaluate` wrote.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IcrlBenchError(f"{path} is not valid JSON ({err}); submit the file `icrl-bench evaluate` wrote.") from None
    except RecursionError:
        raise IcrlBenchError(f"{path} nests too deeply to be a results document; submit the file `icrl-bench evaluate` wrote.") from None
    if not isinstance(data, dict):
        raise IcrlBenchError(f"{path} is not a results document (a JSON object), got {type(data).__name__}.")
    return data


def dumps_results(data: dict) -> str:
    """JSON for results and entries: indented, but each innermost list of numbers on one line.

    Dark Key-to-Door curves hold 82,000 numbers; one per line would make a 1.5 MB entry.
    """
    text = json.dumps(data, indent=1)
    flat = lambda m: "[" + ",".join(v.strip() for v in m.group(1).split(",")) + "]"
    return re.sub(r"\[([^\[\]{}\"]+)\]", flat, text) + "\n"


# --- reading curves, upgrading -----------------------------------------------------------------


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

    Only `schema_version`, `summary` and the checkpoint's spelling change: an absolute path inside
    the shipped tree becomes repo-relative, as the harness writes it now, in the agent record and
    the command (the checkpoint hash still names the weights). The curves, provenance and
    everything else stay as the evaluation wrote them. Written atomically.
    """
    path = Path(path)
    data = load_results(path)
    version = data.get("schema_version")
    if version not in (1, RESULTS_SCHEMA_VERSION):
        raise IcrlBenchError(f"{path} has results schema {version!r}; this version of icrl-bench reads 1 and {RESULTS_SCHEMA_VERSION}.")
    summary = summarize(data, str(path))
    portable = _portable_checkpoint(data)
    if version == RESULTS_SCHEMA_VERSION and portable is data and not metrics.compare_summaries(data.get("summary") or {}, summary):
        return False
    upgraded = parse_results({**portable, "schema_version": RESULTS_SCHEMA_VERSION, "summary": summary}, str(path))
    write_atomic(path, dumps_results(upgraded.to_dict()).encode())
    return True


def relocate(path: str | os.PathLike, checkpoint: str | os.PathLike) -> str | None:
    """Point a results file at another copy of the checkpoint it evaluated (say, the folder it was
    shipped to from its run directory); returns the path recorded before (None: the default).

    The copy must hold the very weights the results name (`agent.checkpoint_hash`, checked against
    the file). Only the checkpoint's spelling changes, in the agent record and the command; the
    curves, provenance and everything else stay as the evaluation wrote them. Results of an agent's
    default checkpoint (no path recorded) get the path, so they keep naming those weights after
    another checkpoint becomes the default. Written atomically.
    """
    from icrl_bench.agents.checkpoint import load_checkpoint  # torch: only for this command

    path = Path(path)
    data = load_results(path)
    agent = data["agent"]
    recorded, before = agent.get("checkpoint_hash"), agent.get("checkpoint")
    if not recorded:
        raise IcrlBenchError(f"{path} names no checkpoint (agent {agent['name']!r}): there is nothing to relocate.")
    found = load_checkpoint(checkpoint, agent["name"]).meta["weights_sha256"]  # verified against the weights file
    if found != recorded:
        raise IcrlBenchError(f"{checkpoint} holds weights {found[:12]}, but {path} was made by {recorded[:12]}: "
                             "point it at a copy of the checkpoint it evaluated.")
    moved = _with_checkpoint(data, repo_relative(Path(checkpoint).resolve()))
    write_atomic(path, dumps_results(parse_results(moved, str(path)).to_dict()).encode())
    return before


def _portable_checkpoint(data: dict) -> dict:
    """`data` with its checkpoint path repo-relative where it lies in the shipped tree (`data` itself if it already is)."""
    checkpoint = (data.get("agent") or {}).get("checkpoint")
    portable = repo_relative(checkpoint) if checkpoint else checkpoint
    return data if portable == checkpoint else _with_checkpoint(data, portable)


def _with_checkpoint(data: dict, checkpoint: str) -> dict:
    """`data` naming `checkpoint` instead of its own (or of the agent's default), in the agent record and the command that made it."""
    agent, command = data["agent"], data.get("command")
    before = agent["checkpoint"]
    if isinstance(command, str):
        if before:
            command = command.replace(before, checkpoint)
        else:  # the default checkpoint: say which one, after `--agent NAME`
            flag = f"--agent {agent['name']}"
            command = command.replace(flag, f"{flag} --checkpoint {checkpoint}", 1) if flag in command else f"{command} --checkpoint {checkpoint}"
    return {**data, "agent": {**agent, "checkpoint": checkpoint}, "command": command}


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
