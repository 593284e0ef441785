"""The Zarr v3 store of a dataset: creation, per-task writes, hashing, opening.

Chunks hold one task and a block of whole streams (at most ~4 MiB raw), so reading one
task's histories into memory, which is how windows are sampled for training, touches
few chunks; zstd compresses grid-world histories about 5x. Each array's sha256 is taken
over canonical bytes (little-endian, C order, prefixed by name, dtype and shape), so the
hash depends on the content only, not on chunking, compression or the Zarr version.

Every chunk is written, zeros included (`write_empty_chunks`), and each array says so in its
attributes (`EVERY_CHUNK_WRITTEN`), so opening a dataset can tell a deleted chunk file (which
Zarr would read as zeros) from data: `missing_chunks`. Stores made before that have no marker and
are not checked.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from icrl_bench.data.manifest import MANIFEST_KEY, Manifest, is_dataset_attributes, parse_manifest
from icrl_bench.data.schema import ArraySpec
from icrl_bench.errors import IcrlBenchError

CHUNK_BYTES = 4 * 2**20
EVERY_CHUNK_WRITTEN = "every_chunk_written"
# Zarr reads this option when an array is opened, not from the store's metadata, so it is set for
# the process: every writer (build, importers, download) then writes chunks of zeros too. Its only
# effect elsewhere is that such chunks take a few bytes on disk.
zarr.config.set({"array.write_empty_chunks": True})


def chunk_shape(spec: ArraySpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    if spec.per_task:
        return shape
    n_streams, n_steps = shape[1], shape[2]
    stream_bytes = n_steps * int(np.prod(spec.tail, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    streams_per_chunk = int(max(1, min(n_streams, CHUNK_BYTES // max(stream_bytes, 1))))
    return (1, streams_per_chunk, n_steps) + spec.tail


def create(path: Path, specs: list[ArraySpec], n_tasks: int, n_streams: int, n_steps: int) -> zarr.Group:
    """An empty store with every array allocated (chunks are written as tasks finish)."""
    group = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    for spec in specs:
        shape = spec.shape(n_tasks, n_streams, n_steps)
        group.create_array(
            spec.name,
            shape=shape,
            chunks=chunk_shape(spec, shape),
            dtype=spec.dtype,
            compressors=ZstdCodec(level=3, checksum=True),
            fill_value=0,
            attributes={"doc": spec.doc, EVERY_CHUNK_WRITTEN: True},
        )
    return group


def array_digest(name: str, array: zarr.Array) -> str:
    """sha256 of an array's canonical bytes, read one task at a time."""
    digest = hashlib.sha256(f"{name}|{np.dtype(array.dtype).str}|{tuple(array.shape)}|".encode())
    for row in range(array.shape[0]):
        block = np.asarray(array[row])
        digest.update(np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def content_hash(digests: dict[str, str]) -> str:
    """One hash over all arrays' hashes (sorted by name)."""
    lines = "".join(f"{name}:{digests[name]}\n" for name in sorted(digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def digests(group: zarr.Group, names: list[str] | None = None) -> dict[str, str]:
    """Per-array hashes; a chunk that cannot be decoded is reported by array name."""
    result = {}
    for name in names or sorted(group.array_keys()):
        try:
            result[name] = array_digest(name, group[name])
        except Exception as err:  # noqa: BLE001 - zstd checksum or codec failures surface as many types
            raise CorruptArrayError(name, f"cannot be read ({type(err).__name__}: {err})") from None
    return result


class CorruptArrayError(IcrlBenchError):
    def __init__(self, array: str, problem: str):
        self.array = array
        super().__init__(f"array {array!r} {problem}")


def missing_chunks(group: zarr.Group, path: Path) -> tuple[str, int] | None:
    """The first array (name, number of missing chunk files) of a store that writes every chunk, or None.

    Counts the files under each array's `c/` directory (the default v3 chunk key encoding): one
    directory listing per array, no data read.
    """
    for name in sorted(group.array_keys()):
        array = group[name]
        if not array.attrs.get(EVERY_CHUNK_WRITTEN):
            continue
        expected = int(np.prod([-(-n // c) for n, c in zip(array.shape, array.chunks)]))
        chunk_dir = path / name / "c"
        found = sum(1 for f in chunk_dir.rglob("*") if f.is_file()) if chunk_dir.is_dir() else 0
        if found < expected:
            return name, expected - found
    return None


def consolidate(path: Path) -> None:
    """Consolidate metadata so opening a dataset reads one file (zarr warns it is not in the v3 spec)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))


def open_dataset(path: Path, dataset_id: str) -> tuple[zarr.Group, Manifest]:
    """Open a published dataset's group and read its manifest, or fail with what is wrong and the fix."""
    if not (path / "zarr.json").is_file():
        raise IcrlBenchError(
            f"{path} is not an icrl-bench dataset (no zarr.json); delete it or choose another --root."
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            group = zarr.open_group(store=str(path), mode="r", zarr_format=3)
        raw = dict(group.attrs).get(MANIFEST_KEY)
    except (json.JSONDecodeError, ValueError, KeyError, OSError) as err:
        raise IcrlBenchError(f"dataset {dataset_id!r} at {path} is corrupt ({err}); run `icrl-bench datasets delete {dataset_id}` and rebuild.") from None
    if not is_dataset_attributes(raw):
        raise IcrlBenchError(
            f"{path} is a Zarr group but not an icrl-bench dataset (no manifest); delete it or choose another --root."
        )
    manifest = parse_manifest(raw, path / "zarr.json", f"run `icrl-bench datasets delete {dataset_id}` and rebuild or download it.")
    missing = missing_chunks(group, path)
    if missing is not None:
        name, n = missing
        raise IcrlBenchError(f"dataset {dataset_id!r} at {path} is incomplete: {n} chunk file(s) of array {name!r} are missing; "
                             f"run `icrl-bench datasets delete {dataset_id}` and rebuild or download it.")
    return group, manifest
