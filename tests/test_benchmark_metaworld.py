"""The Meta-World protocols, run for real: pins, the harness's 100-step episodes, results, leaderboard."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from icrl_bench import make_agent
from icrl_bench.bench import leaderboard
from icrl_bench.bench.harness import evaluate
from icrl_bench.bench.protocols import PROTOCOLS, differing_pins, get_protocol
from icrl_bench.bench.rollout import run_protocol
from icrl_bench.cli import app
from icrl_bench.envs.metaworld import ML1_TASKS
from icrl_bench.errors import IcrlBenchError

pytest.importorskip("metaworld")

runner = CliRunner()
PAPER_TASKS = {"reach": 100, "push": 300, "pick-place": 2000, "sweep": 200, "peg-insert-side": 2000}


class Recorder:
    """Random actions from its own generator; keeps every transition it is shown."""

    def __init__(self) -> None:
        self.task_info = None
        self.transitions: list[tuple] = []
        self.rng = np.random.default_rng(0)

    def reset(self, num_envs, task_info):
        self.task_info = task_info

    def act(self, obs):
        return self.rng.uniform(-1, 1, size=(len(obs), 4)).astype(np.float32)

    def observe(self, obs, action, reward, next_obs, done):
        self.transitions.append((obs, action, reward, next_obs, done))


class IntegerAgent(Recorder):
    """Answers a continuous env with grid-world actions."""

    def act(self, obs):
        return np.zeros(len(obs), dtype=np.int64)


# --- protocols ---------------------------------------------------------------------------------


def test_every_ml1_task_and_ml10_has_a_protocol_with_the_official_budget():
    metaworld = {p.env: p for p in PROTOCOLS.values() if p.env.startswith("metaworld-")}
    assert set(metaworld) == {f"metaworld-ml1-{task}" for task in ML1_TASKS} | {"metaworld-ml10"}
    for task, episodes in PAPER_TASKS.items():
        assert get_protocol(f"metaworld-ml1-{task}").n_episodes == episodes
    assert get_protocol("metaworld-ml1-window-open").n_episodes == 200 and get_protocol("metaworld-ml10").n_episodes == 200
    for protocol in metaworld.values():
        assert (protocol.n_test_tasks, protocol.horizon, protocol.seeds, protocol.has_success) == (50, 100, (0, 1, 2), True)
        assert protocol.references() == {} and protocol.headline == "best_success_rate"
        assert protocol.describe()["measured"].count("v3") == 1
    assert get_protocol("darkroom").headline == "normalized_score"


@pytest.mark.parametrize("env", [*(f"metaworld-ml1-{t}" for t in PAPER_TASKS), "metaworld-ml1-hammer", "metaworld-ml10"])
def test_pinned_test_tasks_match_the_env_family(env):
    """The frozen protocol's test tasks (hash of their goals) are still what the env family gives."""
    from icrl_bench.envs import get_family

    assert differing_pins(env) == []
    protocol, family = get_protocol(env), get_family(env)
    tasks = protocol.test_tasks()
    assert len(tasks) == 50 and set(tasks) <= set(family.split().test)
    if env == "metaworld-ml10":  # 10 goals of each of the 5 test task types, in Meta-World's order
        types = family.task_params()[tasks, 0]
        assert [int(t) for t in dict.fromkeys(types.tolist())] == [10, 11, 12, 13, 14]
        assert (np.unique(types, return_counts=True)[1] == 10).all()
        first = family.split().test[family.task_params()[family.split().test, 0] == types[0]][:10]
        np.testing.assert_array_equal(tasks[:10], first)
    else:
        np.testing.assert_array_equal(tasks, np.arange(50, 100))


def test_the_pinned_hash_notices_a_moved_goal():
    protocol = get_protocol("metaworld-ml1-reach")
    params = protocol.test_task_params().astype(np.float64)
    assert protocol.tasks_sha256(params) == protocol.test_tasks_sha256  # float64 (a JSON file) hashes as float32
    params[7, 2] += 0.001  # one goal 1 mm higher
    assert protocol.tasks_sha256(params) != protocol.test_tasks_sha256


# --- the harness -------------------------------------------------------------------------------


