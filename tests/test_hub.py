"""Sharing datasets: HF Datasets export/import, push and download through directory remotes and the
Hub's cache, integrity checks, spec parsing, and every bad input as one line."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# `datasets` copies Parquet into its cache when loading: keep that out of the user's home
# (set before anything imports `datasets`; the loads below also pass cache_dir).
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="icrl-bench-test-hf-datasets-")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icrl_bench.cli import app
from icrl_bench.data import hf_export, hub
from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.manifest import manifest_hash
from icrl_bench.errors import IcrlBenchError

TINY = "darkroom-tiny-v3"
REPO = "test-org/icrl-darkroom"
runner = CliRunner()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def split_root(tmp_path_factory) -> Path:
    """A root whose `darkroom-tiny-v3` has train AND test tasks (other content than the real tiny:
    also the "different local dataset with the same id" of the bad-input tests)."""
    from icrl_bench.data.build import run_plan
    from icrl_bench.data.recipes import resolve

    root = tmp_path_factory.mktemp("split-root")
    plan = dataclasses.replace(resolve("darkroom", "tiny"), tasks=[0, 5, 9, 38])  # 5 and 38 are test tasks
    run_plan(plan, workers=1, root=root, show_progress=False)
    return root


@pytest.fixture(scope="module")
def export_dir(tiny_root, tmp_path_factory) -> Path:
    """The tiny dataset exported in several shards (read-only: copy before altering)."""
    out = tmp_path_factory.mktemp("export") / TINY
    hf_export.export_hf(TINY, out, root=tiny_root, shard_bytes=8_000)
    return out


@pytest.fixture(scope="module")
def remote(tiny_root, tmp_path_factory) -> Path:
    """A directory remote (MIRROR/ORG/NAME/<tag>/...) with the tiny dataset pushed to it."""
    mirror = tmp_path_factory.mktemp("mirror")
    hub.push_dataset(TINY, str(mirror / REPO), root=tiny_root, allow_dirty=True)
    return mirror


@pytest.fixture
def tampered_remote(remote, tmp_path) -> Path:
    mirror = tmp_path / "mirror"
    shutil.copytree(remote, mirror)
    return mirror


def _tag_dir(mirror: Path) -> Path:
    return mirror / REPO / "tiny-v3"


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: to show a failure left the data root as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _published(root: Path) -> list[str]:
    directory = root / "datasets"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def _staging_leftovers(root: Path) -> list[str]:
    directory = root / "staging"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def _hub_cache_from(mirror: Path, cache: Path, tag: str = "tiny-v3") -> str:
    """Lay out `mirror`'s repo like the Hub's cache (refs/<tag> -> snapshots/<commit>/...)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"datasets--{REPO.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / tag).write_text(commit)
    shutil.copytree(mirror / REPO / tag, repo_dir / "snapshots" / commit)
    return commit


# --------------------------------------------------------------------------- export / import


def test_export_then_import_gives_the_same_content_hash(tiny_root, export_dir, tmp_path):
    original = load_dataset(TINY, root=tiny_root)
    export = hf_export.read_export(export_dir)
    shards = sorted(name for name in export["files"] if name.endswith(".parquet"))
    assert len(shards) > 1 and all(name.startswith("data/train-") for name in shards)  # tiny has train tasks only
    assert sum(export["files"][name]["rows"] for name in shards) == original.n_tasks * original.n_streams
    result = hf_export.import_hf(export_dir, root=tmp_path)
    assert result.content_hash == original.manifest["content_hash"] and not result.already_present
    imported = load_dataset(TINY, root=tmp_path)
    assert imported.verify() == original.manifest["content_hash"]
    assert imported.manifest == original.manifest
    for name in original.array_names:
        assert imported[name].chunks == original[name].chunks  # the builder's chunking: fast to read
        np.testing.assert_array_equal(imported[name][:], original[name][:])
    assert hf_export.import_hf(export_dir, root=tmp_path).already_present


