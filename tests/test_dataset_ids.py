"""Dataset ids: one pattern, format and parse are inverses; hashing is content-only."""

from __future__ import annotations

import numpy as np
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from icrl_bench.data import store
from icrl_bench.data.recipes import format_dataset_id, parse_dataset_id, resolve


@given(family=st.sampled_from(["darkroom", "darkroom-permuted", "dark-key-to-door"]), preset=st.sampled_from([None, "small", "tiny"]), seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_resolve_then_parse_is_the_identity(family, preset, seed):
    plan = resolve(family, preset, seed=seed)
    assert parse_dataset_id(plan.dataset_id) == plan
    assert plan.dataset_id.endswith("-v3") and plan.dataset_id.startswith(family)


def test_ids_name_everything_that_changes_the_data():
    assert format_dataset_id("darkroom", 1) == "darkroom-v1"
    assert format_dataset_id("darkroom", 2, "small", "sb3-ppo", 3) == "darkroom-small-sb3-ppo-seed3-v2"
    assert parse_dataset_id("darkroom-v4") is None  # no recipe makes version 4
    assert parse_dataset_id("darkroom-huge-v1") is None
    assert parse_dataset_id("Darkroom_v1") is None
    assert parse_dataset_id("darkroom-permuted-small-v3").family == "darkroom-permuted"


@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 7)),
    chunk=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 7)),
    seed=st.integers(0, 100),
)
@settings(max_examples=25, deadline=None)
def test_array_hash_depends_on_content_not_chunking(tmp_path_factory, shape, chunk, seed):
    values = np.random.default_rng(seed).integers(0, 255, size=shape, dtype=np.uint8)
    digests = []
    for chunks in (shape, tuple(min(c, s) for c, s in zip(chunk, shape))):
        group = zarr.open_group(store=str(tmp_path_factory.mktemp("z")), mode="w", zarr_format=3)
        array = group.create_array("a", shape=shape, chunks=chunks, dtype="uint8")
        array[:] = values
        digests.append(store.array_digest("a", array))
    assert digests[0] == digests[1]
    flipped = values.copy()
    flipped.flat[0] ^= 1
    group = zarr.open_group(store=str(tmp_path_factory.mktemp("z")), mode="w", zarr_format=3)
    array = group.create_array("a", shape=shape, chunks=shape, dtype="uint8")
    array[:] = flipped
    assert store.array_digest("a", array) != digests[0]
