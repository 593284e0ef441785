"""icrl-bench: learning-history datasets, in-context RL agents and a benchmark."""

from __future__ import annotations

__version__ = "0.1.0"

from icrl_bench.registration import register_envs

register_envs()


def make_env(name: str, task: int):
    """The Gymnasium env of task `task` (canonical index) of grid world `name`."""
    from icrl_bench.envs import make_env as _make_env

    return _make_env(name, task)


def load_dataset(dataset_id: str, root: str | None = None, download: bool = False):
    """Open a dataset by id (lazy arrays, manifest, split, `episodes()`); see `icrl_bench.data.dataset`.

    With `download=True`, a dataset not under the data root is first fetched where the catalog
    publishes it (`icrl-bench datasets download ID`: every hash checked; needs the hub extra).
    """
    from icrl_bench.data.dataset import dataset_path
    from icrl_bench.data.dataset import load_dataset as _load

    if download and not dataset_path(dataset_id, root).exists():
        from icrl_bench.data.hub import download_dataset

        download_dataset(dataset_id, root=root)
    return _load(dataset_id, root=root)


def make_agent(name: str, checkpoint=None, **kwargs):
    """An agent by name, entry point or `module:Class`; see `icrl_bench.agents.registry`."""
    from icrl_bench.agents.registry import make_agent as _make

    return _make(name, checkpoint, **kwargs)


def evaluate(agent: str, checkpoint=None, env: str = "darkroom", **kwargs) -> dict:
    """Run an agent under the standard protocol and return its results; see `icrl_bench.bench.harness`."""
    from icrl_bench.bench.harness import evaluate as _evaluate

    return _evaluate(agent, checkpoint, env, **kwargs)


_LAZY = {  # imported on first use: they need torch, and `import icrl_bench` should not
    "WindowSampler": "icrl_bench.data.sampler",
    "SamplerConfig": "icrl_bench.data.sampler",
    "make_loader": "icrl_bench.data.sampler",
}


def __getattr__(name: str):
    """`icrl_bench.WindowSampler` and friends, imported when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'icrl_bench' has no attribute {name!r}")


__all__ = ["SamplerConfig", "WindowSampler", "__version__", "evaluate", "load_dataset", "make_agent", "make_env", "make_loader"]
