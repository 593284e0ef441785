"""What AD, DPT and IDT share on the grid worlds: the model config, transition tokens, world-model heads.

DICP (Son et al. 2025, Sec. 4 and the official gridworld/model code) embeds one whole
transition (state, one-hot action, reward, next state) as one token with a linear layer, and
makes the in-context learner a world model by appending an *action-query* token: the hidden
state there predicts the reward (classes 0..n_reward_classes-1) and the next state (one of
grid_size**2 cells) of taking that action in the query state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from icrl_bench.agents.transformer import TransformerConfig


@dataclass
class GridModelConfig:
    """Everything that fixes a grid-world agent's network (the DICP cfg/model/*.yaml keys)."""

    n_transit: int = 80  # transitions per training sequence (context n_transit - 1, plus the query)
    grid_size: int = 9
    num_actions: int = 5
    dim_state: int = 2
    n_reward_classes: int = 2
    dynamics: bool = False  # DICP: add the action-query token and the reward / next-state heads
    dynamics_strength: float = 1.0  # weight of the dynamics losses next to the action loss
    label_smoothing: float = 0.0
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.transformer, dict):
            self.transformer = TransformerConfig(**self.transformer)
        if self.n_transit < 2:
            raise ValueError(f"n_transit must be >= 2, got {self.n_transit}")
        if self.dynamics_strength < 0:
            raise ValueError(f"dynamics_strength must be >= 0, got {self.dynamics_strength}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GridModelConfig:
        """Build from plain data, refusing unknown keys (a typo must not be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown_keys = sorted(set(values) - known)
        if unknown_keys:
            raise ValueError(f"unknown model config key(s) {', '.join(unknown_keys)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if isinstance(values.get("transformer"), dict):
            t_known = {f.name for f in fields(TransformerConfig)}
            bad = sorted(set(values["transformer"]) - t_known)
            if bad:
                raise ValueError(f"unknown transformer config key(s) {', '.join(bad)}; known: {', '.join(sorted(t_known))}")
        return cls(**values)


def state_index(obs: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Cell (x, y) [..., 2] -> index x * grid_size + y [...] (the official `map_dark_states`)."""
    obs = obs.long()
    return obs[..., 0] * grid_size + obs[..., 1]


def state_from_index(index: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Inverse of `state_index`: [...] -> [..., 2]."""
    return torch.stack((index // grid_size, index % grid_size), dim=-1)


@dataclass
class Transitions:
    """A batch of transition sequences: obs, next_obs [B, T, dim_state]; action, reward [B, T]."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor

    def __len__(self) -> int:
        return self.action.shape[1]

    def slice(self, start: int | None, stop: int | None) -> Transitions:
        return Transitions(self.obs[:, start:stop], self.action[:, start:stop], self.reward[:, start:stop], self.next_obs[:, start:stop])

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor]) -> Transitions:
        return cls(batch["obs"], batch["action"], batch["reward"], batch["next_obs"])


class TransitionEmbedding(nn.Module):
    """One token per transition: Linear([state, one-hot action, reward, next state])."""

    def __init__(self, config: GridModelConfig):
        super().__init__()
        self.num_actions = config.num_actions
        self.dim_state = config.dim_state
        self.linear = nn.Linear(2 * config.dim_state + config.num_actions + 1, config.transformer.n_embd)

    def forward(self, t: Transitions) -> torch.Tensor:
        """[B, T] transitions -> [B, T, n_embd] tokens."""
        dtype = self.linear.weight.dtype
        features = torch.cat(
            [
                t.obs.to(dtype),  # [B, T, dim_state]
                F.one_hot(t.action.long(), self.num_actions).to(dtype),  # [B, T, num_actions]
                t.reward.to(dtype).unsqueeze(-1),  # [B, T, 1]
                t.next_obs.to(dtype),  # [B, T, dim_state]
            ],
            dim=-1,
        )  # [B, T, 2 * dim_state + num_actions + 1]
        return self.linear(features)

    def state_only(self, obs: torch.Tensor) -> torch.Tensor:
        """A state [B, dim_state] as a transition token with zeros elsewhere (DPT's query) -> [B, 1, n_embd]."""
        dtype = self.linear.weight.dtype
        padded = F.pad(obs.to(dtype), (0, self.num_actions + 1 + self.dim_state))  # [B, 2 * dim_state + num_actions + 1]
        return self.linear(padded).unsqueeze(1)


class DynamicsHeads(nn.Module):
    """DICP's world-model part: an action-query token and the reward and next-state heads."""

    def __init__(self, config: GridModelConfig):
        super().__init__()
        n_embd = config.transformer.n_embd
        self.grid_size = config.grid_size
        self.n_reward_classes = config.n_reward_classes
        self.embed_query_action = nn.Embedding(config.num_actions, n_embd)
        self.pred_reward = nn.Linear(n_embd, config.n_reward_classes)
        self.pred_next_state = nn.Linear(n_embd, config.grid_size**2)

    def query_action_token(self, action: torch.Tensor) -> torch.Tensor:
        """action [B] -> [B, 1, n_embd]."""
        return self.embed_query_action(action.long()).unsqueeze(1)

    def losses(
        self, h: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor, label_smoothing: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed reward + next-state loss at the action-query hidden state h [B, C]."""
        reward_logits = self.pred_reward(h)  # [B, n_reward_classes]
        state_logits = self.pred_next_state(h)  # [B, grid_size**2]
        reward_target = reward.long().clamp(max=self.n_reward_classes - 1)  # [B]
        state_target = state_index(next_obs, self.grid_size)  # [B]
        loss_reward = F.cross_entropy(reward_logits.float(), reward_target, label_smoothing=label_smoothing)
        loss_next_state = F.cross_entropy(state_logits.float(), state_target, label_smoothing=label_smoothing)
        metrics = {
            "loss_reward": loss_reward.detach(),
            "acc_reward": (reward_logits.argmax(-1) == reward_target).float().mean(),
            "loss_next_state": loss_next_state.detach(),
            "acc_next_state": (state_logits.argmax(-1) == state_target).float().mean(),
        }
        return loss_reward + loss_next_state, metrics


def add_dynamics_loss(
    model: nn.Module, loss: torch.Tensor, metrics: dict[str, torch.Tensor], h: torch.Tensor, n: int, query: Transitions
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AD's and DPT's total loss: the action loss plus, for a DICP model, `dynamics_strength`
    times the reward and next-state losses at the action-query token (position `n` of h [B, T, C])."""
    if model.dynamics is not None:
        loss_dyn, dyn_metrics = model.dynamics.losses(h[:, n], query.reward[:, 0], query.next_obs[:, 0], model.config.label_smoothing)
        loss = loss + model.config.dynamics_strength * loss_dyn
        metrics.update(dyn_metrics)
    metrics["loss"] = loss.detach()
    return loss, metrics
