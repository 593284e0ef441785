"""The leaderboard: validated entries under `leaderboard/entries/`, rankings, a rendered page.

The directory is `--dir`, else $ICRL_BENCH_LEADERBOARD, else the repository's `leaderboard/` in a
checkout, or, for an installed package, a user data directory that starts as a copy of the
shipped entries (`board_dir`); the package's own copy is never written.

An entry is a results JSON of `icrl-bench evaluate`, accepted only if it is well formed, was
made under a current protocol version with its standard seeds, episodes and test tasks, names
a known dataset (if any), carries summary numbers that recompute exactly from its raw curves,
and is not already there. Submission writes atomically (temporary file, then a hard link that
fails if the name exists), so a rejected or interrupted entry never lands.

This module never imports torch: validating, ranking and rendering need only the pinned protocol
facts, numpy and matplotlib. Only `verify`, which re-runs an evaluation, loads the harness.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from icrl_bench import paths
from icrl_bench.agents.base import privileged_settings
from icrl_bench.bench import metrics
from icrl_bench.bench.protocols import PROTOCOLS, EvalProtocol, get_protocol, names_validation_goals
from icrl_bench.bench.reporting import RANK_KEYS, agent_label, plot_learning_curves
from icrl_bench.bench.results import Results, dumps_results, load_results, parse_results
from icrl_bench.data.manifest import read_store_manifest
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import atomic_path, write_atomic
from icrl_bench.paths import DATASET_ID_PATTERN, catalog_path, data_root, from_repo_relative, shipped

SHIPPED_DIR = shipped("leaderboard")  # the reference entries shipped with the code (the checkout's own leaderboard/)


# --- validation --------------------------------------------------------------------------------


TRAINED_AGENTS = ("ad", "dpt", "idt", "dicp-ad", "dicp-dpt", "dicp-idt")  # their entries must name checkpoint and dataset


def validate(data: dict, where: str = "entry") -> tuple[Results, EvalProtocol]:
    """Every check of an entry except duplicates; returns the parsed entry and its protocol."""
    if data.get("schema_version") == 1:
        raise IcrlBenchError(
            f"{where} was written under results schema 1, whose summary took the IQM of per-seed means and normalized by "
            f"the mean references; recompute its summary from its curves: `icrl-bench results upgrade {where}`."
        )
    entry = parse_results(data, where)
    if names_validation_goals(entry.protocol.name):
        raise IcrlBenchError(f"{where} was evaluated on validation goals ({entry.protocol.name}), for choosing between runs; the leaderboard "
                             f"takes test goals: re-run `icrl-bench evaluate` without --goals validation.")
    protocol = get_protocol(entry.protocol.name)  # unknown / old / retired versions fail here
    if entry.env != protocol.env or entry.protocol.env != protocol.env:
        raise IcrlBenchError(f"{where}: env {entry.env!r} does not match its protocol {protocol.name}.")
    n_tasks = len(entry.test_tasks.indices)
    if entry.seeds != list(protocol.seeds) or entry.n_episodes != protocol.n_episodes or n_tasks != protocol.n_test_tasks:
        raise IcrlBenchError(
            f"{where} is a non-standard run ({len(entry.seeds)} seeds {entry.seeds}, {entry.n_episodes} episodes, {n_tasks} test tasks); "
            f"{protocol.name} entries use seeds {','.join(map(str, protocol.seeds))}, {protocol.n_episodes} episodes and all "
            f"{protocol.n_test_tasks} test tasks: re-run without --seeds/--episodes/--tasks."
        )
    privileged = privileged_settings(entry.agent.settings)
    if privileged:
        raise IcrlBenchError(f"{where} ran with {', '.join(privileged)}, which reads the test tasks' parameters (a paper's protocol, for "
                             f"comparing with it); the leaderboard's agents infer the task from rewards: re-run without that setting.")
    if _tasks_sha256(protocol, entry.test_tasks.params, where) != protocol.test_tasks_sha256:
        raise IcrlBenchError(f"{where}: its test tasks are not those of {protocol.name}.")
    claimed_refs, refs = entry.protocol.references, protocol.references()
    if claimed_refs.keys() != refs.keys() or not all(np.isclose(claimed_refs[k], refs[k]) for k in refs):
        raise IcrlBenchError(f"{where}: its reference returns {claimed_refs} are not those of {protocol.name} ({refs}).")
    shape = (len(protocol.seeds), protocol.n_test_tasks, protocol.n_episodes)
    returns = _curve(entry.curves.returns, shape)
    if returns is None:
        raise IcrlBenchError(f"{where}: return curves must have shape [seed, task, episode] = {shape}.")
    if not np.isfinite(returns).all() or (returns < 0).any():
        raise IcrlBenchError(f"{where}: return curves hold negative or non-finite values.")
    if protocol.oracle_return is not None and (metrics.return_curve(returns) > protocol.oracle_return + 1e-9).any():
        raise IcrlBenchError(f"{where}: its mean return exceeds the optimal policy's ({protocol.oracle_return}); the curves are wrong.")
    if protocol.max_episode_return is not None and (returns > protocol.max_episode_return + 1e-9).any():
        raise IcrlBenchError(
            f"{where}: an episode return exceeds the env's maximum ({protocol.max_episode_return:g}); the curves are wrong."
        )
    success = None
    if protocol.has_success:
        if entry.curves.success is None:
            raise IcrlBenchError(f"{where}: {protocol.name} records success per episode, but curves.success is missing.")
        success = _curve(entry.curves.success, shape)
        if success is None or not np.isin(success, (0, 1)).all():
            raise IcrlBenchError(f"{where}: curves.success must be 0/1 of shape {shape}.")
    agent = entry.agent
    if agent.name in TRAINED_AGENTS or agent.checkpoint_hash is not None:
        missing = [k for k in ("checkpoint_hash", "dataset_id", "dataset_hash") if not re.fullmatch(HASH_OR_ID[k], getattr(agent, k) or "")]
        if missing:
            raise IcrlBenchError(
                f"{where}: a trained agent's entry must carry its provenance, and {', '.join(f'agent.{k}' for k in missing)} "
                "is missing or malformed; submit the file `icrl-bench evaluate` wrote."
            )
    if agent.dataset_hash is not None:
        known = known_datasets()
        if agent.dataset_hash not in known.values():
            raise IcrlBenchError(
                f"{where}: dataset hash {agent.dataset_hash[:12]} ({agent.dataset_id}) is not a known dataset "
                f"(not built under {data_root() / 'datasets'} nor listed in the dataset catalog); build or download it first."
            )
        if known.get(agent.dataset_id) not in (None, agent.dataset_hash):
            raise IcrlBenchError(
                f"{where}: dataset hash {agent.dataset_hash[:12]} is not that of {agent.dataset_id} "
                f"({known[agent.dataset_id][:12]}); the checkpoint names another dataset than the one it was trained on."
            )
    recomputed = protocol.summarize(returns, success)
    problems = metrics.compare_summaries(data["summary"], recomputed)
    if problems:
        raise IcrlBenchError(
            f"{where}: its summary does not match its curves ({len(problems)} number(s) differ, first {problems[0]}); "
            "submit the file exactly as `icrl-bench evaluate` wrote it."
        )
    return entry, protocol


def _curve(values: list, shape: tuple[int, ...]) -> np.ndarray | None:
    """A curve as a float array of `shape`, or None if it has another shape (ragged included)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except ValueError:
        return None
    return array if array.shape == shape else None


