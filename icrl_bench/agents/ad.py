"""Algorithm Distillation (Laskin et al. 2022) as the DICP paper runs it, on grid worlds and Meta-World.

Sequence (official gridworld/model/ad.py and metaworld/model/ad.py):

    [ transition_1 ... transition_{n_transit-1} | query state | (query action) ]

Each transition is one token (TransitionEmbedding); the query state is an embedding of its cell
(grid) or a linear embedding of its observation (Meta-World). The hidden state at the query-state
token predicts the action the source algorithm took there (AD imitates the learning history,
exploration included): logits on the grid worlds, a Gaussian with learned variance on Meta-World.
`dicp-ad` appends the action that was taken as an action-query token, whose hidden state predicts
that step's reward and next state (Meta-World: the reward, and the next state only with
`learn_transition`); the loss is  L_action + dynamics_strength * (L_reward + L_next_state).
"""

from __future__ import annotations

import torch
from torch import nn

from icrl_bench.agents.spaces import ModelConfig
from icrl_bench.agents.tokens import DynamicsHeads, TransitionEmbedding, Transitions, add_dynamics_loss
from icrl_bench.agents.transformer import KVCache, Transformer


class AD(nn.Module):
    """The AD network; `config.dynamics` makes it DICP-AD's world model as well."""

    query_after_context = True  # a separate query-state token follows the context: the context's KV cache is reusable

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.space = config.space()
        n_embd = config.transformer.n_embd
        self.transformer = Transformer(config.transformer)
        self.embed_context = TransitionEmbedding(config)
        self.embed_query_state = self.space.state_embedding(n_embd)
        self.pred_action = self.space.action_head(n_embd)
        self.dynamics = DynamicsHeads(config) if config.dynamics else None

    @property
    def window(self) -> int:
        """Consecutive steps one training sample reads: the context plus the query step."""
        return self.config.n_transit

    def query_state_token(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, dim_state] -> [B, 1, n_embd]."""
        return self.embed_query_state(self.space.state(obs)).unsqueeze(1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (forward is the loss so DistributedDataParallel can wrap the model)."""
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and metrics on a batch of windows ([B, n_transit] per array)."""
        n = self.config.n_transit
        steps = Transitions.from_batch(batch)
        context, query = steps.slice(None, n - 1), steps.slice(n - 1, n)  # [B, n-1], [B, 1]
        tokens = [self.embed_context(context), self.query_state_token(query.obs[:, 0])]  # [B, n-1, C], [B, 1, C]
        if self.dynamics is not None:
            tokens.append(self.dynamics.query_action_token(query.action[:, 0]))  # [B, 1, C]
        h, _ = self.transformer(torch.cat(tokens, dim=1))  # [B, n (+1), C]
        out = self.pred_action(h[:, n - 1])  # [B, A] logits or [B, 2 * action_dim] Gaussian, at the query-state token
        loss, metrics = self.space.action_loss(out, self.space.action(query.action[:, 0]))
        return add_dynamics_loss(self, loss, metrics, h, n, query)

    # ---- inference: what the acting agent and a planner call ------------------------------------

    def prefill_context(self, context: Transitions, cache: KVCache | None = None) -> KVCache:
        """The KV cache of `context` [B, T] placed after `cache` (AD's query comes last, so it is reusable)."""
        _, cache = self.transformer(self.embed_context(context), cache)
        return cache

    def policy(
        self, query_obs: torch.Tensor, context: Transitions, context_cache: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """The policy head's output at query states [B, dim_state], and the cache up to the query token.

        The output is action logits [B, A] (discrete) or the Gaussian's mean and log-variance
        [B, 2 * action_dim] (continuous; `space.gaussian` splits it).

        `context_cache`, if given, must be `prefill_context(context)`; it saves recomputing it.
        """
        if context_cache is None:
            context_cache = self.prefill_context(context)
        h, cache = self.transformer(self.query_state_token(query_obs), context_cache)  # [B, 1, C]
        return self.pred_action(h[:, -1]), cache

    def predict_dynamics(self, query_cache: KVCache, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reward and next-state head outputs for `action` ([B] discrete, [B, action_dim] continuous).

        Grid: reward logits [B, n_reward_classes] and next-state logits [B, grid_size**2]; Meta-World:
        the raw reward output [B, 1] (`space.predicted_reward` clips it) and the next observation
        [B, obs_dim], or None without `learn_transition`. `query_cache` is the cache `policy` returned.
        """
        if self.dynamics is None:
            raise ValueError("this AD has no dynamics heads (train dicp-ad for a world model)")
        h, _ = self.transformer(self.dynamics.query_action_token(action), query_cache)  # [B, 1, C]
        next_state = self.dynamics.pred_next_state(h[:, -1]) if self.space.learns_next_state else None
        return self.dynamics.pred_reward(h[:, -1]), next_state


class DenseAD(nn.Module):
    """AD with one token per step and an action prediction at every position (`model.layout: dense`).

    A documented variant, not the DICP paper's layout. Step t's token is the sum of embeddings
    of its state s_t and of the previous step's action a_{t-1} and reward r_{t-1} (a learned
    "none" for the first token of a window), so position t predicts a_t without seeing it.
    One window of n_transit steps teaches n_transit decisions, at every context length from 0 to
    n_transit - 1, where the official layout teaches one, at the full length only, for the same
    compute: in-context improvement from an empty context (how evaluation starts) emerges far
    earlier in training (benchmarks/bench_learning_curves.py measures it). Grid worlds only.

    `dicp-ad` in this layout (`DenseDynamics`) also predicts, at every position t, the reward r_t
    and next state s_{t+1} of the action taken there, from h_t and that action: every step of
    the history, exploration included, teaches the world model, where the official layout
    teaches it the one query transition per window (mostly the source policy's own choice).

    Acting: the query at step t *is* step t's token, so the agent's context cache extends by one
    token per step exactly as it does for AD; when the window slides it is re-encoded from the
    window, whose first token gets "none", as in training.
    """

    query_after_context = False  # the query is the last step's own token, not a separate one: `policy` handles it

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.space = self.config.space()
        n_embd = config.transformer.n_embd
        self.transformer = Transformer(config.transformer)
        self.embed_state = self.space.state_embedding(n_embd)
        self.embed_xy = nn.Linear(config.dim_state, n_embd) if config.state_features == "cell+xy" else None
        self.embed_prev_action = nn.Embedding(config.num_actions + 1, n_embd)  # index num_actions: none
        self.embed_prev_reward = nn.Embedding(config.n_reward_classes + 1, n_embd)  # index n_reward_classes: none
        self.pred_action = self.space.action_head(n_embd)
        self.dynamics = DenseDynamics(config) if config.dynamics else None

    @property
    def window(self) -> int:
        return self.config.n_transit

    def tokens(self, obs: torch.Tensor, previous: Transitions | None, steps: Transitions | None) -> torch.Tensor:
        """Tokens [B, T, C] for states `obs` [B, T, dim]: the actions and rewards before them are those
        of `previous` (its last step, for the first token; None: "none") then of `steps` [B, T - 1 or T]."""
        B, T = obs.shape[:2]
        none_action = torch.full((B, 1), self.config.num_actions, dtype=torch.long, device=obs.device)
        none_reward = torch.full((B, 1), self.config.n_reward_classes, dtype=torch.long, device=obs.device)
        first_action = none_action if previous is None or len(previous) == 0 else self.space.action(previous.action[:, -1:])
        first_reward = none_reward if previous is None or len(previous) == 0 else self.space.reward(previous.reward[:, -1:])
        prev_action, prev_reward = first_action, first_reward
        if T > 1:
            prev_action = torch.cat([first_action, self.space.action(steps.action[:, : T - 1])], dim=1)  # [B, T]
            prev_reward = torch.cat([first_reward, self.space.reward(steps.reward[:, : T - 1])], dim=1)  # [B, T]
        x = self.embed_state(self.space.state(obs)) + self.embed_prev_action(prev_action) + self.embed_prev_reward(prev_reward)
        if self.embed_xy is not None:  # coordinates scaled to [0, 1]
            x = x + self.embed_xy(obs.to(self.embed_xy.weight.dtype) / (self.config.grid_size - 1))
        return x

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy of every step's action, each predicted from the steps before it ([B, n_transit] windows)."""
        steps = Transitions.from_batch(batch)
        h, _ = self.transformer(self.tokens(steps.obs, None, steps))  # [B, T, C]
        logits = self.pred_action(h)  # [B, T, A]
        target = self.space.action(steps.action)  # [B, T]
        loss, metrics = self.space.action_loss(logits, target)
        metrics["acc_action_last"] = (logits[:, -1].argmax(-1) == target[:, -1]).float().mean()  # comparable to AD's acc_action
        if self.dynamics is not None:  # the taken action's reward and next state, at every position
            reward_logits, next_state_logits = self.dynamics(h, target)
            loss_reward, reward_metrics = self.space.reward_loss(reward_logits, self.space.reward(steps.reward))
            loss_state, state_metrics = self.space.next_state_loss(next_state_logits, self.space.state(steps.next_obs))
            loss = loss + self.config.dynamics_strength * (loss_reward + loss_state)
            metrics.update(reward_metrics)
            metrics.update(state_metrics)
        metrics["loss"] = loss.detach()
        return loss, metrics

    # ---- inference: the interface TransformerAgent uses ------------------------------------------

    def prefill_context(self, context: Transitions, cache: KVCache | None = None, previous: Transitions | None = None) -> KVCache:
        """The KV cache of `context` [B, T] after `cache`; `previous` holds the steps before it (None: a window's start)."""
        _, cache = self.transformer(self.tokens(context.obs, previous, context), cache)
        return cache

    def sequence(self, context: Transitions, query_obs: torch.Tensor) -> torch.Tensor:
        """The whole window's tokens [B, T + 1, C]: the context, then the query state (after the context's last step)."""
        obs = torch.cat([context.obs, query_obs[:, None].to(context.obs.dtype)], dim=1)
        return self.tokens(obs, None, context)

    def policy(self, query_obs: torch.Tensor, context: Transitions, context_cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Action logits [B, A] at query states [B, dim_state] after `context`, and the cache up to the query."""
        if context_cache is None:
            h, cache = self.transformer(self.sequence(context, query_obs))
            return self.pred_action(h[:, -1]), cache
        token = self.tokens(query_obs[:, None].to(context.obs.dtype), context, None)  # [B, 1, C]: after the context's last step
        h, cache = self.transformer(token, context_cache)
        return self.pred_action(h[:, -1]), cache


class DenseDynamics(nn.Module):
    """Dense DICP-AD's world model: reward and next-state logits of taking `action` where the hidden state is h.

    A small MLP over h_t + an embedding of the action, not another token: position t + 1's token
    already holds r_t, so no later position of the sequence may serve as the query. Planning
    therefore costs no Transformer pass per candidate action, only one per imagined step.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        n_embd, n_inner, space = config.transformer.n_embd, config.transformer.n_inner, config.space()
        self.embed_action = space.action_embedding(n_embd)
        self.mix = nn.Sequential(nn.Linear(n_embd, n_inner), nn.GELU(), nn.Linear(n_inner, n_embd))
        self.pred_reward = space.reward_head(n_embd)
        self.pred_next_state = space.next_state_head(n_embd)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [..., C] and action indices [...] -> reward logits [..., n_reward_classes], next-state logits [..., grid_size**2]."""
        x = h + self.embed_action(action.long())
        x = x + self.mix(x)
        return self.pred_reward(x), self.pred_next_state(x)
