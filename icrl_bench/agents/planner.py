"""DICP's in-context model-based planning (Son et al. 2025, Sec. 4.2): beam search in the model's own world.

This is the discrete-action planner (grid worlds); with continuous actions DICP samples candidate
actions instead (sampling.py).

A DICP network is both a policy and a world model: after the query state it predicts an action,
and after an action-query token the reward and the next state of taking it. At each step (once
the context is full) the agent imagines futures before acting:

    level 1   candidates: every action, in the order the policy gives them (sampled without
              replacement when acting samples, by logit otherwise); predicted reward = argmax
              of the reward head, next state = argmax of the next-state head
    level d   each of the `beam_k` best beams appends its imagined transition
              (state, action, predicted reward, predicted next state) to its context, and
              tries every action (0..A-1) in its predicted next state
    score     sum of predicted immediate rewards; beams kept by a stable sort, so ties go to
              the earlier beam and the earlier candidate (as `torch.sort(stable=True)` does in
              the official gridworld/model/{ad,dpt}.py `beam_search`)
    act       the first action of the best beam

Depth: up to the paper's planning horizon (`PLANNING_HORIZON`: grid_size - 1 on Darkroom,
2 (grid_size - 1) on Darkroom-Permuted and Dark Key-to-Door) and never past the end of the
current episode (`depth = min(planning horizon, horizon - t)` with t the step in the episode).
Envs whose episode ends sooner than others' add no reward after their end, which leaves their
choice exactly what a shorter search would give.

The imagined context *slides*, as in the official code: a beam's context is the last
n_transit - 1 transitions of (real context, its imagined transitions), so each imagined
transition pushes the oldest real one out once the window is full, and every sequence the
network sees has the length it was trained on. (Letting the context grow instead, by up to 16
imagined transitions past the trained length, measurably hurt: see docs/agents.md.)

Two ways to get the same numbers:

  `CachedWorld`     the KV cache. The A action queries of a beam branch off its cache as
                    siblings (`Transformer.forward(..., siblings=True)`: one copy of the cache, each action token
                    attending to it and to itself only). While the window has room, an AD beam
                    extends its parent's cache by its imagined transition and query state
                    (2 tokens). Once a level drops real transitions, or for DPT (whose query
                    comes *first*, so a new imagined query state invalidates its prefix), the
                    prefix is re-encoded once per level: the window's real part once per env
                    (AD) or per (env, imagined cell) (DPT), then each beam's short imagined tail
                    on top of a copy of it. That real part was mostly encoded at the last real
                    step already, one level deeper: the agent's `RealPrefixes` keep it, and
                    it is extended by the new real transition (real_prefixes.py).
  `RecomputeWorld`  the reference: every candidate's whole sequence encoded from scratch.

dicp-idt plans with `IDTWorld` / `IDTRecomputeWorld` in its Decisions-to-Go Transformer, whose
sequence within a block is (z_t, s_t, a_t, r_t) per step: a beam appends (r_t, z_{t+1}, s_{t+1}) to
its parent's cache and then branches the A action tokens a_{t+1}, whose hidden states predict
reward and next state. Depth: the rest of the current block (`low_per_high - t`): the next block's
decision z is not made yet. (The official idt.py always searches `low_per_high` levels and indexes
z by the beam level, running past the block's end with another step's z; a block never crosses
an episode's end since the horizon is a multiple of `low_per_high`.) There is no grid-based
planning horizon in the official IDT search. In the dense layout (idt.py `DecisionsToGo`) a beam
keeps the hidden state of its state token, which the world model (an MLP) reads with each
action, so expanding costs no Transformer pass; advancing appends one token (z_{t+1} + s_{t+1} +
a_t + r_t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from icrl_bench.agents.real_prefixes import RealPrefixes
from icrl_bench.agents.spaces import state_from_index, state_index
from icrl_bench.agents.tokens import Transitions
from icrl_bench.agents.transformer import KVCache, Transformer
from icrl_bench.errors import IcrlBenchError

# Official evaluate.py `--beam-k` default.
PAPER_BEAM_K = 10
# Which planning code made a result: results record it, and `reproduce` re-evaluates results
# made by another revision. Bump it whenever planning acts differently for the same checkpoint
# and settings. 1: the imagined context grew past n_transit; 2: it slides, as the official code.
PLANNER_REVISION = 2
# Official model/{ad,dpt}.py `max_beam_steps`: grid_size - 1 on darkroom, 2 (grid_size - 1) on the others (grid_size 9).
PLANNING_HORIZON = {"darkroom": 8, "darkroom-permuted": 16, "dark-key-to-door": 16}


def planning_horizon(env: str) -> int:
    """The paper's planning horizon (maximum beam depth) for env family `env`."""
    if env not in PLANNING_HORIZON:
        raise IcrlBenchError(f"DICP planning has no planning horizon for env {env!r}; known: {', '.join(sorted(PLANNING_HORIZON))}.")
    return PLANNING_HORIZON[env]


