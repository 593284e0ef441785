"""What AD, DPT and IDT share: the model configs, transition tokens, DICP's world-model heads.

DICP (Son et al. 2025, Sec. 4 and the official gridworld/ and metaworld/ model code) embeds one
whole transition (state, action, reward, next state) as one token with a linear layer, and makes
the in-context learner a world model by appending an *action-query* token: the hidden state there
predicts the reward (and the next state) of taking that action in the query state. On the grid
worlds actions are one-hot and the heads classify; on Meta-World actions are vectors and the heads
regress (spaces.py holds every difference; the config's `kind` picks one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from icrl_bench.agents.spaces import ContinuousSpace, GridSpace, Space
from icrl_bench.agents.transformer import TransformerConfig

KINDS = ("discrete", "continuous")
LAYOUTS = ("dicp", "dense")


@dataclass
class ModelConfig:
    """What fixes any agent's network (the DICP cfg/model/*.yaml keys); subclasses add the env kind's."""

    kind: ClassVar[str] = ""  # "discrete" (grid worlds) or "continuous" (Meta-World): which space
    n_transit: int = 80  # transitions per training sequence (context n_transit - 1, plus the query)
    dynamics: bool = False  # DICP: add the action-query token and the reward / next-state heads
    dynamics_strength: float = 1.0  # weight of the dynamics losses next to the action loss
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    layout: str = "dicp"  # token layout: "dicp" (the official one) or "dense" (AD on grid worlds: ad.py's DenseAD)

    def __post_init__(self) -> None:
        if isinstance(self.transformer, dict):
            self.transformer = TransformerConfig(**self.transformer)
        if self.n_transit < 2:
            raise ValueError(f"n_transit must be >= 2, got {self.n_transit}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.dynamics_strength < 0:
            raise ValueError(f"dynamics_strength must be >= 0, got {self.dynamics_strength}")

    def space(self) -> Space:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from plain data, refusing unknown keys (a typo must not be silently ignored)."""
        values = dict(values)
        kind = values.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"this is a {cls.kind} config, but the values say kind {kind!r}")
        known = {f.name for f in fields(cls)}
        unknown_keys = sorted(set(values) - known)
        if unknown_keys:
            raise ValueError(f"unknown model config key(s) {', '.join(unknown_keys)}; known: {', '.join(sorted(known))}")
        if isinstance(values.get("transformer"), dict):
            t_known = {f.name for f in fields(TransformerConfig)}
            bad = sorted(set(values["transformer"]) - t_known)
            if bad:
                raise ValueError(f"unknown transformer config key(s) {', '.join(bad)}; known: {', '.join(sorted(t_known))}")
        return cls(**values)


@dataclass
class GridModelConfig(ModelConfig):
    """A grid-world network: cells and discrete actions (official gridworld/cfg/model/*.yaml)."""

    kind: ClassVar[str] = "discrete"
    grid_size: int = 9
    num_actions: int = 5
    dim_state: int = 2
    n_reward_classes: int = 2
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def space(self) -> GridSpace:
        return GridSpace(self)


@dataclass
class ContinuousModelConfig(ModelConfig):
    """A continuous-control network (official metaworld/cfg/model/{ad,idt}_ml1.yaml)."""

    kind: ClassVar[str] = "continuous"
    n_transit: int = 1000  # 10 episodes of 100 steps
    obs_dim: int = 11  # 18 for hammer, stick-push, stick-pull (set from the dataset)
    action_dim: int = 4
    learn_var: bool = True  # Gaussian policy with a learned variance (Gaussian NLL); else the mean, MSE
    learn_transition: bool = False  # DICP: also regress the next observation (the official default: no)
    reward_max: float = 10.0  # Meta-World's per-step reward range [0, reward_max]: predicted rewards are clipped to it

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ValueError(f"obs_dim and action_dim must be >= 1, got {self.obs_dim}, {self.action_dim}")
        if self.reward_max <= 0:
            raise ValueError(f"reward_max must be > 0, got {self.reward_max}")

    def space(self) -> ContinuousSpace:
        return ContinuousSpace(self)


