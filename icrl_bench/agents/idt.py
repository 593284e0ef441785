"""In-context Decision Transformer (Huang et al. 2024) as the DICP paper runs it, on grid worlds and Meta-World.

IDT decides hierarchically: every `low_per_high` steps a high-level decision z (a Gaussian in
`dim_z` dimensions) is made, and low-level actions follow it. Three Transformers (official
gridworld/model/idt.py and metaworld/model/idt.py, alike but for the inputs and heads: spaces.py):

  Reviewing Decisions   a block's `low_per_high` transitions (sum of state, action, reward and
                        next-state embeddings per step) -> the z distribution that explains them;
  Making Decisions      over blocks: tokens (return-to-go, first state, reviewed z) per block;
                        the hidden state at a block's state token predicts its z distribution;
  Decisions to Go       within a block: tokens (z_t, s_t, a_t, r_t) per step, z_t drawn from the
                        block's distribution (reparameterised); s_t's hidden state predicts a_t;
                        for `dicp-idt`, a_t's hidden state predicts r_t and s_{t+1}.

Data (official IDTDataset): in each stream the episodes are sorted by return (ascending), and
return-to-go is relabelled so that every episode starts from the stream's best return (or, with
`return_to_go_label: train-max`, a documented variant, from the return-to-go acting starts at). Windows of
`n_transit` steps start anywhere. The loss is the action loss over every step (grid: cross-entropy;
Meta-World: Gaussian NLL) + dynamics_strength * (reward + next-state losses) for dicp-idt (Meta-World:
reward MSE, the next state only with `learn_transition`); there is no KL term, as in the official
code. In eval mode z is the mean (deterministic validation); acting samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from icrl_bench.agents.acting import CheckpointAgent, rows_of
from icrl_bench.agents.ad import DenseDynamics
from icrl_bench.agents.base import TaskInfo
from icrl_bench.agents.planner import IDTBeams, IDTWorld, beam_search
from icrl_bench.agents.sampling import predicted_rewards
from icrl_bench.agents.spaces import ContinuousModelConfig, GridModelConfig
from icrl_bench.agents.transformer import KVCache, Transformer
from icrl_bench.envs.families import get_family
from icrl_bench.errors import IcrlBenchError

RETURN_TO_GO_LABELS = ("stream-best", "train-max")  # where a training episode's return-to-go starts (IDTOptions)


@dataclass
class IDTOptions:
    """IDT's own settings: a mixin placed before a grid or a continuous model config (IDTConfig,
    ContinuousIDTConfig), whose checks its `__post_init__` runs first."""

    low_per_high: int = 10  # low-level steps per high-level decision
    dim_z: int = 8  # size of a high-level decision
    horizon: int = 0  # episode length (set from the dataset); a multiple of low_per_high
    target_return: float = 0.0  # return-to-go an episode starts from when acting (set from the dataset's env)
    # Where each training episode's return-to-go starts: "stream-best" (the official IDTDataset: the
    # stream's best return, a converged source's optimum for the task) or "train-max" (a documented
    # variant: `target_return`, where acting starts every episode, so training reads no per-task value).
    return_to_go_label: str = "stream-best"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.return_to_go_label not in RETURN_TO_GO_LABELS:
            raise ValueError(f"return_to_go_label must be one of {', '.join(RETURN_TO_GO_LABELS)}, got {self.return_to_go_label!r}")
        if self.low_per_high < 1 or self.dim_z < 1:
            raise ValueError(f"low_per_high and dim_z must be >= 1, got {self.low_per_high}, {self.dim_z}")
        if self.n_transit % self.low_per_high:
            raise ValueError(f"n_transit ({self.n_transit}) must be a multiple of low_per_high ({self.low_per_high})")
        if self.horizon and self.horizon % self.low_per_high:
            raise ValueError(f"the episode horizon ({self.horizon}) must be a multiple of low_per_high ({self.low_per_high})")

    @property
    def n_high(self) -> int:
        return self.n_transit // self.low_per_high


@dataclass
class IDTConfig(IDTOptions, GridModelConfig):
    """IDT on the grid worlds (official gridworld/cfg/model/idt_*.yaml); `state_features: cell+xy`
    adds the cell's coordinates to every state embedding (a documented variant, not the paper's)."""

    any_layout_xy: ClassVar[bool] = True


@dataclass
class ContinuousIDTConfig(IDTOptions, ContinuousModelConfig):
    """IDT on Meta-World (official metaworld/cfg/model/idt_ml1.yaml)."""


AnyIDTConfig = IDTConfig | ContinuousIDTConfig
RETURN_TO_GO = ("train-max", "task-optimum")  # where an episode's return-to-go starts when acting (IDTAgent)


# ---- data: sort episodes by return, relabel return-to-go ---------------------------------------------


@dataclass
class SortEpisodes:
    """Chunk transform for the window sampler: {name: [stream, step, ...]} -> episodes sorted, plus return_to_go.

    `start`: where every episode's return-to-go starts; None is the stream's best return (official)."""

    horizon: int
    start: float | None = None

    def __call__(self, chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        S, T = chunk["reward"].shape
        if T % self.horizon:
            raise IcrlBenchError(f"IDT needs whole episodes: {T} steps per stream is not a multiple of the horizon {self.horizon}.")
        E = T // self.horizon
        dtype = np.float32 if np.issubdtype(chunk["reward"].dtype, np.floating) else np.int32  # grid rewards are uint8: sum in int32
        reward = chunk["reward"].astype(dtype).reshape(S, E, self.horizon)  # [S, episode, time]
        rtg = np.flip(np.flip(reward, -1).cumsum(-1), -1)  # return-to-go within each episode [S, E, H]
        order = np.argsort(rtg[:, :, 0], axis=1, kind="stable")  # episodes by return, ascending [S, E]
        out = {}
        for name, values in chunk.items():
            episodes = values.reshape((S, E, self.horizon) + values.shape[2:])  # [S, E, H, ...]
            index = order.reshape((S, E) + (1,) * (episodes.ndim - 2))
            out[name] = np.take_along_axis(episodes, index, axis=1).reshape(values.shape)
        rtg = np.take_along_axis(rtg, order[:, :, None], axis=1)  # [S, E, H]
        start = rtg.max(axis=(1, 2))[:, None] if self.start is None else np.asarray(self.start, dtype=dtype)
        offset = start - rtg[:, :, 0]  # every episode starts at the stream's best return (or at `start`) [S, E]
        out["return_to_go"] = (rtg + offset[:, :, None]).reshape(S, T).astype(dtype)
        return out


# ---- the three modules --------------------------------------------------------------------------------


class ReviewingDecisions(nn.Module):
    """A block of transitions [B, H, L, ...] (encoded by the space) -> its z distribution [B, H, 2 * dim_z] (mean, log-variance)."""

    def __init__(self, config: AnyIDTConfig):
        super().__init__()
        n_embd, space = config.transformer.n_embd, config.space()
        self.transformer = Transformer(config.transformer)
        self.embed_state = space.state_embedding(n_embd)
        self.embed_action = space.action_embedding(n_embd)
        self.embed_reward = space.reward_embedding(n_embd)
        self.embed_next_state = space.state_embedding(n_embd)
        self.predict_z = nn.Linear(n_embd, 2 * config.dim_z)

    def forward(self, s: torch.Tensor, a: torch.Tensor, r: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        B, H, L = r.shape
        x = self.embed_state(s) + self.embed_action(a) + self.embed_reward(r) + self.embed_next_state(s_next)  # [B, H, L, C]
        h, _ = self.transformer(x.reshape(B * H, L, -1))  # [B*H, L, C]
        return self.predict_z(h[:, -1]).reshape(B, H, -1)  # [B, H, 2*dim_z]


class MakingDecisions(nn.Module):
    """Blocks' (return-to-go, first state, reviewed z) [B, H] -> each block's z distribution [B, H, 2 * dim_z]."""

    def __init__(self, config: AnyIDTConfig):
        super().__init__()
        n_embd = config.transformer.n_embd
        self.transformer = Transformer(config.transformer)
        self.embed_return = nn.Linear(1, n_embd)
        self.embed_state = config.space().state_embedding(n_embd)
        self.embed_z = nn.Linear(2 * config.dim_z, n_embd)
        self.pred_z_dist = nn.Linear(n_embd, 2 * config.dim_z)

    def tokens(self, rtg: torch.Tensor, s: torch.Tensor, z_dist: torch.Tensor) -> torch.Tensor:
        """[B, H] rtg, [B, H, ...] states, [B, H, 2*dim_z] reviewed z -> [B, 3H, C] tokens (r_1, s_1, z_1, r_2, ...)."""
        B, H = rtg.shape
        x = torch.stack([self.embed_return(rtg.float()[..., None]), self.embed_state(s), self.embed_z(z_dist)], dim=2)  # [B, H, 3, C]
        return x.reshape(B, 3 * H, -1)

    def forward(self, rtg: torch.Tensor, s: torch.Tensor, z_dist: torch.Tensor) -> torch.Tensor:
        B, H = rtg.shape
        h, _ = self.transformer(self.tokens(rtg, s, z_dist))  # [B, 3H, C]
        return self.pred_z_dist(h.reshape(B, H, 3, -1)[:, :, 1])  # at each state token [B, H, 2*dim_z]


class DecisionsToGo(nn.Module):
    """Within a block: the action at each step, and for `dicp-idt` the reward (and next state) of the action taken.

    Layout "dicp" (the official one): tokens (z_t, s_t, a_t, r_t) per step; s_t's hidden state
    predicts a_t, a_t's predicts r_t and s_{t+1}. Layout "dense" (a documented variant, grid
    worlds only): one token per step, z_t + s_t + a_{t-1} + r_{t-1} (a learned "none" at a block's
    first step), whose hidden state predicts a_t and, through ad.py's `DenseDynamics` with the
    action taken, r_t and s_{t+1}: the same supervision on a quarter of the tokens, so a training
    step costs ~2x less on a CPU (the dense AD's token design, applied inside each block).
    """

    def __init__(self, config: AnyIDTConfig):
        super().__init__()
        n_embd, space = config.transformer.n_embd, config.space()
        self.dense = config.layout == "dense"
        self.transformer = Transformer(config.transformer)
        self.embed_z = nn.Linear(config.dim_z, n_embd)
        self.embed_state = space.state_embedding(n_embd)
        if self.dense:
            self.none_action, self.none_reward = config.num_actions, config.n_reward_classes
            self.pred_action = space.action_head(n_embd)
            self.embed_prev_action = nn.Embedding(config.num_actions + 1, n_embd)  # index num_actions: none
            self.embed_prev_reward = nn.Embedding(config.n_reward_classes + 1, n_embd)  # index n_reward_classes: none
            self.dynamics = DenseDynamics(config) if config.dynamics else None
            return
        self.embed_action = space.action_embedding(n_embd)  # created in this order: a seed gives the weights it always gave
        self.embed_reward = space.reward_embedding(n_embd)
        self.pred_action = space.action_head(n_embd)
        if config.dynamics:
            if space.learns_next_state:
                self.pred_next_state = space.next_state_head(n_embd)
            self.pred_reward = space.reward_head(n_embd)

    def dense_token(self, z: torch.Tensor, s: torch.Tensor, prev_a: torch.Tensor, prev_r: torch.Tensor) -> torch.Tensor:
        """The dense layout's token [..., C] of a step: its z and state, the block's previous action and reward (or none)."""
        return self.embed_z(z) + self.embed_state(s) + self.embed_prev_action(prev_a) + self.embed_prev_reward(prev_r)

    def forward(self, z: torch.Tensor, s: torch.Tensor, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """z [B, H, L, dim_z]; s, a, r [B, H, L, ...] (encoded) -> hidden states [B, H, L, 4, C] (dicp) or [B, H, L, C] (dense)."""
        B, H, L = r.shape
        if self.dense:
            prev_a = torch.cat([torch.full_like(a[..., :1], self.none_action), a[..., :-1]], dim=-1)  # [B, H, L]
            prev_r = torch.cat([torch.full_like(r[..., :1], self.none_reward), r[..., :-1]], dim=-1)
            h, _ = self.transformer(self.dense_token(z, s, prev_a, prev_r).reshape(B * H, L, -1))  # [B*H, L, C]
            return h.reshape(B, H, L, -1)
        x = torch.stack([self.embed_z(z), self.embed_state(s), self.embed_action(a), self.embed_reward(r)], dim=3)  # [B, H, L, 4, C]
        h, _ = self.transformer(x.reshape(B * H, L * 4, -1))  # [B*H, 4L, C]
        return h.reshape(B, H, L, 4, -1)

    def heads(self, h: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Hidden states from `forward` and the actions taken -> action, reward and next-state head outputs
        (None where the network has no such head)."""
        if self.dense:
            reward, next_state = self.dynamics(h, a) if self.dynamics is not None else (None, None)
            return self.pred_action(h), reward, next_state
        at_action, pred_reward, pred_next_state = h[..., 2, :], getattr(self, "pred_reward", None), getattr(self, "pred_next_state", None)
        reward = pred_reward(at_action) if pred_reward is not None else None
        next_state = pred_next_state(at_action) if pred_next_state is not None else None
        return self.pred_action(h[..., 1, :]), reward, next_state


class IDT(nn.Module):
    """The IDT network; `config.dynamics` makes its Decisions-to-Go a world model (dicp-idt)."""

    def __init__(self, config: AnyIDTConfig):
        super().__init__()
        self.config = config
        self.space = config.space()
        self.reviewing_decisions = ReviewingDecisions(config)
        self.making_decisions = MakingDecisions(config)
        self.decisions_to_go = DecisionsToGo(config)

    @property
    def window(self) -> int:
        return self.config.n_transit

    def sample_z(self, z_dist: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws per decision: [..., 2*dim_z] -> [..., n, dim_z]; the mean n times in eval mode."""
        mean, logvar = z_dist.chunk(2, dim=-1)
        mean, std = mean.unsqueeze(-2).expand(*mean.shape[:-1], n, -1), logvar.div(2).exp().unsqueeze(-2)
        if not self.training and generator is None:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + eps * std

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(batch)

    def blocks(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A window's arrays [B, W, ...], encoded by the space and cut into blocks [B, H, L, ...]."""
        B, W = batch["reward"].shape
        H, L = W // self.config.low_per_high, self.config.low_per_high
        space = self.space
        encoded = {"s": space.state(batch["obs"]), "a": space.action(batch["action"]), "r": space.reward(batch["reward"]),
                   "s_next": space.state(batch["next_obs"]), "rtg": batch["return_to_go"]}
        return {k: x.reshape(B, H, L, *x.shape[2:]) for k, x in encoded.items()}

    def hidden(self, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decisions-to-Go hidden states [B, H, L, 4, C] ([B, H, L, C] dense) of a window's `blocks` (the training
        forward; acting must match it)."""
        s, a, r, s_next, rtg = (blocks[k] for k in ("s", "a", "r", "s_next", "rtg"))
        z_dist = self.reviewing_decisions(s, a, r, s_next)  # [B, H, 2*dim_z]
        z_pred = self.making_decisions(rtg[:, :, 0], s[:, :, 0], z_dist)  # [B, H, 2*dim_z]
        z = self.sample_z(z_pred, self.config.low_per_high)  # [B, H, L, dim_z]
        return self.decisions_to_go(z, s, a, r)  # [B, H, L, 4, C]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c, space = self.config, self.space
        blocks = self.blocks(batch)
        a, r, s_next = blocks["a"], blocks["r"], blocks["s_next"]
        action, reward, next_state = self.decisions_to_go.heads(self.hidden(blocks), a)
        loss, metrics = space.action_loss(action, a)
        if c.dynamics:
            loss_dyn, dyn_metrics = space.reward_loss(reward, r)
            if next_state is not None:
                loss_state, state_metrics = space.next_state_loss(next_state, s_next)
                loss_dyn = loss_dyn + loss_state
                dyn_metrics.update(state_metrics)
            loss = loss + c.dynamics_strength * loss_dyn
            metrics.update(dyn_metrics)
        metrics["loss"] = loss.detach()
        return loss, metrics

    @torch.no_grad()
    def hits_by_position(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Grid worlds: how many of a batch's windows each head gets right, per (block, step in block) [H, L].

        The Decisions-to-Go Transformer sees only its block, so what it knows of the task comes
        from earlier blocks through z: where in the window a prediction stands tells how much
        context it had (what `loss`'s accuracies average away)."""
        if self.space.kind != "discrete":
            raise IcrlBenchError("accuracy by position is for grid worlds (classification heads); this IDT acts in a continuous space.")
        blocks = self.blocks(batch)
        action, reward, next_state = self.decisions_to_go.heads(self.hidden(blocks), blocks["a"])
        hits = {"action": action.argmax(-1) == blocks["a"]}
        if self.config.dynamics:
            hits["reward"] = reward.argmax(-1) == blocks["r"]
            hits["next_state"] = next_state.argmax(-1) == blocks["s_next"]
        return {name: hit.sum(0) for name, hit in hits.items()}


# ---- acting -------------------------------------------------------------------------------------------


class IDTAgent(CheckpointAgent):
    """Acts with a trained IDT: a decision every `low_per_high` steps, actions decoded with a KV cache.

    Return-to-go starts each episode at a target and falls by the reward of each finished block.
    `return_to_go` says which target: "train-max" (the default) is `config.target_return` (grid:
    the best optimal return among the training tasks; Meta-World: reward_max * horizon, as the
    official code); "task-optimum" is each test task's own optimal return, as the official grid
    evaluation (`get_max_return`). On Darkroom that optimum is 21 minus the goal's distance from the
    start, so it tells the agent how far the goal is: privileged, and results record the setting. dicp-idt plans within the current block: on the grid worlds by beam search
    (`beam_k` > 0, planner.py) once `n_transit` steps have been seen; on Meta-World by sampling
    (`samples` > 1, sampling.py) in blocks that start past `beam_start` with `plan_from_step`
    steps seen (the official rule, taken at the block's first step).
    """

    def __init__(self, *args, return_to_go: str = "train-max", **kwargs):
        super().__init__(*args, **kwargs)
        if return_to_go not in RETURN_TO_GO:
            raise IcrlBenchError(f"return_to_go must be one of {', '.join(RETURN_TO_GO)}, got {return_to_go!r}.")
        if return_to_go == "task-optimum" and self.space.kind == "continuous":
            raise IcrlBenchError("return_to_go=task-optimum is the grid worlds' official evaluation; on Meta-World IDT acts from reward_max * horizon (train-max).")
        self.return_to_go = return_to_go

    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        c = self.model.config
        self.check_task(task_info)
        if task_info.horizon % c.low_per_high:
            raise IcrlBenchError(f"{self.name} decides every {c.low_per_high} steps; the horizon {task_info.horizon} is not a multiple.")
        E, dev = num_envs, self.device
        self.num_envs = E
        self.generator = torch.Generator(device=dev).manual_seed(self.seed)
        if self.return_to_go == "task-optimum":  # privileged: the official grid evaluation
            target = get_family(task_info.env).max_return(task_info.task_params)
        else:
            target = np.full(E, c.target_return)
        self.target = torch.as_tensor(np.asarray(target, dtype=np.float32), device=dev)  # where each episode's return-to-go starts [E]
        self.rtg = self.target.clone()  # return-to-go of the current block
        self.blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # finished blocks: (rtg [E], first state [E, ...], z_dist [E, 2dz])
        self.t_low = 0
        self.block: list[tuple[torch.Tensor, ...]] = []  # this block's transitions (s, a, r, s'), encoded, [E, ...] each
        self.low_cache: KVCache | None = None
        self.low_tokens: list[torch.Tensor] = []  # this block's Decisions-to-Go tokens, for checks and planners
        self.steps_seen = 0  # since reset (the official `step`)
        self.t_episode = torch.zeros(E, dtype=torch.long, device=dev)  # step within each env's episode

    def _decide(self, s0: torch.Tensor) -> None:
        """A new high-level decision for the block starting in (encoded) states s0 [E, ...]."""
        c, md = self.model.config, self.model.making_decisions
        past = self.blocks[-(c.n_high - 1):] if c.n_high > 1 else []
        rtg = torch.stack([b[0] for b in past] + [self.rtg], dim=1)  # [E, h]
        s = torch.stack([b[1] for b in past] + [s0], dim=1)  # [E, h, ...]
        pending = torch.zeros(len(s0), 2 * c.dim_z, device=s0.device)  # the current block is not reviewed yet (never attended to)
        z_dist = torch.stack([b[2] for b in past] + [pending], dim=1)  # [E, h, 2*dim_z]
        tokens = md.tokens(rtg, s, z_dist)[:, :-1]  # up to the current state token [E, 3h - 1, C]
        h, _ = md.transformer(tokens)
        z_pred = md.pred_z_dist(h[:, -1])  # [E, 2*dim_z]
        self.z = self.model.sample_z(z_pred, c.low_per_high, self.generator if self.sample else None)  # [E, L, dim_z]
        self.block_start = (self.rtg.clone(), s0)

    @torch.no_grad()
    def action_logits(self, obs: np.ndarray) -> torch.Tensor:
        """The policy head's output at `obs` [E, k] (logits, or the Gaussian's mean and log-variance)."""
        d2g = self.model.decisions_to_go
        s = self.space.state(torch.as_tensor(np.asarray(obs), device=self.device))  # [E, ...]
        if self.t_low == 0:
            self._decide(s)
            self.low_cache, self.low_tokens = None, []
        z = self.z[:, self.t_low]
        if d2g.dense:  # one token: this step's z and state, the block's previous action and reward (none at its start)
            if self.t_low == 0:
                a, r = torch.full_like(s, d2g.none_action), torch.full_like(s, d2g.none_reward)
            else:
                _, a, r, _ = self.block[-1]
            new = [d2g.dense_token(z, s, a, r)]
        elif self.t_low == 0:
            new = [d2g.embed_z(z), d2g.embed_state(s)]
        else:
            _, a, r, _ = self.block[-1]
            new = [d2g.embed_action(a), d2g.embed_reward(r), d2g.embed_z(z), d2g.embed_state(s)]
        tokens = torch.stack(new, dim=1)  # [E, k, C]
        h, self.low_cache = d2g.transformer(tokens, self.low_cache)  # the block's sequence only grows: exact
        self.low_tokens.append(tokens)
        self.low_hidden = h[:, -1]  # at the current state: the policy's input, and the dense world model's
        return d2g.pred_action(self.low_hidden)

    @torch.no_grad()
    def predict_dynamics(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reward and next-state head outputs of `action` ([E] or [E, action_dim]) at the current state (dicp-idt's world model)."""
        d2g = self.model.decisions_to_go
        if not self.model.config.dynamics:
            raise ValueError("this IDT has no dynamics heads (train dicp-idt for a world model)")
        if d2g.dense:
            return d2g.dynamics(self.low_hidden, self.space.action(action))
        h, _ = d2g.transformer(d2g.embed_action(self.space.action(action))[:, None], self.low_cache)
        next_state = d2g.pred_next_state(h[:, -1]) if self.space.learns_next_state else None
        return d2g.pred_reward(h[:, -1]), next_state

    @torch.inference_mode()
    def plan(self, logits: torch.Tensor) -> torch.Tensor:
        """DICP's actions [E] by beam search over the rest of the block (grid; after `action_logits`)."""
        E, c = len(logits), self.model.config
        depth = torch.full((E,), c.low_per_high - self.t_low, device=self.device)  # the block's remaining steps
        envs = torch.arange(E, device=self.device)
        if self.planner == "recompute":
            tokens = torch.cat(self.low_tokens, dim=1)  # the block so far, encoded from scratch below [E, L, C]
            d2g = self.model.decisions_to_go
            h, _ = d2g.transformer(tokens)
            world, root, logits = IDTWorld(self.model, self.z, cached=False), IDTBeams(envs, self.t_low, tokens=tokens, hidden=h[:, -1]), d2g.pred_action(h[:, -1])
        else:
            world, root = IDTWorld(self.model, self.z), IDTBeams(envs, self.t_low, cache=self.low_cache, hidden=self.low_hidden)
        return beam_search(world, root, logits, self.beam_k, depth, self.sample, self.generator)

    @torch.inference_mode()
    def score_candidates(self, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Predicted rewards [R, K] of candidate actions [R, K, A] at the current step of envs `rows` (Meta-World)."""
        d2g = self.model.decisions_to_go
        context = {"tokens": torch.cat(self.low_tokens, dim=1)[rows]} if self.planner == "recompute" else {"cache": rows_of(self.low_cache, rows)}
        return predicted_rewards(d2g.transformer, d2g.embed_action, lambda h: self.space.predicted_reward(d2g.pred_reward(h)), candidates, **context)

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        out = self.action_logits(obs)
        if self.space.kind == "continuous":  # the planning rule is taken at the block's first step
            return self.continuous_action(out, self.planning_now(self.t_episode - self.t_low, self.steps_seen - self.t_low)).cpu().numpy()
        if self.beam_k and self.steps_seen >= self.plan_from_step:
            return self.plan(out).cpu().numpy()
        return self.discrete_action(out).cpu().numpy()

    @torch.no_grad()
    def observe(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        c, dev, space = self.model.config, self.device, self.space
        tensor = lambda x: torch.as_tensor(np.asarray(x), device=dev)
        self.block.append((space.state(tensor(obs)), space.action(tensor(action)), space.reward(tensor(reward)), space.state(tensor(next_obs))))
        self.t_low += 1
        self.steps_seen += 1
        done = tensor(done).bool()
        self.t_episode = torch.where(done, 0, self.t_episode + 1)
        if self.t_low == c.low_per_high:  # the block is over: review it
            s_b, a_b, r_b, n_b = (torch.stack(x, dim=1)[:, None] for x in zip(*self.block))  # [E, 1, L, ...] each
            z_dist = self.model.reviewing_decisions(s_b, a_b, r_b, n_b)[:, 0]  # [E, 2*dim_z]
            rtg0, s0 = self.block_start
            self.blocks = (self.blocks + [(rtg0, s0, z_dist)])[-c.n_high:]
            self.rtg = torch.where(done, self.target, self.rtg - r_b[:, 0].sum(-1).float())
            self.block, self.t_low = [], 0
