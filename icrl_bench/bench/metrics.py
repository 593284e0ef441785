"""Standard metrics of in-context learning, computed from raw per-episode return curves.

Everything here is pure numpy and deterministic (the bootstrap draws from a fixed seed), so the
leaderboard can recompute an entry's summary from its curves and compare number by number.

Inputs are arrays `returns[seed, task, episode]`: the return of each in-context episode of each
test task, one replica per seed (and `success`, the same shape, 0/1). Every metric is first a
score matrix `[seed, task]` (rliable's `[runs, tasks]`; a metric defined only on the mean curve
over tasks, episodes to 90%, has one column), then summarized as Agarwal et al. (2021, rliable)
do: the mean of all its scores and the interquartile mean (IQM: the 25% trimmed mean of all
seed x task scores pooled, `scipy.stats.trim_mean(scores, 0.25, axis=None)`), each with a
95% percentile CI from the stratified bootstrap (seeds resampled with replacement within each
task, independently per task). With fewer than `MIN_SEEDS_FOR_CI` seeds no interval is given
(None; tables show n/a): two seeds cannot say how far a mean may move.

Normalized scores are per task: 100 * (score - random[task]) / (oracle[task] - random[task]),
with the protocol's random and oracle returns of each test task, so an easy task (goal next to
the start) and a hard one weigh the same.

Two summaries, one per kind of protocol: `summarize` scores returns against exact random and
oracle references (the grid worlds); `summarize_success` scores Meta-World, which has neither,
by DICP's success rate: the fraction of test tasks solved in at least one episode so far.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
BOOTSTRAP_CHUNK = 1_000  # resamples drawn at once (bounds memory: [chunk, seed, task] indices)
MIN_SEEDS_FOR_CI = 3  # below this, intervals are not given
THRESHOLD_FRACTION = 0.9  # "episodes to reach 90% of the oracle"
# Env steps per task at which the best-so-far success rate is reported (those within the run).
SUCCESS_BUDGETS = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000)


@dataclass(frozen=True)
class Estimate:
    """One metric's score matrix [seed, task], summarized (rliable's aggregates)."""

    mean: float  # mean of all seed x task scores (= the mean over seeds of the per-seed means)
    ci_low: float | None  # stratified-bootstrap 95% CI of the mean; None below MIN_SEEDS_FOR_CI seeds
    ci_high: float | None
    iqm: float  # interquartile mean of all seed x task scores pooled
    iqm_ci_low: float | None  # stratified-bootstrap 95% CI of the IQM; None likewise
    iqm_ci_high: float | None
    per_seed: list[float]  # mean over tasks, per seed

    def to_dict(self) -> dict:
        return asdict(self)


def _as_returns(returns: np.ndarray, what: str = "returns") -> np.ndarray:
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 3 or 0 in returns.shape:
        raise ValueError(f"{what} must be a non-empty array [seed, task, episode], got shape {returns.shape}")
    return returns


def _per_task(reference: np.ndarray | float, n_tasks: int, what: str) -> np.ndarray:
    """A reference return per task [task]: a scalar applies to every task."""
    values = np.broadcast_to(np.asarray(reference, dtype=np.float64), (n_tasks,)) if np.ndim(reference) == 0 else np.asarray(reference, dtype=np.float64)
    if values.shape != (n_tasks,):
        raise ValueError(f"{what} must give one value per test task ({n_tasks}), got shape {values.shape}")
    return values


def return_curve(returns: np.ndarray) -> np.ndarray:
    """Mean return over test tasks at each episode, per seed [seed, episode]."""
    return _as_returns(returns).mean(axis=1)


def final_return_scores(returns: np.ndarray, window: int = 5) -> np.ndarray:
    """Mean return of the last `window` episodes, per seed and task [seed, task]."""
    return _as_returns(returns)[:, :, -window:].mean(axis=2)


def final_return(returns: np.ndarray, window: int = 5) -> np.ndarray:
    """Mean return of the last `window` episodes (over tasks), per seed [seed]."""
    return final_return_scores(returns, window).mean(axis=1)


def normalized_score(value: np.ndarray | float, random_return: np.ndarray | float, oracle_return: np.ndarray | float) -> np.ndarray:
    """100 * (value - random) / (oracle - random): 0 is uniform random, 100 the optimal policy.

    The references broadcast against `value` along its last axis (one per task), or are scalars.
    """
    random_return = np.asarray(random_return, dtype=np.float64)
    oracle_return = np.asarray(oracle_return, dtype=np.float64)
    if (oracle_return <= random_return).any():
        raise ValueError(f"oracle return {oracle_return} must exceed random return {random_return}")
    return 100.0 * (np.asarray(value, dtype=np.float64) - random_return) / (oracle_return - random_return)


def normalized_scores(returns: np.ndarray, random_returns: np.ndarray | float, oracle_returns: np.ndarray | float, window: int = 5) -> np.ndarray:
    """The normalized final return of each seed and task [seed, task], against that task's references."""
    final = final_return_scores(returns, window)
    n_tasks = final.shape[1]
    return normalized_score(final, _per_task(random_returns, n_tasks, "random returns"), _per_task(oracle_returns, n_tasks, "oracle returns"))