@dataclass
class Transitions:
    """A batch of transition sequences: obs, next_obs [B, T, dim_state]; reward [B, T];
    action [B, T] (discrete) or [B, T, action_dim] (continuous)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor

    def __len__(self) -> int:
        return self.action.shape[1]

    def slice(self, start: int | None, stop: int | None) -> Transitions:
        return Transitions(self.obs[:, start:stop], self.action[:, start:stop], self.reward[:, start:stop], self.next_obs[:, start:stop])

    def rows(self, index: torch.Tensor) -> Transitions:
        """The sequences `index` [N] (a subset, a reordering, or copies) [N, T]."""
        return Transitions(self.obs[index], self.action[index], self.reward[index], self.next_obs[index])

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor]) -> Transitions:
        return cls(batch["obs"], batch["action"], batch["reward"], batch["next_obs"])


class TransitionEmbedding(nn.Module):
    """One token per transition: Linear([state, action (one-hot if discrete), reward, next state])."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.space = config.space()
        self.dim_state = self.space.dim_state
        self.linear = nn.Linear(2 * self.dim_state + self.space.action_features_dim + 1, config.transformer.n_embd)

    def forward(self, t: Transitions) -> torch.Tensor:
        """[B, T] transitions -> [B, T, n_embd] tokens."""
        dtype = self.linear.weight.dtype
        features = torch.cat(
            [
                t.obs.to(dtype),  # [B, T, dim_state]
                self.space.action_features(t.action).to(dtype),  # [B, T, num_actions or action_dim]
                t.reward.to(dtype).unsqueeze(-1),  # [B, T, 1]
                t.next_obs.to(dtype),  # [B, T, dim_state]
            ],
            dim=-1,
        )  # [B, T, 2 * dim_state + action features + 1]
        return self.linear(features)

    def state_only(self, obs: torch.Tensor) -> torch.Tensor:
        """A state [B, dim_state] as a transition token with zeros elsewhere (DPT's query) -> [B, 1, n_embd]."""
        dtype = self.linear.weight.dtype
        padded = F.pad(obs.to(dtype), (0, self.space.action_features_dim + 1 + self.dim_state))  # [B, in_features]
        return self.linear(padded).unsqueeze(1)


class DynamicsHeads(nn.Module):
    """DICP's world-model part: an action-query token and the reward (and next-state) heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        n_embd = config.transformer.n_embd
        self.space = config.space()
        self.embed_query_action = self.space.action_embedding(n_embd)
        self.pred_reward = self.space.reward_head(n_embd)
        if self.space.learns_next_state:
            self.pred_next_state = self.space.next_state_head(n_embd)

    def query_action_token(self, action: torch.Tensor) -> torch.Tensor:
        """action [B] (discrete) or [B, action_dim] -> [B, 1, n_embd]."""
        return self.embed_query_action(self.space.action(action)).unsqueeze(1)

    def losses(self, h: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed reward (+ next-state) loss at the action-query hidden state h [B, C]."""
        loss, metrics = self.space.reward_loss(self.pred_reward(h), self.space.reward(reward))
        if self.space.learns_next_state:
            loss_next_state, state_metrics = self.space.next_state_loss(self.pred_next_state(h), self.space.state(next_obs))
            loss = loss + loss_next_state
            metrics.update(state_metrics)
        return loss, metrics


def add_dynamics_loss(
    model: nn.Module, loss: torch.Tensor, metrics: dict[str, torch.Tensor], h: torch.Tensor, n: int, query: Transitions
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AD's and DPT's total loss: the action loss plus, for a DICP model, `dynamics_strength`
    times the reward (and next-state) losses at the action-query token (position `n` of h [B, T, C])."""
    if model.dynamics is not None:
        loss_dyn, dyn_metrics = model.dynamics.losses(h[:, n], query.reward[:, 0], query.next_obs[:, 0])
        loss = loss + model.config.dynamics_strength * loss_dyn
        metrics.update(dyn_metrics)
    metrics["loss"] = loss.detach()
    return loss, metrics