def test_dataset_card_has_the_hub_header_and_a_description(export_dir):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(export_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["task_categories"] == ["reinforcement-learning"]
    assert "icrl-bench" in data["tags"] and "darkroom" in data["tags"]
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    info = data["dataset_info"]
    assert {f["name"] for f in info["features"]} >= {"obs", "action", "reward", "next_obs", "done", "task_row", "stream"}
    assert info["splits"][0]["num_examples"] == 36
    assert "batched-ppo" in card.text and "content hash" in card.text.lower() and "load_dataset" in card.text


def test_datasets_library_reads_the_export(split_root, tmp_path):
    import datasets

    out = tmp_path / "export"
    hf_export.export_hf(TINY, out, root=split_root)
    original = load_dataset(TINY, root=split_root)
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].num_rows == 2 * 4 and loaded["test"].num_rows == 2 * 4  # tasks x streams
    table = loaded["test"].with_format("arrow")[:]
    assert str(table.schema.field("action").type) == "list<item: uint8>"  # the dtype survives
    row, stream = table["task_row"][0].as_py(), table["stream"][0].as_py()
    assert original.split[row] == 1
    np.testing.assert_array_equal(np.array(table["obs"][0].as_py()), original["obs"][row, stream])
    np.testing.assert_array_equal(np.array(table["done"][0].as_py()), original["done"][row, stream])
    plain = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), cache_dir=str(tmp_path / "hf-cache"))
    assert plain["train"].num_rows == 16
    assert hf_export.import_hf(out, root=tmp_path / "back").content_hash == original.manifest["content_hash"]


def test_export_refuses_an_existing_folder_and_a_corrupt_dataset(tiny_root, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(IcrlBenchError, match="already exists"):
        hf_export.export_hf(TINY, tmp_path / "taken", root=tiny_root)
    assert (tmp_path / "taken" / "file").read_text() == "mine"
    root = tmp_path / "root"
    shutil.copytree(tiny_root / "datasets", root / "datasets")
    chunk = next(p for p in (root / "datasets" / TINY / "reward").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(IcrlBenchError, match="reward"):
        hf_export.export_hf(TINY, tmp_path / "out", root=root)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# --------------------------------------------------------------------------- push and download


def test_push_then_download_round_trips_through_a_directory_remote(tiny_root, remote, tmp_path):
    tag_dir = _tag_dir(remote)
    assert (tag_dir / "README.md").is_file() and (tag_dir / hf_export.MANIFEST_FILE).is_file()
    expected = load_dataset(TINY, root=tiny_root).manifest["content_hash"]
    for i, spec in enumerate([f"{remote / REPO}@tiny-v3", f"file://{remote / REPO}@tiny-v3", str(remote / REPO)]):
        result = hub.download_dataset(spec, root=tmp_path / str(i))
        assert result.content_hash == expected and not result.already_present
        assert load_dataset(TINY, root=tmp_path / str(i)).verify() == expected
    again = hub.download_dataset(f"{remote / REPO}@tiny-v3", root=tmp_path / "0")
    assert again.already_present
    mirrored = hub.download_dataset(f"{REPO}@tiny-v3", root=tmp_path / "m", mirror=remote)
    assert mirrored.content_hash == expected


def test_a_directory_remote_card_loads_from_its_folder_and_cites_the_papers(remote, tmp_path):
    import datasets

    tag_dir = _tag_dir(remote)
    text = (tag_dir / "README.md").read_text()
    assert f'load_dataset("{tag_dir}")' in text and "file://" not in text and f"icrl-bench datasets download {TINY}" in text
    assert "@inproceedings{son2025dicp" in text and "@article{laskin2022ad" in text and "released under `cc-by-4.0`" in text
    loaded = datasets.load_dataset(str(tag_dir), cache_dir=str(tmp_path / "hf-cache"))  # what the card says, works
    assert loaded["train"].num_rows > 0  # the tiny dataset has no test tasks
    before = (tag_dir / hf_export.EXPORT_FILE).read_bytes()
    (tag_dir / "README.md").write_text(text.replace("## Citation", "## Old citation"))
    hf_export.refresh_card(tag_dir, local_dir="datasets/hub/x/tiny-v3")
    refreshed = (tag_dir / "README.md").read_text()
    assert 'load_dataset("datasets/hub/x/tiny-v3")' in refreshed and "## Citation" in refreshed and "## Old citation" not in refreshed
    assert refreshed.split("---")[1] == text.split("---")[1] and (tag_dir / hf_export.EXPORT_FILE).read_bytes() == before  # header, data untouched


def test_download_by_catalog_id(tiny_root, remote, tmp_path, monkeypatch):
    expected = load_dataset(TINY, root=tiny_root).manifest["content_hash"]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"datasets": {TINY: {"repo": REPO, "revision": "tiny-v3", "content_hash": expected}}}))
    monkeypatch.setenv(hub.MIRROR_ENV_VAR, str(remote))
    result = hub.download_dataset(TINY, root=tmp_path / "root", catalog=catalog)
    assert result.content_hash == expected
    rows = hub.catalog_status(catalog, root=tmp_path / "root")
    assert rows == [
        {"dataset_id": TINY, "repo": REPO, "revision": "tiny-v3", "build": None, "content_hash": expected, "manifest_hash": None,
         "shape": None, "download_bytes": None, "torch_cpu_capability": None, "description": "", "local": "present"}
    ]
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"datasets": {TINY: {"repo": REPO, "revision": "tiny-v3", "content_hash": "0" * 64}}}))
    with pytest.raises(IcrlBenchError, match="another dataset than the one pinned"):
        hub.download_dataset(TINY, root=tmp_path / "other", catalog=wrong)
    assert _published(tmp_path / "other") == []
    with pytest.raises(IcrlBenchError, match="not in the catalog"):
        hub.download_dataset("darkroom-v7", root=tmp_path / "other", catalog=catalog)


