"""Meta-World as task families and datasets: tasks, splits, the paper's env choices, recording."""

from __future__ import annotations

import numpy as np
import pytest

from icrl_bench.data.build import build_dataset
from icrl_bench.data.recipes import build_command, parse_dataset_id, resolve
from icrl_bench.envs import get_family
from icrl_bench.envs.metaworld import ML1_TASKS
from icrl_bench.errors import IcrlBenchError
from icrl_bench.sources.sb3_sac import SOURCE as SAC
from icrl_bench.sources.sb3_sac import SACConfig

pytest.importorskip("metaworld")


def test_ml1_task_names_are_metaworlds_own() -> None:
    import metaworld.env_dict

    assert {name + "-v3" for name in ML1_TASKS} == set(metaworld.env_dict.ALL_V3_ENVIRONMENTS)


def test_ml1_family_has_metaworlds_train_and_test_goals() -> None:
    family = get_family("metaworld-ml1-reach")
    assert (family.kind, family.horizon, family.obs_dim, family.action_dim) == ("continuous", 100, 11, 4)
    assert family.n_tasks == 100
    split = family.split()
    np.testing.assert_array_equal(split.train, np.arange(50))
    np.testing.assert_array_equal(split.test, np.arange(50, 100))
    goals = family.task_params()
    assert goals.shape == (100, 3) and goals.dtype == np.float32
    # Train and test goals differ (Meta-World's ML1-train gym id returns the test goals: not used here).
    train, test = {tuple(g) for g in goals[:50]}, {tuple(g) for g in goals[50:]}
    assert len(train) == 50 and len(test) == 50 and not train & test
    assert get_family("metaworld-ml1-hammer").obs_dim == 18


def test_ml1_env_is_truncated_at_100_steps_and_sees_the_first_11_dims() -> None:
    family = get_family("metaworld-ml1-reach")
    env = family.make_env(57)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and obs.dtype == np.float32 and env.observation_space.shape == (11,)
    np.testing.assert_allclose(env.unwrapped._target_pos, family.task_params()[57], atol=1e-6)
    full = family.make_source_env(57)
    full_obs, _ = full.reset(seed=0)
    assert full_obs.shape == (39,)
    np.testing.assert_allclose(obs, full_obs[:11], atol=1e-6)
    for step in range(1, 101):
        obs, reward, terminated, truncated, info = env.step(np.zeros(4, dtype=np.float32))
        assert info["success"] in (0.0, 1.0) and np.isfinite(reward)
        assert truncated == (step == 100) and not terminated


def test_unknown_metaworld_names_list_the_known_ones() -> None:
    with pytest.raises(IcrlBenchError, match="unknown Meta-World ML1 task 'reech'.*'reach'"):
        get_family("metaworld-ml1-reech")
    with pytest.raises(IcrlBenchError, match="metaworld-ml10"):
        get_family("metaworld-ml20")


def test_ml10_has_ten_train_and_five_test_types() -> None:
    family = get_family("metaworld-ml10")
    types = family.type_names()
    assert len(types) == 15 and types[0] == "reach-v3" and types[10] == "drawer-open-v3"
    assert family.n_tasks == 750 and len(family.split().train) == 500
    plan = resolve("metaworld-ml10")
    assert len(plan.tasks) == 60 and plan.tasks[:2] == [0, 10] and plan.tasks[-1] == 725


def test_recipe_ids_name_the_task_and_round_trip() -> None:
    plan = resolve("metaworld-ml1", "small", task="pick-place")
    assert plan.dataset_id == "metaworld-ml1-pick-place-small-v1" and plan.env == "metaworld-ml1-pick-place"
    assert plan.tasks == list(range(50)) + list(range(50, 60))  # 50 train goals + the first 10 test goals
    assert build_command(plan) == "icrl-bench build-dataset metaworld-ml1 --task pick-place --preset small"
    for dataset_id in ("metaworld-ml1-reach-v1", "metaworld-ml1-reach-wall-tiny-sb3-sac-v1", "metaworld-ml10-small-v1"):
        assert parse_dataset_id(dataset_id).dataset_id == dataset_id
    sac = resolve("metaworld-ml1", task="reach", source="sb3-sac")
    assert sac.source_settings["gradient_steps"] == 10 and "n_epochs" not in sac.source_settings
    with pytest.raises(IcrlBenchError, match="needs --task; one of: .*reach"):
        resolve("metaworld-ml1")
    with pytest.raises(IcrlBenchError, match="has no task choice; drop --task"):
        resolve("darkroom", task="reach")
    with pytest.raises(IcrlBenchError, match="unknown task of metaworld-ml1 'pick'"):
        resolve("metaworld-ml1", task="pick")


