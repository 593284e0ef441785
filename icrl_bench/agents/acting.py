"""What every network-backed agent does alike: its settings, seeding, the forward-pass count, the
env checks at reset, and turning the policy head's output into actions.

Discrete (grid worlds): an action index sampled from the logits (or their argmax); DICP beam
search is the agents' own (planner.py). Continuous (Meta-World): a draw from the Gaussian (or its
mean), clipped to the action box [-1, 1] when sent (the env clips too); DICP samples candidates
and keeps the one of highest predicted reward (sampling.py), only where the official evaluation
plans:

    step >= plan_from_step     the context is full (default n_transit: the official `step >= n_transit`)
    t > beam_start             the step within the episode is past `beam_start` (official default 50)

(IDT decides per block, so it applies both rules at the block's first step, as the official code.)
"""

from __future__ import annotations

import torch
from torch import nn

from icrl_bench.agents.base import TaskInfo
from icrl_bench.agents.planner import PLANNER_REVISION, check_beam_k, count_forward_passes
from icrl_bench.agents.sampling import BEAM_START, PAPER_SAMPLES, best_candidate, candidate_actions
from icrl_bench.agents.transformer import KVCache
from icrl_bench.errors import IcrlBenchError

ACTION_LOW, ACTION_HIGH = -1.0, 1.0  # Meta-World's action box


def rows_of(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """The cache of envs `rows` [R] (sorted, as `nonzero` gives them); all of them without a copy."""
    return cache if len(rows) == cache.batch_size else cache.index_select(rows)


def check_samples(name: str, model: nn.Module, samples: int | None) -> int:
    """The number of candidate actions to plan with (<= 1: no planning); the paper's 10 for a DICP network."""
    has_world_model = bool(model.config.dynamics)
    if samples is None:
        return PAPER_SAMPLES if has_world_model else 0
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise IcrlBenchError(f"samples must be an integer >= 0 (0 or 1 = no planning), got {samples!r}.")
    if samples > 1 and not has_world_model:
        raise IcrlBenchError(f"--samples {samples}: {name} has no world model to plan with; use dicp-{name.removeprefix('dicp-')} or --samples 0.")
    return samples


class CheckpointAgent:
    """What every network-backed agent keeps: the network in eval mode, the device, whether actions
    are sampled, the seed, the planning settings; plus the harness's hooks.

    Planning settings: discrete networks take `beam_k` (DICP beam search); continuous ones take
    `samples` (candidate actions per step), `beam_start` and `plan_from_step` (the rules above).
    `planner`: "cache" or "recompute" (the reference the cached planner is checked against).
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        meta: dict | None = None,
        device: str | torch.device = "cpu",
        sample: bool = True,
        seed: int = 0,
        beam_k: int | None = None,
        planner: str = "cache",
        samples: int | None = None,
        beam_start: int | None = None,
        plan_from_step: int | None = None,
    ):
        self.name = name
        self.model = model.to(device).eval()
        self.meta = meta or {}
        self.device = torch.device(device)
        self.sample = sample
        self.seed = seed
        self.space = model.config.space()
        if planner not in ("cache", "recompute"):
            raise IcrlBenchError(f"planner must be 'cache' or 'recompute', got {planner!r}.")
        self.planner = planner
        if plan_from_step is not None and (isinstance(plan_from_step, bool) or not isinstance(plan_from_step, int) or plan_from_step < 0):
            raise IcrlBenchError(f"plan_from_step must be an integer >= 0, got {plan_from_step!r}.")
        self.plan_from_step = model.config.n_transit if plan_from_step is None else plan_from_step
        if self.space.kind == "continuous":
            if beam_k:
                raise IcrlBenchError(f"{name} has continuous actions: it plans by sampling candidates, not beam search; use --samples K (not --beam).")
            if beam_start is not None and (isinstance(beam_start, bool) or not isinstance(beam_start, int)):
                raise IcrlBenchError(f"beam_start must be an integer, got {beam_start!r}.")
            self.samples = check_samples(name, model, samples)
            self.beam_start = BEAM_START if beam_start is None else beam_start
        else:
            if samples is not None or beam_start is not None:
                raise IcrlBenchError(f"{name} has discrete actions: it plans by beam search (--beam K); samples and beam_start are for continuous actions.")
            self.beam_k = check_beam_k(name, model, beam_k)
        count_forward_passes(model)

    @property
    def planner_revision(self) -> int | None:
        """The planner code's revision when this agent plans (results record it), else None."""
        plans = getattr(self, "beam_k", 0) or getattr(self, "samples", 1) > 1
        return PLANNER_REVISION if plans else None

    @property
    def forward_passes(self) -> int:
        """Transformer forward calls of this agent's network(s) so far (the harness takes differences)."""
        return self.model.forward_calls

    def set_seed(self, seed: int) -> None:
        """Seed sampling (and the planner's candidates) from the next reset on."""
        self.seed = int(seed)

    def check_task(self, task_info: TaskInfo) -> None:
        """Refuse envs this network was not trained for (another env family, other shapes)."""
        config = self.model.config
        trained_env = self.meta.get("dataset", {}).get("env")
        if trained_env is not None and trained_env != task_info.env:
            raise IcrlBenchError(f"this {self.name} checkpoint was trained on {trained_env} data; it cannot act in {task_info.env}.")
        if self.space.kind == "discrete":
            if task_info.num_actions != config.num_actions:
                raise IcrlBenchError(f"{self.name} was trained with {config.num_actions} actions, but env {task_info.env} has {task_info.num_actions}.")
            return
        if task_info.num_actions:
            raise IcrlBenchError(f"{self.name} acts with continuous actions; env {task_info.env} has {task_info.num_actions} discrete ones.")
        if task_info.obs_dim != config.obs_dim or task_info.action_dim not in (0, config.action_dim):
            raise IcrlBenchError(
                f"{self.name} was trained on {config.obs_dim}-dim observations and {config.action_dim}-dim actions, "
                f"but env {task_info.env} has {task_info.obs_dim} and {task_info.action_dim}."
            )

    def discrete_action(self, logits: torch.Tensor) -> torch.Tensor:
        """Action indices [E] from logits [E, A]: sampled, or the argmax."""
        if self.sample:
            return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=self.generator)[:, 0]
        return logits.argmax(-1)

    def continuous_action(self, out: torch.Tensor, planning: torch.Tensor) -> torch.Tensor:
        """Actions [E, action_dim] in [-1, 1] from the policy head's output [E, k].

        Envs where `planning` [E] is set take the best of `samples` candidates (`score_candidates`);
        the others a draw from the Gaussian (or its mean when not sampling).
        """
        mean, std = self.space.gaussian(out)  # [E, A] each
        action = mean + std * torch.randn(mean.shape, generator=self.generator, device=mean.device) if self.sample else mean.clone()
        rows = planning.nonzero()[:, 0] if self.samples > 1 else planning.new_zeros(0, dtype=torch.long)
        if len(rows):
            candidates = candidate_actions(mean[rows], std[rows], self.samples, self.generator)  # [R, K, A]
            action[rows] = best_candidate(candidates, self.score_candidates(rows, candidates))
        return action.clamp(ACTION_LOW, ACTION_HIGH)

    def score_candidates(self, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Predicted rewards [R, K] of candidate actions [R, K, A] for envs `rows` [R] (the network's world model)."""
        raise NotImplementedError

    def planning_now(self, t_episode: torch.Tensor, steps_seen: int) -> torch.Tensor:
        """Envs [E] that plan this step (continuous): the context is full and the episode past `beam_start`."""
        return (t_episode > self.beam_start) & (steps_seen >= self.plan_from_step)
