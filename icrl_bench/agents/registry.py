"""Finding agents by name: built-ins, the `icrl_bench.agents` entry-point group, `module:Class`.

    >>> from icrl_bench import make_agent
    >>> agent = make_agent("oracle")
    >>> agent = make_agent("ad", checkpoint="runs/ad-darkroom-v3")
    >>> agent = make_agent("mypkg.agents:MyAgent", some_setting=3)

Everything is imported lazily, so listing agents costs nothing and a broken plugin fails only
when it is asked for. A third-party agent is a class (or factory) whose instances have the
three methods of `icrl_bench.agents.base.Agent`; it is called with the keyword arguments given
to `make_agent` (and `checkpoint=` when one is given).

Trained built-ins (`ad`, `dpt`, `idt`, `dicp-*`) come from
`icrl_bench.agents.transformer_agent:from_checkpoint(name, checkpoint, **kwargs)`. Without an
explicit checkpoint, a shipped one at `baselines/<env>/<name>/` is used when present.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from icrl_bench.agents.base import Agent
from icrl_bench.errors import IcrlBenchError, unknown
from icrl_bench.paths import shipped

ENTRY_POINT_GROUP = "icrl_bench.agents"
PROTOCOL_METHODS = ("reset", "act", "observe")
TRANSFORMER_MODULE = "icrl_bench.agents.transformer_agent"
BASELINES_DIR = shipped("baselines")  # the checkout's, or the installed package's copy


@dataclass(frozen=True)
class AgentInfo:
    name: str
    target: str  # "module:attribute" to import, or "" for the checkpoint-backed transformer agents
    description: str
    needs_checkpoint: bool = False
    origin: str = "built-in"
    family: str | None = None  # trainable: the network it is ("ad", "dpt", "idt"; agents/models.py)
    plans: bool = False  # DICP: a world model it plans with (--beam / --samples apply); the trainer gives it dynamics heads


BUILTINS: dict[str, AgentInfo] = {
    a.name: a
    for a in (
        AgentInfo("random", "icrl_bench.agents.reference:RandomAgent", "uniform random actions (normalized score 0)"),
        AgentInfo("oracle", "icrl_bench.agents.reference:OracleAgent", "optimal policy from the hidden task (score 100)"),
        AgentInfo("source", "icrl_bench.agents.reference:SourceAgent", "SB3 PPO learning online from scratch per task"),
        AgentInfo("ad", "", "Algorithm Distillation (Laskin et al. 2022)", True, family="ad"),
        AgentInfo("dpt", "", "Decision-Pretrained Transformer (Lee et al. 2023)", True, family="dpt"),
        AgentInfo("idt", "", "In-context Decision Transformer (Huang et al. 2024)", True, family="idt"),
        AgentInfo("dicp-ad", "", "AD with in-context model-based planning (Son et al. 2025)", True, family="ad", plans=True),
        AgentInfo("dicp-dpt", "", "DPT with in-context model-based planning (Son et al. 2025)", True, family="dpt", plans=True),
        AgentInfo("dicp-idt", "", "IDT with in-context model-based planning (Son et al. 2025)", True, family="idt", plans=True),
    )
}


def plans(name: str) -> bool:
    """Whether agent `name` plans with a world model (a built-in DICP agent; plugins say so by their own settings)."""
    return name in BUILTINS and BUILTINS[name].plans


def list_agents() -> list[AgentInfo]:
    """Built-in agents, then the ones installed packages register under `icrl_bench.agents`."""
    agents = list(BUILTINS.values())
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BUILTINS:
            agents.append(AgentInfo(ep.name, ep.value, f"plugin from {ep.dist.name if ep.dist else 'an installed package'}", origin="entry point"))
    return agents


def _dataset_id(env: str, preset: str | None = None) -> str:
    """The id of the recipe's dataset for env `env` (a Meta-World ML1 env is a task of the ML1 recipe)."""
    from icrl_bench.data.recipes import resolve
    from icrl_bench.envs.metaworld import ML1_PREFIX

    if env.startswith(ML1_PREFIX):
        return resolve(ML1_PREFIX.removesuffix("-"), preset, task=env.removeprefix(ML1_PREFIX)).dataset_id
    return resolve(env, preset).dataset_id


def train_command(name: str, env: str = "darkroom") -> str:
    """The command that makes a checkpoint for built-in agent `name` on `env` (the paper's config)."""
    return f"icrl-bench train --agent {name} --dataset {_dataset_id(env)}"


