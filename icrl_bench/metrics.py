"""Standard metrics of in-context learning, computed from raw per-episode return curves.

Everything here is pure numpy and deterministic (the bootstrap draws from a fixed seed), so the
leaderboard can recompute an entry's summary from its curves and compare number by number.

Inputs are arrays `returns[seed, task, episode]`: the return of each in-context episode of each
test task, one replica per seed (and `success`, the same shape, 0/1). Seeds are the unit of
replication: each metric is first computed per seed (averaged over the test tasks), then
summarized across seeds by the mean, a percentile-bootstrap 95% confidence interval of the mean
and the interquartile mean (IQM, Agarwal et al. 2021: robust to one outlying seed, less noisy
than the median).

Two summaries, one per kind of protocol: `summarize` scores returns against exact random and
oracle references (the grid worlds); `summarize_success` scores Meta-World, which has neither,
by DICP's success rate: the fraction of test tasks solved in at least one episode so far.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
THRESHOLD_FRACTION = 0.9  # "episodes to reach 90% of the oracle"
# Env steps per task at which the best-so-far success rate is reported (those within the run).
SUCCESS_BUDGETS = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000)


@dataclass(frozen=True)
class Estimate:
    """One metric across seeds."""

    mean: float
    ci_low: float  # bootstrap 95% confidence interval of the mean over seeds
    ci_high: float
    iqm: float  # interquartile mean over seeds
    per_seed: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def _as_returns(returns: np.ndarray, what: str = "returns") -> np.ndarray:
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 3 or 0 in returns.shape:
        raise ValueError(f"{what} must be a non-empty array [seed, task, episode], got shape {returns.shape}")
    return returns


def return_curve(returns: np.ndarray) -> np.ndarray:
    """Mean return over test tasks at each episode, per seed [seed, episode]."""
    return _as_returns(returns).mean(axis=1)


def final_return(returns: np.ndarray, window: int = 5) -> np.ndarray:
    """Mean return of the last `window` episodes (over tasks), per seed [seed]."""
    return return_curve(returns)[:, -window:].mean(axis=1)


def normalized_score(value: np.ndarray | float, random_return: float, oracle_return: float) -> np.ndarray:
    """100 * (value - random) / (oracle - random): 0 is uniform random, 100 the optimal policy."""
    if oracle_return <= random_return:
        raise ValueError(f"oracle return {oracle_return} must exceed random return {random_return}")
    return 100.0 * (np.asarray(value, dtype=np.float64) - random_return) / (oracle_return - random_return)


def auc(returns: np.ndarray, random_return: float, oracle_return: float) -> np.ndarray:
    """Area under the normalized in-context learning curve, per episode, per seed [seed].

    The mean over episodes of the normalized score: 100 for an agent that is optimal from its
    first episode, 0 for one that never beats random. It rewards learning fast, which the final
    return alone does not.
    """
    return normalized_score(return_curve(returns), random_return, oracle_return).mean(axis=1)


def episodes_to_threshold(returns: np.ndarray, oracle_return: float, fraction: float = THRESHOLD_FRACTION) -> np.ndarray:
    """First episode (1-based) whose mean return over tasks reaches `fraction` of the oracle's.

    A seed that never gets there within the run counts as n_episodes + 1 (censored), so the
    number is a lower bound for such agents; tables show it as "> n_episodes".
    """
    curve = return_curve(returns)
    reached = curve >= fraction * oracle_return - 1e-12
    first = np.argmax(reached, axis=1) + 1
    return np.where(reached.any(axis=1), first, curve.shape[1] + 1).astype(np.float64)


def success_rate(success: np.ndarray, window: int = 5) -> np.ndarray:
    """Fraction of successful episodes among the last `window` ones, over tasks, per seed [seed]."""
    return final_return(np.asarray(success, dtype=np.float64), window)


def best_success_curve(success: np.ndarray) -> np.ndarray:
    """Fraction of test tasks solved in at least one episode so far, per seed [seed, episode].

    DICP's Meta-World measure (`np.maximum.accumulate` over episodes in the official
    evaluate_in_context): a task counts as solved from its first successful episode on, so the
    curve never falls.
    """
    success = _as_returns(success, "success")
    return np.maximum.accumulate(success, axis=2).mean(axis=1)


def best_success_at(success: np.ndarray, steps_per_episode: int, budget: int) -> np.ndarray:
    """The best-so-far success rate after `budget` env steps per task, per seed [seed].

    Only whole episodes count: the rate after the last episode that ends within the budget.
    """
    episodes = budget // steps_per_episode
    curve = best_success_curve(success)
    if not 1 <= episodes <= curve.shape[1]:
        raise ValueError(f"a budget of {budget} env steps is {episodes} episodes; the run has 1..{curve.shape[1]}")
    return curve[:, episodes - 1]


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half (scipy's trim_mean with 0.25)."""
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    cut = int(0.25 * len(values))
    return float(values[cut : len(values) - cut].mean())


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, n_resamples: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of `values` [n] (resampling seeds)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = bootstrap_ci_curve(values[:, None], confidence, n_resamples, seed)
    return float(lo[0]), float(hi[0])