def auc_scores(returns: np.ndarray, random_returns: np.ndarray | float, oracle_returns: np.ndarray | float) -> np.ndarray:
    """Area under the normalized in-context learning curve, per episode, per seed and task [seed, task].

    The mean over episodes of the task's normalized score: 100 for an agent that is optimal from
    its first episode, 0 for one that never beats random. It rewards learning fast, which the
    final return alone does not.
    """
    returns = _as_returns(returns)
    n_tasks = returns.shape[1]
    random_returns = _per_task(random_returns, n_tasks, "random returns")[:, None]  # [task, 1]: broadcast over episodes
    oracle_returns = _per_task(oracle_returns, n_tasks, "oracle returns")[:, None]
    return normalized_score(returns, random_returns, oracle_returns).mean(axis=2)


def auc(returns: np.ndarray, random_return: np.ndarray | float, oracle_return: np.ndarray | float) -> np.ndarray:
    """`auc_scores` averaged over tasks, per seed [seed]."""
    return auc_scores(returns, random_return, oracle_return).mean(axis=1)


def episodes_to_threshold(returns: np.ndarray, oracle_return: np.ndarray | float, fraction: float = THRESHOLD_FRACTION) -> np.ndarray:
    """First episode (1-based) whose mean return over tasks reaches `fraction` of the oracle's.

    The oracle's return is its mean over tasks (per-task values are averaged). A seed that never
    gets there within the run counts as n_episodes + 1 (censored), so the number is a lower
    bound for such agents; tables show it as "> n_episodes".
    """
    curve = return_curve(returns)
    oracle = float(np.mean(oracle_return))
    reached = curve >= fraction * oracle - 1e-12
    first = np.argmax(reached, axis=1) + 1
    return np.where(reached.any(axis=1), first, curve.shape[1] + 1).astype(np.float64)


def success_rate_scores(success: np.ndarray, window: int = 5) -> np.ndarray:
    """Fraction of successful episodes among the last `window` ones, per seed and task [seed, task]."""
    return final_return_scores(np.asarray(success, dtype=np.float64), window)


def success_rate(success: np.ndarray, window: int = 5) -> np.ndarray:
    """Fraction of successful episodes among the last `window` ones, over tasks, per seed [seed]."""
    return success_rate_scores(success, window).mean(axis=1)


def solved_so_far(success: np.ndarray) -> np.ndarray:
    """Whether each task has succeeded in at least one episode so far [seed, task, episode] (0/1)."""
    return np.maximum.accumulate(_as_returns(success, "success"), axis=2)


