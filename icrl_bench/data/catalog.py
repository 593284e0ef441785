"""The dataset catalog (`datasets/catalog.yaml`): which dataset ids are published where, pinned by hash.

Read without the Hub libraries or torch, so that `datasets list --remote`, `datasets show` and the
"not built" error can name what the catalog offers on a machine with only the core install.
`hub.download_dataset` resolves ids through it; this module never touches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from icrl_bench.data.manifest import Manifest, Shape
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import CATALOG_ENV_VAR, DATASET_ID_PATTERN, catalog_path


class CatalogEntry(BaseModel):
    """One known dataset: where it is published (or how to build it) and the content hash that pins it.

    An entry without a remote pins a dataset too large to ship and not yet pushed: its hash is
    what the project's own build made, so leaderboard entries trained on it can be checked.
    """

    model_config = ConfigDict(extra="forbid")
    repo: str | None = Field(None, description="ORG/NAME on the Hub, an hf:// URL, or a directory remote (./path: beside the catalog)")
    revision: str | None = Field(None, description="the tag (or commit) that pins this version")
    build: str | None = Field(None, description="the command that builds it, for entries not published to a remote")
    content_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    manifest_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="manifest.manifest_hash of its manifest")
    shape: Shape | None = Field(None, description="tasks x streams x steps (the manifest's shape)")
    download_bytes: int | None = Field(None, ge=0, description="bytes a download moves (the export's files); published entries only")
    torch_cpu_capability: str | None = Field(None, description="ATen's CPU kernels the pinned bytes were built with (a build's "
                                             "manifest records its own), e.g. AVX2: a rebuild needs the same")
    description: str = ""

    @model_validator(mode="after")
    def _published_or_buildable(self) -> CatalogEntry:
        if (self.repo is None) != (self.revision is None) or (self.repo is None and self.build is None):
            raise ValueError("an entry needs repo and revision, or (not published yet) build")
        return self

    @property
    def where(self) -> str:
        """`repo@revision`, or `not published (build: ...)`."""
        return f"{self.repo}@{self.revision}" if self.repo else f"not published (build: {self.build})"


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = 1
    datasets: dict[str, CatalogEntry] = {}


def load_catalog(path: str | os.PathLike | None = None) -> Catalog:
    where = catalog_path(path)
    if not where.is_file():
        raise IcrlBenchError(f"no dataset catalog at {where}; set {CATALOG_ENV_VAR} or download by ORG/NAME@REVISION.")
    try:
        catalog = Catalog.model_validate(yaml.safe_load(where.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as err:
        raise IcrlBenchError(f"catalog {where} is invalid: {' '.join(str(err).splitlines()[:3])}") from None
    for dataset_id in catalog.datasets:
        if not DATASET_ID_PATTERN.match(dataset_id):
            raise IcrlBenchError(f"catalog {where}: {dataset_id!r} is not a dataset id (<family>[-<preset>]...-v<N>).")
    return catalog


def catalog_entry(dataset_id: str, catalog: str | os.PathLike | None = None) -> CatalogEntry | None:
    """The catalog's entry for `dataset_id`, or None where it lists none (or there is no readable catalog).

    For hints ("download it instead"): a broken catalog must not hide the error it would add to.
    """
    try:
        return load_catalog(catalog).datasets.get(dataset_id)
    except IcrlBenchError:
        return None


def entry_directory(entry: CatalogEntry, catalog: str | os.PathLike | None = None) -> Path | None:
    """The local folder of a published revision when its remote is a directory beside the catalog (else None)."""
    if entry.repo is None or not entry.repo.startswith(("./", "../")):
        return None
    folder = catalog_path(catalog).parent / entry.repo / str(entry.revision)
    return folder if folder.is_dir() else None


def remote_manifest(entry: CatalogEntry, catalog: str | os.PathLike | None = None) -> Manifest | None:
    """The manifest of a published revision, where it can be read without the network (a directory
    remote); None where it cannot (a Hub remote, a missing or corrupt file: `download` says which)."""
    folder = entry_directory(entry, catalog)
    try:
        return Manifest.model_validate(json.loads((folder / "icrl_bench" / "manifest.json").read_text())) if folder else None
    except (OSError, ValueError):  # unreadable, not JSON, or not a manifest (ValidationError is a ValueError)
        return None


def published_hash_check(dataset_id: str, content_hash: str, catalog: str | os.PathLike | None = None,
                         manifest_hash: str | None = None, cpu_capability: str | None = None) -> tuple[bool, str] | None:
    """Whether a local dataset has the content (and manifest) its catalog entry pins: (equal, message), or None if the catalog does not list it.

    `cpu_capability` is the ATen kernels the local build ran; where the entry names others, the
    message says how to rebuild with those (the one difference a user can undo by a setting).
    """
    try:
        entry = load_catalog(catalog).datasets.get(dataset_id)
    except IcrlBenchError:
        return None
    if entry is None:
        return None
    if entry.content_hash == content_hash and manifest_hash is not None and entry.manifest_hash not in (None, manifest_hash):
        return False, (f"{dataset_id} has the published arrays but another manifest ({manifest_hash[:12]}, catalog "
                       f"{entry.manifest_hash[:12]}): the recipe's description, split or env facts changed without a version bump.")
    if entry.content_hash == content_hash:
        return True, f"{dataset_id} has exactly the published content (catalog hash {content_hash[:12]})."
    pinned = entry.torch_cpu_capability
    if pinned and cpu_capability and pinned.lower() != cpu_capability.lower() and entry.build:
        get = (f"this build ran ATen's {cpu_capability} kernels, the published one {pinned}: `icrl-bench datasets delete {dataset_id}`, "
               f"then `ATEN_CPU_CAPABILITY={pinned.lower()} {entry.build}` (enough on some CPUs, not all: MKL picks its own path)")
    elif entry.repo:
        get = f"`icrl-bench datasets delete {dataset_id}` then `icrl-bench datasets download {dataset_id}`"
    elif pinned and cpu_capability:  # the same ATen kernels: MKL (or torch, or the device) took another path
        get = (f"the build ran the published ATen kernels ({pinned}), so MKL's own path on this CPU differs (seen on Intel "
               "AVX512 Xeons); rebuild on an AVX2 CPU or an AMD Zen 5 (measured), or check the torch version")
    else:
        get = "a build on the hardware class the catalog entry names"
    return False, (
        f"{dataset_id} differs from the published dataset: hash {content_hash[:12]}, catalog {entry.content_hash[:12]} "
        f"(another CPU instruction set, torch version or device gives other float bits; see docs/datasets.md). "
        f"For the published bytes: {get}."
    )
