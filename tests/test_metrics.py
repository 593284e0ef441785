"""The standard metrics on hand-made curves whose answers are known by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from icrl_bench.bench import metrics

# Two seeds, two tasks, ten episodes, references random = 0 and oracle = 10.
# Seed 0: both tasks return e on episode e (0..9); seed 1: task 0 always 10, task 1 always 0.
RETURNS = np.stack(
    [
        np.stack([np.arange(10.0), np.arange(10.0)]),
        np.stack([np.full(10, 10.0), np.zeros(10)]),
    ]
)


def test_return_curve_and_final_return():
    curve = metrics.return_curve(RETURNS)
    np.testing.assert_array_equal(curve[0], np.arange(10.0))
    np.testing.assert_array_equal(curve[1], np.full(10, 5.0))
    np.testing.assert_array_equal(metrics.final_return(RETURNS), [7.0, 5.0])  # mean of episodes 5..9
    np.testing.assert_array_equal(metrics.final_return(RETURNS, window=1), [9.0, 5.0])


def test_normalized_score_auc_and_episodes_to_90():
    np.testing.assert_allclose(metrics.normalized_score([7.0, 5.0, 0.0, 10.0], 0.0, 10.0), [70, 50, 0, 100])
    np.testing.assert_allclose(metrics.normalized_score(3.0, 1.0, 5.0), 50.0)
    np.testing.assert_allclose(metrics.auc(RETURNS, 0.0, 10.0), [45.0, 50.0])
    # Seed 0 reaches 9 = 90% of 10 at its 10th episode; seed 1 never (censored as 11).
    np.testing.assert_array_equal(metrics.episodes_to_threshold(RETURNS, 10.0), [10.0, 11.0])
    np.testing.assert_array_equal(metrics.episodes_to_threshold(RETURNS, 5.0), [6.0, 1.0])  # 4.5 first reached at e = 5
    with pytest.raises(ValueError, match="must exceed"):
        metrics.normalized_score(1.0, 2.0, 2.0)


def test_iqm_and_bootstrap_ci():
    assert metrics.iqm([1, 2, 3, 4, 100]) == 3.0  # the middle three of five
    assert metrics.iqm([4, 1, 3, 2]) == 2.5  # the middle two of four
    assert metrics.iqm([7.0, 5.0]) == 6.0
    assert metrics.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    # Resampling two seeds gives means 5, 6, 7 with probabilities 1/4, 1/2, 1/4.
    assert metrics.bootstrap_ci([7.0, 5.0]) == (5.0, 7.0)
    rng = np.random.default_rng(1)
    values = rng.normal(10.0, 1.0, size=200)
    low, high = metrics.bootstrap_ci(values)
    half_width = 1.96 * values.std() / np.sqrt(len(values))
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * half_width, rel=0.15)
    assert metrics.bootstrap_ci(values) == (low, high)  # deterministic: a fixed seed


def test_summarize_and_success_rate():
    success = (RETURNS >= 9).astype(int)
    summary = metrics.summarize(RETURNS, 0.0, 10.0, success=success)
    assert summary["final_return"]["per_seed"] == [7.0, 5.0]
    assert summary["final_return"]["mean"] == 6.0
    # Two seeds: no interval is given (a table shows n/a), for the mean nor for the IQM.
    assert [summary["final_return"][k] for k in ("ci_low", "ci_high", "iqm_ci_low", "iqm_ci_high")] == [None] * 4
    assert summary["final_return"]["iqm"] == 7.0  # pooled scores 7, 7, 10, 0: the middle two
    assert summary["normalized_score"]["mean"] == 60.0
    assert summary["auc"]["mean"] == 47.5
    assert summary["episodes_to_90"]["per_seed"] == [10.0, 11.0]
    # Last five episodes: seed 0 succeeds on task 0 and 1 only at episode 9 (1/5 each); seed 1 on task 0 always.
    assert summary["success_rate"]["per_seed"] == pytest.approx([0.2, 0.5])
    assert summary["return_curve"] == pytest.approx(list((np.arange(10.0) + 5.0) / 2))


# Meta-World-like success [seed, task, episode]: 2 seeds, 2 tasks, 4 episodes of 100 steps.
SUCCESS = np.array(
    [
        [[0, 1, 0, 0], [0, 0, 0, 1]],  # seed 0: task 0 solved at episode 2 and then failed again
        [[0, 0, 0, 0], [1, 0, 1, 0]],  # seed 1: task 1 from episode 1 on, task 0 never
    ]
)


def test_best_success_curve_counts_a_task_from_its_first_success_on():
    curve = metrics.best_success_curve(SUCCESS)
    np.testing.assert_array_equal(curve, [[0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.5]])
    assert (np.diff(curve, axis=1) >= 0).all()  # never falls, although episodes fail after a success
    rng = np.random.default_rng(0)
    random_curve = metrics.best_success_curve(rng.random((3, 7, 50)) < 0.1)
    assert (np.diff(random_curve, axis=1) >= 0).all() and random_curve[:, -1].min() > 0.9
    # Env-step budgets count whole episodes: 250 steps of 100-step episodes is episode 2.
    np.testing.assert_array_equal(metrics.best_success_at(SUCCESS, 100, 250), [0.5, 0.5])
    np.testing.assert_array_equal(metrics.best_success_at(SUCCESS, 100, 400), curve[:, -1])
    with pytest.raises(ValueError, match="the run has 1..4"):
        metrics.best_success_at(SUCCESS, 100, 500)


def test_summarize_success():
    returns = np.arange(16.0).reshape(2, 2, 4)
    summary = metrics.summarize_success(returns, SUCCESS, steps_per_episode=100, final_window=2)
    assert "normalized_score" not in summary and "auc" not in summary
    assert summary["best_success_rate"]["per_seed"] == [1.0, 0.5] and summary["best_success_rate"]["mean"] == 0.75
    assert summary["best_success_curve"] == [0.25, 0.5, 0.5, 0.75]
    assert summary["success_rate"]["per_seed"] == [0.25, 0.25]  # last 2 episodes
    assert summary["final_return"]["per_seed"] == [(2.5 + 6.5) / 2, (10.5 + 14.5) / 2]
    assert summary["best_success_at_steps"] == {}  # 400 steps: below the first budget (1,000)
    long = np.zeros((1, 3, 120))
    long[0, 0, 60] = 1
    budgets = metrics.summarize_success(long, long, steps_per_episode=100)["best_success_at_steps"]
    assert list(budgets) == ["1000", "5000", "10000"]  # 12,000 steps reach these
    assert [budgets[b]["mean"] for b in budgets] == [0.0, 0.0, pytest.approx(1 / 3)]
    with pytest.raises(ValueError, match="success has shape"):
        metrics.summarize_success(returns, SUCCESS[:, :1], 100)


# Five seeds x four tasks with per-task references: task t has random t / 2 and oracle 10 + t.
RANDOM_PER_TASK = np.array([0.0, 0.5, 1.0, 1.5])
ORACLE_PER_TASK = np.array([10.0, 11.0, 12.0, 13.0])


def five_seed_returns(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 14, size=(5, 4, 12)).astype(np.float64)  # [seed, task, episode]


def test_iqm_pools_every_seed_and_task_like_rliable():
    """rliable's IQM is scipy's 25% trimmed mean over all (run x task) normalized scores at once."""
    from scipy.stats import trim_mean

    returns = five_seed_returns()
    summary = metrics.summarize(returns, RANDOM_PER_TASK, ORACLE_PER_TASK)
    final = returns[:, :, -5:].mean(axis=2)  # [seed, task]
    pooled = 100 * (final - RANDOM_PER_TASK) / (ORACLE_PER_TASK - RANDOM_PER_TASK)  # per-task normalization
    assert summary["normalized_score"]["iqm"] == pytest.approx(trim_mean(pooled, 0.25, axis=None), abs=1e-12)
    assert summary["normalized_score"]["mean"] == pytest.approx(pooled.mean(), abs=1e-12)
    assert summary["final_return"]["iqm"] == pytest.approx(trim_mean(final.ravel(), 0.25), abs=1e-12)
    # Not the IQM of the five per-seed means (the old definition), nor normalized by the mean references.
    assert summary["normalized_score"]["iqm"] != pytest.approx(trim_mean(pooled.mean(axis=1), 0.25))
    by_means = 100 * (final.mean() - RANDOM_PER_TASK.mean()) / (ORACLE_PER_TASK.mean() - RANDOM_PER_TASK.mean())
    assert summary["normalized_score"]["mean"] != pytest.approx(by_means)
    auc = (100 * (returns - RANDOM_PER_TASK[:, None]) / (ORACLE_PER_TASK - RANDOM_PER_TASK)[:, None]).mean(axis=2)
    assert summary["auc"]["iqm"] == pytest.approx(trim_mean(auc, 0.25, axis=None), abs=1e-12)
    for n in range(1, 30):
        values = np.random.default_rng(n).normal(size=n)
        assert metrics.iqm(values) == pytest.approx(trim_mean(values, 0.25), abs=1e-12)


def test_the_bootstrap_is_stratified_by_task():
    """Seeds are resampled within each task, independently per task (rliable's StratifiedBootstrap).

    Each task's column holds the same five values in a rotated order, so every seed's mean over
    tasks is the same: resampling whole seeds would give a zero-width interval; resampling each
    task's seeds on their own does not.
    """
    values = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    scores = np.stack([np.roll(values, t) for t in range(5)], axis=1)  # [seed, task]
    assert np.ptp(scores.mean(axis=1)) == 0
    assert metrics.bootstrap_ci(scores.mean(axis=1)) == (20.0, 20.0)
    ci = metrics.stratified_bootstrap(scores)
    assert ci["mean"][0] < 20.0 < ci["mean"][1] and ci["iqm"][0] < 20.0 < ci["iqm"][1]
    # Half-width near 1.96 * sd / sqrt(n_seeds * n_tasks) for independent strata of equal spread.
    assert ci["mean"][1] - ci["mean"][0] == pytest.approx(2 * 1.96 * values.std() / np.sqrt(25), rel=0.1)
    assert metrics.stratified_bootstrap(scores) == ci  # deterministic: a fixed seed
    # A task whose seeds all agree adds no spread: constant columns give a point.
    assert metrics.stratified_bootstrap(np.tile([1.0, 2.0, 3.0], (4, 1))) == {"mean": (2.0, 2.0), "iqm": (2.0, 2.0)}
    estimate = metrics.estimate(scores)
    assert (estimate.ci_low, estimate.ci_high) == ci["mean"] and (estimate.iqm_ci_low, estimate.iqm_ci_high) == ci["iqm"]
    assert estimate.per_seed == [20.0] * 5


def test_intervals_need_three_seeds():
    assert metrics.MIN_SEEDS_FOR_CI == 3
    two = metrics.estimate(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert (two.ci_low, two.ci_high, two.iqm_ci_low, two.iqm_ci_high) == (None, None, None, None)
    three = metrics.estimate(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]))
    assert None not in (three.ci_low, three.ci_high, three.iqm_ci_low, three.iqm_ci_high)
    assert three.ci_low <= three.mean <= three.ci_high


def test_per_task_references_must_fit():
    with pytest.raises(ValueError, match="one value per test task"):
        metrics.summarize(five_seed_returns(), RANDOM_PER_TASK[:3], ORACLE_PER_TASK[:3])
    with pytest.raises(ValueError, match="must exceed"):
        metrics.summarize(five_seed_returns(), ORACLE_PER_TASK, ORACLE_PER_TASK)


def test_compare_summaries_names_the_tampered_number():
    summary = metrics.summarize(RETURNS, 0.0, 10.0)
    assert metrics.compare_summaries(summary, metrics.summarize(RETURNS.copy(), 0.0, 10.0)) == []
    tampered = {**summary, "auc": {**summary["auc"], "mean": 90.0}}
    assert metrics.compare_summaries(tampered, summary) == ["auc.mean: 90.0 != 47.5"]
    missing = {k: v for k, v in summary.items() if k != "final_return"}
    assert metrics.compare_summaries(missing, summary)[0] == "final_return: missing"
    extra = {**summary, "best_success_rate": summary["auc"], "auc": {**summary["auc"], "median": 1.0}}
    assert metrics.compare_summaries(extra, summary) == ["auc.median: unexpected", "best_success_rate: unexpected"]
    invented = {**summary, "auc": {**summary["auc"], "ci_low": 1.0}}  # an interval where two seeds give none
    assert metrics.compare_summaries(invented, summary) == ["auc.ci_low: 1.0 != None"]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[seed, task, episode\]"):
        metrics.summarize(np.zeros((3, 4)), 0.0, 1.0)


@pytest.mark.parametrize("module", ["metrics", "leaderboard", "leaderboard_view", "reporting", "protocols", "results"])
def test_benchmark_modules_do_not_import_torch_or_the_trainer(module):
    """The leaderboard side never loads torch at import; the harness never imports the trainer."""
    source = Path(__file__).resolve().parents[1] / "icrl_bench" / "bench" / f"{module}.py"
    tree = ast.parse(source.read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "torch" or n.startswith(("icrl_bench.envs", "icrl_bench.bench.harness", "icrl_bench.training"))]


def test_harness_never_imports_the_trainer():
    source = (Path(__file__).resolve().parents[1] / "icrl_bench" / "bench" / "harness.py").read_text()
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(ast.parse(source))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [None])
    ]
    assert not [m for m in imported if m and (m == "icrl_bench.training" or m.startswith("icrl_bench.training."))]