def test_the_shipped_catalog_is_valid_and_pretends_nothing():
    catalog = hub.load_catalog(hub.DEFAULT_CATALOG)
    for entry in catalog.datasets.values():
        if entry.repo is None:  # not published: it must say how to build it, with the recipe's own command
            assert entry.build.startswith("icrl-bench build-dataset ")
            continue
        assert "ORG" not in entry.repo and "placeholder" not in entry.repo.lower()


def test_an_unpublished_catalog_entry_says_how_to_build_it(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    command = "icrl-bench build-dataset darkroom --preset tiny"
    catalog.write_text(yaml.safe_dump({"datasets": {TINY: {"build": command, "content_hash": "a" * 64}}}))
    with pytest.raises(IcrlBenchError, match=f"{TINY} is not published to a remote yet; build it: {command} .*aaaaaaaaaaaa"):
        hub.download_dataset(TINY, root=tmp_path / "root", catalog=catalog)
    catalog.write_text(yaml.safe_dump({"datasets": {TINY: {"content_hash": "a" * 64}}}))
    with pytest.raises(IcrlBenchError, match="is invalid.*needs repo and revision, or .*build"):
        hub.load_catalog(catalog)


def test_offline_mode_downloads_from_the_hub_cache(tiny_root, remote, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf-hub-cache"
    commit = _hub_cache_from(remote, cache)
    expected = load_dataset(TINY, root=tiny_root).manifest["content_hash"]
    by_tag = hub.download_dataset(f"{REPO}@tiny-v3", root=tmp_path / "a", cache_dir=cache)
    by_commit = hub.download_dataset(f"hf://datasets/{REPO}@{commit}", root=tmp_path / "b", cache_dir=cache)
    assert by_tag.content_hash == by_commit.content_hash == expected
    with pytest.raises(IcrlBenchError, match="HF_HUB_OFFLINE is set and test-org/icrl-darkroom@v2 is not in the Hugging Face cache"):
        hub.download_dataset(f"{REPO}@v2", root=tmp_path / "c", cache_dir=cache)
    with pytest.raises(IcrlBenchError, match="not in the Hugging Face cache"):
        hub.download_dataset("test-org/never-downloaded@v1", root=tmp_path / "c", cache_dir=cache)
    assert _published(tmp_path / "c") == []


def test_a_tampered_file_in_the_hub_cache_is_caught(remote, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf-hub-cache"
    commit = _hub_cache_from(remote, cache)
    shard = next((cache / f"datasets--{REPO.replace('/', '--')}" / "snapshots" / commit / "data").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(IcrlBenchError, match=f"{shard.name} does not match its sha256"):
        hub.download_dataset(f"{REPO}@tiny-v3", root=tmp_path / "root", cache_dir=cache)
    assert _published(tmp_path / "root") == [] and _staging_leftovers(tmp_path / "root") == []


def test_no_network_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(IcrlBenchError, match="cannot reach the Hugging Face Hub"):
        hub.download_dataset(f"{REPO}@v1", root=tmp_path, cache_dir=tmp_path / "empty-cache", endpoint="http://127.0.0.1:9")


def test_a_flipped_byte_is_caught_and_nothing_is_published(tampered_remote, split_root, tmp_path):
    shard = min((_tag_dir(tampered_remote) / "data").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    root = tmp_path / "root"
    with pytest.raises(IcrlBenchError, match=f"data/{shard.name} does not match its sha256"):
        hub.download_dataset(f"{tampered_remote / REPO}@tiny-v3", root=root)
    assert _published(root) == [] and _staging_leftovers(root) == []


def test_altered_values_with_rewritten_file_hashes_are_caught_by_the_array_digests(tampered_remote, tmp_path):
    """An attacker who also rewrites export.json's file hashes still fails the manifest's array hashes."""
    tag_dir = _tag_dir(tampered_remote)
    shard = min((tag_dir / "data").glob("*.parquet"))
    table = pq.read_table(shard)
    rewards = table.column("reward").combine_chunks()
    flipped = pc.list_flatten(rewards).to_numpy().copy()
    flipped[0] ^= 1
    import pyarrow as pa

    new_rewards = pa.ListArray.from_arrays(rewards.offsets, pa.array(flipped))
    table = table.set_column(table.schema.get_field_index("reward"), table.schema.field("reward"), new_rewards)
    pq.write_table(table, shard)
    export = json.loads((tag_dir / hf_export.EXPORT_FILE).read_text())
    export["files"][f"data/{shard.name}"] |= hf_export.file_record(shard)
    (tag_dir / hf_export.EXPORT_FILE).write_text(json.dumps(export))
    root = tmp_path / "root"
    with pytest.raises(IcrlBenchError, match="arrays reward do not match the manifest's sha256"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=root)
    assert _published(root) == [] and _staging_leftovers(root) == []


def _edit_manifest(tag_dir: Path, change, rehash: bool) -> None:
    """Edit the exported manifest and resync its sha256 in export.json (and, with `rehash`, its own manifest_hash)."""
    path = tag_dir / hf_export.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    if rehash:
        manifest["manifest_hash"] = manifest_hash(manifest)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    export = json.loads((tag_dir / hf_export.EXPORT_FILE).read_text())
    export["files"][hf_export.MANIFEST_FILE] |= hf_export.file_record(path)
    (tag_dir / hf_export.EXPORT_FILE).write_text(json.dumps(export))


def _double_horizon(manifest: dict) -> None:
    manifest["env_spec"]["horizon"] *= 2  # no array hash covers it


def test_an_edited_manifest_with_its_file_hash_resynced_is_refused(tampered_remote, tmp_path):
    tag_dir = _tag_dir(tampered_remote)
    _edit_manifest(tag_dir, _double_horizon, rehash=False)
    root = tmp_path / "root"
    with pytest.raises(IcrlBenchError, match="manifest does not match its own manifest_hash"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=root)
    assert _published(root) == [] and _staging_leftovers(root) == []


def test_a_catalog_pinned_manifest_hash_catches_an_edit_that_rewrote_every_hash(remote, tampered_remote, tmp_path):
    pinned = manifest_hash(json.loads((_tag_dir(remote) / hf_export.MANIFEST_FILE).read_text()))
    content = json.loads((_tag_dir(remote) / hf_export.EXPORT_FILE).read_text())["content_hash"]

    def catalog(mirror: Path) -> Path:
        path = tmp_path / f"catalog-{mirror.name}.yaml"
        entry = {"repo": str(mirror / REPO), "revision": "tiny-v3", "content_hash": content, "manifest_hash": pinned}
        path.write_text(yaml.safe_dump({"format_version": 1, "datasets": {TINY: entry}}))
        return path

    assert hub.download_dataset(TINY, root=tmp_path / "ok", catalog=catalog(remote)).content_hash == content  # the pin holds as published
    _edit_manifest(_tag_dir(tampered_remote), _double_horizon, rehash=True)
    root = tmp_path / "root"
    with pytest.raises(IcrlBenchError, match="manifest does not match the catalog's pin"):
        hub.download_dataset(TINY, root=root, catalog=catalog(tampered_remote))
    assert _published(root) == [] and _staging_leftovers(root) == []


def test_an_export_record_that_drops_the_manifest_is_refused(tampered_remote, tmp_path):
    tag_dir = _tag_dir(tampered_remote)
    export = json.loads((tag_dir / hf_export.EXPORT_FILE).read_text())
    del export["files"][hf_export.MANIFEST_FILE]
    (tag_dir / hf_export.EXPORT_FILE).write_text(json.dumps(export))
    with pytest.raises(IcrlBenchError, match="does not list icrl_bench/manifest.json"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=tmp_path / "root")


@pytest.mark.parametrize("manifest_text", ["{not json", "[1, 2]", "{}"])
def test_a_garbage_manifest_with_its_hash_resynced_is_one_line(tampered_remote, tmp_path, manifest_text):
    tag_dir = _tag_dir(tampered_remote)
    (tag_dir / hf_export.MANIFEST_FILE).write_text(manifest_text)
    export = json.loads((tag_dir / hf_export.EXPORT_FILE).read_text())
    export["files"][hf_export.MANIFEST_FILE] |= hf_export.file_record(tag_dir / hf_export.MANIFEST_FILE)
    (tag_dir / hf_export.EXPORT_FILE).write_text(json.dumps(export))
    with pytest.raises(IcrlBenchError, match="manifest.json (is not valid JSON|is not the manifest)"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=tmp_path / "root")


@pytest.mark.parametrize("files", [[1, 2], {"data/x.parquet": 3}, {"data/x.parquet": {"size": 1}}])
def test_an_export_record_with_malformed_file_entries_is_one_line(tampered_remote, tmp_path, files):
    tag_dir = _tag_dir(tampered_remote)
    export = json.loads((tag_dir / hf_export.EXPORT_FILE).read_text())
    export["files"] = files
    (tag_dir / hf_export.EXPORT_FILE).write_text(json.dumps(export))
    with pytest.raises(IcrlBenchError, match="does not list its files with their size and sha256"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=tmp_path / "root")


def test_a_cut_or_missing_file_is_one_line(tampered_remote, tmp_path):
    tag_dir = _tag_dir(tampered_remote)
    shards = sorted((tag_dir / "data").glob("*.parquet"))
    shards[0].write_bytes(shards[0].read_bytes()[:-50])
    with pytest.raises(IcrlBenchError, match="bytes, expected .* the download was cut"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=tmp_path / "root")
    shards[0].unlink()
    with pytest.raises(IcrlBenchError, match="is missing from .* the download is incomplete"):
        hub.download_dataset(f"{tag_dir.parent}@tiny-v3", root=tmp_path / "root")
    assert _published(tmp_path / "root") == []


def test_a_different_local_dataset_is_never_replaced(remote, split_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(split_root / "datasets", root / "datasets")
    before = _snapshot(root)
    with pytest.raises(IcrlBenchError, match="a different local dataset darkroom-tiny-v3 .* was left as it is"):
        hub.download_dataset(f"{remote / REPO}@tiny-v3", root=root)
    assert _snapshot(root) == before


def test_an_interrupted_import_leaves_nothing(export_dir, tmp_path, monkeypatch):
    from icrl_bench.data import store

    def interrupt(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "consolidate", interrupt)  # Ctrl-C at the last step before the rename
    with pytest.raises(KeyboardInterrupt):
        hf_export.import_hf(export_dir, root=tmp_path)
    assert _published(tmp_path) == [] and _staging_leftovers(tmp_path) == []


def test_unknown_repo_revision_and_foreign_repo(remote, tmp_path):
    with pytest.raises(IcrlBenchError, match="has no revision 'v9'; it has tiny-v3"):
        hub.download_dataset(f"{remote / REPO}@v9", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="no dataset repo at"):
        hub.download_dataset(f"{remote}/test-org/nothing-here@v1", root=tmp_path)
    foreign = tmp_path / "foreign" / "v1"
    (foreign / "data").mkdir(parents=True)
    (foreign / "README.md").write_text("---\nlicense: mit\n---\nSome other dataset.\n")
    (foreign / "data" / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(IcrlBenchError, match="is not an icrl-bench dataset"):
        hub.download_dataset(f"{tmp_path / 'foreign'}@v1", root=tmp_path)
    assert _published(tmp_path) == []


def test_push_refuses_an_existing_version_a_revision_and_a_missing_token(tiny_root, remote, tmp_path, monkeypatch):
    before = _snapshot(remote)
    with pytest.raises(IcrlBenchError, match="already exists and a published version is never overwritten"):
        hub.push_dataset(TINY, str(remote / REPO), root=tiny_root, allow_dirty=True)
    assert _snapshot(remote) == before
    with pytest.raises(IcrlBenchError, match="without @REVISION"):
        hub.push_dataset(TINY, f"{REPO}@v1", root=tiny_root)
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # not the user's login
    with pytest.raises(IcrlBenchError, match="needs a token"):
        hub.push_dataset(TINY, REPO, root=tiny_root, allow_dirty=True)
    with pytest.raises(IcrlBenchError, match="is not under .*download it with"):
        hub.push_dataset("darkroom-small-v3", str(tmp_path / "r"), root=tiny_root)


# --------------------------------------------------------------------------- parsing

NAME = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,18}[A-Za-z0-9])?", fullmatch=True).filter(lambda s: ".." not in s and "--" not in s)
REV = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}(/[A-Za-z0-9][A-Za-z0-9._-]{0,8})?", fullmatch=True)


@given(org=NAME, name=NAME, revision=st.none() | REV)
@settings(max_examples=80, deadline=None)
def test_hub_specs_parse_and_format_back(org, name, revision):
    text = f"{org}/{name}" + (f"@{revision}" if revision else "")
    spec = hub.parse_remote(text)
    assert spec == hub.RemoteSpec("hub", f"{org}/{name}", revision)
    assert str(spec) == text and hub.parse_remote(str(spec)) == spec


@given(org=NAME, name=NAME, revision=st.none() | REV)
@settings(max_examples=50, deadline=None)
def test_hf_urls_parse_like_repo_ids(org, name, revision):
    # parse_hf_uri treats "@rev/more" as revision + path, so URLs take slash-free revisions
    revision = revision.split("/")[0] if revision else None
    at = f"@{revision}" if revision else ""
    assert hub.parse_remote(f"hf://datasets/{org}/{name}{at}") == hub.RemoteSpec("hub", f"{org}/{name}", revision)


@given(parts=st.lists(NAME, min_size=1, max_size=4), revision=st.none() | NAME)
@settings(max_examples=50, deadline=None)
def test_directory_specs_and_file_urls_agree(parts, revision):
    path = "/" + "/".join(parts)
    at = f"@{revision}" if revision else ""
    spec = hub.parse_remote(path + at)
    assert spec.kind == "dir" and spec.location == str(Path(path).resolve()) and spec.revision == revision
    assert hub.parse_remote(f"file://{path}{at}") == spec
    assert hub.parse_remote(str(spec)) == spec


@given(text=st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_any_text_parses_or_fails_in_one_line(text):
    try:
        spec = hub.parse_remote(text)
    except IcrlBenchError as err:
        assert "\n" not in str(err)
    else:
        assert spec.kind in ("hub", "dir")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("~no-such-user-here/mirror", "cannot expand the home directory"),
        ("a/b/c", "is not a dataset source"),
        ("org/name@", "invalid revision"),
        ("org/na me", "is not a dataset source"),
        ("org/name-", "is not a dataset source"),
        ("hf://models/org/name", "not a dataset repo"),
        ("hf://datasets/org/name@v1/data/x.parquet", "names a file inside a repo"),
        ("file://otherhost/x@v1", "only local file:// URLs"),
        ("../x/../..@", "invalid revision"),
    ],
)
def test_bad_specs_are_one_line(bad, message):
    with pytest.raises(IcrlBenchError, match=message):
        hub.parse_remote(bad)


def test_catalog_ids_resolve_through_the_catalog(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"datasets": {"darkroom-v1": {"repo": "hf://datasets/org/icrl-darkroom", "revision": "v1", "content_hash": "a" * 64}}}))
    target = hub.resolve_spec("darkroom-v1", catalog)
    assert target == hub.Target(hub.RemoteSpec("hub", "org/icrl-darkroom", "v1"), "darkroom-v1", "a" * 64)
    assert hub.resolve_spec("org/icrl-darkroom@v1", catalog).dataset_id is None
    catalog.write_text(yaml.safe_dump({"datasets": {"darkroom-v1": {"repo": "org/x", "revision": "v1", "content_hash": "nothex"}}}))
    with pytest.raises(IcrlBenchError, match="is invalid"):
        hub.resolve_spec("darkroom-v1", catalog)


@pytest.mark.parametrize("dataset_id, tag", [("darkroom-v1", "v1"), ("darkroom-small-v3", "small-v3"), ("dark-key-to-door-tiny-v3", "tiny-v3")])
def test_version_tags(dataset_id, tag):
    family = "dark-key-to-door" if dataset_id.startswith("dark-key") else "darkroom"
    assert hf_export.version_tag(dataset_id, family) == tag


# --------------------------------------------------------------------------- CLI


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_cli_export_push_download_list(tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "export"
    exported = cli("datasets", "export", TINY, "--format", "hf", "--out", str(out), "--root", str(tiny_root))
    assert exported.exit_code == 0, exported.output
    assert "exported darkroom-tiny-v3" in exported.output and (out / "README.md").is_file()
    mirror = tmp_path / "mirror"
    pushed = cli("datasets", "push", TINY, "--repo", str(mirror / REPO), "--root", str(tiny_root), "--allow-dirty")
    assert pushed.exit_code == 0, pushed.output
    assert "revision tiny-v3" in pushed.output
    again = cli("datasets", "push", TINY, "--repo", str(mirror / REPO), "--root", str(tiny_root), "--allow-dirty")
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output
    downloaded = cli("datasets", "download", f"{REPO}@tiny-v3", "--mirror", str(mirror), "--root", str(tmp_path / "root"))
    assert downloaded.exit_code == 0, downloaded.output
    assert "downloaded darkroom-tiny-v3" in downloaded.output
    present = cli("datasets", "download", f"file://{mirror / REPO}@tiny-v3", "--root", str(tmp_path / "root"))
    assert present.exit_code == 0 and "already at" in present.output
    content_hash = load_dataset(TINY, root=tiny_root).manifest["content_hash"]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"datasets": {TINY: {"repo": REPO, "revision": "tiny-v3", "content_hash": content_hash}}}))
    monkeypatch.setenv(hub.CATALOG_ENV_VAR, str(catalog))
    listing = cli("datasets", "list", "--remote", "--root", str(tmp_path / "root"))
    assert listing.exit_code == 0, listing.output
    assert TINY in listing.output and "present" in listing.output