def best_success_curve(success: np.ndarray) -> np.ndarray:
    """Fraction of test tasks solved in at least one episode so far, per seed [seed, episode].

    DICP's Meta-World measure (`np.maximum.accumulate` over episodes in the official
    evaluate_in_context): a task counts as solved from its first successful episode on, so the
    curve never falls.
    """
    return solved_so_far(success).mean(axis=1)


def _budget_episodes(n_episodes: int, steps_per_episode: int, budget: int) -> int:
    episodes = budget // steps_per_episode
    if not 1 <= episodes <= n_episodes:
        raise ValueError(f"a budget of {budget} env steps is {episodes} episodes; the run has 1..{n_episodes}")
    return episodes


def best_success_at(success: np.ndarray, steps_per_episode: int, budget: int) -> np.ndarray:
    """The best-so-far success rate after `budget` env steps per task, per seed [seed].

    Only whole episodes count: the rate after the last episode that ends within the budget.
    """
    curve = best_success_curve(success)
    return curve[:, _budget_episodes(curve.shape[1], steps_per_episode, budget) - 1]


def iqm(values: np.ndarray) -> float:
    """Interquartile mean of all values pooled: scipy's `trim_mean(values, 0.25, axis=None)`.

    `int(0.25 * n)` values are cut from each end, as scipy (and so rliable) cuts them.
    """
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    cut = int(0.25 * len(values))
    return float(values[cut : len(values) - cut].mean())


def _iqm_rows(values: np.ndarray) -> np.ndarray:
    """`iqm` of each row of `values` [r, n] at once [r]."""
    cut = int(0.25 * values.shape[1])
    return np.sort(values, axis=1)[:, cut : values.shape[1] - cut].mean(axis=1)


