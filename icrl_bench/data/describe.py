"""What a dataset is, for `icrl-bench datasets show`: from its local manifest, else from the catalog;
and, for `datasets list --remote`, which of the catalog's entries are here (`catalog_status`).

Minari's `show` habit: one command answers "what is this id, how big, what shapes, where from,
which hash" whether or not the data is on this machine. Reads manifests and the catalog only
(no arrays, no torch, no network).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icrl_bench.data.catalog import CatalogEntry, catalog_entry, load_catalog, remote_manifest
from icrl_bench.data.dataset import dataset_path, load_dataset, local_content_hash, missing_dataset_error
from icrl_bench.data.manifest import Manifest, Shape
from icrl_bench.fileio import human_bytes
from icrl_bench.paths import check_dataset_id, data_root


@dataclass(frozen=True)
class DatasetFacts:
    """Everything `datasets show` prints about one id; None where it is not known here."""

    dataset_id: str
    description: str
    local_path: Path | None  # None: not on this machine
    size_bytes: int | None  # on disk, where local
    download_bytes: int | None  # what a download moves, where the catalog says
    shape: Shape | None
    arrays: list[tuple[str, str, list[int]]] = field(default_factory=list)  # name, dtype, shape
    env: str | None = None
    source: str | None = None
    content_hash: str | None = None
    made: str | None = None  # code commit and time of the build
    published: str | None = None  # repo@revision, or the build command of an unpublished entry
    catalog_match: str | None = None  # how the local copy compares with the catalog's pin
    get: str | None = None  # the command that brings it here, where absent


def describe(dataset_id: str, root: str | os.PathLike | None = None, catalog: str | os.PathLike | None = None) -> DatasetFacts:
    """The facts of a local dataset, or of a catalog entry not on this machine; else the not-found error."""
    check_dataset_id(dataset_id)
    entry = catalog_entry(dataset_id, catalog)
    if dataset_path(dataset_id, root).exists():
        return _local(dataset_id, root, entry)
    if entry is None:
        raise missing_dataset_error(dataset_id, root)
    manifest = remote_manifest(entry, catalog)
    return DatasetFacts(
        dataset_id=dataset_id,
        description=" ".join((entry.description or (manifest.description if manifest else "")).split()),
        local_path=None,
        size_bytes=None,
        download_bytes=entry.download_bytes,
        shape=entry.shape or (manifest.shape if manifest else None),
        arrays=_arrays(manifest),
        env=manifest.env if manifest else None,
        source=_source(manifest),
        content_hash=entry.content_hash,
        made=_made(manifest),
        published=entry.where,
        get=f"icrl-bench datasets download {dataset_id}" if entry.repo else _build_hint(entry),
    )


def _build_hint(entry: CatalogEntry) -> str | None:
    """The build command, with the kernels the pinned bytes need where the entry names them."""
    if entry.build and entry.torch_cpu_capability:
        kernels = entry.torch_cpu_capability
        return (f"{entry.build} (the pinned bytes were built on ATen's {kernels} kernels, which build-dataset pins on "
                f"x86-64 unless ATEN_CPU_CAPABILITY says otherwise; some CPUs' MKL still gives other bytes: docs/datasets.md)")
    return entry.build


def _local(dataset_id: str, root: str | os.PathLike | None, entry: CatalogEntry | None) -> DatasetFacts:
    ds = load_dataset(dataset_id, root)
    manifest = ds.manifest
    if entry is None:
        match = "not in the catalog"
    elif entry.content_hash == manifest.content_hash:
        match = "the catalog's content exactly"
    else:
        match = f"differs from the catalog's {entry.content_hash[:12]} (`icrl-bench build-dataset` prints why)"
    origin = ds.group.attrs.get("icrl_bench_origin")
    made = _made(manifest)
    if isinstance(origin, dict) and origin.get("source"):
        made = f"downloaded from {origin['source']}; " + (made or "")
    return DatasetFacts(
        dataset_id=dataset_id,
        description=" ".join(manifest.description.split()),
        local_path=ds.path,
        size_bytes=sum(f.stat().st_size for f in ds.path.rglob("*") if f.is_file()),
        download_bytes=entry.download_bytes if entry else None,
        shape=manifest.shape,
        arrays=_arrays(manifest),
        env=manifest.env,
        source=_source(manifest),
        content_hash=manifest.content_hash,
        made=made,
        published=entry.where if entry else None,
        catalog_match=match,
    )


def _arrays(manifest: Manifest | None) -> list[tuple[str, str, list[int]]]:
    return [(name, meta.dtype, list(meta.shape)) for name, meta in sorted(manifest.arrays.items())] if manifest else []


def _source(manifest: Manifest | None) -> str | None:
    if manifest is None:
        return None
    settings = ", ".join(f"{k}={v}" for k, v in sorted(manifest.source.hyperparameters.items()))
    return f"{manifest.source.name} ({settings})" if settings else manifest.source.name


def _made(manifest: Manifest | None) -> str | None:
    if manifest is None:
        return None
    return f"code {manifest.provenance.code_commit or 'unknown'}, {manifest.provenance.created_at}"


def fact_rows(facts: DatasetFacts, root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The facts as (label, text) rows, in the order `datasets show` prints them."""
    shape = facts.shape
    rows = [
        ("where", str(facts.local_path) if facts.local_path else f"not under {data_root(root)}"),
        ("shape", f"{shape.n_tasks:,} tasks x {shape.n_streams:,} streams x {shape.n_steps:,} steps "
                  f"({shape.transitions:,} transitions)" if shape else "unknown"),
        ("size", "; ".join(part for part in (
            f"{human_bytes(facts.size_bytes)} on disk" if facts.size_bytes is not None else "",
            f"{human_bytes(facts.download_bytes)} to download" if facts.download_bytes is not None else "",
        ) if part) or "unknown until built"),
        ("arrays", "; ".join(f"{name} {dtype} {shape_}" for name, dtype, shape_ in facts.arrays) or "unknown until built"),
        ("env", facts.env or "unknown"),
        ("source", facts.source or "unknown"),
        ("content hash", facts.content_hash or "unknown"),
    ]
    rows += [("made by", facts.made)] if facts.made else []
    rows += [("catalog", facts.published + (f"; the local copy has {facts.catalog_match}" if facts.catalog_match else ""))] if facts.published else []
    rows += [("catalog", facts.catalog_match)] if facts.catalog_match and not facts.published else []
    rows += [("get it", facts.get)] if facts.get else []
    return rows


def catalog_status(catalog: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The catalog's entries, each with whether it is present locally (and with the pinned hash)."""
    rows = []
    for dataset_id, entry in sorted(load_catalog(catalog).datasets.items()):
        local = local_content_hash(dataset_id, root)
        state = "absent" if local is None else "present" if local == entry.content_hash else "differs"
        rows.append({"dataset_id": dataset_id, **entry.model_dump(), "local": state})
    return rows
