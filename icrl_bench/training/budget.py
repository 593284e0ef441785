"""`--time-budget`: fit a run into a wall-clock budget by timing its first steps.

The first BUDGET_WARMUP_STEPS steps pay for start-up (CUDA, the loader) and are not timed; the
next BUDGET_PROBE_STEPS are, and their speed fixes the total steps (at most the config's, a
multiple of the log interval), which the cosine schedule then follows. A schedule with a longer
learning-rate warm-up is fitted again at its end, from the speed of the steps since the probe: the
warm-up does not depend on the total, so the refit changes no step already taken, and a probe
slowed by other work at start-up (measured: 30% fewer steps) no longer fixes the whole run.
run.json records the totals, so a run's budget is a fact about it, not a promise.
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
    """Watches the steps of a new run; `after_step` returns the fitted total when it fits (the probe's
    end, and the learning-rate warm-up's end if that comes later)."""

    def __init__(self, seconds: float, start_step: int, t_start: float, on_fit: Callable[[int, int], None]):
        self.seconds, self.start, self.t_start, self.on_fit = seconds, start_step, t_start, on_fit
        self.t_timed, self.step_timed = 0.0, start_step  # where the current timing began

    def after_step(self, step: int, tc: TrainConfig) -> int | None:
        """The fitted total steps at a fitting step (after calling `on_fit(fitted, step)`), else None."""
        probe_end = self.start + BUDGET_WARMUP_STEPS + BUDGET_PROBE_STEPS
        if step == self.start + BUDGET_WARMUP_STEPS:
            self.t_timed, self.step_timed = time.perf_counter(), step
            return None
        if step != probe_end and not (step == tc.warmup_steps and step > probe_end):
            return None
        now = time.perf_counter()
        fitted = fit_steps(tc, step, (now - self.t_timed) / (step - self.step_timed), self.seconds - (now - self.t_start))
        self.t_timed, self.step_timed = now, step
        self.on_fit(fitted, step)
        return fitted