class World(Protocol):
    """What the beam search needs from a model: N beams, each in an imagined query state."""

    num_actions: int

    def expand(self, beams: object, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted reward classes and next cells [N, A'] of taking `actions` [N, A'] in each beam."""
        ...

    def advance(self, beams: object, parent: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_cell: torch.Tensor) -> object:
        """N' new beams: beam `parent[i]` [N'] took `action[i]`, got `reward[i]`, reached `next_cell[i]`."""
        ...


def candidate_order(logits: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Level-1 candidates [E, A]: a policy-weighted permutation when sampling, by logit otherwise."""
    if sample:
        probs = torch.softmax(logits.float(), -1).clamp_min(torch.finfo(torch.float32).tiny)  # every action gets a place
        return torch.multinomial(probs, logits.shape[-1], replacement=False, generator=generator)
    return logits.float().argsort(dim=-1, descending=True, stable=True)


@torch.inference_mode()
def beam_search(world: World, root: object, logits: torch.Tensor, beam_k: int, depth: torch.Tensor,
                sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """The first action [E] of the best of `beam_k` beams, `depth` [E] levels deep per env.

    `root` holds E beams (one per env, in its real query state); `logits` [E, A] is the policy there.
    """
    E, A = logits.shape
    if beam_k < 1:
        raise ValueError(f"beam_k must be >= 1, got {beam_k}")
    max_depth = int(depth.max())
    order = candidate_order(logits, sample, generator)  # [E, A]
    reward, next_cell = world.expand(root, order)  # [E, A] each (depth >= 1 always: the real step itself)
    score, pick = reward.sort(dim=-1, descending=True, stable=True)  # [E, A]
    k = min(beam_k, A)
    score, pick = score[:, :k], pick[:, :k]  # [E, k]
    action = order.gather(1, pick)  # [E, k]
    first = action
    parent = torch.arange(E, device=logits.device)[:, None].expand(E, k)  # [E, k]: rows of the root
    reward, next_cell = reward.gather(1, pick), next_cell.gather(1, pick)
    beams = root
    for level in range(2, max_depth + 1):
        beams = world.advance(beams, parent.reshape(-1), action.reshape(-1), reward.reshape(-1), next_cell.reshape(-1))  # E * k beams
        all_actions = torch.arange(A, device=logits.device).expand(E * k, A)  # [E*k, A]
        r, s = world.expand(beams, all_actions)  # [E*k, A]
        r = r * (depth >= level).repeat_interleave(k)[:, None]  # no reward past an env's episode end
        total = (score[:, :, None] + r.view(E, k, A)).view(E, k * A)  # [E, k*A]: beam-major, as the official sort sees them
        n_parent = k
        score, pick = total.sort(dim=-1, descending=True, stable=True)
        k = min(beam_k, n_parent * A)
        score, pick = score[:, :k], pick[:, :k]  # [E, k]
        beam_of = pick // A  # which of the n_parent beams [E, k]
        first = first.gather(1, beam_of)
        action = pick % A
        parent = torch.arange(E, device=logits.device)[:, None] * n_parent + beam_of  # rows of `beams` [E, k]
        reward, next_cell = r.view(E, n_parent * A).gather(1, pick), s.view(E, n_parent * A).gather(1, pick)
    return first[:, 0]


# ---- AD and DPT worlds -----------------------------------------------------------------------------------


@dataclass
class Beams:
    """N imagined futures of AD / DPT.

    context: the real context followed by the beam's imagined transitions [N, T + d] (the network
    sees its last n_transit - 1, `window_start` on).
    state: the (imagined) query state each beam is in [N, dim_state].
    query_cache: [context, query] encoded (AD: context then query; DPT: query then context), or None.
    context_cache: AD only, the context without the query (what the next imagined transition extends).
    env: the env each beam belongs to [N]; n_real: how many of the context's transitions are real.
    hidden: the dense layout's hidden state at the query token [N, C], which its dynamics read, or None.
    """

    context: Transitions
    state: torch.Tensor
    query_cache: KVCache | None = None
    context_cache: KVCache | None = None
    env: torch.Tensor | None = None
    n_real: int = 0
    hidden: torch.Tensor | None = None

    def select(self, parent: torch.Tensor) -> Beams:
        c = self.context
        env = None if self.env is None else self.env[parent]
        return Beams(c.rows(parent), self.state[parent], env=env, n_real=self.n_real)


def _one_row_per(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For beams' group keys [N]: the first beam of each group [U] and each beam's group [N], so a
    prefix shared by a group is encoded once (`.index_select(inverse)` hands it to every beam)."""
    unique, inverse = torch.unique(key, return_inverse=True)  # [U], [N]
    N = len(key)
    first = torch.full((len(unique),), N, device=key.device).scatter_reduce(0, inverse, torch.arange(N, device=key.device), "amin")  # [U]
    return first, inverse


def _is_ad(model: nn.Module) -> bool:
    return model.query_after_context  # AD: the query follows the context; DPT: it precedes it


def window_start(model: nn.Module, length: int) -> int:
    """Where the sliding window of the last n_transit - 1 transitions starts in a context of `length`."""
    return max(0, length - (model.config.n_transit - 1))


def query_tokens(model: nn.Module, context: Transitions, state: torch.Tensor) -> torch.Tensor:
    """The policy's input sequence [N, T + 1, C] (the model's own order of context and query)."""
    if _is_ad(model):
        return torch.cat([model.embed_context(context), model.query_state_token(state)], dim=1)
    return torch.cat([model.embed_context.state_only(state), model.embed_context(context)], dim=1)


def _imagined(beams: Beams, parent: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_cell: torch.Tensor,
              grid_size: int) -> tuple[Beams, Transitions, torch.Tensor]:
    """The parents' beams with the imagined transition appended; also that transition [N', 1] and the new state."""
    base = beams.select(parent)
    next_state = state_from_index(next_cell, grid_size).to(base.state.dtype)  # [N', dim_state]
    step = Transitions(base.state[:, None], action[:, None].long(), reward[:, None].to(base.context.reward.dtype), next_state[:, None])
    c = base.context
    context = Transitions(*(torch.cat([a, b], dim=1) for a, b in zip((c.obs, c.action, c.reward, c.next_obs),
                                                                      (step.obs, step.action, step.reward, step.next_obs))))
    return Beams(context, next_state, env=base.env, n_real=base.n_real), step, next_state


def _encode_real(model: nn.Module, real: Transitions, state: torch.Tensor | None, cache: KVCache | None = None,
                 previous: Transitions | None = None) -> KVCache:
    """The cache of a window's real part `real` [N, T] (DPT: after query states `state` [N, dim]), or of
    `real` appended to `cache` (the same part of the window, extended; `previous`: the step before `real`)."""
    if model.config.layout == "dense":
        return model.prefill_context(real, cache, previous=previous)
    if _is_ad(model) or cache is not None:
        return model.transformer(model.embed_context(real), cache)[1]  # AD's prefill_context; DPT: more context after its query
    return model.transformer(query_tokens(model, real, state))[1]


class _World:
    """A DICP network used as a world model: what both ways of imagining need.

    `prefixes` (cached worlds): the agent's RealPrefixes, which keep the windows' real parts
    from one real step to the next; `offset`: the absolute index of the context's first transition.
    """

    def __init__(self, model: nn.Module, prefixes: RealPrefixes | None = None, offset: int = 0):
        if getattr(model, "dynamics", None) is None:
            raise IcrlBenchError("planning needs a DICP world model (dicp-ad, dicp-dpt, dicp-idt); this network has no dynamics heads.")
        if model.config.kind != "discrete":
            raise IcrlBenchError("beam search needs discrete actions; continuous agents plan by sampling (sampling.py).")
        self.model = model
        self.num_actions = model.config.num_actions
        self.grid_size = model.config.grid_size
        self.prefixes, self.offset = prefixes, offset

    def _real_prefix(self, beams: Beams, first: torch.Tensor) -> KVCache:
        """The caches [U] of the window's real part for beams `first` (DPT: after each one's query state)."""
        model = self.model
        start = window_start(model, len(beams.context))
        real = beams.context.slice(start, beams.n_real).rows(first)  # [U, T']
        state = beams.state[first]
        T = len(real)

        def encode(rows: torch.Tensor, kept: tuple[KVCache, int] | None) -> KVCache:
            if kept is None:
                return _encode_real(model, real.rows(rows), state[rows])
            cache, n = kept  # the cache holds all but the last n real transitions (at least one)
            ours = real.rows(rows)
            return _encode_real(model, ours.slice(T - n, T), None, cache, previous=ours.slice(T - n - 1, T - n))

        if self.prefixes is None or T == 0:
            return encode(torch.arange(len(first), device=first.device), None)
        cells = [-1] * len(first) if _is_ad(model) else state_index(state, self.grid_size).tolist()
        keys = [(env, cell, self.offset + start) for env, cell in zip(beams.env[first].tolist(), cells)]
        return self.prefixes.prefixes(keys, self.offset + beams.n_real, encode, device=first.device)


class CachedWorld(_World):
    """AD / DPT imagination on the KV cache (see the module docstring)."""

    def expand(self, beams: Beams, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if beams.query_cache is None:  # the window slid, or DPT's query state changed: re-encode the prefix
            beams.query_cache = self._query_cache(beams)
        h, _ = self.model.transformer(self.model.dynamics.embed_query_action(actions.long()), beams.query_cache, siblings=True)  # [N, A, C]
        dyn = self.model.dynamics
        return dyn.pred_reward(h).argmax(-1), dyn.pred_next_state(h).argmax(-1)

    def _query_cache(self, beams: Beams) -> KVCache:
        """Each beam's window up to its query token: AD [real, imagined, query], DPT [query, real, imagined].

        The real part of the window is the same for every beam of an env (DPT: of an env and
        imagined cell) at a level, so it is encoded once for each; only the short imagined tail
        (AD: and the query) is encoded per beam. Exact: a causal prefix does not depend on what
        follows it.
        """
        model = self.model
        ad = _is_ad(model)
        key = beams.env if ad else beams.env * self.grid_size**2 + state_index(beams.state, self.grid_size)  # [N]
        first, inverse = _one_row_per(key)
        prefix = self._real_prefix(beams, first)  # [U]
        imagined = beams.context.slice(beams.n_real, None)  # [N, d - 1]
        tail = [model.embed_context(imagined)] if len(imagined) else []
        if ad:
            tail.append(model.query_state_token(beams.state))
        cache = prefix.index_select(inverse)
        return model.transformer(torch.cat(tail, dim=1), cache)[1] if tail else cache

    def advance(self, beams: Beams, parent, action, reward, next_cell) -> Beams:
        new, step, next_state = _imagined(beams, parent, action, reward, next_cell, self.grid_size)
        if _is_ad(self.model) and window_start(self.model, len(new.context)) == 0:
            # The window still has room: extend each parent's context by its imagined transition and the new query state.
            tokens = torch.cat([self.model.embed_context(step), self.model.query_state_token(next_state)], dim=1)  # [N', 2, C]
            _, cache = self.model.transformer(tokens, beams.context_cache.index_select(parent))
            new.query_cache, new.context_cache = cache, cache.truncate(len(cache) - 1)
        return new


class RecomputeWorld(_World):
    """The reference: every candidate's whole sequence [context, query, action] encoded from scratch."""

    def policy(self, context: Transitions, state: torch.Tensor) -> torch.Tensor:
        h, _ = self.model.transformer(query_tokens(self.model, context, state))
        return self.model.pred_action(h[:, -1])

    def expand(self, beams: Beams, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, A = actions.shape
        rep = beams.select(torch.arange(N, device=actions.device).repeat_interleave(A))  # [N*A] copies
        window = rep.context.slice(window_start(self.model, len(rep.context)), None)  # the last n_transit - 1 transitions
        tokens = torch.cat([query_tokens(self.model, window, rep.state), self.model.dynamics.query_action_token(actions.reshape(-1))], dim=1)
        h, _ = self.model.transformer(tokens)  # [N*A, T + 2, C]
        dyn = self.model.dynamics
        return dyn.pred_reward(h[:, -1]).argmax(-1).view(N, A), dyn.pred_next_state(h[:, -1]).argmax(-1).view(N, A)

    def advance(self, beams: Beams, parent, action, reward, next_cell) -> Beams:
        return _imagined(beams, parent, action, reward, next_cell, self.grid_size)[0]


def _dense_outcomes(dynamics: nn.Module, hidden: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense world model's (ad.py `DenseDynamics`) predicted reward and next cell [N, A] of each action [N, A] where
    the beams' query hidden states are `hidden` [N, C]: an MLP per candidate, no Transformer pass."""
    N, A = actions.shape
    reward, next_state = dynamics(hidden[:, None].expand(N, A, -1), actions)  # [N, A, classes] each
    return reward.argmax(-1), next_state.argmax(-1)


class DenseWorld(_World):
    """Dense-layout DICP-AD (ad.py `DenseDynamics`): a beam's hidden state at its query token, read with each action.

    Expanding a beam costs no Transformer pass (the dynamics are an MLP on that hidden state);
    each imagined step costs one, for the beam's window: the last n_transit - 1 transitions of
    (real context, imagined ones) and the query state, its first token with "none" for the
    previous action and reward, as in training. `cached`: the real part of a level's window is
    encoded once per env and each beam's imagined tail on top of it (exact: a causal prefix does
    not depend on what follows); otherwise every beam's window from scratch (the reference).
    """

    def __init__(self, model: nn.Module, cached: bool = True, prefixes: RealPrefixes | None = None, offset: int = 0):
        super().__init__(model, prefixes, offset)
        self.cached = cached

    def expand(self, beams: Beams, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if beams.hidden is None:
            beams.hidden = self._hidden(beams)
        return _dense_outcomes(self.model.dynamics, beams.hidden, actions)

    def _hidden(self, beams: Beams) -> torch.Tensor:
        model, start = self.model, window_start(self.model, len(beams.context))
        if not self.cached:
            return model.transformer(model.sequence(beams.context.slice(start, None), beams.state))[0][:, -1]
        if start > beams.n_real:
            raise ValueError(f"the window ({model.config.n_transit} steps) no longer holds a real transition; plan less deep")
        first, inverse = _one_row_per(beams.env)
        real = beams.context.slice(start, beams.n_real)
        cache = None
        if len(real):  # the window's first token gets "none", as in training
            cache = self._real_prefix(beams, first).index_select(inverse)
        imagined = beams.context.slice(beams.n_real, None)  # [N, d]
        obs = torch.cat([imagined.obs, beams.state[:, None].to(imagined.obs.dtype)], dim=1)  # [N, d + 1, dim]
        previous = beams.context.slice(beams.n_real - 1, beams.n_real) if len(real) else None  # the last real transition
        return model.transformer(model.tokens(obs, previous, imagined), cache)[0][:, -1]

    def advance(self, beams: Beams, parent, action, reward, next_cell) -> Beams:
        return _imagined(beams, parent, action, reward, next_cell, self.grid_size)[0]


def check_beam_k(name: str, model: nn.Module, beam_k: int | None) -> int:
    """The beam size to act with: the paper's for a DICP network unless given; planning needs a world model."""
    has_world_model = bool(model.config.dynamics)
    if beam_k is None:
        return PAPER_BEAM_K if has_world_model else 0
    if isinstance(beam_k, bool) or not isinstance(beam_k, int) or beam_k < 0:
        raise IcrlBenchError(f"beam_k must be an integer >= 0 (0 = no planning), got {beam_k!r}.")
    if beam_k > 0 and not has_world_model:
        raise IcrlBenchError(f"--beam {beam_k}: {name} has no world model to plan with; use its DICP version (dicp-{name.removeprefix('dicp-')}) or --beam 0.")
    return beam_k


def count_forward_passes(model: nn.Module) -> None:
    """Make every Transformer forward call of `model` add 1 to `model.forward_calls` (idempotent)."""
    if hasattr(model, "forward_calls"):
        return
    model.forward_calls = 0

    def hook(module: nn.Module, args: Any) -> None:
        model.forward_calls += 1

    for module in model.modules():
        if isinstance(module, Transformer):
            module.register_forward_pre_hook(hook)


# ---- IDT world (Decisions-to-Go) -------------------------------------------------------------------------


@dataclass
class IDTBeams:
    """N imagined futures of IDT's current block.

    env: the env each beam belongs to [N] (its z sequence); t: the step in the block of the state token.
    cache: Decisions-to-Go cache up to the beam's state token (cached world), or tokens [N, L, C] (recompute).
    """

    env: torch.Tensor
    t: int
    cache: KVCache | None = None
    tokens: torch.Tensor | None = None
    hidden: torch.Tensor | None = None  # [N, C] at the beam's state token: the dense layout's world model reads it


class IDTWorld:
    """dicp-idt imagination on the Decisions-to-Go KV cache; `z` [E, low_per_high, dim_z] is the block's decision."""

    def __init__(self, model: nn.Module, z: torch.Tensor, cached: bool = True):
        if not model.config.dynamics:
            raise IcrlBenchError("planning needs a DICP world model (dicp-idt); this IDT has no dynamics heads.")
        self.d2g, self.z, self.cached = model.decisions_to_go, z, cached
        self.num_actions = model.config.num_actions

    def expand(self, beams: IDTBeams, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, A = actions.shape
        if self.d2g.dense:
            return _dense_outcomes(self.d2g.dynamics, beams.hidden, actions)
        if self.cached:
            h = self.d2g.transformer(self.d2g.embed_action(actions.long()), beams.cache, siblings=True)[0].reshape(N * A, -1)  # [N*A, C]
        else:
            a = self.d2g.embed_action(actions.reshape(-1).long())[:, None]  # [N*A, 1, C]
            h = self.d2g.transformer(torch.cat([beams.tokens.repeat_interleave(A, dim=0), a], dim=1))[0][:, -1]
        return self.d2g.pred_reward(h).argmax(-1).view(N, A), self.d2g.pred_next_state(h).argmax(-1).view(N, A)

    def advance(self, beams: IDTBeams, parent, action, reward, next_cell) -> IDTBeams:
        d2g, env, t = self.d2g, beams.env[parent], beams.t + 1
        if d2g.dense:  # one token: z_{t+1}, s_{t+1}, a_t, r_t
            token = d2g.dense_token(self.z[env, t], next_cell.long(), action.long(), reward.long())[:, None]  # [N', 1, C]
            if self.cached:
                h, cache = d2g.transformer(token, beams.cache.index_select(parent))
                return IDTBeams(env, t, cache=cache, hidden=h[:, -1])
            tokens = torch.cat([beams.tokens[parent], token], dim=1)
            return IDTBeams(env, t, tokens=tokens, hidden=d2g.transformer(tokens)[0][:, -1])
        new = torch.stack([d2g.embed_action(action.long()), d2g.embed_reward(reward.long()), d2g.embed_z(self.z[env, t]),
                           d2g.embed_state(next_cell.long())], dim=1)  # [N', 4, C]: a_t, r_t, z_{t+1}, s_{t+1}
        if self.cached:
            _, cache = d2g.transformer(new, beams.cache.index_select(parent))
            return IDTBeams(env, t, cache=cache)
        return IDTBeams(env, t, tokens=torch.cat([beams.tokens[parent], new], dim=1))


def plan(model: nn.Module, context: Transitions, state: torch.Tensor, beam_k: int, depth: torch.Tensor, *, cached: bool = True,
         context_cache: KVCache | None = None, query_cache: KVCache | None = None, logits: torch.Tensor | None = None,
         sample: bool = True, generator: torch.Generator | None = None, prefixes: RealPrefixes | None = None,
         offset: int = 0) -> torch.Tensor:
    """DICP's action [E] for AD / DPT in real query states `state` [E, dim_state] after `context` [E, T].

    Cached: pass the agent's `context_cache` (AD), `query_cache` and the policy `logits` there to
    encode nothing twice; whatever is missing is computed. `prefixes` (the agent's, kept across its
    real steps, with `offset` the absolute index of `context`'s first transition) lets each level
    extend the prefix the last step encoded instead of encoding it again. Recompute
    (`cached=False`): all of these are ignored and everything is encoded from scratch.
    """
    with torch.inference_mode():
        if model.config.layout == "dense":
            world = DenseWorld(model, cached, prefixes, offset)
            if logits is None or not cached:
                logits, _ = model.policy(state, context)
            root = Beams(context, state, env=torch.arange(len(state), device=state.device), n_real=len(context))
            return beam_search(world, root, logits, beam_k, depth, sample, generator)
        if not cached:
            world = RecomputeWorld(model)
            return beam_search(world, Beams(context, state), world.policy(context, state), beam_k, depth, sample, generator)
        world = CachedWorld(model, prefixes, offset)
        if _is_ad(model) and context_cache is None:
            context_cache = model.prefill_context(context)
        if query_cache is None or logits is None:
            logits, query_cache = model.policy(state, context, context_cache)
        root = Beams(context, state, query_cache, context_cache, env=torch.arange(len(state), device=state.device), n_real=len(context))
        return beam_search(world, root, logits, beam_k, depth, sample, generator)


__all__ = ["PAPER_BEAM_K", "PLANNING_HORIZON", "Beams", "CachedWorld", "DenseWorld", "IDTBeams", "IDTWorld", "RecomputeWorld", "beam_search", "candidate_order",
           "check_beam_k", "count_forward_passes",
           "plan", "planning_horizon", "query_tokens", "window_start"]

