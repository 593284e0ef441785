"""The trainable in-context agents by name: which network, with or without DICP's world-model heads.

The trainer, the checkpoint loader and the acting agent all look names up here, so an agent
name means the same network everywhere. The same name serves both kinds of env: the model
config's `kind` ("discrete" for the grid worlds, "continuous" for Meta-World; taken from the
dataset when training, recorded in the config) picks the config class and with it the network's
inputs and heads (spaces.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from icrl_bench.agents.idt import ContinuousIDTConfig, IDTConfig
from icrl_bench.agents.registry import BUILTINS
from icrl_bench.agents.spaces import KINDS, ContinuousModelConfig, GridModelConfig, ModelConfig
from icrl_bench.errors import IcrlBenchError, unknown


@dataclass(frozen=True)
class ModelSpec:
    """How to build and feed one trainable agent."""

    name: str
    family: str  # "ad", "dpt", "idt": the module that defines the network
    dynamics: bool  # DICP variant: reward / next-state heads
    arrays: tuple[str, ...]  # dataset arrays a training window needs
    build: Callable[[Any], nn.Module]
    configs: dict[str, type]  # env kind ("discrete", "continuous") -> its model config class
    transform: Callable[[Any], Any] | None = None  # model config -> per-task chunk transform for the sampler


def _ad(config: ModelConfig) -> nn.Module:
    from icrl_bench.agents.ad import AD, DenseAD

    return DenseAD(config) if config.layout == "dense" else AD(config)


def _dpt(config: GridModelConfig) -> nn.Module:
    from icrl_bench.agents.dpt import DPT

    return DPT(config)


def _idt(config) -> nn.Module:
    from icrl_bench.agents.idt import IDT

    return IDT(config)


def _idt_transform(config):
    from icrl_bench.agents.idt import SortEpisodes

    if config.return_to_go_label == "stream-best":
        return SortEpisodes(config.horizon)
    if config.target_return <= 0:
        raise IcrlBenchError("return_to_go_label train-max needs the model's target_return, which training sets from the dataset.")
    return SortEpisodes(config.horizon, config.target_return)


_TRANSITIONS = ("obs", "action", "reward", "next_obs")
_AD_CONFIGS = {"discrete": GridModelConfig, "continuous": ContinuousModelConfig}
_DPT_CONFIGS = {"discrete": GridModelConfig}  # DPT needs the oracle's actions: grid worlds only
_IDT_CONFIGS = {"discrete": IDTConfig, "continuous": ContinuousIDTConfig}

DENSE_FAMILIES = ("ad", "idt")  # the families with a `layout: dense` network (grid worlds)
_FAMILIES = {  # family -> (arrays a window needs, builder, config classes, chunk transform)
    "ad": (_TRANSITIONS, _ad, _AD_CONFIGS, None),
    "dpt": (_TRANSITIONS + ("optimal_action",), _dpt, _DPT_CONFIGS, None),
    "idt": (_TRANSITIONS, _idt, _IDT_CONFIGS, _idt_transform),
}

# Every trainable built-in of the registry (the agents that need a checkpoint), its DICP heads
# where the registry says it plans: names and capabilities are declared once, in registry.py.
MODEL_SPECS: dict[str, ModelSpec] = {
    info.name: ModelSpec(info.name, info.family, info.plans, *_FAMILIES[info.family])
    for info in BUILTINS.values()
    if info.family is not None
}


def model_spec(name: str) -> ModelSpec:
    """The spec of trainable agent `name`, or an error listing the known ones."""
    if name not in MODEL_SPECS:
        raise unknown("trainable agent", name, MODEL_SPECS)
    return MODEL_SPECS[name]


def model_config(name: str, values: dict[str, Any], kind: str | None = None) -> ModelConfig:
    """The agent's model config from plain data; `dynamics` follows from the agent's name.

    `kind` is the env kind ("discrete" or "continuous"); it may instead be recorded in `values`
    (a saved config), and the two must agree. Neither given: discrete (configs saved before
    continuous actions existed have no kind).
    """
    spec = model_spec(name)
    values = dict(values)
    recorded = values.pop("kind", None)
    if recorded is not None and kind is not None and recorded != kind:
        raise IcrlBenchError(f"the {name} config is for {recorded} actions, but the data's actions are {kind}.")
    kind = kind or recorded or "discrete"
    if kind not in KINDS:
        raise unknown("env kind", kind, KINDS)
    if kind not in spec.configs:
        raise IcrlBenchError(f"agent {name!r} is not defined for {kind} actions (it is for: {', '.join(spec.configs)}).")
    if "dynamics" in values and bool(values["dynamics"]) != spec.dynamics:
        raise IcrlBenchError(
            f"agent {name!r} has dynamics={spec.dynamics}, but its config says dynamics={values['dynamics']}; "
            f"the DICP variants are the agents named dicp-*."
        )
    values["dynamics"] = spec.dynamics
    try:
        config = spec.configs[kind].from_dict(values)
    except (TypeError, ValueError) as err:
        raise IcrlBenchError(f"bad model config for {name}: {err}") from None
    if config.layout == "dense" and (spec.family not in DENSE_FAMILIES or kind != "discrete"):
        raise IcrlBenchError(f"layout 'dense' is implemented for ad, idt and their DICP variants on the grid worlds only, not for {name} ({kind}); "
                             "use layout 'dicp'.")
    return config


def build_model(name: str, config: ModelConfig) -> nn.Module:
    return model_spec(name).build(config)
