"""Data identity: a recipe version names exactly one content.

The `tiny` preset of every grid-world recipe, built here, must give the hash pinned below. A
change to data-producing code (env, source, oracle labels, schema) that changes these bytes
fails this test: bump the recipe's `version` in datasets/<family>.yaml (the ids change with it)
and pin the new hash, so no published id silently names new content.
"""

from __future__ import annotations

import pytest
import torch

from icrl_bench.data.build import build_dataset, run_job
from icrl_bench.data.recipes import resolve
from icrl_bench.sources import batched_ppo

GOLDEN = {
    # family: (recipe version, content hash of its tiny preset)
    "darkroom": (3, "851319d33fcbd5d1bd81d42d9de7e71ad979f644e0f32589ee542eaee370471f"),
    "darkroom-permuted": (3, "34d6b2d1c9ec2eca32c8708be81c4cfe72ee7aeb11dcfff4eec77c2c62ee75af"),
    "dark-key-to-door": (3, "aa6d808f453702b67c3cd7ae5b8505183ae2e527a190ac7aaa4b4d550512309e"),
}


@pytest.mark.parametrize("family", sorted(GOLDEN))
def test_tiny_preset_builds_the_pinned_bytes(family, tmp_path):
    version, expected = GOLDEN[family]
    plan = resolve(family, "tiny")
    assert plan.version == version, f"{family} moved to version {plan.version}: pin its new tiny hash here"
    result = build_dataset(family, "tiny", root=tmp_path, workers=1, show_progress=False)
    assert result.content_hash == expected, (
        f"{family}-tiny-v{version} now builds other bytes: bump `version` in datasets/{family}.yaml and pin the new hash"
    )


def test_every_cpu_job_trains_on_one_thread_whatever_the_caller_set(monkeypatch):
    """A job in the main process (`--workers 1`, a resume with one job left) must run like a worker's."""
    seen: list[int] = []
    real = batched_ppo.train_tasks

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(batched_ppo, "train_tasks", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_job(resolve("darkroom", "tiny").to_dict(), [0], "cpu")
        assert seen == [batched_ppo.CPU_THREADS] == [1]
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)


def test_build_dataset_says_whether_it_rebuilt_the_published_bytes(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from icrl_bench.cli import app

    tiny_hash = GOLDEN["darkroom"][1]
    catalog = tmp_path / "catalog.yaml"
    monkeypatch.setenv("ICRL_BENCH_CATALOG", str(catalog))
    for pinned, expected in [(tiny_hash, "has exactly the published content"), ("0" * 64, "differs from the published dataset")]:
        catalog.write_text(yaml.safe_dump({"datasets": {"darkroom-tiny-v3": {"build": "icrl-bench build-dataset darkroom --preset tiny",
                                                                             "content_hash": pinned}}}))
        result = CliRunner().invoke(app, ["build-dataset", "darkroom", "--preset", "tiny", "--workers", "1", "--quiet", "--root", str(tmp_path / "root")])
        assert result.exit_code == 0 and expected in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("local, names_the_setting", [("AVX512", True), ("AVX2", False), (None, False)])
def test_a_mismatch_names_the_kernel_setting_only_when_the_kernels_differ(tmp_path, local, names_the_setting):
    import yaml

    from icrl_bench.data.catalog import published_hash_check

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"datasets": {"darkroom-v3": {
        "build": "icrl-bench build-dataset darkroom", "content_hash": "a" * 64, "torch_cpu_capability": "AVX2"}}}))
    equal, message = published_hash_check("darkroom-v3", "b" * 64, catalog, cpu_capability=local)
    assert not equal and "differs from the published dataset" in message
    hint = "ATEN_CPU_CAPABILITY=avx2 icrl-bench build-dataset darkroom"
    assert (hint in message) == names_the_setting, message
    assert ("so MKL's own path on this CPU differs" in message) == (local == "AVX2"), message  # kernels matched, bytes did not
    assert published_hash_check("darkroom-v3", "a" * 64, catalog, cpu_capability=local)[0]
