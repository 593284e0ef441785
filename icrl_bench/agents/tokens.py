"""What AD, DPT and IDT share: transition tokens and DICP's world-model heads.

DICP (Son et al. 2025, Sec. 4 and the official gridworld/ and metaworld/ model code) embeds one
whole transition (state, action, reward, next state) as one token with a linear layer, and makes
the in-context learner a world model by appending an *action-query* token: the hidden state there
predicts the reward (and the next state) of taking that action in the query state. On the grid
worlds actions are one-hot and the heads classify; on Meta-World actions are vectors and the heads
regress (spaces.py holds every difference and the model configs; the config's `kind` picks one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icrl_bench.agents.spaces import ModelConfig


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
