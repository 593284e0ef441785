"""Start a new run from another run's weights (`icrl-bench train --init-from CHECKPOINT`).

Why: a DICP agent is its imitation agent's network plus a reward and a next-state head. Where the
budget is too small for the shared network to learn the policy and the world model together
(DICP-DPT on Darkroom-Permuted at the laptop budget), it can start from the trained imitation
agent's weights and learn the heads on top. This is a documented variant, not the paper's recipe
(the paper trains every agent from scratch): the run records where its weights came from, and
its cost includes the source run's.

Every tensor of the source must exist in the new network with the same shape, and the two
networks must have the same Transformer and context length, so each weight means what it meant;
the new network's own extra tensors (the DICP heads) keep their fresh, seeded initialisation.
The optimizer starts fresh (the source's moments belong to another loss).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from icrl_bench.agents.models import model_spec
from icrl_bench.agents.spaces import ModelConfig
from icrl_bench.errors import IcrlBenchError
from icrl_bench.paths import from_repo_relative, repo_relative

# Model config keys that may differ between the source and the new network: the ones that only add
# heads or change the loss, not what a shared weight computes.
_MAY_DIFFER = frozenset({"dynamics", "dynamics_strength", "label_smoothing"})


def init_from_checkpoint(model: nn.Module, agent: str, config: ModelConfig, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Copy `checkpoint`'s weights into `model` (agent `agent`, config `config`); returns the record for run.json."""
    from icrl_bench.agents.checkpoint import load_checkpoint

    source = load_checkpoint(from_repo_relative(checkpoint), map_location="cpu")  # a preset's baselines/... from any directory or a wheel
    if model_spec(source.agent).family != model_spec(agent).family:
        raise IcrlBenchError(
            f"--init-from {checkpoint}: a {source.agent} checkpoint cannot start a {agent} network (another family); "
            f"start {agent} from a checkpoint of {', '.join(_same_family(agent))}."
        )
    ours, theirs = config.to_dict(), source.model.config.to_dict()
    differ = sorted(k for k in set(ours) | set(theirs) if k not in _MAY_DIFFER and ours.get(k) != theirs.get(k))
    if differ:
        shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ[:3])
        raise IcrlBenchError(f"--init-from {checkpoint}: its network differs from this run's ({shown}); "
                             "train with the same model settings as the checkpoint.")
    target = model.state_dict()
    state = source.model.state_dict()
    unfit = sorted(k for k, v in state.items() if k not in target or target[k].shape != v.shape)
    if unfit:
        raise IcrlBenchError(f"--init-from {checkpoint}: {len(unfit)} of its tensors have no place in this network "
                             f"(e.g. {unfit[0]}); start from a checkpoint of the same network.")
    model.load_state_dict(state, strict=False)
    fresh = sorted(k for k in target if k not in state)
    return {"checkpoint": repo_relative(source.path), "agent": source.agent, "step": source.meta.get("step"),
            "weights_sha256": source.meta.get("weights_sha256"), "dataset": source.meta.get("dataset"),
            "fresh_tensors": fresh}


def _same_family(agent: str) -> list[str]:
    from icrl_bench.agents.models import MODEL_SPECS

    family = model_spec(agent).family
    return [name for name, spec in MODEL_SPECS.items() if spec.family == family]
