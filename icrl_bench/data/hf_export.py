"""The Hugging Face Datasets form of a dataset (Parquet shards + dataset card), and back to Zarr.

The Parquet form is for sharing: the Hub's dataset viewer and `datasets.load_dataset` read it,
and a few large files suit the Hub far better than a Zarr store's many chunk files. Training
reads the local Zarr store, so import rebuilds one with the builder's chunking.

Layout of an export folder (exactly what a Hub dataset repo holds):

    README.md                          dataset card: Hub YAML header + a description from the manifest
    data/train-00000-of-00001.parquet  one row per learning history (task row, stream)
    data/test-00000-of-00001.parquet   HF splits are the paper's train / test tasks
    icrl_bench/manifest.json           the dataset's manifest, verbatim
    icrl_bench/export.json             the column layout and every file's size and sha256

A row holds the task's per-task values and one sequence column per per-step array
(`obs`: list of [2] uint8 cells, `action`: list of uint8, ...), in the store's dtypes. A task's
streams never straddle two shards, so import writes whole Zarr chunks. Import checks every
file's size and sha256, then every array's digest and the content hash against the manifest,
before the store is renamed into place: a truncated, tampered or foreign folder never becomes
a local dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from icrl_bench.data import store
from icrl_bench.data.dataset import LearningHistoryDataset, dataset_path, load_dataset, local_content_hash
from icrl_bench.data.manifest import MANIFEST_KEY, Manifest, Split, parse_manifest
from icrl_bench.data.schema import ArraySpec
from icrl_bench.errors import IcrlBenchError, missing_extra
from icrl_bench.fileio import file_sha256, write_text_atomic
from icrl_bench.paths import data_root, ensure_writable

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    from datasets import Features, List, Value
except ImportError as _err:  # the hub extra is optional
    raise missing_extra(_err, "hub", "sharing datasets") from None

EXPORT_FORMAT = "icrl-bench-hf-export"
EXPORT_FORMAT_VERSION = 1
EXPORT_FILE = "icrl_bench/export.json"
MANIFEST_FILE = "icrl_bench/manifest.json"
CARD_FILE = "README.md"
DATA_DIR = "data"
SPLIT_NAMES = {0: "train", 1: "test"}  # the store's `split` labels
# Raw (uncompressed) bytes per Parquet file and per row group. zstd shrinks grid-world
# histories ~5-10x, so files stay well under the Hub's recommended few hundred MB (and import,
# which reads one shard at a time, stays within a few hundred MB of memory), and row
# groups stay small enough for the dataset viewer to page through.
SHARD_BYTES = 256 * 2**20
ROW_GROUP_BYTES = 32 * 2**20
ID_COLUMNS = ("task_row", "stream")  # where a row sits in the store: [task_row, stream]
COLUMN_ORDER = ("task_index", "split", "task_params", "obs", "action", "reward", "next_obs", "done")


@dataclass(frozen=True)
class ExportResult:
    dataset_id: str
    path: Path
    files: dict[str, dict[str, Any]]  # path in repo -> size, sha256 (and rows for Parquet)
    content_hash: str
    wall_time_s: float

    @property
    def parquet_bytes(self) -> int:
        return sum(f["size"] for name, f in self.files.items() if name.endswith(".parquet"))


@dataclass(frozen=True)
class ImportResult:
    dataset_id: str
    path: Path
    content_hash: str
    already_present: bool


def version_tag(dataset_id: str, family: str) -> str:
    """The git tag that pins a dataset in its family's repo: its id without the family.

    `darkroom-v3` -> `v3`, `darkroom-small-v3` -> `small-v3`, so `my-org/icrl-darkroom@v3`
    is the paper-size dataset and every preset of a family shares one repo.
    """
    return dataset_id[len(family) + 1 :] if family and dataset_id.startswith(family + "-") else dataset_id


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One array of the store as a Parquet column."""

    name: str
    dtype: str
    tail: tuple[int, ...]  # shape after [task, stream, step] (per-step) or after [task] (per-task)
    per_task: bool
    doc: str

    def feature(self) -> Any:
        inner: Any = Value(self.dtype)
        for size in reversed(self.tail):
            inner = List(inner, length=size)  # fixed-size list: no offsets stored
        return inner if self.per_task else List(inner)

    def spec(self) -> ArraySpec:
        return ArraySpec(self.name, self.dtype, self.tail, self.per_task, self.doc)

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "tail": list(self.tail), "per_task": self.per_task, "doc": self.doc}