def _check_history(h: dict[str, np.ndarray], n_streams: int, n_steps: int, obs_dim: int = 11) -> None:
    assert h["obs"].shape == (n_streams, n_steps, obs_dim) and h["obs"].dtype == np.float32
    assert h["action"].shape == (n_streams, n_steps, 4) and np.abs(h["action"]).max() <= 1.0
    assert h["done"][:, 99::100].all() and h["done"].sum() == n_streams * (n_steps // 100)
    assert h["success"].dtype == np.bool_ and h["reward"].dtype == np.float32
    # Within an episode the next step starts where the last one ended.
    within = ~h["done"][:, :-1]
    np.testing.assert_array_equal(h["obs"][:, 1:][within], h["next_obs"][:, :-1][within])


def test_ppo_recording_through_the_builder(tmp_path) -> None:
    result = build_dataset("metaworld-ml1", "tiny", task="reach", workers=1, root=tmp_path, show_progress=False)
    from icrl_bench.data.dataset import load_dataset

    ds = load_dataset(result.dataset_id, tmp_path)
    assert ds.n_tasks == 3 and ds.manifest["env_spec"]["kind"] == "continuous"
    spec = ds.manifest["env_spec"]
    assert (spec["obs_dim"], spec["action_dim"], spec["horizon"]) == (11, 4, 100) and "v3" in spec["task_version"]
    assert "optimal_action" not in ds.array_names
    np.testing.assert_array_equal(ds.split, [0, 0, 1])
    np.testing.assert_allclose(ds.task_params, get_family("metaworld-ml1-reach").task_params()[[0, 1, 50]])
    _check_history({name: ds[name][0] for name in ("obs", "action", "reward", "next_obs", "done", "success")}, 2, 200)
    # The episode's last next_obs is the true terminal observation: replaying the actions reaches it.
    env = get_family("metaworld-ml1-reach").make_env(0)
    obs, _ = env.reset()
    np.testing.assert_allclose(obs, ds["obs"][0, 0, 0], atol=1e-6)
    for t in range(100):
        obs, reward, *_ = env.step(ds["action"][0, 0, t])
        assert reward == pytest.approx(float(ds["reward"][0, 0, t]), rel=1e-5)
    np.testing.assert_allclose(obs, ds["next_obs"][0, 0, 99], atol=1e-5)
    assert ds.verify() == result.content_hash
    # Float rewards are summed as floats (not truncated like the grid worlds' integer rewards).
    np.testing.assert_allclose(ds.episode_returns(0), ds["reward"][0].astype(np.float64).reshape(2, 2, 100).sum(-1), rtol=1e-6)


def test_sac_recording() -> None:
    config = SACConfig(n_streams=2, total_timesteps=400, learning_starts=100, gradient_steps=1, batch_size=32)
    history = SAC.run_task("metaworld-ml1-reach", 3, seed=0, config=config, device="cpu", progress=None)
    _check_history(history, 2, 200)
    again = SAC.run_task("metaworld-ml1-reach", 3, seed=0, config=config, device="cpu", progress=None)
    np.testing.assert_array_equal(history["action"], again["action"])
    with pytest.raises(IcrlBenchError, match="sb3-sac needs continuous actions"):
        SAC.run_task("darkroom", 3, seed=0, config=config, device="cpu", progress=None)


class _CrashingSource:
    """The real SB3 PPO source, except that canonical tasks in `crash_on` raise like a MuJoCo instability."""

    name = "crashing-ppo"
    tasks_per_job = 1

    def __init__(self, crash_on: set[int], times: int):
        from icrl_bench.sources.sb3_ppo import SOURCE as PPO

        self.ppo, self.config_cls, self.crash_on, self.left = PPO, PPO.config_cls, crash_on, {t: times for t in crash_on}

    def run(self, family, tasks, seeds, config, device="cpu", progress=None):
        for task in tasks:
            if self.left.get(task, 0) > 0:
                self.left[task] -= 1
                raise RuntimeError("MuJoCo Warning: Nan, Inf or huge value in QACC")
        return self.ppo.run(family, tasks, seeds, config, device, progress)


def test_a_crashing_task_is_retried_then_reported_and_the_others_are_kept(tmp_path, monkeypatch) -> None:
    from icrl_bench import sources
    from icrl_bench.data.build import run_plan, staging_dir
    from icrl_bench.sources import SourceInfo

    plan = resolve("metaworld-ml1", "tiny", task="reach")
    monkeypatch.setitem(sources.SOURCES, "crashing-ppo", SourceInfo("crashing-ppo", "unused", "test"))
    flaky = _CrashingSource({1}, times=1)
    monkeypatch.setattr(sources, "get_source", lambda name: flaky)
    monkeypatch.setattr("icrl_bench.data.build.get_source", lambda name: flaky)
    assert run_plan(plan, workers=1, root=tmp_path, show_progress=False).tasks_run == 3  # one retry was enough

    broken = _CrashingSource({50}, times=5)
    monkeypatch.setattr(sources, "get_source", lambda name: broken)
    monkeypatch.setattr("icrl_bench.data.build.get_source", lambda name: broken)
    other = tmp_path / "other"
    with pytest.raises(IcrlBenchError, match=r"task\(s\) \[50\]: RuntimeError: MuJoCo Warning.*failed 2 times.*2 finished tasks are saved"):
        run_plan(plan, workers=1, root=other, show_progress=False)
    assert staging_dir(other, plan.dataset_id).is_dir()  # kept for the rerun, not published
    assert not (other / "datasets" / plan.dataset_id).exists()


def test_missing_metaworld_extra_says_how_to_install(monkeypatch) -> None:
    import sys

    from icrl_bench.envs import metaworld as mw

    monkeypatch.setitem(sys.modules, "metaworld", None)  # what `import metaworld` sees when it is not installed
    mw._benchmark.cache_clear()
    with pytest.raises(IcrlBenchError, match=r"needs the metaworld extra .*pip install 'icrl-bench\[metaworld\]'"):
        get_family("metaworld-ml1-push").make_env(0)
    mw._benchmark.cache_clear()
