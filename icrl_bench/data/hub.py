"""Sharing datasets: where a dataset lives (remote specs, the catalog), push, download.

A remote is a Hugging Face dataset repo (`ORG/NAME`, `hf://datasets/ORG/NAME@REV`) or a
directory laid out like one, one folder per revision (`DIR/REV/README.md`, `DIR/REV/data/...`;
given as a path or a `file://` URL) for mirrors, air-gapped clusters and tests. Both remotes
only move the files of an export folder (see `hf_export`); everything else, reading the
export record, checking every hash, rebuilding and publishing the Zarr store, is one code path.

A family has one repo; each dataset in it is pinned by a git tag made from its id without the
family (`darkroom-v3` -> `@v3`, `darkroom-small-v3` -> `@small-v3`). A push never moves an
existing tag. Downloads go through the Hub's own cache (resumable, shared with other HF tools,
`HF_HUB_OFFLINE=1` reads only the cache).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from icrl_bench.data.catalog import Catalog, CatalogEntry, load_catalog  # noqa: F401 (re-exported)
from icrl_bench.data.dataset import dataset_path, load_dataset
from icrl_bench.data.describe import catalog_status  # noqa: F401 (re-exported)
from icrl_bench.errors import IcrlBenchError, missing_extra
from icrl_bench.paths import CATALOG_ENV_VAR, DEFAULT_CATALOG, catalog_path, repo_relative  # noqa: F401 (re-exported)

try:
    from huggingface_hub import HfApi, constants, get_token, snapshot_download
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.utils import parse_hf_uri, validate_repo_id
except ImportError as _err:  # the hub extra is optional
    raise missing_extra(_err, "hub", "sharing datasets") from None

from icrl_bench.data import hf_export

MIRROR_ENV_VAR = "ICRL_BENCH_MIRROR"
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
REVISION = re.compile(r"^[A-Za-z0-9._/-]+$")
REPO_TYPE = "dataset"
# The export record and manifest are fetched first: a repo that is not an icrl-bench dataset,
# or holds another dataset than the catalog pins, is refused before any data is downloaded.
HEAD_FILES = [hf_export.EXPORT_FILE, hf_export.MANIFEST_FILE]


# --------------------------------------------------------------------------- remote specs


@dataclass(frozen=True)
class RemoteSpec:
    """Where a dataset lives: a Hub repo id or a directory remote, and a revision (None: default)."""

    kind: Literal["hub", "dir"]
    location: str  # ORG/NAME for the Hub; an absolute directory path for a directory remote
    revision: str | None = None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"{self.location}{at}" if self.kind == "hub" else f"file://{urllib.parse.quote(self.location)}{at}"


def _directory(location: str, spec: str) -> str:
    """A directory remote's absolute path, or a one-line error saying why `location` is none."""
    try:
        return str(Path(location).expanduser().resolve())
    except RuntimeError:  # "~user/..." for a user this machine does not know
        raise IcrlBenchError(f"{spec!r}: cannot expand the home directory in {location!r}; give an absolute path.") from None
    except ValueError:  # an embedded NUL byte, which no path can hold
        raise IcrlBenchError(f"{spec!r} is not a dataset source: a path cannot hold a NUL byte.") from None


def parse_remote(spec: str) -> RemoteSpec:
    """`ORG/NAME[@REV]`, `hf://datasets/ORG/NAME[@REV]`, `file:///DIR[@REV]` or a path `/DIR[@REV]`.

    A relative directory must start with `./` or `../`, so `a/b` is always a Hub repo id.
    """
    text = spec.strip()
    if text.startswith(("hf://", "https://")):
        return _parse_hf_uri(text)
    if text.startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise IcrlBenchError(f"{spec!r}: only local file:// URLs are supported (file:///path/to/repo@REV).")
        location, revision = _split_revision(urllib.parse.unquote(parsed.path), spec)
        return RemoteSpec("dir", _directory(location, spec), revision)
    if text.startswith(("/", "./", "../", "~")):
        location, revision = _split_revision(text, spec)
        return RemoteSpec("dir", _directory(location, spec), revision)
    location, revision = _split_revision(text, spec, hub=True)
    if not HUB_REPO_ID.match(location) or not _valid_repo_id(location):
        raise IcrlBenchError(
            f"{spec!r} is not a dataset source: use ORG/NAME[@REVISION], hf://datasets/ORG/NAME[@REVISION], "
            "a directory (/path or ./path, file:// URL), or a dataset id from the catalog (`icrl-bench datasets list --remote`)."
        )
    return RemoteSpec("hub", location, revision)


