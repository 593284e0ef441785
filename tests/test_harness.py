"""Protocols, the harness, the reference agents and the agent registry, run for real."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from icrl_bench import make_agent
from icrl_bench.agents.registry import BUILTINS, list_agents
from icrl_bench.bench.harness import evaluate, evaluate_agent
from icrl_bench.bench.protocols import PROTOCOLS, get_protocol, pinned_facts, reference_returns
from icrl_bench.bench.rollout import run_protocol
from icrl_bench.cli import app
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError

ENVS = ["darkroom", "darkroom-permuted", "dark-key-to-door"]


# --- plugins used by the registry tests (found as tests.test_harness:Class) ---------------------


class NoObserveAgent:
    """Looks like an agent but lacks observe()."""

    def reset(self, num_envs, task_info):
        pass

    def act(self, obs):
        return np.zeros(len(obs), dtype=np.int64)


class StayAgent(NoObserveAgent):
    """Always takes action 4 (stay); counts its forward passes like a model-based agent would."""

    def __init__(self, env: str | None = None):
        self.forward_passes = 0
        if env is not None:
            self.env = env

    def act(self, obs):
        self.forward_passes += 2
        return np.full(len(obs), 4, dtype=np.int64)

    def observe(self, obs, action, reward, next_obs, done):
        pass


# --- protocols ---------------------------------------------------------------------------------


def test_the_protocol_test_tasks_are_the_papers():
    darkroom = get_protocol("darkroom/v1")
    assert darkroom.test_task_params().tolist() == [[4, 2], [5, 6], [6, 8], [7, 2], [3, 6], [0, 5], [5, 8], [5, 4]]
    assert darkroom.n_episodes >= 50 and darkroom.seeds == (0, 1, 2, 3, 4) and darkroom.sample_actions
    # The other rooms: the official split (seed 4; 90% / 95% train) of 120 and 6,561 tasks.
    assert get_protocol("darkroom-permuted").test_task_params()[:, 0].tolist() == [70, 51, 2, 8, 11, 19, 61, 50, 92, 13, 38, 30]
    assert get_protocol("dark-key-to-door").test_task_params()[:3].tolist() == [[4, 6, 0, 4], [4, 7, 7, 8], [5, 6, 7, 4]]
    assert len(get_protocol("dark-key-to-door").test_tasks()) == 328


@pytest.mark.parametrize("env", ENVS)
def test_pinned_protocol_facts_match_the_env_family(env):
    """A protocol version is frozen; if an env change moved its tasks or references, this fails."""
    protocol = get_protocol(env)
    facts = pinned_facts(env)
    assert facts["n_test_tasks"] == protocol.n_test_tasks
    assert facts["test_tasks_sha256"] == protocol.test_tasks_sha256
    assert facts["random_return"] == pytest.approx(protocol.random_return, abs=1e-9)
    assert facts["oracle_return"] == pytest.approx(protocol.oracle_return, abs=1e-12)
    np.testing.assert_array_equal(get_family(env).split().test, protocol.test_tasks())
    # Per task too (the normalized score is per task), and the means are the pinned means.
    np.testing.assert_allclose(protocol.random_returns, facts["random_returns"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(protocol.oracle_returns, facts["oracle_returns"])
    assert len(protocol.random_returns) == len(protocol.oracle_returns) == protocol.n_test_tasks
    assert np.mean(protocol.random_returns) == pytest.approx(protocol.random_return, abs=1e-9)
    assert np.mean(protocol.oracle_returns) == pytest.approx(protocol.oracle_return, abs=1e-12)


@pytest.mark.parametrize("env", ENVS)
def test_per_task_references_agree_with_the_reference_agents_runs(env):
    """The committed leaderboard runs of the `oracle` and `random` agents (5 seeds x 50 episodes)
    earn, task by task, the pinned oracle return exactly and the random expectation within noise."""
    import json

    from icrl_bench.paths import REPO_ROOT

    protocol = get_protocol(env)
    random_returns, oracle_returns = np.asarray(protocol.random_returns), np.asarray(protocol.oracle_returns)
    runs = {}
    for path in (REPO_ROOT / "leaderboard" / "entries").glob(f"{protocol.name.replace('/', '-')}--*.json"):
        data = json.loads(path.read_text())
        runs[data["agent"]["name"]] = np.asarray(data["curves"]["return"], dtype=np.float64)  # [seed, task, episode]
    assert (runs["oracle"] == oracle_returns[None, :, None]).all()
    sampled = runs["random"].mean(axis=(0, 2))  # [task]
    n = runs["random"].shape[0] * runs["random"].shape[2]
    # A return in [0, oracle] with mean r has variance <= r * oracle: a bound on each task's standard error.
    assert (np.abs(sampled - random_returns) <= 5 * np.sqrt(random_returns * oracle_returns / n)).all()


def test_protocol_names_and_their_errors():
    assert get_protocol("darkroom") is PROTOCOLS["darkroom/v1"]
    with pytest.raises(IcrlBenchError, match=r"unknown protocol version darkroom/v0; the current one is darkroom/v1"):
        get_protocol("darkroom/v0")
    with pytest.raises(IcrlBenchError, match="unknown environment 'darkrom'. Did you mean 'darkroom'"):
        get_protocol("darkrom")


def test_validation_goals_are_the_splits_first_train_tasks_with_their_own_exact_references():
    test = get_protocol("darkroom-permuted")
    validation = test.on_validation_goals()
    assert validation.name == "darkroom-permuted/v1:validation-goals" and get_protocol(validation.name) == validation
    assert validation.on_validation_goals() is validation and get_protocol("darkroom:validation-goals").env == "darkroom"
    split = get_family("darkroom-permuted").split()
    goals = validation.test_tasks()
    assert list(goals) == list(split.train[: test.n_test_tasks]) and not set(goals) & set(test.test_tasks())
    random_returns, oracle_returns = reference_returns("darkroom-permuted", validation.test_task_params())
    np.testing.assert_allclose(validation.random_returns, random_returns, atol=1e-12)
    np.testing.assert_allclose(validation.oracle_returns, oracle_returns, atol=1e-12)
    assert validation.test_tasks_sha256 == validation.tasks_sha256(validation.test_task_params()) != test.test_tasks_sha256
    assert (validation.n_episodes, validation.seeds, validation.horizon) == (test.n_episodes, test.seeds, test.horizon)
    with pytest.raises(IcrlBenchError, match="metaworld-ml1-reach/v1 has no validation-goal evaluation"):
        get_protocol("metaworld-ml1-reach").on_validation_goals()


def test_cli_evaluates_on_validation_goals_sharded_and_the_leaderboard_refuses_them(tmp_path, monkeypatch):
    """The oracle earns each validation goal's own oracle return (100 normalized): the references
    are the goals'. The run is never standard, and the leaderboard refuses it."""
    from icrl_bench import cli
    from icrl_bench.bench import leaderboard

    monkeypatch.setattr(cli.console, "size", (200, 50))
    result = CliRunner().invoke(app, ["evaluate", "--agent", "oracle", "--env", "darkroom", "--goals", "validation", "--seeds", "0,1",
                                      "--episodes", "3", "--executor", "local", "--workers", "1", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "darkroom/v1:validation-goals: 8 validation" in result.output and "cannot be submitted" in result.output
    data = json.loads((tmp_path / "oracle-darkroom-validation-goals-s2-e3.json").read_text())
    assert data["protocol"]["name"] == "darkroom/v1:validation-goals" and data["standard"] is False
    assert data["summary"]["normalized_score"]["mean"] == pytest.approx(100.0)
    assert data["test_tasks"]["indices"] == get_protocol("darkroom:validation-goals").test_tasks().tolist()
    assert data["command"].startswith("icrl-bench evaluate --agent oracle --env darkroom --goals validation --seeds 0,1 --episodes 3")
    with pytest.raises(IcrlBenchError, match="evaluated on validation goals .* re-run `icrl-bench evaluate` without --goals validation"):
        leaderboard.validate(data)
    bad = CliRunner().invoke(app, ["evaluate", "--agent", "oracle", "--goals", "train", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "--goals must be test or validation" in bad.output and "Traceback" not in bad.output


# --- reference agents through the harness ------------------------------------------------------


@pytest.mark.parametrize("env, seeds, episodes", [("darkroom", None, None), ("darkroom-permuted", [0, 1], 4), ("dark-key-to-door", [0], 2)])
def test_the_oracle_earns_the_max_return_every_episode(env, seeds, episodes):
    protocol = get_protocol(env)
    rollout = run_protocol(make_agent("oracle"), protocol, seeds, episodes)
    best = get_family(env).max_return(protocol.test_task_params()).astype(float)
    assert (rollout.returns == best[None, :, None]).all()
    if protocol.has_success:
        assert rollout.success.all()


def test_random_is_far_below_and_matches_its_exact_expectation():
    results = evaluate("random", env="darkroom")
    assert results["summary"]["normalized_score"]["mean"] < 5
    assert results["summary"]["episodes_to_90"]["mean"] == 51.0  # never: censored at n_episodes + 1
    # 2,000 sampled episodes agree with the exact dynamic-programming expectation.
    sampled = np.asarray(results["curves"]["return"]).mean()
    assert sampled == pytest.approx(get_protocol("darkroom").random_return, abs=0.12)
    again = evaluate("random", env="darkroom")
    assert again["curves"] == results["curves"]  # same seeds, same curves
    other = evaluate("random", env="darkroom", seeds=[5, 6, 7, 8, 9])
    assert other["curves"] != results["curves"]  # the seed list reaches the agent (set_seed)


def test_reference_returns_of_key_to_door_by_simulation():
    """The exact random expectation of the key-to-door room agrees with the batched env itself."""
    random_exact, oracle = reference_returns("dark-key-to-door")
    rollout = run_protocol(make_agent("random"), get_protocol("dark-key-to-door"), [0], 12)
    assert rollout.returns.mean() == pytest.approx(random_exact.mean(), abs=0.04)
    assert (oracle == 2).all()


def test_results_document_records_what_the_design_asks():
    results = evaluate("tests.test_harness:StayAgent", env="darkroom", seeds=[3], n_episodes=2)
    assert results["protocol"]["name"] == "darkroom/v1" and results["env"] == "darkroom"
    assert results["seeds"] == [3] and results["standard"] is False
    assert np.asarray(results["curves"]["return"]).shape == (1, 8, 2)
    assert results["test_tasks"]["params"][0] == [4, 2]
    assert results["cost"]["forward_passes_per_action"] == 2.0 and results["cost"]["steps"] == 40
    assert results["cost"]["act_s_per_step"] > 0
    assert {"packages", "code_commit", "machine", "created_at"} <= set(results["provenance"])
    assert results["command"] == "icrl-bench evaluate --agent tests.test_harness:StayAgent --env darkroom --seeds 3 --episodes 2"
    # Staying in the centre never finds a goal off the centre: return 0 everywhere.
    assert results["summary"]["final_return"]["mean"] == 0.0


def test_the_source_agent_learns_online_with_sb3_ppo():
    agent = make_agent("source")
    rollout = run_protocol(agent, get_protocol("darkroom"), [0], 2)
    assert rollout.returns.shape == (1, 8, 2)
    model = agent.models[0]
    assert model._n_updates == 2 * 20  # one PPO update per 20-step episode, 20 epochs each (paper's n_epochs)
    assert model.n_steps == 20 and model.batch_size == 20  # batch capped at one stream's rollout


# --- the registry ------------------------------------------------------------------------------


def test_a_plugin_without_observe_gets_a_one_line_error():
    with pytest.raises(IcrlBenchError) as err:
        make_agent("tests.test_harness:NoObserveAgent")
    message = str(err.value)
    assert "missing observe" in message and "\n" not in message and "reset" in message


def test_registry_errors_name_the_fix():
    with pytest.raises(IcrlBenchError, match=r"unknown agent 'orcle'. Did you mean 'oracle'.*Known: ad, dicp-ad"):
        make_agent("orcle")
    with pytest.raises(IcrlBenchError, match=r"`icrl-bench train --agent dicp-ad --dataset dark-key-to-door-v3` \(on a CPU: `icrl-bench train --agent dicp-ad --dataset dark-key-to-door-small-v3 --preset cpu`\)"):
        make_agent("dicp-ad", env="dark-key-to-door")  # no checkpoint shipped there
    with pytest.raises(IcrlBenchError, match=r"no attribute 'Nope'"):
        make_agent("tests.test_harness:Nope")
    with pytest.raises(IcrlBenchError, match=r"cannot import module 'no_such_pkg.agents'"):
        make_agent("no_such_pkg.agents:Agent")
    with pytest.raises(IcrlBenchError, match=r"rejected its settings \['bogus'\]"):
        make_agent("random", bogus=1)


def test_an_entry_point_plugin_is_found_by_name(tmp_path, monkeypatch):
    """A package registering `icrl_bench.agents` entry points, installed as dist-info on sys.path."""
    dist = tmp_path / "myplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[icrl_bench.agents]\nstayer = tests.test_harness:StayAgent\nbroken = tests.test_harness:NoObserveAgent\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"stayer", "broken"} <= {a.name for a in list_agents() if a.origin == "entry point"}
    assert isinstance(make_agent("stayer"), StayAgent)
    with pytest.raises(IcrlBenchError, match="'broken' does not follow the Agent protocol: missing observe"):
        make_agent("broken")


def test_a_checkpoint_for_another_env_is_refused():
    agent = StayAgent(env="darkroom-permuted")
    with pytest.raises(IcrlBenchError, match="trained on darkroom-permuted but is evaluated on darkroom"):
        evaluate_agent(agent, get_protocol("darkroom"), "stay", n_episodes=1, seeds=[0])


def test_builtin_names():
    assert set(BUILTINS) == {"random", "oracle", "source", "ad", "dpt", "idt", "dicp-ad", "dicp-dpt", "dicp-idt"}


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_evaluate_and_agents_list(tmp_path, monkeypatch):
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (200, 50))
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--agent", "oracle", "--env", "darkroom-permuted", "--seeds", "0,1", "--episodes", "3", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "normalized" in result.output and "100.0" in result.output
    assert (tmp_path / "oracle-darkroom-permuted-s2-e3.json").is_file() and (tmp_path / "oracle-darkroom-permuted-s2-e3.png").is_file()
    listing = runner.invoke(app, ["agents", "list"])
    assert listing.exit_code == 0 and "dicp-idt" in listing.output and "source" in listing.output
    bad = runner.invoke(app, ["evaluate", "--agent", "tests.test_harness:NoObserveAgent", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "missing observe" in bad.output and "Traceback" not in bad.output
    seeds = runner.invoke(app, ["evaluate", "--agent", "random", "--seeds", "a,b"])
    assert seeds.exit_code == 1 and "--seeds must be comma-separated integers" in seeds.output


def test_results_record_repository_checkpoints_relative_to_the_repository(tmp_path) -> None:
    from icrl_bench.bench.harness import portable_path, reproduce_command
    from icrl_bench.paths import REPO_ROOT

    shipped = REPO_ROOT / "baselines" / "darkroom" / "ad"
    assert portable_path(shipped) == "baselines/darkroom/ad"  # the same text on every machine
    assert portable_path(tmp_path / "run") == str(tmp_path / "run") and portable_path(None) is None
    command = reproduce_command("ad", shipped, get_protocol("darkroom"), [0, 1, 2, 3, 4], 50, {})
    assert "--checkpoint baselines/darkroom/ad" in command and str(REPO_ROOT) not in command


def test_an_evaluation_of_the_default_checkpoint_names_it() -> None:
    results = evaluate("dpt", env="darkroom", seeds=[0], n_episodes=1, n_tasks=1)
    assert results["agent"]["checkpoint"] == "baselines/darkroom/dpt"  # not None: the default may change later
    assert "--checkpoint baselines/darkroom/dpt" in results["command"]
    assert evaluate("random", env="darkroom", seeds=[0], n_episodes=1, n_tasks=1)["agent"]["checkpoint"] is None


def test_a_privileged_idt_run_is_recorded_as_such_and_never_submittable(tmp_path, monkeypatch):
    """IDT acting from each test goal's optimum (the official grid evaluation) runs with the protocol's seeds,
    episodes and tasks, yet it is not standard: its file says so in its name and the leaderboard refuses it."""
    from icrl_bench import cli
    from icrl_bench.bench import leaderboard

    monkeypatch.setattr(cli.console, "size", (200, 50))
    result = CliRunner().invoke(app, ["evaluate", "--agent", "idt", "--env", "darkroom", "--set", 'return_to_go="task-optimum"',
                                      "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "return_to_go=task-optimum reads the test tasks' parameters" in result.output
    data = json.loads((tmp_path / "idt-darkroom-privileged.json").read_text())
    assert data["agent"]["settings"] == {"return_to_go": "task-optimum"} and data["standard"] is False
    assert "--set return_to_go=\"task-optimum\"" in data["command"]
    with pytest.raises(IcrlBenchError, match="return_to_go=task-optimum, which reads the test tasks' parameters"):
        leaderboard.validate(data)
    bad = CliRunner().invoke(app, ["evaluate", "--agent", "dpt", "--set", 'return_to_go="task-optimum"', "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "dpt takes no option(s) return_to_go" in bad.output and "Traceback" not in bad.output