def test_cli_errors_are_one_line(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CATALOG_ENV_VAR, str(tmp_path / "catalog.yaml"))
    (tmp_path / "catalog.yaml").write_text("datasets: {}\n")
    cases = [
        (("datasets", "export", TINY, "--format", "hdf5", "--out", str(tmp_path / "o"), "--root", str(tiny_root)), "unknown export format"),
        (("datasets", "download", "darkroom-v1", "--root", str(tmp_path)), "not in the catalog"),
        (("datasets", "download", "org/nothing@v1", "--mirror", str(tmp_path / "mirror"), "--root", str(tmp_path)), "no dataset repo"),
        (("datasets", "download", "not a spec/", "--root", str(tmp_path)), "not a dataset source"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    empty = cli("datasets", "list", "--remote")
    assert empty.exit_code == 0 and "lists no published datasets" in " ".join(empty.output.split())


def test_missing_hub_extra_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from typer.testing import CliRunner\n"
        "from icrl_bench.cli import app\n"
        f"r = CliRunner().invoke(app, ['datasets', 'export', 'x-v1', '--out', {str(tmp_path / 'o')!r}])\n"
        "print(r.exit_code, r.output)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert "pip install 'icrl-bench[hub]'" in result.stdout and result.stdout.startswith("1 "), result.stdout + result.stderr


SHIPPED = sorted(k for k, e in hub.load_catalog(hub.DEFAULT_CATALOG).datasets.items() if e.repo and e.repo.startswith(("./", "../")))


@pytest.mark.parametrize("dataset_id", SHIPPED)
def test_datasets_shipped_in_the_repository_download_and_verify(dataset_id, tmp_path):
    """A catalog entry whose repo is a directory beside the catalog resolves from there."""
    pinned = hub.load_catalog(hub.DEFAULT_CATALOG).datasets[dataset_id].content_hash
    result = hub.download_dataset(dataset_id, root=tmp_path)
    assert (result.dataset_id, result.content_hash) == (dataset_id, pinned)
    assert load_dataset(dataset_id, root=tmp_path).verify() == pinned


def test_relative_catalog_repos_resolve_beside_the_catalog(tmp_path):
    catalog = tmp_path / "cat" / "catalog.yaml"
    catalog.parent.mkdir()
    catalog.write_text(yaml.safe_dump({"datasets": {TINY: {"repo": "./hub/darkroom", "revision": "tiny-v3", "content_hash": "0" * 64}}}))
    target = hub.resolve_spec(TINY, catalog)
    assert target.remote.kind == "dir" and target.remote.location == str((tmp_path / "cat" / "hub" / "darkroom").resolve())


def test_push_refuses_a_dataset_built_from_uncommitted_code(tiny_root, tmp_path):
    import shutil

    import zarr

    root = tmp_path / "root"
    shutil.copytree(tiny_root / "datasets", root / "datasets")
    group = zarr.open_group(str(root / "datasets" / TINY), mode="r+", zarr_format=3)
    manifest = dict(group.attrs["icrl_bench"])
    manifest["provenance"] = {**manifest["provenance"], "code_commit": "0123abc-dirty"}
    group.attrs["icrl_bench"] = manifest
    with pytest.raises(IcrlBenchError, match="built from a checkout with uncommitted changes \\(0123abc-dirty\\).*Commit, rebuild"):
        hub.push_dataset(TINY, str(tmp_path / "remote" / REPO), root=root)
    result = cli("datasets", "push", TINY, "--repo", str(tmp_path / "remote" / REPO), "--root", str(root))
    assert result.exit_code == 1 and "uncommitted changes" in result.output
