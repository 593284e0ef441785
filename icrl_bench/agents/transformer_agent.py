"""A trained AD / DPT network (and their DICP variants) behind the Agent protocol.

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

DICP planning (`beam_k` > 0, the dicp-* agents; see planner.py): once `n_transit` steps have been
seen (the official `step >= n_transit`), each action is the first action of the best beam of an
imagined search over the model's predicted rewards and next states, up to the paper's planning
horizon and never past the episode's end. `planner="recompute"` runs the same search without
the cache (the reference the cached search is checked against).

`forward_passes` counts Transformer forward calls (acting, observing and planning), so the
harness can report forward passes per action; `set_seed` reseeds action sampling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from icrl_bench.agents.base import TaskInfo
from icrl_bench.agents.checkpoint import load_checkpoint
from icrl_bench.agents.models import model_spec
from icrl_bench.agents.planner import CheckpointAgent, plan, planning_horizon, query_tokens
from icrl_bench.agents.tokens import Transitions
from icrl_bench.agents.transformer import KVCache
from icrl_bench.errors import IcrlBenchError


class TransformerAgent(CheckpointAgent):
    """Acts with a trained in-context network; batched over `num_envs` envs."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        meta: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        sample: bool = True,
        seed: int = 0,
        beam_k: int | None = None,
        planner: str = "cache",
    ):
        super().__init__(name, model, meta, device, sample, seed, beam_k, planner)
        self.n_context = model.config.n_transit - 1
        self.num_envs = 0
        self.context: Transitions | None = None
        self._context_cache: KVCache | None = None
        self.query_cache: KVCache | None = None  # cache up to the last query state (for a planner)

    # ---- the Agent protocol ---------------------------------------------------------------------

    def reset(self, num_envs: int, task_info: TaskInfo) -> None:
        config = self.model.config
        if task_info.num_actions != config.num_actions:
            raise IcrlBenchError(f"{self.name} was trained with {config.num_actions} actions, but env {task_info.env} has {task_info.num_actions}.")
        trained_env = self.meta.get("dataset", {}).get("env")
        if trained_env is not None and trained_env != task_info.env:
            raise IcrlBenchError(f"this {self.name} checkpoint was trained on {trained_env} data; it cannot act in {task_info.env}.")
        self.num_envs = num_envs
        dim, dev = config.dim_state, self.device
        self.context = Transitions(
            obs=torch.zeros(num_envs, 0, dim, device=dev), action=torch.zeros(num_envs, 0, dtype=torch.long, device=dev),
            reward=torch.zeros(num_envs, 0, device=dev), next_obs=torch.zeros(num_envs, 0, dim, device=dev),
        )
        self._context_cache = None
        self.query_cache = None
        self.generator = torch.Generator(device=dev).manual_seed(self.seed)
        self.horizon = task_info.horizon
        self.planning_horizon = planning_horizon(task_info.env) if self.beam_k else 0
        self.steps_seen = 0  # since reset (the official `step`)
        self.t_episode = torch.zeros(num_envs, dtype=torch.long, device=dev)  # step within each env's episode

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        logits = self.action_logits(obs)  # [num_envs, A]
        if self.beam_k and self.steps_seen >= self.model.config.n_transit:
            return self.plan(obs, logits).cpu().numpy()
        if self.sample:
            actions = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=self.generator)[:, 0]
        else:
            actions = logits.argmax(-1)
        return actions.cpu().numpy()

    @torch.inference_mode()
    def observe(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        dev = self.device
        new = Transitions(
            obs=torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=dev)[:, None],  # [E, 1, dim]
            action=torch.as_tensor(np.asarray(action), dtype=torch.long, device=dev)[:, None],  # [E, 1]
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
                self._context_cache = self.model.prefill_context(new, self._context_cache)
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
        """Policy logits [num_envs, A] at query states `obs`; keeps the query's cache in `query_cache`."""
        if self.context is None:
            raise IcrlBenchError(f"{self.name}: call reset(num_envs, task_info) before act().")
        query = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)  # [E, dim]
        if self._context_cache is None and len(self.context) and hasattr(self.model, "embed_query_state"):
            # AD after the window slid: [context, query] in one forward; the context's cache is its prefix (exact: causal).
            h, self.query_cache = self.model.transformer(query_tokens(self.model, self.context, query))  # [E, T + 1, C]
            self._context_cache = self.query_cache.truncate(len(self.context))
            return self.model.pred_action(h[:, -1])
        logits, self.query_cache = self.model.policy(query, self.context, self.context_cache())
        return logits

    @torch.inference_mode()
    def plan(self, obs: np.ndarray, logits: torch.Tensor) -> torch.Tensor:
        """DICP's actions [num_envs] by beam search from the current query states (after `action_logits`)."""
        query = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)  # [E, dim]
        depth = torch.clamp(self.horizon - self.t_episode, min=1).clamp(max=self.planning_horizon)  # [E], never past the episode end
        if self.planner == "recompute":
            return plan(self.model, self.context, query, self.beam_k, depth, cached=False, sample=self.sample, generator=self.generator)
        return plan(self.model, self.context, query, self.beam_k, depth, context_cache=self.context_cache(), query_cache=self.query_cache,
                    logits=logits, sample=self.sample, generator=self.generator)


def from_checkpoint(name: str, checkpoint: str | os.PathLike | Path, device: str | torch.device = "cpu", sample: bool = True,
                    seed: int = 0, beam_k: int | None = None, planner: str = "cache", **kwargs: Any) -> TransformerAgent:
    """The agent `name` (ad, dicp-ad, dpt, dicp-dpt, idt, dicp-idt) from a checkpoint or run directory.

    Fails with a one-line error if the checkpoint is of another agent or was tampered with.
    Extra keyword arguments are refused by name so a typo is not ignored. `beam_k`: DICP's beam
    size (default: the paper's 10 for dicp-*, 0 = no planning); `planner`: "cache" or "recompute".
    """
    model_spec(name)
    if kwargs:
        raise IcrlBenchError(f"{name} takes no option(s) {', '.join(sorted(kwargs))}; options: device, sample, seed, beam_k, planner.")
    loaded = load_checkpoint(checkpoint, agent=name, map_location="cpu")
    if model_spec(name).family == "idt":
        from icrl_bench.agents.idt import IDTAgent

        return IDTAgent(name, loaded.model, loaded.meta, device=device, sample=sample, seed=seed, beam_k=beam_k, planner=planner)
    return TransformerAgent(name, loaded.model, loaded.meta, device=device, sample=sample, seed=seed, beam_k=beam_k, planner=planner)
