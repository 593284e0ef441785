"""icrl-bench: learning-history datasets, in-context RL agents and a benchmark."""

from __future__ import annotations

__version__ = "0.1.0"

from icrl_bench.registration import register_envs

register_envs()


def make_env(name: str, task: int):
    """The Gymnasium env of task `task` (canonical index) of grid world `name`."""
    from icrl_bench.envs import make_env as _make_env

    return _make_env(name, task)


def load_dataset(dataset_id: str, root: str | None = None):
    """Open a built dataset by id (lazy arrays, manifest, split); see `icrl_bench.data.dataset`."""
    from icrl_bench.data.dataset import load_dataset as _load

    return _load(dataset_id, root=root)


def make_agent(name: str, checkpoint=None, **kwargs):
    """An agent by name, entry point or `module:Class`; see `icrl_bench.agents.registry`."""
    from icrl_bench.agents.registry import make_agent as _make

    return _make(name, checkpoint, **kwargs)


def evaluate(agent: str, checkpoint=None, env: str = "darkroom", **kwargs) -> dict:
    """Run an agent under the standard protocol and return its results; see `icrl_bench.harness`."""
    from icrl_bench.harness import evaluate as _evaluate

    return _evaluate(agent, checkpoint, env, **kwargs)


__all__ = ["__version__", "evaluate", "load_dataset", "make_agent", "make_env"]
