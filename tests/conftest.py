"""Shared fixtures: tests never touch the user's data root, and small datasets are built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default data root at a fresh temp dir for every test (and the leaderboard at the repository's)."""
    root = tmp_path_factory.mktemp("root")
    monkeypatch.setenv("ICRL_BENCH_ROOT", str(root))
    monkeypatch.delenv("ICRL_BENCH_LEADERBOARD", raising=False)
    return root


@pytest.fixture(autouse=True)
def atens_kernels_as_they_were():
    """`build-dataset` pins ATen's kernels in its process's environment, and CliRunner runs it in
    this one: undo that after each test, so no later test's subprocess inherits it (its kernels
    would then differ from this process's, which torch fixed at its first op)."""
    before = os.environ.get("ATEN_CPU_CAPABILITY")
    yield
    if before is None:
        os.environ.pop("ATEN_CPU_CAPABILITY", None)
    else:
        os.environ["ATEN_CPU_CAPABILITY"] = before


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding `darkroom-tiny-v3` (9 tasks x 4 streams x 200 steps), built once."""
    from icrl_bench.data.build import build_dataset

    root = tmp_path_factory.mktemp("tiny-root")
    build_dataset("darkroom", "tiny", root=root, workers=1, show_progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tiny_root: Path):
    """The opened `darkroom-tiny-v3` dataset (read-only: copy it before corrupting it)."""
    from icrl_bench.data.dataset import load_dataset

    return load_dataset("darkroom-tiny-v3", root=tiny_root)


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the tests' tensors are tiny, and two threads on a busy 2-core
    machine were measured 10-40x slower than one (thread contention, not compute)."""
    import torch

    torch.set_num_threads(1)