def columns_of(manifest: Manifest) -> list[Column]:
    """The manifest's arrays as columns: per-step arrays are those shaped [task, stream, step, ...]."""
    lead = [manifest.shape.n_tasks, manifest.shape.n_streams, manifest.shape.n_steps]
    columns = []
    for name, meta in manifest.arrays.items():
        per_task = meta.shape[:3] != lead
        tail = tuple(meta.shape[1:] if per_task else meta.shape[3:])
        columns.append(Column(name, meta.dtype, tail, per_task, meta.doc))
    rank = {name: i for i, name in enumerate(COLUMN_ORDER)}
    return sorted(columns, key=lambda c: (rank.get(c.name, len(rank)), c.name))


def features_of(columns: list[Column]) -> Features:
    return Features({"task_row": Value("int32"), "stream": Value("int32")} | {c.name: c.feature() for c in columns})


def _to_arrow(values: np.ndarray, column: Column) -> pa.Array:
    """[rows, (step,) *tail] numpy -> (list of) fixed-size lists, keeping the dtype."""
    rows = values.shape[0]
    array: pa.Array = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(column.tail):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    if not column.per_task:
        steps = values.shape[1]
        array = pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * steps), array)
    return array


def _from_arrow(chunked: pa.ChunkedArray, column: Column, n_steps: int) -> np.ndarray:
    """The inverse of `_to_arrow`, refusing nulls and sequences of the wrong length."""
    array = chunked.combine_chunks()
    rows = len(array)
    if array.null_count:
        raise ValueError(f"column {column.name!r} has nulls")
    if not column.per_task:
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        if rows and (lengths.min() != n_steps or lengths.max() != n_steps):
            raise ValueError(f"column {column.name!r} has sequences of {lengths.min()}..{lengths.max()} steps, expected {n_steps}")
        array = array.flatten()
    for _ in column.tail:
        array = array.flatten()
    values = array.to_numpy(zero_copy_only=False).astype(column.dtype, copy=False)
    lead = (rows,) if column.per_task else (rows, n_steps)
    return values.reshape(lead + column.tail)


# --------------------------------------------------------------------------- export


def export_hf(
    dataset_id: str,
    out: str | os.PathLike,
    root: str | os.PathLike | None = None,
    license: str = "cc-by-4.0",
    repo_id: str | None = None,
    revision: str | None = None,
    shard_bytes: int = SHARD_BYTES,
    local_dir: str | None = None,
) -> ExportResult:
    """Write dataset `dataset_id` as a Hub-ready folder at `out` (which must not exist yet).

    The dataset is verified first, so a corrupt store is never shared. The folder is
    written beside `out` and renamed into place. `repo_id`/`revision` (a Hub repo) or
    `local_dir` (where the folder will live, for a directory remote) only fill in the card's
    loading instructions.
    """
    started = time.perf_counter()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IcrlBenchError(f"{out} already exists; choose another --out or delete it.")
    ds = load_dataset(dataset_id, root)
    ds.verify()
    manifest = ds.manifest
    columns = columns_of(manifest)
    clash = {c.name for c in columns} & set(ID_COLUMNS)
    if clash:
        raise IcrlBenchError(f"{dataset_id} has arrays named {sorted(clash)}, which the export reserves for row ids.")
    features = features_of(columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir(out.parent, f".{out.name}.partial-")
    try:
        (work / DATA_DIR).mkdir()
        (work / "icrl_bench").mkdir()
        files, splits = _write_shards(ds, columns, features, work, shard_bytes)
        (work / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=1, sort_keys=True) + "\n")
        files[MANIFEST_FILE] = file_record(work / MANIFEST_FILE)
        export = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "dataset_id": dataset_id,
            "content_hash": manifest.content_hash,
            "shape": manifest.shape.to_dict(),
            "columns": {c.name: c.to_dict() for c in columns},
            "files": dict(sorted(files.items())),
        }
        (work / EXPORT_FILE).write_text(json.dumps(export, indent=1) + "\n")
        card = dataset_card(manifest, columns, features, splits, files, license, repo_id, revision, local_dir)
        (work / CARD_FILE).write_text(card)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(dataset_id, out, export["files"], manifest.content_hash, time.perf_counter() - started)


