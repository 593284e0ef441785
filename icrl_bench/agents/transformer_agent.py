"""A trained AD / DPT network (and their DICP variants) behind the Agent protocol, on grid worlds and Meta-World.

The agent keeps, per env, a rolling context of the last `n_transit - 1` transitions (across
episode boundaries: the history *is* the in-context learning) and samples each action from the
policy at the query state, as the official `evaluate_in_context` does.

KV cache, where it pays: AD's query comes after its context, so the context's cache is kept and
extended by one token per step while the window fills; once the window slides, the oldest
transition leaves and the cache is re-prefilled from the window (dropping cached keys would not
be exact: later tokens were computed while the dropped one was visible). DPT's query comes first,
so it recomputes its short sequence every step. A planner (DICP beam search, issue 5) branches
many continuations off `context_cache()` with `KVCache.repeat_interleave` / `index_select`
and asks the network `policy(...)` and `predict_dynamics(...)`.

DICP planning on the grid worlds (`beam_k` > 0, the dicp-* agents; see planner.py): once
`n_transit` steps have been seen (the official `step >= n_transit`), each action is the first
action of the best beam of an imagined search over the model's predicted rewards and next states,
up to the paper's planning horizon and never past the episode's end. On Meta-World (`samples` > 1;
sampling.py, acting.py) each action is the best of `samples` candidates drawn from the policy,
scored by the predicted reward of each as an action query after the cached context, once the
context is full and the episode is past `beam_start`. `planner="recompute"` runs the same planning
without the cache (the reference the cached planner is checked against).

`forward_passes` counts Transformer forward calls (acting, observing and planning), so the
harness can report forward passes per action; `set_seed` reseeds action sampling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icrl_bench.agents.acting import CheckpointAgent, rows_of
from icrl_bench.agents.base import TaskInfo
from icrl_bench.agents.checkpoint import load_checkpoint
from icrl_bench.agents.models import model_spec
from icrl_bench.agents.planner import plan, planning_horizon, query_tokens
from icrl_bench.agents.real_prefixes import RealPrefixes
from icrl_bench.agents.sampling import predicted_rewards
from icrl_bench.agents.tokens import Transitions
from icrl_bench.agents.transformer import KVCache
from icrl_bench.errors import IcrlBenchError


class TransformerAgent(CheckpointAgent):
    """Acts with a trained in-context network; batched over `num_envs` envs."""

    # Acting state, set by reset() and observe(); the constructor is CheckpointAgent's.
    num_envs: int = 0
    context: Transitions | None = None
    _context_cache: KVCache | None = None
    query_cache: KVCache | None = None  # cache up to the last query state (for a planner)
    reuse_prefixes: bool = True  # keep planning windows' real parts across real steps (real_prefixes.py); off: benchmarks only

    @property
    def n_context(self) -> int:
        """Transitions kept in the context window (the query takes the last of n_transit slots)."""
        return self.model.config.n_transit - 1

    # ---- the Agent protocol ---------------------------------------------------------------------

    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        self.check_task(task_info)
        self.num_envs = num_envs
        dim, dev, space = self.space.dim_state, self.device, self.space
        self.context = Transitions(
            obs=torch.zeros(num_envs, 0, dim, device=dev), action=torch.zeros(num_envs, 0, *space.action_shape, dtype=space.action_dtype, device=dev),
            reward=torch.zeros(num_envs, 0, device=dev), next_obs=torch.zeros(num_envs, 0, dim, device=dev),
        )
        self._context_cache = None
        self.query_cache = None
        self.generator = torch.Generator(device=dev).manual_seed(self.seed)
        self.horizon = task_info.horizon
        self.planning_horizon = planning_horizon(task_info.env) if self.space.kind == "discrete" and self.beam_k else 0
        self.steps_seen = 0  # since reset (the official `step`)
        self.t_episode = torch.zeros(num_envs, dtype=torch.long, device=dev)  # step within each env's episode
        self.prefixes = RealPrefixes() if self.reuse_prefixes and self.planning_horizon else None

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        out = self.action_logits(obs)  # [num_envs, A] logits, or [num_envs, 2 * action_dim] Gaussian
        if self.space.kind == "continuous":
            return self.continuous_action(out, self.planning_now(self.t_episode, self.steps_seen)).cpu().numpy()
        if self.beam_k and self.steps_seen >= self.plan_from_step:
            return self.plan(obs, out).cpu().numpy()
        return self.discrete_action(out).cpu().numpy()

    @torch.inference_mode()
    def observe(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        dev = self.device
        new = Transitions(
            obs=torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=dev)[:, None],  # [E, 1, dim]
            action=torch.as_tensor(np.asarray(action), dtype=self.space.action_dtype, device=dev)[:, None],  # [E, 1] or [E, 1, action_dim]
            reward=torch.as_tensor(np.asarray(reward), dtype=torch.float32, device=dev)[:, None],  # [E, 1]
            next_obs=torch.as_tensor(np.asarray(next_obs), dtype=torch.float32, device=dev)[:, None],  # [E, 1, dim]
        )
        c = self.context
        joined = Transitions(*(torch.cat([a, b], dim=1) for a, b in zip(
            (c.obs, c.action, c.reward, c.next_obs), (new.obs, new.action, new.reward, new.next_obs))))
        if len(joined) > self.n_context:
            self.context = joined.slice(len(joined) - self.n_context, None)  # the window slides: re-prefill lazily
            self._context_cache = None
        else:
            self.context = joined
            if self._context_cache is not None:  # the window grows: extend the cache by one token
                after = {"previous": c} if self.model.config.layout == "dense" else {}  # dense: its token holds c's last action
                self._context_cache = self.model.prefill_context(new, self._context_cache, **after)
        self.query_cache = None
        self.steps_seen += 1
        self.t_episode = torch.where(torch.as_tensor(np.asarray(done), device=dev), 0, self.t_episode + 1)

    # ---- what a planner uses ---------------------------------------------------------------------

    def context_cache(self) -> KVCache | None:
        """The KV cache of the current context (None for DPT, whose query precedes the context)."""
        if self._context_cache is None and len(self.context):
            self._context_cache = self.model.prefill_context(self.context)
        return self._context_cache

    @torch.inference_mode()
    def action_logits(self, obs: np.ndarray) -> torch.Tensor:
        """The policy head's output [num_envs, k] at query states `obs` (logits, or the Gaussian's mean
        and log-variance); keeps the query's cache in `query_cache`."""
        if self.context is None:
            raise IcrlBenchError(f"{self.name}: call reset(num_envs, task_info) before act().")
        query = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)  # [E, dim]
        self.query_obs = query
        if self._context_cache is None and len(self.context) and self.model.query_after_context:
            # AD after the window slid: [context, query] in one forward; the context's cache is its prefix (exact: causal).
            h, self.query_cache = self.model.transformer(query_tokens(self.model, self.context, query))  # [E, T + 1, C]
            self._context_cache = self.query_cache.truncate(len(self.context))
            return self.model.pred_action(h[:, -1])
        logits, self.query_cache = self.model.policy(query, self.context, self.context_cache())
        return logits

    @torch.inference_mode()
    def score_candidates(self, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Predicted rewards [R, K] of candidate actions [R, K, A] in the current query states of envs `rows`
        (after `action_logits`; continuous actions)."""
        dyn = self.model.dynamics
        if self.planner == "recompute":
            c = self.context
            context = c.rows(rows)
            prefix = {"tokens": query_tokens(self.model, context, self.query_obs[rows])}
        else:
            prefix = {"cache": rows_of(self.query_cache, rows)}
        return predicted_rewards(self.model.transformer, dyn.embed_query_action, lambda h: self.space.predicted_reward(dyn.pred_reward(h)),
                                 candidates, **prefix)

    @torch.inference_mode()
    def plan(self, obs: np.ndarray, logits: torch.Tensor) -> torch.Tensor:
        """DICP's actions [num_envs] by beam search from the current query states (grid; after `action_logits`)."""
        query = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)  # [E, dim]
        depth = torch.clamp(self.horizon - self.t_episode, min=1).clamp(max=self.planning_horizon)  # [E], never past the episode end
        if self.planner == "recompute":
            return plan(self.model, self.context, query, self.beam_k, depth, cached=False, sample=self.sample, generator=self.generator)
        return plan(self.model, self.context, query, self.beam_k, depth, context_cache=self.context_cache(), query_cache=self.query_cache,
                    logits=logits, sample=self.sample, generator=self.generator, prefixes=self.prefixes,
                    offset=self.steps_seen - len(self.context))