def cpu_train_command(name: str, env: str = "darkroom") -> str:
    """The same on a small dataset with the CPU preset (minutes, not hours)."""
    return f"icrl-bench train --agent {name} --dataset {_dataset_id(env, 'small')} --preset cpu"


def default_checkpoint(name: str, env: str | None) -> Path | None:
    """The checkpoint shipped in `baselines/<env>/<name>/`, if there is one."""
    path = BASELINES_DIR / (env or "darkroom") / name
    return path if path.exists() else None


def make_agent(name: str, checkpoint: str | Path | None = None, *, env: str | None = None, **kwargs: Any) -> Agent:
    """An agent ready for the harness.

    Args:
        name: a built-in name (`icrl-bench agents list`), an entry-point name, or `module:Class`.
        checkpoint: directory or file of a trained agent (the transformer agents need one).
        env: the env the agent will face; picks the shipped checkpoint and the hint in errors.
            Agents that care read the env from `TaskInfo` at reset, so it is not passed on.
        **kwargs: settings passed to the agent's constructor.
    """
    if name in BUILTINS and BUILTINS[name].needs_checkpoint:
        return _transformer_agent(name, checkpoint, env, kwargs)
    if name in BUILTINS:
        return _instantiate(_load(BUILTINS[name].target, name), name, checkpoint, kwargs)
    plugins = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name in plugins:
        try:
            target = plugins[name].load()
        except Exception as err:  # noqa: BLE001 - a plugin's import error, whatever it is, is the plugin's problem
            raise IcrlBenchError(f"agent plugin {name!r} ({plugins[name].value}) failed to import: {type(err).__name__}: {err}") from None
        return _instantiate(target, name, checkpoint, kwargs)
    if ":" in name:
        return _instantiate(_load(name, name), name, checkpoint, kwargs)
    raise unknown("agent", name, [*BUILTINS, *plugins])


def check_agent(obj: Any, name: str) -> None:
    """Fail in one line, naming the missing methods, if `obj` does not follow the Agent protocol."""
    missing = [m for m in PROTOCOL_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise IcrlBenchError(
            f"agent {name!r} does not follow the Agent protocol: missing {', '.join(missing)} "
            f"(an agent needs reset(num_envs, task_info), act(obs) and observe(obs, action, reward, next_obs, done); "
            "see icrl_bench.agents.base.Agent)."
        )


def _load(target: str, name: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise IcrlBenchError(f"agent {name!r}: expected 'package.module:Class', got {target!r}.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise IcrlBenchError(f"agent {name!r}: cannot import module {module_name!r} ({err}); is its package installed?") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise IcrlBenchError(f"agent {name!r}: module {module_name!r} has no attribute {attribute!r}.") from None


def _instantiate(target: Any, name: str, checkpoint: str | Path | None, kwargs: dict[str, Any]) -> Agent:
    if inspect.isclass(target):
        check_agent(target, name)  # before constructing: say what is missing, not a later AttributeError
    if not callable(target):
        raise IcrlBenchError(f"agent {name!r}: {target!r} is neither a class nor a factory function.")
    if checkpoint is not None:
        kwargs = {**kwargs, "checkpoint": str(checkpoint)}
    try:
        agent = target(**kwargs)
    except TypeError as err:
        raise IcrlBenchError(f"agent {name!r} rejected its settings {sorted(kwargs)}: {err}.") from None
    check_agent(agent, name)
    return agent


def checkpoint_for(name: str, checkpoint: str | Path | None, env: str | None) -> str | Path | None:
    """The checkpoint agent `name` is made from: `checkpoint`, else a built-in trained agent's shipped
    default for `env` (None: the agent needs none, or none is shipped)."""
    if checkpoint is None and name in BUILTINS and BUILTINS[name].needs_checkpoint:
        return default_checkpoint(name, env)
    return checkpoint


def _transformer_agent(name: str, checkpoint: str | Path | None, env: str | None, kwargs: dict[str, Any]) -> Agent:
    checkpoint = checkpoint_for(name, checkpoint, env)
    if checkpoint is None:
        raise IcrlBenchError(
            f"agent {name!r} needs a trained checkpoint and none is shipped for {env or 'darkroom'}: "
            f"train one with `{train_command(name, env or 'darkroom')}` (on a CPU: `{cpu_train_command(name, env or 'darkroom')}`) "
            "and pass its run directory with --checkpoint."
        )
    module = importlib.import_module(TRANSFORMER_MODULE)
    agent = module.from_checkpoint(name, str(checkpoint), **kwargs)
    check_agent(agent, name)
    return agent