def _write_shards(
    ds: LearningHistoryDataset, columns: list[Column], features: Features, work: Path, shard_bytes: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    """Write each split's Parquet shards; returns their file records and per-split sizes."""
    n_streams, n_steps = ds.n_streams, ds.n_steps
    per_step = [c for c in columns if not c.per_task]
    task_bytes = n_streams * n_steps * sum(np.dtype(c.dtype).itemsize * math.prod(c.tail) for c in per_step)
    tasks_per_shard = max(1, shard_bytes // max(task_bytes, 1))
    tasks_per_group = max(1, ROW_GROUP_BYTES // max(task_bytes, 1))
    schema = features.arrow_schema  # carries the HF features in its metadata: exact dtypes on load
    per_task_values = {c.name: np.asarray(ds[c.name][:]) for c in columns if c.per_task}
    files: dict[str, dict[str, Any]] = {}
    splits: dict[str, dict[str, int]] = {}
    for label, split in SPLIT_NAMES.items():
        rows = np.flatnonzero(ds.split == label)
        if len(rows) == 0:
            continue
        n_shards = math.ceil(len(rows) / tasks_per_shard)
        splits[split] = {"num_examples": len(rows) * n_streams, "num_bytes": 0, "tasks": len(rows)}
        for shard in range(n_shards):
            name = f"{DATA_DIR}/{split}-{shard:05d}-of-{n_shards:05d}.parquet"
            shard_rows = rows[shard * tasks_per_shard : (shard + 1) * tasks_per_shard]
            with pq.ParquetWriter(work / name, schema, compression="zstd", write_page_index=True) as writer:
                for start in range(0, len(shard_rows), tasks_per_group):
                    group_rows = shard_rows[start : start + tasks_per_group]
                    table = _rows_table(ds, columns, per_task_values, group_rows, schema)
                    splits[split]["num_bytes"] += table.nbytes
                    writer.write_table(table, row_group_size=len(table))
            files[name] = file_record(work / name) | {"rows": len(shard_rows) * n_streams}
    return files, splits


def _rows_table(ds: LearningHistoryDataset, columns: list[Column], per_task_values: dict[str, np.ndarray], task_rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """The rows of tasks `task_rows`: one per (task row, stream), tasks in order, streams 0..S-1."""
    n_streams = ds.n_streams
    data: dict[str, pa.Array] = {
        "task_row": pa.array(np.repeat(task_rows, n_streams).astype(np.int32)),
        "stream": pa.array(np.tile(np.arange(n_streams, dtype=np.int32), len(task_rows))),
    }
    for column in columns:
        if column.per_task:
            values = np.repeat(per_task_values[column.name][task_rows], n_streams, axis=0)
        else:
            # [tasks, stream, step, *tail] -> [tasks * stream, step, *tail]; one read per task keeps chunks whole
            block = np.stack([np.asarray(ds[column.name][int(r)]) for r in task_rows])
            values = block.reshape((-1,) + block.shape[2:])
        data[column.name] = _to_arrow(values, column)
    return pa.table(data, schema=schema)


def temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory to fill and then rename into place, with the umask's permissions
    (mkdtemp's 0700 would make a published dataset or mirror unreadable to others)."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    return path


def file_record(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


# --------------------------------------------------------------------------- card


def _size_category(n_rows: int) -> str:
    for limit, label in ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M")):
        if n_rows < limit:
            return label
    return "1M<n<10M"


def dataset_card(
    manifest: Manifest,
    columns: list[Column],
    features: Features,
    splits: dict[str, dict[str, int]],
    files: dict[str, dict[str, Any]],
    license: str,
    repo_id: str | None,
    revision: str | None,
    local_dir: str | None = None,
) -> str:
    """README.md: the Hub's YAML header (through huggingface_hub/datasets) and a description."""
    n_rows = sum(s["num_examples"] for s in splits.values())
    card_data = DatasetCardData(
        license=license,
        pretty_name=f"icrl-bench {manifest.dataset_id}",
        task_categories=["reinforcement-learning"],
        tags=list(dict.fromkeys(["in-context-reinforcement-learning", "learning-histories", "icrl-bench", manifest.family, manifest.env])),
        size_categories=[_size_category(n_rows)],
    )
    MetadataConfigs(
        {"default": {"data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*"} for s in splits]}}
    ).to_dataset_card_data(card_data)
    download_size = sum(f["size"] for name, f in files.items() if name.endswith(".parquet"))
    split_dict = SplitDict({s: SplitInfo(name=s, num_bytes=v["num_bytes"], num_examples=v["num_examples"]) for s, v in splits.items()})
    info = DatasetInfo(
        features=features, splits=split_dict, download_size=download_size,
        dataset_size=sum(v["num_bytes"] for v in splits.values()),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{_card_body(manifest, columns, splits, repo_id, revision, license, local_dir)}"))


def refresh_card(folder: str | os.PathLike, license: str | None = None, repo_id: str | None = None, revision: str | None = None,
                 local_dir: str | None = None) -> Path:
    """Rewrite an export's README.md from its own records (manifest, export.json, the card's split sizes),
    e.g. after the card's text changed; the data files are not touched. `license`: the card's own unless given."""
    folder = Path(folder)
    card = DatasetCard.load(folder / CARD_FILE)
    manifest = parse_manifest(json.loads((folder / MANIFEST_FILE).read_text()), folder / MANIFEST_FILE, "export the dataset again.")
    export = json.loads((folder / EXPORT_FILE).read_text())
    n_streams = manifest.shape.n_streams
    splits = {s["name"]: {"num_examples": s["num_examples"], "num_bytes": s["num_bytes"], "tasks": s["num_examples"] // n_streams}
              for s in card.data.dataset_info["splits"]}
    columns = columns_of(manifest)
    text = dataset_card(manifest, columns, features_of(columns), splits, export["files"], license or card.data.license, repo_id, revision, local_dir)
    write_text_atomic(folder / CARD_FILE, text)
    return folder / CARD_FILE


def _shape_text(column: Column) -> str:
    dims = ([] if column.per_task else ["step"]) + [str(t) for t in column.tail]
    return f"[{', '.join(dims)}]" if dims else "scalar"


def _card_body(manifest: Manifest, columns: list[Column], splits: dict[str, dict[str, int]], repo_id: str | None,
               revision: str | None, license: str = "cc-by-4.0", local_dir: str | None = None) -> str:
    m = manifest
    shape, env, source, prov = m.shape, m.env_spec, m.source, m.provenance
    repo = repo_id or "<org>/<repo>"
    rev = revision or version_tag(m.dataset_id, m.family)
    hyper = ", ".join(f"`{k}={v}`" for k, v in source.hyperparameters.items())
    column_rows = "\n".join(
        ["| `task_row`, `stream` | int32 | scalar | where the row sits in the Zarr store: `[task_row, stream]` |"]
        + [f"| `{c.name}` | {c.dtype} | {_shape_text(c)} | {c.doc} |" for c in columns]
    )
    split_lines = "\n".join(f"- `{name}`: {v['tasks']} tasks, {v['num_examples']} rows" for name, v in splits.items())
    packages = ", ".join(f"{k} {v}" for k, v in prov.packages.items())
    return f"""# {m.dataset_id}

{m.description.strip()}

Learning histories for in-context reinforcement learning (Algorithm Distillation, IDT, DPT,
DICP), recorded by icrl-bench: the source algorithm `{source.name}`
learned each of {shape.n_tasks} tasks of `{m.env}` (`{env.gym_id}`, horizon {env.horizon},
task parameters {', '.join(env.param_names)}) in {shape.n_streams} parallel streams of
{shape.n_steps} steps, and every transition was kept.

## Layout

One row per learning history (task, stream): {sum(v['num_examples'] for v in splits.values())} rows, each with
sequences of {shape.n_steps} steps. Splits follow {_split_text(m.split)}:

{split_lines}

| column | dtype | shape | meaning |
|---|---|---|---|
{column_rows}

`next_obs` at an episode's end: {m.next_obs_at_episode_end}.
{_env_facts_text(env.to_dict())}
{_load_text(m.dataset_id, repo, rev, local_dir)}
## Provenance

- Source algorithm `{source.name}`: {hyper}
- Seeds: base {m.seeds.base}; {m.seeds.rule}
- Content hash (sha256 over every array's canonical bytes; `icrl-bench datasets verify`): `{m.content_hash}`
- Created {prov.created_at} from code {prov.code_commit}; {packages}
- The full manifest (recipe, split, per-array hashes) is `{MANIFEST_FILE}`; file sizes and hashes are in `{EXPORT_FILE}`.

## License

The data is released under `{license}`: the histories were generated by icrl-bench's own runs
of `{source.name}`; the environments are the DICP paper's (and Meta-World's, MIT, for its tasks).

## Citation

If you use this dataset, cite the method papers and icrl-bench:

```bibtex
@inproceedings{{son2025dicp,
  title     = {{Distilling Reinforcement Learning Algorithms for In-Context Model-Based Planning}},
  author    = {{Son, Jaehyeon and Lee, Soochan and Kim, Gunhee}},
  booktitle = {{International Conference on Learning Representations (ICLR)}},
  year      = {{2025}}
}}
@article{{laskin2022ad,
  title   = {{In-context Reinforcement Learning with Algorithm Distillation}},
  author  = {{Laskin, Michael and Wang, Luyu and Oh, Junhyuk and Parisotto, Emilio and Spencer, Stephen and Steigerwald, Richie and Strouse, DJ and Hansen, Steven and Filos, Angelos and Brooks, Ethan and Gazeau, Maxime and Sahni, Himanshu and Singh, Satinder and Mnih, Volodymyr}},
  journal = {{arXiv preprint arXiv:2210.14215}},
  year    = {{2022}}
}}
@software{{icrl_bench,
  title = {{icrl-bench: learning-history datasets, in-context RL agents and a benchmark}},
  note  = {{dataset {m.dataset_id}, content hash {m.content_hash}}}
}}
```
"""


def _load_text(dataset_id: str, repo: str, rev: str, local_dir: str | None) -> str:
    """The card's loading instructions: from the Hub repo and tag, or from the folder it ships in."""
    if local_dir is not None:
        datasets_snippet = f'ds = load_dataset("{local_dir}").with_format("arrow")  # from the root of an icrl-bench checkout'
        download = f"icrl-bench datasets download {dataset_id}"
    else:
        datasets_snippet = f'ds = load_dataset("{repo}", revision="{rev}").with_format("arrow")'
        download = f"icrl-bench datasets download {repo}@{rev}"
    return f"""## Load it

With 🤗 Datasets (the `arrow` format keeps the uint8 dtypes; `numpy`/`torch` widen them to int64):

```python
from datasets import load_dataset
{datasets_snippet}
```

With icrl-bench, which checks every file's sha256 and the content hash, then rebuilds the
Zarr store that training reads:

```bash
{download}
python -c "import icrl_bench; print(icrl_bench.load_dataset('{dataset_id}').manifest['content_hash'])"
```
"""


def _split_text(split: Split) -> str:
    if split.train_ratio is not None:
        return f"the paper's task split (seed {split.seed}, train ratio {split.train_ratio})"
    return split.rule


def _env_facts_text(env: dict[str, Any]) -> str:
    """The env choices a reader must know (Meta-World: horizon, observation, success, task version)."""
    facts = [(key, env[key]) for key in ("horizon_rule", "observation", "success", "task_version", "metaworld_version") if isinstance(env.get(key), str)]
    if not facts:
        return ""
    return "\n## Environment\n\n" + "\n".join(f"- {key.replace('_', ' ')}: {value}" for key, value in facts) + "\n"


# --------------------------------------------------------------------------- import


def read_export(folder: Path) -> dict[str, Any]:
    """The export record of `folder`, or an error saying it is not an icrl-bench export."""
    path = folder / EXPORT_FILE
    if not path.is_file():
        raise IcrlBenchError(f"{folder} is not an icrl-bench dataset export (no {EXPORT_FILE}).")
    try:
        export = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IcrlBenchError(f"{path} is not valid JSON ({err}); the export is corrupt.") from None
    if not isinstance(export, dict) or export.get("format") != EXPORT_FORMAT:
        raise IcrlBenchError(f"{folder} is not an icrl-bench dataset export ({EXPORT_FILE} has another format).")
    files = export.get("files")
    if not isinstance(files, dict) or not all(isinstance(r, dict) and {"size", "sha256"} <= r.keys() for r in files.values()):
        raise IcrlBenchError(f"{path} does not list its files with their size and sha256; the export is corrupt.")
    if export.get("format_version", 0) > EXPORT_FORMAT_VERSION:
        raise IcrlBenchError(
            f"{folder} was exported by a newer icrl-bench (format {export['format_version']}); upgrade: pip install -U icrl-bench"
        )
    return export


def verify_files(folder: Path, export: dict[str, Any]) -> None:
    """Check each listed file's size (a cut download) and sha256 (a corrupt or tampered file)."""
    for name, record in export["files"].items():
        path = folder / name
        if not path.is_file():
            raise IcrlBenchError(f"{name} is missing from {folder}; the download is incomplete: run it again.")
        size = path.stat().st_size
        if size != record["size"]:
            raise IcrlBenchError(
                f"{name} has {size} bytes, expected {record['size']}: the download was cut or the file changed; run it again."
            )
        if file_sha256(path) != record["sha256"]:
            raise IcrlBenchError(f"{name} does not match its sha256: the file is corrupt or was tampered with; nothing was imported.")


def import_hf(
    folder: str | os.PathLike,
    root: str | os.PathLike | None = None,
    expected_hash: str | None = None,
    origin: dict[str, Any] | None = None,
    expected_manifest_hash: str | None = None,
) -> ImportResult:
    """Rebuild the Zarr dataset of an export folder under `root`, verified, and publish it.

    Nothing is published unless every file hash, every array digest and the content hash match,
    the manifest matches its own `manifest_hash` (where it has one), and `expected_hash` and
    `expected_manifest_hash` (a catalog's pins), if given; an existing local dataset is never replaced.
    """
    folder = Path(folder).expanduser()
    export = read_export(folder)
    if MANIFEST_FILE not in export["files"]:
        raise IcrlBenchError(f"{folder}: {EXPORT_FILE} does not list {MANIFEST_FILE}, so its hash cannot be checked; the export is corrupt.")
    verify_files(folder, export)
    try:
        raw = json.loads((folder / MANIFEST_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IcrlBenchError(f"{folder}: {MANIFEST_FILE} is not valid JSON ({err}); the export is corrupt.") from None
    manifest = parse_manifest(raw, folder / MANIFEST_FILE, "the export is corrupt; nothing was imported.")
    dataset_id = manifest.dataset_id
    if dataset_id != export.get("dataset_id"):
        raise IcrlBenchError(f"{folder}: {MANIFEST_FILE} is not the manifest of {export['dataset_id']}.")
    if manifest.content_hash != export["content_hash"]:
        raise IcrlBenchError(f"{folder}: the manifest's content hash differs from {EXPORT_FILE}'s; the export is corrupt.")
    check_expected_hash(dataset_id, manifest.content_hash, expected_hash)
    check_manifest_hash(dataset_id, manifest, expected_manifest_hash)
    root_dir = ensure_writable(data_root(root), "datasets", "staging")
    existing = local_content_hash(dataset_id, root)
    if existing == manifest.content_hash:
        return ImportResult(dataset_id, dataset_path(dataset_id, root), existing, True)
    refuse_to_replace(dataset_id, root, existing)
    staging_parent = root_dir / "staging"
    staging_parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(staging_parent, f"{dataset_id}.import-")
    try:
        group = _rebuild(folder, export, manifest, staging)
        _check_digests(dataset_id, group, manifest)
        group.attrs[MANIFEST_KEY] = manifest.to_dict()  # as the export lists it, key order included
        if origin:
            group.attrs["icrl_bench_origin"] = origin  # where it came from; not part of the manifest
        store.consolidate(staging)
        final = dataset_path(dataset_id, root)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError:
            refuse_to_replace(dataset_id, root, local_content_hash(dataset_id, root))
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportResult(dataset_id, final, manifest.content_hash, False)


def check_expected_hash(dataset_id: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise IcrlBenchError(
            f"{dataset_id} has content hash {actual[:12]}, but {expected[:12]} was expected (catalog or --hash); "
            "the remote holds another dataset than the one pinned: nothing was imported."
        )


def check_manifest_hash(dataset_id: str, manifest: Manifest, expected: str | None) -> None:
    """The manifest must match its recorded hash, and the pinned one if given: its fields (horizon,
    split, env facts) are covered by no array hash, so an edit with export.json resynced is caught here."""
    actual = manifest.computed_hash()
    for what, wanted in (("its own manifest_hash", manifest.manifest_hash), ("the catalog's pin", expected)):
        if wanted is not None and actual != wanted:
            raise IcrlBenchError(f"{dataset_id}: the manifest does not match {what} ({actual[:12]} vs {wanted[:12]}); "
                                 "it was edited: nothing was imported.")


def refuse_to_replace(dataset_id: str, root: str | os.PathLike | None, existing: str | None) -> None:
    if existing is None:
        return
    what = f"with content hash {existing[:12]}" if existing else "that cannot be read"
    raise IcrlBenchError(
        f"a different local dataset {dataset_id} {what} exists at {dataset_path(dataset_id, root)}; "
        f"it was left as it is: delete it first with `icrl-bench datasets delete {dataset_id}` to replace it."
    )


def _rebuild(folder: Path, export: dict[str, Any], manifest: Manifest, staging: Path) -> zarr.Group:
    """Fill a fresh store (the builder's chunking) from the Parquet shards, task by task."""
    n_tasks, n_streams, n_steps = manifest.shape.n_tasks, manifest.shape.n_streams, manifest.shape.n_steps
    columns = [Column(n, c["dtype"], tuple(c["tail"]), c["per_task"], c.get("doc", "")) for n, c in export["columns"].items()]
    if sorted(c.name for c in columns) != sorted(manifest.arrays):
        raise IcrlBenchError(f"{folder}: the export's columns are not the manifest's arrays; the export is corrupt.")
    group = store.create(staging, [c.spec() for c in columns], n_tasks, n_streams, n_steps)
    seen = np.zeros(n_tasks, dtype=bool)
    per_task: dict[str, np.ndarray] = {c.name: np.zeros(group[c.name].shape, dtype=c.dtype) for c in columns if c.per_task}
    shards = sorted(name for name in export["files"] if name.endswith(".parquet"))
    for name in shards:
        try:
            _import_shard(pq.read_table(folder / name), columns, group, per_task, seen, n_streams, n_steps)
        except (ValueError, KeyError, IndexError, pa.ArrowException) as err:
            raise IcrlBenchError(f"{name} does not hold valid rows of {manifest.dataset_id} ({err}); nothing was imported.") from None
    if not seen.all():
        raise IcrlBenchError(f"the export lacks task rows {np.flatnonzero(~seen).tolist()[:10]}; nothing was imported.")
    for column_name, values in per_task.items():
        group[column_name][:] = values
    return group


def _import_shard(table: pa.Table, columns: list[Column], group: zarr.Group, per_task: dict[str, np.ndarray], seen: np.ndarray, n_streams: int, n_steps: int) -> None:
    task_row = table.column("task_row").to_numpy()
    stream = table.column("stream").to_numpy()
    order = np.lexsort((stream, task_row))
    task_row, stream = task_row[order], stream[order]
    tasks, counts = np.unique(task_row, return_counts=True)
    if len(tasks) and (tasks[0] < 0 or tasks[-1] >= len(seen)):
        raise ValueError(f"task rows outside 0..{len(seen) - 1}")
    if (counts != n_streams).any() or (stream != np.tile(np.arange(n_streams), len(tasks))).any():
        raise ValueError(f"every task needs streams 0..{n_streams - 1} exactly once in one shard")
    if seen[tasks].any():
        raise ValueError(f"task rows {tasks[seen[tasks]].tolist()[:10]} appear twice")
    seen[tasks] = True
    for column in columns:
        values = _from_arrow(table.column(column.name), column, n_steps)[order]
        if column.per_task:
            firsts = values[::n_streams]
            if (np.repeat(firsts, n_streams, axis=0) != values).any():
                raise ValueError(f"per-task column {column.name!r} differs between streams of one task")
            per_task[column.name][tasks] = firsts
            continue
        blocks = values.reshape((len(tasks), n_streams) + values.shape[1:])  # [task, stream, step, *tail]
        for i, row in enumerate(tasks):
            group[column.name][int(row)] = blocks[i]


def _check_digests(dataset_id: str, group: zarr.Group, manifest: Manifest) -> None:
    recorded = {name: meta.sha256 for name, meta in manifest.arrays.items()}
    actual = store.digests(group, sorted(recorded))
    bad = [name for name in sorted(recorded) if actual[name] != recorded[name]]
    if bad:
        raise IcrlBenchError(
            f"{dataset_id}: arrays {', '.join(bad)} do not match the manifest's sha256 after import; "
            "the remote files were altered: nothing was imported."
        )
    if store.content_hash(actual) != manifest.content_hash:
        raise IcrlBenchError(f"{dataset_id}: the manifest's content hash does not match its arrays; nothing was imported.")
