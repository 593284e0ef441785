"""The dataset manifest's schema: every manifest ever written reads back byte for byte, and a corrupt
one is refused in one line that names the file and the fix."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.manifest import MANIFEST_KEY, Manifest, manifest_hash, parse_manifest, read_store_manifest
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import REPO_ROOT

SHIPPED = sorted((REPO_ROOT / "datasets" / "hub").glob("*/*/icrl_bench/manifest.json"))
TINY = "darkroom-tiny-v3"


def exact(manifest: dict) -> str:
    """The JSON text a manifest is stored as (key order included)."""
    return json.dumps(manifest)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parts[-3])
def test_shipped_manifests_read_back_exactly_and_keep_their_hash(path: Path):
    """small-v2 predates manifest_hash and the env's kind; small-v3 has both; both are sorted (an export's order)."""
    raw = json.loads(path.read_text())
    manifest = Manifest.model_validate(raw)
    assert exact(manifest.to_dict()) == exact(raw)
    assert raw.get("manifest_hash") in (None, manifest.computed_hash())


def test_a_built_manifest_reads_back_exactly(tiny_root: Path):
    raw = json.loads((tiny_root / "datasets" / TINY / "zarr.json").read_text())["attributes"][MANIFEST_KEY]
    manifest = load_dataset(TINY, root=tiny_root).manifest
    assert exact(manifest.to_dict()) == exact(raw) and list(raw)[:3] == ["format", "format_version", "dataset_id"]
    assert manifest.manifest_hash == manifest.computed_hash() == manifest_hash(raw)
    assert manifest["content_hash"] == manifest.content_hash and manifest["shape"] == {"n_tasks": 9, "n_streams": 4, "n_steps": 200}
    assert read_store_manifest(tiny_root / "datasets" / TINY) == manifest


def shuffled(value, rng: random.Random):
    """`value` with the keys of every dict in another order (a manifest may come sorted, or in the builder's order)."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: shuffled(value[key], rng) for key in keys}
    return value


@st.composite
def manifests(draw) -> dict:
    """Manifests as any version of the builder or importer wrote them: optional fields present or not,
    an env's own facts, any key order, values of the right types."""
    m = json.loads(SHIPPED[-1].read_text())  # published before manifest_hash existed
    for key in ("kind", "obs_dim", "action_dim"):
        if draw(st.booleans()):
            del m["env_spec"][key]
    facts = draw(st.dictionaries(st.from_regex(r"[a-z_]{3,12}", fullmatch=True).filter(lambda k: k not in m["env_spec"]),
                                 st.one_of(st.text(max_size=20), st.integers(), st.lists(st.text(max_size=5), max_size=3)), max_size=3))
    m["env_spec"].update(facts)
    m["build"] = draw(st.sampled_from([
        {"wall_time_s": None, "workers": 1, "device": "cpu"},
        {"device": "cpu", "wall_time_s": 46.469, "workers": 2},
        {"wall_time_s": 2.5, "executor": "ray", "workers": 8, "retried_jobs": 1, "device": "cuda", "torch_threads": 1,
         "torch_cpu_capability": "mixed: AVX2, AVX512", "workers_numerics": [{"torch_threads": 1, "torch_cpu_capability": "AVX2"}]},
    ]))
    m["description"] = draw(st.text(max_size=60))
    m["seeds"]["base"] = draw(st.one_of(st.none(), st.integers(0, 2**31)))
    m["split"]["train_ratio"] = draw(st.floats(0.01, 0.99))
    m["source"]["hyperparameters"] = draw(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()), max_size=4))
    if draw(st.booleans()):
        m["imported_from"] = {"format": "dicp-hdf5", "file": draw(st.text(max_size=10)), "sha256": "ab" * 32, "next_obs_fix": "x",
                              "optimal_action": "from the file", "optimal_action_disagreements": draw(st.integers(0, 10**6))}
    if draw(st.booleans()):
        m["manifest_hash"] = manifest_hash(m)  # as a build since 2026-11-30 writes it
    return shuffled(m, random.Random(draw(st.integers())))


@given(raw=manifests())
@settings(max_examples=60, deadline=None)
def test_any_manifest_round_trips_exactly_and_its_hash_is_stable(raw):
    manifest = Manifest.model_validate(raw)
    assert exact(manifest.to_dict()) == exact(raw)  # the same bytes when written back
    assert manifest.computed_hash() == manifest_hash(raw)
    assert Manifest.model_validate(json.loads(json.dumps(raw))) == manifest


def test_a_non_finite_hyperparameter_reads_back_as_written():
    """Python's json writes inf as Infinity; the model once gave it back as null, changing the manifest's hash."""
    raw = json.loads(SHIPPED[-1].read_text())
    raw["source"]["hyperparameters"] = {"target_kl": float("inf"), "floor": float("-inf")}
    manifest = Manifest.model_validate(raw)
    assert exact(manifest.to_dict()) == exact(raw) and manifest.computed_hash() == manifest_hash(raw)


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (lambda m: m.pop("shape"), "shape: Field required"),
        (lambda m: m.update(colour="blue"), "colour: Extra inputs are not permitted"),
        (lambda m: m["arrays"]["obs"].pop("sha256"), "arrays.obs.sha256: Field required"),
        (lambda m: m["split"].update(train="all"), "split.train: Input should be a valid list"),
        (lambda m: m.update(content_hash="not-a-hash"), "content_hash: String should match pattern"),
    ],
)
def test_a_corrupt_manifest_is_refused_in_one_line_naming_the_file_and_the_fix(tiny_root: Path, tmp_path: Path, corrupt, problem):
    root = tmp_path / "root"
    shutil.copytree(tiny_root / "datasets", root / "datasets")
    meta = root / "datasets" / TINY / "zarr.json"
    doc = json.loads(meta.read_text())
    corrupt(doc["attributes"][MANIFEST_KEY])
    meta.write_text(json.dumps(doc))
    with pytest.raises(IcrlBenchError) as info:
        load_dataset(TINY, root=root)
    message = str(info.value)
    assert "\n" not in message and str(meta) in message and problem in message
    assert f"icrl-bench datasets delete {TINY}" in message
    assert read_store_manifest(meta.parent) is None  # the leaderboard counts it as no known dataset


def test_a_manifest_that_is_no_object_is_refused_in_one_line():
    with pytest.raises(IcrlBenchError, match=r"^x/manifest.json is not the manifest of an icrl-bench dataset \(\(top level\): Input should be "
                                             r"a valid dictionary.*\); fix it$"):
        parse_manifest([1, 2], "x/manifest.json", "fix it")
