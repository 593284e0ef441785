"""`--time-budget`: fit a run into a wall-clock budget by timing its first steps.

The first BUDGET_WARMUP_STEPS steps pay for start-up (CUDA, the loader) and are not timed; the
next BUDGET_PROBE_STEPS are, and their speed fixes the total steps (at most the config's, a
multiple of the log interval), which the cosine schedule then follows. run.json records both
totals, so a run's budget is a fact about it, not a promise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from icrl_bench.training.config import TrainConfig

BUDGET_WARMUP_STEPS = 10  # not timed: start-up costs
BUDGET_PROBE_STEPS = 50  # timed: their speed fixes the total steps
BUDGET_SAFETY = 0.9  # validations and checkpoints cost time the probe did not see


def fit_steps(tc: TrainConfig, step: int, per_step_s: float, remaining_s: float) -> int:
    """The total steps that fit: `step` done, then `remaining_s` at `per_step_s` (at most the config's)."""
    fitted = step + int(max(remaining_s, 0.0) * BUDGET_SAFETY / max(per_step_s, 1e-9))
    if fitted >= tc.log_interval:
        fitted -= fitted % tc.log_interval
    return max(step, tc.warmup_steps + 1, min(tc.steps, fitted))


class TimeBudget:
    """Watches the steps of a new run; `after_step` returns the fitted total once the probe is over."""

    def __init__(self, seconds: float, start_step: int, t_start: float, on_fit: Callable[[int, int], None]):
        self.seconds, self.start, self.t_start, self.on_fit = seconds, start_step, t_start, on_fit
        self.t_probe = 0.0

    def after_step(self, step: int, tc: TrainConfig) -> int | None:
        """The fitted total steps at the end of the probe (after calling `on_fit(fitted, probe_end)`), else None."""
        if step == self.start + BUDGET_WARMUP_STEPS:
            self.t_probe = time.perf_counter()
        elif step == self.start + BUDGET_WARMUP_STEPS + BUDGET_PROBE_STEPS:
            now = time.perf_counter()
            fitted = fit_steps(tc, step, (now - self.t_probe) / BUDGET_PROBE_STEPS, self.seconds - (now - self.t_start))
            self.on_fit(fitted, step)
            return fitted
        return None
