"""Reading a built dataset: lazy arrays, the manifest, the split, learning curves, episodes.

Needs numpy and Zarr only (no torch, no recipes): listing and inspecting datasets stays light.
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from icrl_bench.data import store
from icrl_bench.data.catalog import catalog_entry
from icrl_bench.data.manifest import Manifest
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import DATASET_ID_PATTERN, check_dataset_id, data_root

SPLITS = {"train": 0, "test": 1}  # the store's `split` labels


class LearningHistoryDataset:
    """A published dataset. Arrays are Zarr arrays: indexing reads only what is asked for.

    Example:
        >>> ds = icrl_bench.load_dataset("darkroom-small-v3")
        >>> ds["reward"][ds.train_rows[0]]     # [stream, step] of the first train task
    """

    def __init__(self, path: Path, group: zarr.Group, manifest: Manifest):
        self.path = path
        self.group = group
        self.manifest = manifest

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id

    @property
    def array_names(self) -> list[str]:
        return sorted(self.manifest.arrays)

    def __getitem__(self, name: str) -> CheckedArray:
        if name not in self.manifest.arrays:
            raise KeyError(f"{self.dataset_id} has no array {name!r}; it has {', '.join(self.array_names)}")
        return CheckedArray(self.group[name], self.dataset_id, name)

    @property
    def n_tasks(self) -> int:
        return self.manifest.shape.n_tasks

    @property
    def n_streams(self) -> int:
        return self.manifest.shape.n_streams

    @property
    def n_steps(self) -> int:
        return self.manifest.shape.n_steps

    @cached_property
    def task_index(self) -> np.ndarray:
        return np.asarray(self["task_index"][:])

    @cached_property
    def task_params(self) -> np.ndarray:
        return np.asarray(self["task_params"][:])

    @cached_property
    def split(self) -> np.ndarray:
        """Per-row split label: 0 = train task, 1 = test task."""
        return np.asarray(self["split"][:])

    @property
    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(self.split == 0)

    @property
    def test_rows(self) -> np.ndarray:
        return np.flatnonzero(self.split == 1)

    def episodes(self, split: str | None = "train", arrays: tuple[str, ...] | None = None) -> Iterator[Episode]:
        """Every complete episode of every learning history, in order (task row, stream, episode).

        One task row is read at a time, so memory stays at one row whatever the dataset's size.
        `split`: "train", "test" or None (all tasks). `arrays`: the per-step arrays to return
        (default: all). An episode ends at a `done` step of its stream; steps after a stream's
        last `done` (an unfinished episode) are left out.

        Example:
            >>> for ep in ds.episodes("train", arrays=("obs", "action", "reward")):
            ...     ep.arrays["reward"].sum()   # the episode's return
        """
        if split is not None and split not in SPLITS:
            raise IcrlBenchError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or None (all tasks).")
        per_step = [name for name in self.array_names if self.manifest.arrays[name].shape[:3] == [self.n_tasks, self.n_streams, self.n_steps]]
        names = per_step if arrays is None else list(arrays)
        unknown = sorted(set(names) - set(per_step))
        if unknown:
            raise IcrlBenchError(f"{self.dataset_id} has no per-step array {', '.join(unknown)}; it has {', '.join(per_step)}.")
        rows = np.arange(self.n_tasks) if split is None else np.flatnonzero(self.split == SPLITS[split])
        for row in rows:
            done = np.asarray(self["done"][row])  # [stream, step]
            data = {name: np.asarray(self[name][row]) for name in names}  # [stream, step, ...]
            for stream in range(self.n_streams):
                ends = np.flatnonzero(done[stream])
                starts = np.concatenate([[0], ends[:-1] + 1])
                for index, (start, end) in enumerate(zip(starts, ends + 1)):
                    yield Episode(int(row), int(self.task_index[row]), stream, index, {name: a[stream, start:end] for name, a in data.items()})

    def episode_returns(self, row: int) -> np.ndarray:
        """Return of every complete episode of task row `row`, [stream, episode]."""
        return episode_returns(np.asarray(self["reward"][row]), np.asarray(self["done"][row]))

    def verify(self) -> str:
        """Recompute every array's hash; returns the content hash or raises naming the bad array."""
        recorded = {name: meta.sha256 for name, meta in self.manifest.arrays.items()}
        actual = store.digests(self.group, sorted(recorded))
        for name in sorted(recorded):
            if actual[name] != recorded[name]:
                raise store.CorruptArrayError(name, "does not match its recorded sha256: the dataset is corrupt; delete and rebuild or re-download it")
        content = store.content_hash(actual)
        if content != self.manifest.content_hash:
            raise IcrlBenchError(f"{self.dataset_id}: the manifest's content hash does not match its arrays; the manifest was edited.")
        recorded_manifest = self.manifest.manifest_hash  # absent in datasets made before 2026-11-30
        if recorded_manifest is not None and recorded_manifest != self.manifest.computed_hash():
            raise IcrlBenchError(f"{self.dataset_id}: the manifest's fields do not match its manifest_hash; the manifest was edited: "
                                 "delete and rebuild or re-download it.")
        return content


@dataclass(frozen=True)
class Episode:
    """One episode of one learning history: its place in the dataset and its per-step arrays [length, ...]."""

    task_row: int  # row of the dataset's arrays
    task_index: int  # canonical task index in the env's task list
    stream: int
    index: int  # the episode's number within its stream (0 = the source algorithm's first)
    arrays: dict[str, np.ndarray]


