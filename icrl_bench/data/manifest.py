"""The dataset manifest: what a store says about its data, as one typed schema.

The manifest lives in the Zarr group's attributes (`zarr.json`, key `MANIFEST_KEY`) and, in an
export, as `icrl_bench/manifest.json`. The builder and the importers write it through `Manifest`
(`data/build.py: finalize`), and every reader (opening a dataset, an import or download, the
leaderboard's list of known datasets) parses it through `Manifest`, so a file with a missing or
unknown field is refused in one line naming the file and the fix.

Fields added after the first datasets were published are optional (`manifest_hash`, the env's
`kind` and dimensions, the build's executor and numerics): an older manifest reads as it is, and
`Manifest.to_dict()` gives back exactly the JSON it was read from, which is what `manifest_hash`
is computed over. Needs pydantic only (no Zarr, no torch): the leaderboard reads manifests too.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from icrl_bench.documents import Document, OpenDocument, first_problem
from icrl_bench.errors import IcrlBenchError
from icrl_bench.provenance import Provenance

MANIFEST_KEY = "icrl_bench"  # the group attribute that holds the manifest
FORMAT_NAME = "icrl-bench-dataset"
FORMAT_VERSION = 1
MANIFEST_UNHASHED = ("manifest_hash", "build", "provenance")
"""Manifest fields outside its hash: the hash itself, and how and where this copy was made."""
SHA256 = r"^[0-9a-f]{64}$"


def manifest_hash(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without `MANIFEST_UNHASHED`: what the data *is*
    (recipe, source, shape, env facts, split, array hashes) and nothing about when it was made, so
    a rebuild of the same recipe has the same manifest hash."""
    fields = {k: v for k, v in manifest.items() if k not in MANIFEST_UNHASHED}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Shape(Document):
    """A dataset's extent: learning histories of n_steps transitions, n_streams per task."""

    n_tasks: int = Field(gt=0)
    n_streams: int = Field(gt=0)
    n_steps: int = Field(gt=0)

    @property
    def transitions(self) -> int:
        return self.n_tasks * self.n_streams * self.n_steps


class Source(Document):
    name: str
    hyperparameters: dict[str, Any]


class Seeds(Document):
    base: int | None  # None: imported histories, seeded as their own code did
    rule: str


class ImportedFrom(Document):
    """Where an imported dataset's histories came from (the official DICP HDF5 files)."""

    format: str
    file: str
    sha256: str
    next_obs_fix: str
    optimal_action: str
    optimal_action_disagreements: int


class Build(Document):
    """How this copy was made; outside the manifest hash (a rebuild elsewhere has the same data)."""

    wall_time_s: float | None
    executor: str | None = None
    workers: int
    retried_jobs: int | None = None
    device: str
    torch_threads: int | None = None  # what a source's float bits depend on (`build.numerics`)
    torch_cpu_capability: str | None = None
    cuda: dict[str, Any] | None = None
    workers_numerics: list[dict[str, Any]] | None = None  # jobs that ran on different CPU kernels


class EnvSpec(OpenDocument):
    """The env's constants; an env family adds its own facts (`env_facts()`, e.g. Meta-World's)."""

    gym_id: str
    kind: str | None = None  # absent before continuous envs existed: discrete
    horizon: int
    obs_dim: int | None = None
    action_dim: int | None = None
    param_names: list[str]
    n_env_tasks: int


class Split(Document):
    seed: int
    train_ratio: float | None = None  # the grid worlds' rule; Meta-World has its own split
    rule: str
    train: list[int]
    test: list[int]


class ArrayFacts(Document):
    shape: list[int]
    dtype: str
    chunks: list[int]
    sha256: str = Field(pattern=SHA256)
    doc: str


class Manifest(Document):
    """A dataset's manifest, in the order the builder writes it."""

    format: Literal[FORMAT_NAME]
    format_version: int
    dataset_id: str
    family: str
    env: str
    version: int
    preset: str | None
    description: str
    recipe: dict[str, Any] | None  # the build plan (`recipes.BuildPlan.to_dict`); None for imports
    source: Source
    seeds: Seeds
    imported_from: ImportedFrom | None = None
    build: Build
    shape: Shape
    env_spec: EnvSpec
    split: Split
    next_obs_at_episode_end: str
    arrays: dict[str, ArrayFacts]
    content_hash: str = Field(pattern=SHA256)
    provenance: Provenance
    manifest_hash: str | None = Field(None, pattern=SHA256)  # absent in datasets made before 2026-11-30

    @classmethod
    def build_new(cls, fields: dict[str, Any]) -> Manifest:
        """A new manifest from its fields, with its `manifest_hash` computed over them."""
        unhashed = cls.model_validate(fields).to_dict()
        return cls.model_validate({**unhashed, "manifest_hash": manifest_hash(unhashed)})

    @cached_property
    def json_data(self) -> dict[str, Any]:
        """`to_dict()`, computed once (the manifest is frozen)."""
        return self.to_dict()

    def __getitem__(self, key: str) -> Any:
        """The stored JSON's value at `key`: `ds.manifest["content_hash"]` reads as it did when manifests were dicts."""
        return self.json_data[key]

    def computed_hash(self) -> str:
        """`manifest_hash` of this manifest's fields as they are now (equal to the recorded one unless edited)."""
        return manifest_hash(self.json_data)


def parse_manifest(data: Any, where: str | Path, fix: str) -> Manifest:
    """`data` as a Manifest, or a one-line error naming `where` (the file it came from) and `fix`."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise IcrlBenchError(f"{where} is not the manifest of an icrl-bench dataset ({first_problem(err)}); {fix}") from None


def is_dataset_attributes(raw: Any) -> bool:
    """Whether a group's manifest attribute claims to be an icrl-bench manifest (else: a foreign Zarr group)."""
    return isinstance(raw, dict) and raw.get("format") == FORMAT_NAME


def read_store_manifest(store: Path) -> Manifest | None:
    """The manifest of the store at `store`, read from its `zarr.json` without Zarr; None where
    there is none that parses (no file, another kind of group, a corrupt manifest)."""
    try:
        raw = json.loads((store / "zarr.json").read_text()).get("attributes", {}).get(MANIFEST_KEY)
        return Manifest.model_validate(raw)
    except (OSError, ValueError, AttributeError):  # ValidationError is a ValueError
        return None