def _tasks_sha256(protocol: EvalProtocol, params: list[list[float]], where: str) -> str:
    try:
        return protocol.tasks_sha256(params)
    except (ValueError, IcrlBenchError) as err:  # ragged rows, or fractional grid cells
        raise IcrlBenchError(f"{where}: test_tasks.params are malformed ({err}).") from None


HASH_OR_ID = {"checkpoint_hash": r"[0-9a-f]{64}", "dataset_hash": r"[0-9a-f]{64}", "dataset_id": DATASET_ID_PATTERN.pattern.strip("^$")}


def known_datasets(root: str | os.PathLike | None = None, catalog: Path | None = None) -> dict[str, str]:
    """Dataset id -> content hash, for the datasets built under the data root and those in the catalog.

    Each store's manifest is read from its `zarr.json` (`manifest.read_store_manifest`), so no Zarr
    or torch import is needed; a directory without a readable manifest names no known dataset.
    """
    known: dict[str, str] = {}
    directory = data_root(root) / "datasets"
    for meta in sorted(directory.glob("*/zarr.json")) if directory.is_dir() else []:
        manifest = read_store_manifest(meta.parent)
        if manifest is not None:
            known[manifest.dataset_id] = manifest.content_hash
    catalog = catalog_path(catalog)
    if catalog.is_file():
        entries = (yaml.safe_load(catalog.read_text()) or {}).get("datasets") or {}
        for dataset_id, entry in entries.items():
            if isinstance(entry, dict) and isinstance(entry.get("content_hash"), str):
                known.setdefault(str(dataset_id), entry["content_hash"])
    return known


# --- storage -----------------------------------------------------------------------------------