def test_episodes_are_100_steps_reset_together_with_true_last_observations():
    agent = Recorder()
    rollout = run_protocol(agent, get_protocol("metaworld-ml1-reach"), seeds=[0, 1], n_episodes=2, n_tasks=2)
    assert rollout.returns.shape == rollout.success.shape == (2, 2, 2) and rollout.steps == 200 and rollout.num_envs == 4
    info = agent.task_info
    assert (info.num_actions, info.obs_dim, info.action_dim, info.horizon, info.task_params.shape) == (0, 11, 4, 100, (4, 3))
    obs, action, reward, next_obs, done = (np.array(column) for column in zip(*agent.transitions))  # [step, env, ...]
    assert obs.dtype == np.float32 and obs.shape == (200, 4, 11) and action.shape == (200, 4, 4)
    assert done[[99, 199]].all() and done.sum() == 2 * 4
    # Within an episode each step starts where the last ended; the next episode starts from a reset
    # (deterministic in Meta-World: the same start), while next_obs keeps the true last observation.
    np.testing.assert_array_equal(obs[1:100], next_obs[:99])
    np.testing.assert_allclose(obs[100], obs[0], atol=1e-6)
    assert np.abs(next_obs[99] - obs[100]).max() > 0.01
    # Rows are [seed, task]: seed replicas of a task start alike; returns sum each episode's rewards.
    np.testing.assert_allclose(obs[0, :2], obs[0, 2:])
    np.testing.assert_allclose(rollout.returns, reward.reshape(2, 100, 4).sum(axis=1).T.reshape(2, 2, 2))


def test_random_agent_results_document():
    results = evaluate("random", env="metaworld-ml1-reach", seeds=[0], n_episodes=2, n_tasks=3)
    assert results["standard"] is False and results["command"].endswith("--seeds 0 --episodes 2 --tasks 3")
    assert np.asarray(results["curves"]["return"]).shape == (1, 3, 2)
    assert set(np.ravel(results["curves"]["success"])) <= {0, 1}
    assert results["test_tasks"]["indices"] == [50, 51, 52] and len(results["test_tasks"]["params"][0]) == 3
    assert results["protocol"]["headline"] == "best_success_rate" and results["protocol"]["references"] == {}
    assert results["cost"]["steps"] == 200 and results["cost"]["env_steps"] == 600
    summary = results["summary"]
    assert {"best_success_rate", "best_success_curve", "best_success_at_steps", "success_rate", "final_return"} <= set(summary)
    assert "normalized_score" not in summary and summary["best_success_at_steps"] == {}  # 200 steps < the first budget
    assert evaluate("random", env="metaworld-ml1-reach", seeds=[0], n_episodes=2, n_tasks=3)["curves"] == results["curves"]
    assert evaluate("random", env="metaworld-ml1-reach", seeds=[4], n_episodes=2, n_tasks=3)["curves"] != results["curves"]


def test_random_actions_are_uniform_in_the_action_box():
    agent = make_agent("random")
    run_protocol(agent, get_protocol("metaworld-ml1-reach"), seeds=[0], n_episodes=1, n_tasks=1)
    actions = agent.act(np.zeros((5000, 11), dtype=np.float32))
    assert actions.shape == (5000, 4) and actions.dtype == np.float32
    assert actions.min() >= -1 and actions.max() <= 1 and abs(actions.mean()) < 0.03 and actions.std() == pytest.approx(1 / 3**0.5, abs=0.02)


def test_the_scripted_oracle_succeeds_where_random_does_not():
    """Success flows from info["success"] to the curves: Meta-World's scripted policy solves reach."""
    protocol = get_protocol("metaworld-ml1-reach")
    oracle = run_protocol(make_agent("oracle"), protocol, seeds=[0], n_episodes=2, n_tasks=3)
    random = run_protocol(make_agent("random"), protocol, seeds=[0], n_episodes=2, n_tasks=3)
    assert oracle.success.all() and not random.success.any()
    assert oracle.returns.min() > 2 * random.returns.max()


def test_bad_agents_and_options_get_one_line_errors():
    protocol = get_protocol("metaworld-ml1-reach")
    with pytest.raises(IcrlBenchError, match=r"must return finite float actions of shape \[1, 4\]; got int64 \[1\]"):
        run_protocol(IntegerAgent(), protocol, seeds=[0], n_episodes=1, n_tasks=1)
    with pytest.raises(IcrlBenchError, match=r"the source agent \(SB3 PPO\) runs on the grid worlds only; metaworld-ml1-reach has continuous"):
        run_protocol(make_agent("source"), protocol, seeds=[0], n_episodes=1, n_tasks=1)
    with pytest.raises(IcrlBenchError, match=r"--tasks must be in 1..50"):
        run_protocol(Recorder(), protocol, seeds=[0], n_episodes=1, n_tasks=51)