def stratified_bootstrap(
    scores: np.ndarray, confidence: float = 0.95, n_resamples: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> dict[str, tuple[float, float]]:
    """Percentile 95% CIs of the mean and the IQM of a score matrix [seed, task], rliable's way.

    Each resample draws, for every task independently, as many seeds as there are with
    replacement (rliable's `StratifiedBootstrap`: tasks are strata, runs are resampled), then
    both statistics are taken over the resampled matrix.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_seeds, n_tasks = scores.shape
    rng = np.random.default_rng(seed)
    means, iqms = [], []
    for start in range(0, n_resamples, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, n_resamples - start)
        index = rng.integers(0, n_seeds, size=(size, n_seeds, n_tasks))  # [resample, seed, task]: a seed per draw and task
        resampled = np.take_along_axis(scores[None], index, axis=1).reshape(size, -1)  # [resample, seed * task]
        means.append(resampled.mean(axis=1))
        iqms.append(_iqm_rows(resampled))
    alpha = (1.0 - confidence) / 2.0
    interval = lambda stats: tuple(float(q) for q in np.quantile(np.concatenate(stats), [alpha, 1.0 - alpha]))
    return {"mean": interval(means), "iqm": interval(iqms)}


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


def estimate(scores: np.ndarray) -> Estimate:
    """Mean and IQM of a score matrix [seed, task] (or per-seed values [seed]), with their CIs."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores  # [seed] -> [seed, 1]
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be a non-empty matrix [seed, task], got shape {scores.shape}")
    ci = stratified_bootstrap(scores) if scores.shape[0] >= MIN_SEEDS_FOR_CI else {"mean": (None, None), "iqm": (None, None)}
    return Estimate(
        mean=float(scores.mean()), ci_low=ci["mean"][0], ci_high=ci["mean"][1],
        iqm=iqm(scores), iqm_ci_low=ci["iqm"][0], iqm_ci_high=ci["iqm"][1],
        per_seed=[float(v) for v in scores.mean(axis=1)],
    )


def score_matrices(
    returns: np.ndarray,
    random_returns: np.ndarray | float | None = None,
    oracle_returns: np.ndarray | float | None = None,
    success: np.ndarray | None = None,
    final_window: int = 5,
    steps_per_episode: int | None = None,
) -> dict[str, np.ndarray]:
    """Every metric's score matrix [seed, task] (episodes_to_90: [seed, 1]), by summary key.

    What `summarize`, `summarize_success` and `icrl-bench results export --format rliable` share.
    With references: final_return, normalized_score, auc, episodes_to_90 (+ success_rate). Without
    (Meta-World, `steps_per_episode` given): final_return, success_rate, best_success_rate and
    best_success_at_steps.<budget> for each budget the run reaches.
    """
    returns = _as_returns(returns)
    matrices = {"final_return": final_return_scores(returns, final_window)}
    if random_returns is not None and oracle_returns is not None:
        matrices["normalized_score"] = normalized_scores(returns, random_returns, oracle_returns, final_window)
        matrices["auc"] = auc_scores(returns, random_returns, oracle_returns)
        matrices["episodes_to_90"] = episodes_to_threshold(returns, oracle_returns)[:, None]
    if success is not None:
        success = _as_returns(success, "success")
        if success.shape != returns.shape:
            raise ValueError(f"success has shape {success.shape}, returns {returns.shape}; they must match")
        matrices["success_rate"] = success_rate_scores(success, final_window)
        if steps_per_episode is not None:
            solved = solved_so_far(success)  # [seed, task, episode]
            matrices["best_success_rate"] = solved[:, :, -1]
            for budget in SUCCESS_BUDGETS:
                if steps_per_episode <= budget <= returns.shape[2] * steps_per_episode:
                    episodes = _budget_episodes(returns.shape[2], steps_per_episode, budget)
                    matrices[f"best_success_at_steps.{budget}"] = solved[:, :, episodes - 1]
    return matrices


def summarize(
    returns: np.ndarray,
    random_return: np.ndarray | float,
    oracle_return: np.ndarray | float,
    success: np.ndarray | None = None,
    final_window: int = 5,
) -> dict:
    """Every standard metric of one evaluation, as plain JSON-ready data.

    Args:
        returns: [seed, task, episode] episode returns.
        random_return, oracle_return: the protocol's reference returns, one per test task [task]
            (a scalar applies to every task).
        success: [seed, task, episode] 0/1 per episode, for envs that have success.
        final_window: episodes averaged by the final return (the protocol's; 5).
    """
    returns = _as_returns(returns)
    matrices = score_matrices(returns, random_return, oracle_return, success, final_window)
    summary = {key: estimate(matrices[key]).to_dict() for key in ("final_return", "normalized_score", "auc", "episodes_to_90")}
    summary["return_curve"] = [float(v) for v in return_curve(returns).mean(axis=0)]
    if success is not None:
        summary["success_rate"] = estimate(matrices["success_rate"]).to_dict()
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
    matrices = score_matrices(returns, success=success, final_window=final_window, steps_per_episode=steps_per_episode)
    prefix = "best_success_at_steps."
    return {
        "final_return": estimate(matrices["final_return"]).to_dict(),
        "return_curve": [float(v) for v in return_curve(returns).mean(axis=0)],
        "success_rate": estimate(matrices["success_rate"]).to_dict(),
        "best_success_rate": estimate(matrices["best_success_rate"]).to_dict(),
        "best_success_curve": [float(v) for v in best_success_curve(success).mean(axis=0)],
        "best_success_at_steps": {key[len(prefix):]: estimate(m).to_dict() for key, m in matrices.items() if key.startswith(prefix)},
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
        elif b is None:  # an interval not given (too few seeds)
            if a is not None:
                problems.append(f"{path}: {a!r} != None")
        else:
            if not isinstance(a, (int, float)) or isinstance(a, bool) or not np.isclose(a, b, rtol=rel_tol, atol=abs_tol):
                problems.append(f"{path}: {a!r} != {b:.6g}")

    walk(claimed, recomputed, "")
    return problems