def _split_revision(text: str, spec: str, hub: bool = False) -> tuple[str, str | None]:
    """Split off `@REVISION`: the first `@` of a Hub spec (revisions such as refs/pr/1 hold
    slashes), the last `@` of a directory's last component (parent folders may hold `@`)."""
    if hub:
        head, sep, revision = text.partition("@")
    else:
        head, sep, revision = text.rpartition("@") if "@" in text.rsplit("/", 1)[-1] else (text, "", "")
    if not sep:
        return text.rstrip("/"), None
    if not revision or not REVISION.match(revision) or not head:
        raise IcrlBenchError(f"{spec!r} has an invalid revision {revision!r}; use a tag (v1), a branch or a commit.")
    return head.rstrip("/"), revision


def _valid_repo_id(repo_id: str) -> bool:
    try:
        validate_repo_id(repo_id)  # the Hub's own rule (no leading/trailing '-' or '.', no '--' or '..')
    except hf_errors.HFValidationError:
        return False
    return True


def _parse_hf_uri(text: str) -> RemoteSpec:
    try:
        uri = parse_hf_uri(text)
    except (hf_errors.HfUriError, ValueError) as err:
        raise IcrlBenchError(f"{text!r} is not a valid Hugging Face URL ({err}); use hf://datasets/ORG/NAME@REVISION.") from None
    if uri.type != REPO_TYPE:
        raise IcrlBenchError(f"{text!r} names a {uri.type}, not a dataset repo; use hf://datasets/ORG/NAME@REVISION.")
    if uri.path_in_repo:
        raise IcrlBenchError(f"{text!r} names a file inside a repo; download the whole repo: hf://datasets/{uri.id}@{uri.revision or 'REV'}.")
    return RemoteSpec("hub", uri.id, uri.revision)


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Target:
    """What a download spec resolves to: a remote, and what the catalog promises is there."""

    remote: RemoteSpec
    dataset_id: str | None = None
    content_hash: str | None = None
    manifest_hash: str | None = None


def resolve_spec(spec: str, catalog: str | os.PathLike | None = None) -> Target:
    """A dataset id is looked up in the catalog; anything else is parsed as a remote."""
    text = spec.strip()
    if "/" not in text and "://" not in text and "@" not in text:
        entries = load_catalog(catalog).datasets
        if text not in entries:
            known = ", ".join(sorted(entries)) or "none yet"
            raise IcrlBenchError(
                f"{text!r} is not in the catalog {catalog_path(catalog)} (it lists: {known}); "
                "download by ORG/NAME@REVISION, or see `icrl-bench datasets list --remote`."
            )
        entry = entries[text]
        if entry.repo is None:
            raise IcrlBenchError(
                f"{text} is not published to a remote yet; build it: {entry.build} "
                f"(the catalog pins its content hash {entry.content_hash[:12]})."
            )
        repo = entry.repo
        if repo.startswith(("./", "../")):
            # A directory remote shipped beside the catalog (e.g. in the repository itself).
            repo = str(catalog_path(catalog).parent / repo)
        remote = parse_remote(repo)
        return Target(RemoteSpec(remote.kind, remote.location, entry.revision), text, entry.content_hash, entry.manifest_hash)
    return Target(parse_remote(text))


# --------------------------------------------------------------------------- remotes