def test_cli_evaluate_metaworld(tmp_path, monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (200, 50))
    args = ["evaluate", "--agent", "random", "--env", "metaworld-ml1-reach", "--seeds", "0", "--episodes", "2", "--tasks", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "success (best so far)" in result.output and "cannot be submitted" in result.output
    assert (tmp_path / "random-metaworld-ml1-reach-s1-e2-t2.json").is_file() and (tmp_path / "random-metaworld-ml1-reach-s1-e2-t2.png").is_file()
    refused = runner.invoke(app, ["leaderboard", "submit", str(tmp_path / "random-metaworld-ml1-reach-s1-e2-t2.json"), "--dir", str(tmp_path / "board")])
    assert refused.exit_code == 1 and "non-standard run (1 seeds [0], 2 episodes, 2 test tasks)" in refused.output


# --- the leaderboard ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standard_entry() -> dict:
    """A well-formed standard reach entry: a real smoke run's document, its curves replaced by
    synthetic ones of the standard shape (a standard run takes ~15 min) and its summary recomputed."""
    protocol = get_protocol("metaworld-ml1-reach")
    results = evaluate("random", env=protocol.env, seeds=[0], n_episodes=1, n_tasks=1)
    rng = np.random.default_rng(0)
    shape = (len(protocol.seeds), protocol.n_test_tasks, protocol.n_episodes)
    returns = np.round(rng.uniform(0, 400, shape), 4)
    success = (rng.random(shape) < 0.02).astype(int)
    results.update(
        standard=True,
        seeds=list(protocol.seeds),
        n_episodes=protocol.n_episodes,
        test_tasks={"indices": protocol.test_tasks().tolist(), "params": protocol.test_task_params().tolist()},
        curves={"return": returns.tolist(), "success": success.tolist()},
        summary=protocol.summarize(returns, success),
        command=f"icrl-bench evaluate --agent random --env {protocol.env}",
    )
    return json.loads(json.dumps(results))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def test_a_valid_metaworld_entry_is_accepted_ranked_by_success_and_rendered(standard_entry, tmp_path, monkeypatch):
    from icrl_bench import cli

    board = tmp_path / "board"
    weaker = copy.deepcopy(standard_entry)
    weaker["agent"]["name"] = "weaker"
    weaker["curves"]["success"] = np.zeros_like(standard_entry["curves"]["success"]).tolist()
    weaker["summary"] = get_protocol("metaworld-ml1-reach").summarize(np.asarray(weaker["curves"]["return"]), np.zeros((3, 50, 100)))
    for data in (weaker, standard_entry):
        leaderboard.submit(write(tmp_path, json.loads(json.dumps(data))), board)
    ranked = leaderboard.ranking("metaworld-ml1-reach", board)["metaworld-ml1-reach/v1"]
    assert [e["agent"]["name"] for e in ranked] == ["random", "weaker"]
    best = standard_entry["summary"]["best_success_rate"]["mean"]
    assert 0 < best < 1 and standard_entry["summary"]["best_success_at_steps"].keys() == {"1000", "5000", "10000"}
    monkeypatch.setattr(cli.console, "size", (250, 50))
    shown = runner.invoke(app, ["leaderboard", "show", "--env", "metaworld-ml1-reach", "--dir", str(board)])
    assert shown.exit_code == 0 and "success (best so far)" in shown.output and f"{100 * best:.1f}%" in shown.output
    readme = leaderboard.render(board).readme.read_text()
    assert "## metaworld-ml1-reach/v1" in readme and f"| random | {100 * best:.1f}%" in readme and "| 1 | weaker |" in readme and "10,000 env steps per task" in readme


def bad_success_value(data):
    data["curves"]["success"][0][0][0] = 2


def success_wrong_shape(data):
    data["curves"]["success"][0] = data["curves"]["success"][0][:49]


def success_missing(data):
    data["curves"]["success"] = None


def return_above_the_maximum(data):
    data["curves"]["return"][0][0][0] = 1000.5  # 100 steps of at most 10 each


def tampered_success(data):
    data["summary"]["best_success_rate"]["mean"] += 0.1


def a_normalized_score(data):
    data["summary"]["normalized_score"] = data["summary"]["final_return"]


def invented_references(data):
    data["protocol"]["references"] = {"random": 0.0, "oracle": 1000.0}


def moved_goal(data):
    data["test_tasks"]["params"][3][0] += 0.01


@pytest.mark.parametrize(
    "tamper, message",
    [
        (bad_success_value, "curves.success must be 0/1 of shape (3, 50, 100)"),
        (success_wrong_shape, "curves.success must be 0/1 of shape (3, 50, 100)"),
        (success_missing, "records success per episode, but curves.success is missing"),
        (return_above_the_maximum, "an episode return exceeds the env's maximum (1000)"),
        (tampered_success, "first best_success_rate.mean: "),
        (a_normalized_score, "first normalized_score: unexpected"),
        (invented_references, "are not those of metaworld-ml1-reach/v1 ({})"),
        (moved_goal, "its test tasks are not those of metaworld-ml1-reach/v1"),
    ],
)
def test_malformed_metaworld_entries_are_rejected(standard_entry, tmp_path, tamper, message):
    data = copy.deepcopy(standard_entry)
    tamper(data)
    with pytest.raises(IcrlBenchError) as err:
        leaderboard.submit(write(tmp_path, data), tmp_path / "board")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "board" / "entries").exists() or not any((tmp_path / "board" / "entries").iterdir())