def from_checkpoint(name: str, checkpoint: str | os.PathLike | Path, device: str | torch.device = "cpu", sample: bool = True,
                    seed: int = 0, beam_k: int | None = None, planner: str = "cache", samples: int | None = None,
                    beam_start: int | None = None, plan_from_step: int | None = None, **kwargs: Any) -> TransformerAgent:
    """The agent `name` (ad, dicp-ad, dpt, dicp-dpt, idt, dicp-idt) from a checkpoint or run directory.

    Fails with a one-line error if the checkpoint is of another agent or was tampered with.
    Extra keyword arguments are refused by name so a typo is not ignored. DICP planning:
    grid worlds `beam_k` (beam size; default the paper's 10 for dicp-*, 0 = no planning);
    Meta-World `samples` (candidate actions; default the paper's 10 for dicp-*, 0 or 1 = no
    planning), `beam_start` (plan only past this step of an episode; default 50) and, for both,
    `plan_from_step` (steps seen before planning starts; default n_transit). `planner`: "cache" or
    "recompute". IDT agents also take `return_to_go` ("train-max" or the privileged "task-optimum": idt.py).
    """
    is_idt = model_spec(name).family == "idt"
    own = {"return_to_go"} if is_idt else set()
    if set(kwargs) - own:
        raise IcrlBenchError(f"{name} takes no option(s) {', '.join(sorted(set(kwargs) - own))}; options: device, sample, seed, beam_k, planner, "
                             f"samples, beam_start, plan_from_step{', return_to_go' if is_idt else ''}.")
    loaded = load_checkpoint(checkpoint, agent=name, map_location="cpu")
    options = {"device": device, "sample": sample, "seed": seed, "beam_k": beam_k, "planner": planner, "samples": samples,
               "beam_start": beam_start, "plan_from_step": plan_from_step}
    if is_idt:
        from icrl_bench.agents.idt import IDTAgent

        return IDTAgent(name, loaded.model, loaded.meta, **options, **kwargs)
    return TransformerAgent(name, loaded.model, loaded.meta, **options)
