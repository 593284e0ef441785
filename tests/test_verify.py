"""`verify` catches any changed byte and names the array; corrupt stores give clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from icrl_bench.data.dataset import list_local, load_dataset
from icrl_bench.data.store import CorruptArrayError
from icrl_bench.errors import IcrlBenchError


@pytest.fixture
def copy_root(tiny_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_root / "datasets", tmp_path / "datasets")
    return tmp_path


def _chunk_files(root: Path, array: str) -> list[Path]:
    return sorted(p for p in (root / "datasets" / "darkroom-tiny-v3" / array).rglob("*") if p.is_file() and p.name != "zarr.json")


def test_verify_passes_on_an_intact_dataset(copy_root):
    ds = load_dataset("darkroom-tiny-v3", root=copy_root)
    assert ds.verify() == ds.manifest["content_hash"]


@pytest.mark.parametrize("array", ["reward", "obs", "optimal_action", "task_params"])
@pytest.mark.parametrize("position", [0.0, 0.5, 0.99])
def test_a_single_flipped_byte_fails_naming_the_array(copy_root, array, position):
    chunk = _chunk_files(copy_root, array)[0]
    data = bytearray(chunk.read_bytes())
    data[int(position * (len(data) - 1))] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptArrayError, match=f"array '{array}'") as info:
        load_dataset("darkroom-tiny-v3", root=copy_root).verify()
    assert info.value.array == array


def test_a_chunk_rewritten_with_other_valid_values_fails_too(copy_root):
    import zarr

    group = zarr.open_group(store=str(copy_root / "datasets" / "darkroom-tiny-v3"), mode="r+", zarr_format=3)
    values = group["action"][2]
    values[0, 0] = (values[0, 0] + 1) % 5
    group["action"][2] = values
    with pytest.raises(CorruptArrayError, match="array 'action' does not match its recorded sha256"):
        load_dataset("darkroom-tiny-v3", root=copy_root).verify()


def test_an_edited_manifest_hash_is_caught(copy_root):
    meta = copy_root / "datasets" / "darkroom-tiny-v3" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["icrl_bench"]["content_hash"] = "0" * 64
    meta.write_text(json.dumps(doc))
    with pytest.raises(IcrlBenchError, match="manifest's content hash does not match"):
        load_dataset("darkroom-tiny-v3", root=copy_root).verify()


def test_an_edited_manifest_field_is_caught_by_the_manifest_hash(copy_root):
    """The horizon, split and env facts are in no array hash: an edit once passed `verify`."""
    meta = copy_root / "datasets" / "darkroom-tiny-v3" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["icrl_bench"]["env_spec"]["horizon"] = 40
    meta.write_text(json.dumps(doc))
    with pytest.raises(IcrlBenchError, match="do not match its manifest_hash; the manifest was edited"):
        load_dataset("darkroom-tiny-v3", root=copy_root).verify()


def test_the_catalog_pins_the_manifest_of_the_shipped_dataset():
    """The pin is the hash of what is shipped; a rebuild (whose build facts differ) has the same one."""
    from icrl_bench.data.hub import load_catalog
    from icrl_bench.data.manifest import manifest_hash
    from icrl_bench.paths import REPO_ROOT

    shipped = json.loads((REPO_ROOT / "datasets" / "hub" / "darkroom" / "small-v3" / "icrl_bench" / "manifest.json").read_text())
    assert load_catalog().datasets["darkroom-small-v3"].manifest_hash == manifest_hash(shipped)
    rebuilt = {**shipped, "build": {"wall_time_s": 1.0}, "provenance": {"code_commit": "other"}, "manifest_hash": "x"}
    assert manifest_hash(rebuilt) == manifest_hash(shipped)
    assert manifest_hash({**shipped, "description": "other"}) != manifest_hash(shipped)


def test_corrupt_or_foreign_directories_are_named_not_crashed_on(tmp_path):
    (tmp_path / "datasets" / "empty-v1").mkdir(parents=True)
    broken = tmp_path / "datasets" / "broken-v1"
    broken.mkdir()
    (broken / "zarr.json").write_text("{ not json")
    plain = tmp_path / "datasets" / "plain-v1"
    import zarr

    zarr.open_group(store=str(plain), mode="w", zarr_format=3)
    with pytest.raises(IcrlBenchError, match="not an icrl-bench dataset"):
        load_dataset("empty-v1", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="corrupt|not an icrl-bench dataset"):
        load_dataset("broken-v1", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="no manifest"):
        load_dataset("plain-v1", root=tmp_path)
    assert [(e.dataset_id, e.manifest) for e in list_local(tmp_path)] == [("broken-v1", None), ("empty-v1", None), ("plain-v1", None)]


def test_unknown_ids_suggest_close_local_ones_or_the_build_command(tiny_root):
    with pytest.raises(IcrlBenchError, match="Did you mean 'darkroom-tiny-v3'"):
        load_dataset("darkroom-tiny-v1", root=tiny_root)
    # Published in the catalog: a download comes first, the rebuild second.
    with pytest.raises(IcrlBenchError, match="download it with `icrl-bench datasets download darkroom-small-v3` "
                                             r"\(or build it with `icrl-bench build-dataset darkroom --preset small`\)"):
        load_dataset("darkroom-small-v3", root=tiny_root)
    with pytest.raises(IcrlBenchError, match="download it with `icrl-bench datasets download darkroom-small-v2`.$"):
        load_dataset("darkroom-small-v2", root=tiny_root)  # superseded: no recipe rebuilds it
    with pytest.raises(IcrlBenchError, match="not built under .*; build it with `icrl-bench build-dataset darkroom`.$"):
        load_dataset("darkroom-v3", root=tiny_root)  # listed, but not published: build only
    with pytest.raises(IcrlBenchError, match="--preset small --seed 3"):
        load_dataset("darkroom-small-seed3-v3", root=tiny_root)


def test_a_corrupt_chunk_is_a_one_line_error_where_data_is_read(tiny_root, tmp_path):
    """A flipped byte in a chunk once surfaced as a raw `RuntimeError: Zstd ...` traceback."""
    import shutil

    from typer.testing import CliRunner

    from icrl_bench.cli import app
    from icrl_bench.data.sampler import SamplerConfig, WindowSampler

    shutil.copytree(tiny_root / "datasets", tmp_path / "datasets")
    chunks = [c for array in ("obs", "reward") for c in (tmp_path / "datasets" / "darkroom-tiny-v3" / array / "c").rglob("*")]
    for chunk in chunks:  # every row has obs and reward chunks
        if chunk.is_file():
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0xFF
            chunk.write_bytes(bytes(data))
    ds = load_dataset("darkroom-tiny-v3", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="a chunk of array 'obs' cannot be decoded.*datasets delete darkroom-tiny-v3"):
        ds["obs"][0]
    with pytest.raises(IcrlBenchError, match="cannot be decoded"):
        WindowSampler("darkroom-tiny-v3", tmp_path, SamplerConfig(window=8, batch_size=4), ("obs", "action", "reward", "next_obs")).batch(0)
    result = CliRunner().invoke(app, ["datasets", "info", "darkroom-tiny-v3", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "cannot be decoded" in result.output and "Traceback" not in result.output


def test_a_deleted_chunk_file_is_refused_on_open_not_read_as_zeros(copy_root):
    """Zarr reads a missing chunk as its fill value (0): a deleted file once made rewards silently vanish."""
    from typer.testing import CliRunner

    from icrl_bench.cli import app

    rewards = _chunk_files(copy_root, "reward")
    assert len(rewards) == 9  # every task's chunk is written, a task without rewards too
    rewards[4].unlink()
    with pytest.raises(IcrlBenchError, match="incomplete: 1 chunk file.*'reward'.*datasets delete darkroom-tiny-v3"):
        load_dataset("darkroom-tiny-v3", root=copy_root)
    result = CliRunner().invoke(app, ["datasets", "info", "darkroom-tiny-v3", "--root", str(copy_root)])
    assert result.exit_code == 1 and "incomplete" in result.output and "Traceback" not in result.output