class Remote(Protocol):
    """The transport: moves the files of an export folder; knows nothing about datasets."""

    def describe(self, revision: str | None) -> str: ...

    def fetch(self, revision: str | None, files: list[str]) -> Path:
        """A local folder holding `files` of `revision` (a read-only snapshot)."""
        ...

    def check_push(self, tag: str) -> None:
        """Fail before any work if pushing `tag` cannot succeed (no token, tag exists)."""
        ...

    def push(self, folder: Path, tag: str, message: str) -> str:
        """Publish `folder` as revision `tag`; returns where it now lives."""
        ...


class HubRemote:
    """A dataset repo on the Hugging Face Hub (or an HF-compatible endpoint)."""

    def __init__(self, repo_id: str, token: str | None = None, cache_dir: str | os.PathLike | None = None, endpoint: str | None = None):
        self.repo_id = repo_id
        self.token = token
        self.cache_dir = cache_dir
        self.endpoint = endpoint

    def describe(self, revision: str | None) -> str:
        return f"{self.repo_id}@{revision or 'main'}"

    def fetch(self, revision: str | None, files: list[str]) -> Path:
        offline = hub_offline()
        try:
            folder = snapshot_download(
                self.repo_id, repo_type=REPO_TYPE, revision=revision, allow_patterns=files, cache_dir=self.cache_dir,
                token=self.token, endpoint=self.endpoint, local_files_only=offline,
            )
        except hf_errors.RevisionNotFoundError:
            raise IcrlBenchError(f"{self.repo_id} has no revision {revision!r}; see its tags on the Hub (e.g. @v1).") from None
        except hf_errors.GatedRepoError:
            raise IcrlBenchError(f"{self.repo_id} is gated: accept its terms on the Hub, then log in (`hf auth login`) or set HF_TOKEN.") from None
        except hf_errors.RepositoryNotFoundError:
            raise IcrlBenchError(
                f"no dataset repo {self.repo_id} on the Hub (or it is private: log in with `hf auth login` or set HF_TOKEN)."
            ) from None
        except hf_errors.IncompleteSnapshotError:
            raise IcrlBenchError(
                f"the cached copy of {self.describe(revision)} is incomplete (a cut download) and the Hub cannot be reached "
                "now; run the command again online to finish it."
            ) from None
        except hf_errors.LocalEntryNotFoundError:
            where = self.cache_dir or constants.HF_HUB_CACHE
            if offline:
                raise IcrlBenchError(
                    f"HF_HUB_OFFLINE is set and {self.describe(revision)} is not in the Hugging Face cache ({where}); "
                    "download it once online, or unset HF_HUB_OFFLINE."
                ) from None
            raise IcrlBenchError(
                f"cannot reach the Hugging Face Hub for {self.describe(revision)} and it is not in the cache ({where}); "
                "check the network (or HF_ENDPOINT), or use a mirror directory."
            ) from None
        except Exception as err:  # noqa: BLE001 - HTTP, connection (httpx), Xet and disk errors: the transport failed
            raise IcrlBenchError(
                f"downloading {self.describe(revision)} failed ({type(err).__name__}: {_first_line(err)}); "
                "run the command again: finished files are kept in the Hugging Face cache."
            ) from None
        return Path(folder)

    def _api(self) -> HfApi:
        return HfApi(endpoint=self.endpoint, token=self.token)

    def check_push(self, tag: str) -> None:
        if not (self.token or get_token()):
            raise IcrlBenchError("pushing to the Hub needs a token with write access: pass --token, set HF_TOKEN, or run `hf auth login`.")
        if hub_offline():
            raise IcrlBenchError("HF_HUB_OFFLINE is set: unset it to push to the Hub.")
        try:
            tags = [ref.name for ref in self._api().list_repo_refs(self.repo_id, repo_type=REPO_TYPE).tags]
        except hf_errors.RepositoryNotFoundError:
            return  # created by push
        except Exception as err:  # noqa: BLE001 - HTTP and connection errors
            raise IcrlBenchError(f"checking {self.repo_id} on the Hub failed ({type(err).__name__}: {_first_line(err)}).") from None
        if tag in tags:
            raise IcrlBenchError(_exists_message(f"{self.repo_id}@{tag}"))

    def push(self, folder: Path, tag: str, message: str) -> str:
        api = self._api()
        try:
            api.create_repo(self.repo_id, repo_type=REPO_TYPE, exist_ok=True)
            # The branch holds the latest push; the tag pins this one for good.
            commit = api.upload_folder(
                repo_id=self.repo_id, repo_type=REPO_TYPE, folder_path=folder, commit_message=message,
                delete_patterns=[f"{hf_export.DATA_DIR}/*", "icrl_bench/*"],
            )
            api.create_tag(self.repo_id, repo_type=REPO_TYPE, tag=tag, revision=commit.oid, tag_message=message)
        except hf_errors.HfHubHTTPError as err:
            if getattr(err.response, "status_code", None) == 409:
                raise IcrlBenchError(_exists_message(f"{self.repo_id}@{tag}")) from None
            raise IcrlBenchError(f"pushing to {self.repo_id} failed: {_first_line(err)}") from None
        except Exception as err:  # noqa: BLE001 - connection (httpx) and Xet errors
            raise IcrlBenchError(f"pushing to {self.repo_id} failed ({type(err).__name__}: {_first_line(err)}); run it again.") from None
        return f"{self.repo_id}@{tag}"