def bootstrap_ci_curve(values: np.ndarray, confidence: float = 0.95, n_resamples: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The same for every column of `values` [seed, point] at once (for curve bands)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, values.shape[0], size=(n_resamples, values.shape[0]))
    means = values[index].mean(axis=1)  # [resample, point]
    alpha = (1.0 - confidence) / 2.0
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)


def estimate(per_seed: np.ndarray) -> Estimate:
    """Mean, bootstrap CI and IQM of a per-seed metric."""
    per_seed = np.asarray(per_seed, dtype=np.float64).ravel()
    lo, hi = bootstrap_ci(per_seed)
    return Estimate(float(per_seed.mean()), lo, hi, iqm(per_seed), [float(v) for v in per_seed])


def summarize(
    returns: np.ndarray,
    random_return: float,
    oracle_return: float,
    success: np.ndarray | None = None,
    final_window: int = 5,
) -> dict:
    """Every standard metric of one evaluation, as plain JSON-ready data.

    Args:
        returns: [seed, task, episode] episode returns.
        random_return, oracle_return: the protocol's reference returns (mean over test tasks).
        success: [seed, task, episode] 0/1 per episode, for envs that have success.
        final_window: episodes averaged by the final return (the protocol's; 5).
    """
    returns = _as_returns(returns)
    final = final_return(returns, final_window)
    summary = {
        "final_return": estimate(final).to_dict(),
        "normalized_score": estimate(normalized_score(final, random_return, oracle_return)).to_dict(),
        "auc": estimate(auc(returns, random_return, oracle_return)).to_dict(),
        "episodes_to_90": estimate(episodes_to_threshold(returns, oracle_return)).to_dict(),
        "return_curve": [float(v) for v in return_curve(returns).mean(axis=0)],
    }
    if success is not None:
        summary["success_rate"] = estimate(success_rate(success, final_window)).to_dict()
    return summary


def summarize_success(returns: np.ndarray, success: np.ndarray, steps_per_episode: int, final_window: int = 5) -> dict:
    """Every standard metric of an evaluation without reference returns (Meta-World).

    The headline is `best_success_rate`, the best-so-far success rate at the end of the run
    (what DICP reports); `best_success_at_steps` gives it at each budget of `SUCCESS_BUDGETS`
    the run reaches, so runs of different lengths compare at equal experience. Returns stay raw:
    Meta-World has no exact random or optimal return to normalize by.

    Args:
        returns, success: [seed, task, episode] episode returns and 0/1 successes.
        steps_per_episode: the protocol's horizon (every episode runs to it).
        final_window: episodes averaged by the final return and the last-episodes success rate.
    """
    returns = _as_returns(returns)
    success = _as_returns(success, "success")
    if success.shape != returns.shape:
        raise ValueError(f"success has shape {success.shape}, returns {returns.shape}; they must match")
    total_steps = returns.shape[2] * steps_per_episode
    return {
        "final_return": estimate(final_return(returns, final_window)).to_dict(),
        "return_curve": [float(v) for v in return_curve(returns).mean(axis=0)],
        "success_rate": estimate(success_rate(success, final_window)).to_dict(),
        "best_success_rate": estimate(best_success_curve(success)[:, -1]).to_dict(),
        "best_success_curve": [float(v) for v in best_success_curve(success).mean(axis=0)],
        "best_success_at_steps": {
            str(budget): estimate(best_success_at(success, steps_per_episode, budget)).to_dict()
            for budget in SUCCESS_BUDGETS
            if steps_per_episode <= budget <= total_steps
        },
    }


def compare_summaries(claimed: dict, recomputed: dict, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> list[str]:
    """Paths of the numbers in `claimed` that differ from `recomputed` ("auc.mean: 51.2 != 40.1").

    Keys that `recomputed` lacks are problems too ("normalized_score: unexpected"): a summary
    may not carry numbers its protocol does not define.
    """
    problems: list[str] = []

    def walk(a, b, path: str) -> None:
        if isinstance(b, dict):
            if not isinstance(a, dict):
                problems.append(f"{path}: missing")
                return
            for key in b:
                walk(a.get(key), b[key], f"{path}.{key}" if path else key)
            problems.extend(f"{f'{path}.' if path else ''}{key}: unexpected" for key in a if key not in b)
        elif isinstance(b, list):
            if not isinstance(a, list) or len(a) != len(b):
                problems.append(f"{path}: expected {len(b)} values")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        else:
            if not isinstance(a, (int, float)) or isinstance(a, bool) or not np.isclose(a, b, rtol=rel_tol, atol=abs_tol):
                problems.append(f"{path}: {a!r} != {b:.6g}")

    walk(claimed, recomputed, "")
    return problems
