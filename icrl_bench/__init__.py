"""icrl-bench: learning-history datasets, in-context RL agents and a benchmark."""

from __future__ import annotations

__version__ = "0.1.0"

from icrl_bench.envs import make_env  # noqa: E402  (registers the Gymnasium ids)


def load_dataset(dataset_id: str, root: str | None = None):
    """Open a built dataset by id (lazy arrays, manifest, split); see `icrl_bench.data.dataset`."""
    from icrl_bench.data.dataset import load_dataset as _load

    return _load(dataset_id, root=root)


__all__ = ["__version__", "load_dataset", "make_env"]