class DirRemote:
    """A directory laid out like a Hub dataset repo, one sub-folder per revision."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def describe(self, revision: str | None) -> str:
        return f"{self.path}@{revision}" if revision else str(self.path)

    def revisions(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def fetch(self, revision: str | None, files: list[str]) -> Path:
        if not self.path.is_dir():
            raise IcrlBenchError(f"no dataset repo at {self.path} (directory remote); check the path.")
        known = self.revisions()
        if revision is None:
            if len(known) != 1:
                raise IcrlBenchError(f"{self.path} holds revisions {', '.join(known) or 'none'}; pick one with @REVISION.")
            revision = known[0]
        if revision not in known:
            raise IcrlBenchError(f"{self.path} has no revision {revision!r}; it has {', '.join(known) or 'none'}.")
        return self.path / revision  # read in place: a local directory needs no cache

    def check_push(self, tag: str) -> None:
        if (self.path / tag).exists():
            raise IcrlBenchError(_exists_message(str(self.path / tag)))

    def push(self, folder: Path, tag: str, message: str) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        incoming = hf_export.temp_dir(self.path, f".{tag}.incoming-")
        try:
            shutil.copytree(folder, incoming, dirs_exist_ok=True)
            self.check_push(tag)
            os.rename(incoming, self.path / tag)  # atomic: readers see all of it or nothing
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return str(self.path / tag)


def _exists_message(where: str) -> str:
    return f"{where} already exists and a published version is never overwritten; bump the recipe's version to publish new data."


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def open_remote(
    spec: RemoteSpec,
    token: str | None = None,
    mirror: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> Remote:
    """The transport for `spec`; with a mirror directory, Hub repo ORG/NAME is read from MIRROR/ORG/NAME.

    A mirror serves downloads only; `download_dataset` also reads it from $ICRL_BENCH_MIRROR.
    """
    if spec.kind == "dir":
        return DirRemote(spec.location)
    if mirror:
        return DirRemote(Path(mirror).expanduser() / spec.location)
    return HubRemote(spec.location, token=token, cache_dir=cache_dir, endpoint=endpoint)


# --------------------------------------------------------------------------- push and download


@dataclass(frozen=True)
class PushResult:
    dataset_id: str
    where: str
    tag: str
    content_hash: str
    parquet_bytes: int


def push_dataset(
    dataset_id: str,
    repo: str,
    root: str | os.PathLike | None = None,
    token: str | None = None,
    license: str = "cc-by-4.0",
    endpoint: str | None = None,
    allow_dirty: bool = False,
) -> PushResult:
    """Export local dataset `dataset_id` and publish it in `repo` under its version tag.

    A dataset built from a dirty checkout is refused (`allow_dirty` is for tests): a published id
    promises bytes that its recipe rebuilds from committed code.
    """
    spec = parse_remote(repo)
    if spec.revision:
        raise IcrlBenchError(f"push takes a repo without @REVISION ({repo!r}); the tag comes from the dataset id.")
    ds = load_dataset(dataset_id, root)
    built_by = ds.manifest.provenance.code_commit or ""
    if built_by.endswith("-dirty") and not allow_dirty:
        raise IcrlBenchError(
            f"{dataset_id} was built from a checkout with uncommitted changes ({built_by}): nobody could rebuild the published bytes. "
            "Commit, rebuild it from the clean checkout, then push."
        )
    tag = hf_export.version_tag(ds.dataset_id, ds.manifest.family)
    remote = open_remote(spec, token=token, endpoint=endpoint)
    remote.check_push(tag)
    with tempfile.TemporaryDirectory(prefix="icrl-bench-push-") as tmp:
        export = hf_export.export_hf(
            dataset_id, Path(tmp) / "export", root=root, license=license,
            repo_id=spec.location if spec.kind == "hub" else None, revision=tag,
            local_dir=None if spec.kind == "hub" else repo_relative(Path(spec.location) / tag),
        )
        where = remote.push(export.path, tag, f"icrl-bench: {dataset_id} (content hash {export.content_hash[:12]})")
    return PushResult(dataset_id, where, tag, export.content_hash, export.parquet_bytes)


@dataclass(frozen=True)
class DownloadResult:
    dataset_id: str
    path: Path
    content_hash: str
    source: str
    already_present: bool


def download_dataset(
    spec: str,
    root: str | os.PathLike | None = None,
    catalog: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    expected_hash: str | None = None,
) -> DownloadResult:
    """Fetch a dataset by catalog id, repo spec or URL, verify everything, publish it locally.

    The export record comes first (a foreign repo or a hash other than the catalog's is
    refused before any data moves); a dataset already present with the same hash is not
    downloaded again; an existing local dataset is never replaced.
    """
    target = resolve_spec(spec, catalog)
    if expected_hash is not None and target.content_hash is not None and expected_hash != target.content_hash:
        raise IcrlBenchError(f"--hash {expected_hash[:12]} differs from the catalog's {target.content_hash[:12]} for {spec}.")
    expected = expected_hash or target.content_hash
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV_VAR) or None
    remote = open_remote(target.remote, token=token, mirror=mirror, cache_dir=cache_dir, endpoint=endpoint)
    revision = target.remote.revision
    where = remote.describe(revision)
    head = remote.fetch(revision, HEAD_FILES)
    if not (head / hf_export.EXPORT_FILE).is_file():
        raise IcrlBenchError(f"{where} is not an icrl-bench dataset (no {hf_export.EXPORT_FILE}); check the repo and revision.")
    export = hf_export.read_export(head)
    dataset_id = export["dataset_id"]
    if target.dataset_id is not None and dataset_id != target.dataset_id:
        raise IcrlBenchError(f"{where} holds {dataset_id}, not {target.dataset_id} as the catalog says; nothing was downloaded.")
    hf_export.check_expected_hash(dataset_id, export["content_hash"], expected)
    existing = hf_export.local_content_hash(dataset_id, root)
    if existing == export["content_hash"]:
        return DownloadResult(dataset_id, dataset_path(dataset_id, root), existing, where, True)
    hf_export.refuse_to_replace(dataset_id, root, existing)
    folder = remote.fetch(revision, sorted(export["files"]) + [hf_export.EXPORT_FILE])
    origin = {"source": where, "spec": spec}
    result = hf_export.import_hf(folder, root=root, expected_hash=expected, origin=origin, expected_manifest_hash=target.manifest_hash)
    return DownloadResult(result.dataset_id, result.path, result.content_hash, where, result.already_present)