class CheckedArray:
    """A dataset array (zarr.Array's interface) whose reads turn an undecodable chunk into a one-line error.

    Chunks are zstd with checksums: a flipped byte fails decoding. Without this, the reader met a
    raw `RuntimeError: Zstd decompression error` deep in a sampler or `datasets info`.
    """

    def __init__(self, array: zarr.Array, dataset_id: str, name: str, reader: Any = None):
        self._array, self._dataset_id, self._name = array, dataset_id, name
        self._reader = reader if reader is not None else array

    def __getitem__(self, index: Any) -> Any:
        try:
            return self._reader[index]
        except RuntimeError as err:  # numcodecs' zstd (and its checksum) failures
            raise IcrlBenchError(
                f"dataset {self._dataset_id!r}: a chunk of array {self._name!r} cannot be decoded ({str(err).splitlines()[0]}); "
                f"the files are corrupt: `icrl-bench datasets delete {self._dataset_id}`, then rebuild or download it."
            ) from None

    @property
    def oindex(self) -> CheckedArray:
        return CheckedArray(self._array, self._dataset_id, self._name, self._array.oindex)

    def __getattr__(self, attr: str) -> Any:  # shape, dtype, chunks, attrs, ...
        return getattr(self._array, attr)


def episode_returns(reward: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Sum rewards per episode: [stream, step] -> [stream, episode] (complete episodes only).

    Every stream of a grid-world history ends its episodes at the same fixed horizon, so
    episodes are the segments between `done` flags of the first stream.
    """
    ends = np.flatnonzero(done[0])
    if len(ends) == 0:
        return np.zeros((reward.shape[0], 0))
    # Grid rewards are uint8 (sum them exactly as integers); Meta-World's are float32 (sum in float64).
    wide = np.int64 if np.issubdtype(reward.dtype, np.integer) else np.float64
    cumulative = np.cumsum(reward[:, : ends[-1] + 1].astype(wide), axis=1)[:, ends]
    return np.diff(cumulative, axis=1, prepend=0)


def dataset_path(dataset_id: str, root: str | os.PathLike | None = None) -> Path:
    """Where dataset `dataset_id` lives; a string that is not an id is refused (it could name any directory)."""
    return data_root(root) / "datasets" / check_dataset_id(dataset_id)


def local_ids(root: str | os.PathLike | None = None) -> list[str]:
    directory = data_root(root) / "datasets"
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")) if directory.is_dir() else []


def load_dataset(dataset_id: str, root: str | os.PathLike | None = None) -> LearningHistoryDataset:
    """Open dataset `dataset_id`, or fail saying how to get it."""
    path = dataset_path(dataset_id, root)
    if not path.exists():
        raise missing_dataset_error(dataset_id, root)
    return LearningHistoryDataset(path, *store.open_dataset(path, dataset_id))


def missing_dataset_error(dataset_id: str, root: str | os.PathLike | None) -> IcrlBenchError:
    """Not here: download it where the catalog publishes it, else build it with its recipe's command."""
    from icrl_bench.data.recipes import build_command, parse_dataset_id  # the recipes load the envs (torch): only here

    where = data_root(root)
    published = catalog_entry(dataset_id) if DATASET_ID_PATTERN.match(dataset_id) else None
    plan = parse_dataset_id(dataset_id) if DATASET_ID_PATTERN.match(dataset_id) else None
    if published is not None and published.repo is not None:
        rebuild = f" (or build it with `{build_command(plan)}`)" if plan is not None else ""
        return IcrlBenchError(f"dataset {dataset_id!r} is not under {where}; the catalog publishes it: "
                              f"download it with `icrl-bench datasets download {dataset_id}`{rebuild}.")
    if plan is not None:
        command = build_command(plan)
        return IcrlBenchError(f"dataset {dataset_id!r} is not built under {where}; build it with `{command}`.")
    close = difflib.get_close_matches(dataset_id, local_ids(root), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return IcrlBenchError(f"unknown dataset id {dataset_id!r} under {where}.{hint} See `icrl-bench datasets list`.")


def delete_dataset(dataset_id: str, root: str | os.PathLike | None = None) -> Path:
    path = dataset_path(dataset_id, root)
    if not path.exists():
        raise missing_dataset_error(dataset_id, root)
    # Renamed away first: the id is gone at once or, if the rename is refused, nothing changed
    # (deleting in place could leave half a dataset under its id).
    doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    path.rename(doomed)
    shutil.rmtree(doomed)
    return path


def local_content_hash(dataset_id: str, root: str | os.PathLike | None) -> str | None:
    """The content hash of the local dataset `dataset_id`, '' if unreadable, None if absent."""
    if not dataset_path(dataset_id, root).exists():
        return None
    try:
        return load_dataset(dataset_id, root).manifest.content_hash
    except IcrlBenchError:
        return ""


@dataclass(frozen=True)
class LocalDataset:
    dataset_id: str
    path: Path
    manifest: Manifest | None  # None: the directory is not a readable dataset
    size_bytes: int


def list_local(root: str | os.PathLike | None = None) -> list[LocalDataset]:
    """Every directory under the data root's datasets/, readable or not."""
    entries = []
    for dataset_id in local_ids(root):
        path = dataset_path(dataset_id, root)
        try:
            manifest = load_dataset(dataset_id, root).manifest
        except IcrlBenchError:
            manifest = None
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        entries.append(LocalDataset(dataset_id, path, manifest, size))
    return entries