def board_dir(given: str | os.PathLike | None = None) -> Path:
    """The leaderboard directory (`paths.leaderboard_dir`). The user data directory an installed package
    defaults to is seeded with the shipped entries when it has none yet, so that `show`, `render` and the
    duplicate check of `submit` see the reference board beside the user's own entries."""
    directory = paths.leaderboard_dir(given)
    if directory == paths.default_leaderboard_dir() and directory != SHIPPED_DIR and not (directory / "entries").exists():
        _seed(directory)
    return directory


def _seed(directory: Path) -> None:
    """Copy the shipped entries into `directory`/entries as one rename, so a cut copy is never taken for a seeded board."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".seed-") as tmp:
            staged = Path(tmp) / "entries"
            if (SHIPPED_DIR / "entries").is_dir():
                shutil.copytree(SHIPPED_DIR / "entries", staged)
            else:
                staged.mkdir()
            staged.rename(directory / "entries")
    except OSError as err:
        raise IcrlBenchError(
            f"cannot set up the leaderboard directory {directory} ({err.strerror or err}); pass --dir DIR or set {paths.LEADERBOARD_ENV_VAR}."
        ) from None


def entries_dir(leaderboard_dir: str | os.PathLike | None = None) -> Path:
    return board_dir(leaderboard_dir) / "entries"


def curves_hash(data: dict) -> str:
    """Identity of an entry's raw results (the same run submitted twice has the same hash)."""
    payload = json.dumps([data["protocol"]["name"], data["curves"]], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()


def entry_filename(data: dict) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", data["agent"]["name"].lower()).strip("-")
    protocol = data["protocol"]["name"].replace("/", "-")
    return f"{protocol}--{slug}--{curves_hash(data)[:12]}.json"


def _identity(data: dict) -> tuple:
    agent = data["agent"]
    return (data["protocol"]["name"], agent["name"], agent.get("checkpoint_hash"), json.dumps(agent.get("settings", {}), sort_keys=True))


def list_entries(leaderboard_dir: str | os.PathLike | None = None) -> list[tuple[Path, dict]]:
    """Every committed entry file with its contents, by file name."""
    directory = entries_dir(leaderboard_dir)
    return [(path, load_results(path)) for path in sorted(directory.glob("*.json"))] if directory.is_dir() else []


def submit(results_path: str | os.PathLike, leaderboard_dir: str | os.PathLike | None = None) -> Path:
    """Validate a results file and add it to the leaderboard; returns the entry's path."""
    data = load_results(results_path)
    validate(data, where=str(results_path))
    directory = entries_dir(leaderboard_dir)
    for path, existing in list_entries(leaderboard_dir):
        if curves_hash(existing) == curves_hash(data) or _identity(existing) == _identity(data):
            raise IcrlBenchError(
                f"{results_path} duplicates the entry {path.name} (same protocol, agent, checkpoint and settings, or the same curves)."
            )
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / entry_filename(data)
    try:
        write_atomic(final, dumps_results(data).encode(), overwrite=False)  # never overwrite an entry
    except FileExistsError:
        raise IcrlBenchError(f"{results_path} duplicates the entry {final.name}.") from None
    return final





def ranking(env: str | None = None, leaderboard_dir: str | os.PathLike | None = None) -> dict[str, list[dict]]:
    """Entries per protocol name, best first (by the protocol's headline metric: the normalized
    score, then AUC, on the grid worlds; the best-so-far success rate on Meta-World)."""
    if env is not None:
        get_protocol(env)  # unknown env -> one-line error
    groups: dict[str, list[dict]] = {}
    for _, data in list_entries(leaderboard_dir):
        if env is None or data["env"] == env or data["protocol"]["name"] == env:
            groups.setdefault(data["protocol"]["name"], []).append(data)
    for name, entries in groups.items():
        keys = RANK_KEYS[get_protocol(name).headline]
        entries.sort(key=lambda d: (*(-d["summary"][k]["mean"] for k in keys), agent_label(d)))
    return dict(sorted(groups.items(), key=lambda item: list(PROTOCOLS).index(item[0]) if item[0] in PROTOCOLS else 99))


# --- rendering ---------------------------------------------------------------------------------

INTRO = (
    "Every entry was validated on submission (schema, current protocol version, standard seeds and test tasks, known "
    "dataset, summary recomputed from the raw curves) and the repository's tests validate them all again. Each metric is "
    "a score per (seed, test task), summarized as rliable does (Agarwal et al. 2021): the mean, or the IQM, with a 95% CI "
    "from the stratified bootstrap. Learned agents are ranked; the reference agents (random, oracle, the source RL "
    "algorithm) mark the ends of the scale and are listed apart."
)

HEADER = """# icrl-bench leaderboard

Generated by `icrl-bench leaderboard render` from `leaderboard/entries/*.json`; do not edit by
hand (the same as a page: `index.html`; in a terminal: `icrl-bench leaderboard show`, also
`--format md|csv|json`). {intro}

Add an entry: `icrl-bench evaluate --agent NAME [--checkpoint DIR] --env ENV`, then
`icrl-bench leaderboard submit results/NAME-ENV.json`; check one: `icrl-bench leaderboard verify ENTRY`.
Score matrices for rliable's own plots: `icrl-bench results export --format rliable --env ENV`.

**Metric key.**
{key}
"""


@dataclass(frozen=True)
class Rendered:
    readme: Path
    html: Path
    plots: list[Path]


def render(leaderboard_dir: str | os.PathLike | None = None) -> Rendered:
    """Write `README.md`, `index.html` and one learning-curve plot per protocol."""
    from icrl_bench.bench import leaderboard_view as view

    directory = board_dir(leaderboard_dir)
    plots_dir = directory / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    groups = ranking(None, directory)
    plots, images = [], {}
    for name, entries in groups.items():
        plot = plots_dir / f"{name.replace('/', '-')}.png"
        with atomic_path(plot) as tmp:
            plot_learning_curves(entries, tmp, title=f"{name}: in-context learning curves (95% CI over seeds)")
        plots.append(plot)
        data = plot.read_bytes()
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the PNG's IHDR
        images[name] = (f"data:image/png;base64,{base64.b64encode(data).decode()}", width, height)  # one self-contained file
    key = "\n".join(f"- **{term}**: {text}" for term, text in view.METRIC_KEY)
    markdown = HEADER.format(intro=INTRO, key=key) + "\n" + (view.markdown(groups, directory) if groups else "No entries yet.\n")
    readme, page_path = directory / "README.md", directory / "index.html"
    write_atomic(readme, markdown.encode())
    write_atomic(page_path, view.html_page(groups, directory, images, INTRO).encode())
    return Rendered(readme, page_path, plots)


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    entry: Path
    identical: bool  # the re-run reproduced every episode return exactly
    max_abs_diff: float
    claimed_final: float
    rerun_final: float
    within_ci: bool  # the re-run's final return lies in the entry's 95% CI


def verify(entry_path: str | os.PathLike, device: str | None = None) -> Verification:
    """Re-run an entry's evaluation from its agent and checkpoint, and compare the curves.

    `device`: where to re-run (default: the entry's own); an entry made on a GPU can be re-run on a
    CPU, which is not bit-identical but must land in its CI."""
    from icrl_bench.bench.harness import evaluate  # the only place the leaderboard runs agents (torch)
    from icrl_bench.devices import resolve_device

    data = load_results(entry_path)
    entry, protocol = validate(data, where=str(entry_path))
    checkpoint = entry.agent.checkpoint
    if checkpoint is not None:
        checkpoint = str(from_repo_relative(checkpoint))  # "baselines/..." names the shipped tree, from a checkout or a wheel
    settings = dict(entry.agent.settings)
    recorded = settings.get("device")  # agents that take no device (random, oracle) record none
    try:
        if device is not None or recorded is not None:
            settings["device"] = resolve_device(device or recorded)
    except IcrlBenchError:
        if device is not None:
            raise
        raise IcrlBenchError(f"{entry_path} was evaluated on {recorded}, which this machine lacks; "
                             f"re-run it on the CPU with --device cpu (then it must land in the entry's CI).") from None
    rerun = evaluate(entry.agent.name, checkpoint, protocol.name, entry.seeds, entry.n_episodes, settings)
    if entry.agent.checkpoint_hash != rerun["agent"]["checkpoint_hash"]:
        raise IcrlBenchError(
            f"{entry_path}: the checkpoint at {checkpoint} has hash {rerun['agent']['checkpoint_hash']}, "
            f"but the entry was made with {entry.agent.checkpoint_hash}; nothing to compare."
        )
    old = np.asarray(entry.curves.returns)
    new = np.asarray(rerun["curves"]["return"])
    claimed = entry.summary.final_return
    final = rerun["summary"]["final_return"]["mean"]
    return Verification(
        entry=Path(entry_path),
        identical=bool(np.array_equal(old, new)),
        max_abs_diff=float(np.abs(old - new).max()),
        claimed_final=claimed.mean,
        rerun_final=final,
        within_ci=claimed.ci_low is not None and claimed.ci_high is not None and claimed.ci_low - 1e-9 <= final <= claimed.ci_high + 1e-9,
    )
