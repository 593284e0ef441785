"""Decision-Pretrained Transformer (Lee et al. 2023) as the DICP paper runs it on the grid worlds.

Sequence (official gridworld/model/dpt.py):

    [ query state | transition_1 ... transition_{n_transit-1} | (query action) ]

The query state comes *first*, embedded as a transition token with zeros for action, reward and
next state. Because attention is causal, the hidden state after transition i has seen the query
and the first i transitions: every one of them predicts the oracle's optimal action for the query
state, so one sequence trains all context lengths 1..n_transit-1 at once. `dicp-dpt` appends the
action actually taken in the query state as an action-query token, whose hidden state predicts
that step's reward and next state.

With the query first, a new query invalidates the whole cache: acting recomputes the sequence each
step (the cache still pays inside a planner, which branches many action queries off one prefix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from icrl_bench.agents.spaces import GridModelConfig
from icrl_bench.agents.tokens import DynamicsHeads, TransitionEmbedding, Transitions, add_dynamics_loss
from icrl_bench.agents.transformer import KVCache, Transformer


class DPT(nn.Module):
    """The DPT network; `config.dynamics` makes it DICP-DPT's world model as well."""

    query_after_context = False  # the query state comes first: a new query invalidates the context's cache

    def __init__(self, config: GridModelConfig):
        super().__init__()
        self.config = config
        n_embd = config.transformer.n_embd
        self.transformer = Transformer(config.transformer)
        self.embed_context = TransitionEmbedding(config)  # also embeds the (padded) query state
        self.pred_action = nn.Linear(n_embd, config.num_actions)
        self.dynamics = DynamicsHeads(config) if config.dynamics else None

    @property
    def window(self) -> int:
        return self.config.n_transit

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (forward is the loss so DistributedDataParallel can wrap the model)."""
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and metrics on a batch of windows ([B, n_transit] per array)."""
        n = self.config.n_transit
        steps = Transitions.from_batch(batch)
        context, query = steps.slice(None, n - 1), steps.slice(n - 1, n)  # [B, n-1], [B, 1]
        tokens = [self.embed_context.state_only(query.obs[:, 0]), self.embed_context(context)]  # [B, 1, C], [B, n-1, C]
        if self.dynamics is not None:
            tokens.append(self.dynamics.query_action_token(query.action[:, 0]))  # [B, 1, C]
        h, _ = self.transformer(torch.cat(tokens, dim=1))  # [B, n (+1), C]
        logits = self.pred_action(h[:, 1:n])  # [B, n-1, A]: after 1..n-1 context transitions
        target = batch["optimal_action"][:, n - 1].long()  # [B]
        target_all = target[:, None].expand(-1, n - 1)  # [B, n-1]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), target_all.reshape(-1), label_smoothing=self.config.label_smoothing
        )  # over [B * (n-1)] predictions
        correct = logits.argmax(-1) == target_all  # [B, n-1]
        metrics = {
            "loss_action": loss.detach(),
            "acc_action": correct.float().mean(),  # over every context length (the official metric)
            "acc_action_full": correct[:, -1].float().mean(),  # with the full context
        }
        return add_dynamics_loss(self, loss, metrics, h, n, query)

    # ---- inference -------------------------------------------------------------------------------

    def prefill_context(self, context: Transitions, cache: KVCache | None = None) -> None:
        """Nothing to reuse: DPT's query precedes the context."""
        return

    def policy(
        self, query_obs: torch.Tensor, context: Transitions, context_cache: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Action logits [B, A] for query states [B, dim_state] given `context` [B, T], and the cache."""
        tokens = torch.cat([self.embed_context.state_only(query_obs), self.embed_context(context)], dim=1)  # [B, 1 + T, C]
        h, cache = self.transformer(tokens)
        return self.pred_action(h[:, -1]), cache

    def predict_dynamics(self, query_cache: KVCache, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward logits [B, n_reward_classes] and next-state logits [B, grid_size**2] of `action` [B]."""
        if self.dynamics is None:
            raise ValueError("this DPT has no dynamics heads (train dicp-dpt for a world model)")
        h, _ = self.transformer(self.dynamics.query_action_token(action), query_cache)  # [B, 1, C]
        return self.dynamics.pred_reward(h[:, -1]), self.dynamics.pred_next_state(h[:, -1])
