"""The grid worlds against the paper's definitions, Gymnasium's checker and their batched form."""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from icrl_bench.envs import FAMILIES, DarkKeyToDoorEnv, DarkroomEnv, DarkroomPermutedEnv, get_family
from icrl_bench.envs.grid import PERMUTATIONS
from icrl_bench.errors import IcrlBenchError

FAMILY_NAMES = sorted(FAMILIES)


def sample_tasks(family, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(family.n_tasks, size=n, replace=False).tolist())


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_passes_gymnasium_check_env(name):
    family = get_family(name)
    for task in sample_tasks(family, n=3):
        check_env(family.make_env(task).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_batched_env_equals_single_envs(name):
    """Same actions, same trajectories: cells, rewards, dones, over two whole episodes."""
    family = get_family(name)
    tasks = sample_tasks(family)
    params = family.task_params()[tasks]
    singles = [family.make_env(t) for t in tasks]
    batched = family.batched(params)
    obs_b = batched.reset().numpy()
    obs_s = np.stack([e.reset()[0] for e in singles])
    np.testing.assert_array_equal(obs_b, obs_s)
    rng = np.random.default_rng(1)
    for _ in range(2 * family.horizon):
        actions = rng.integers(0, 5, size=len(tasks))
        step = batched.step(torch.as_tensor(actions))
        for i, env in enumerate(singles):
            cell, reward, terminated, truncated, _ = env.step(int(actions[i]))
            np.testing.assert_array_equal(step.next_obs[i].numpy(), cell)
            assert step.reward[i].item() == reward
            assert step.done[i].item() == terminated == truncated
            if terminated:
                cell, _ = env.reset()
            np.testing.assert_array_equal(step.obs[i].numpy(), cell)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_oracle_earns_the_max_return(name):
    """Following the oracle (single env and batched) earns exactly `max_return`, and no more is possible."""
    family = get_family(name)
    tasks = sample_tasks(family, n=8)
    params = family.task_params()[tasks]
    batched = family.batched(params)
    batched.reset()
    total = torch.zeros(len(tasks))
    for _ in range(family.horizon):
        total += batched.step(batched.optimal_action()).reward
    np.testing.assert_array_equal(total.numpy(), family.max_return(params))
    for task, expected in zip(tasks, family.max_return(params)):
        env = family.make_env(task).unwrapped
        cell, _ = env.reset()
        ret, have_key = 0.0, False
        for _ in range(family.horizon):
            action = env.optimal_action(cell, have_key) if isinstance(env, DarkKeyToDoorEnv) else env.optimal_action(cell)
            cell, reward, *_ = env.step(action)
            have_key = have_key or reward > 0
            ret += reward
        assert ret == expected


def test_max_return_values_follow_the_paper():
    darkroom = get_family("darkroom")
    np.testing.assert_array_equal(darkroom.max_return(np.array([[4, 4], [0, 0], [4, 6]], dtype=np.uint8)), [20, 13, 19])
    assert set(get_family("darkroom-permuted").max_return(np.arange(120)[:, None])) == {35}
    assert set(get_family("dark-key-to-door").max_return(np.zeros((3, 4)))) == {2}


def official_split(items: list, seed: int, ratio: float) -> tuple[list, list]:
    """The official sample_* functions, verbatim in behaviour: global random, shuffle, round."""
    items = list(items)
    random.seed(seed)
    random.shuffle(items)
    n_train = round(len(items) * ratio)
    return items[:n_train], items[n_train:]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_split_is_the_papers(name):
    family = get_family(name)
    params = [tuple(p) for p in family.task_params()]
    train, test = official_split(params, family.split_seed, family.train_ratio)
    split = family.split()
    assert [tuple(params[i]) for i in split.train] == train
    assert [tuple(params[i]) for i in split.test] == test
    assert len(set(split.train) | set(split.test)) == family.n_tasks
    assert not set(split.train) & set(split.test)


def test_split_sizes_and_darkroom_test_goals():
    sizes = {name: (len(get_family(name).split().train), len(get_family(name).split().test)) for name in FAMILY_NAMES}
    assert sizes == {"darkroom": (73, 8), "darkroom-permuted": (108, 12), "dark-key-to-door": (6233, 328)}
    darkroom = get_family("darkroom")
    test_goals = darkroom.task_params()[darkroom.split().test].tolist()
    assert test_goals == [[4, 2], [5, 6], [6, 8], [7, 2], [3, 6], [0, 5], [5, 8], [5, 4]]


def test_task_order_is_the_official_nested_loop():
    assert get_family("darkroom").task_params()[:3].tolist() == [[0, 0], [0, 1], [0, 2]]
    assert get_family("darkroom").task_params()[9].tolist() == [1, 0]
    assert get_family("dark-key-to-door").task_params()[1].tolist() == [0, 0, 0, 1]
    assert get_family("darkroom-permuted").task_params()[7].tolist() == [7]


def test_gymnasium_ids_and_envs():
    env = gym.make("icrl_bench/Darkroom-v0", goal=(4, 5))
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [4, 4] and obs.dtype == np.int32
    obs, reward, terminated, truncated, _ = env.step(2)  # +y
    assert obs.tolist() == [4, 5] and reward == 1.0 and not terminated and not truncated
    permuted = gym.make("icrl_bench/DarkroomPermuted-v0", perm_idx=1)
    assert permuted.reset()[0].tolist() == [0, 0]
    key_door = gym.make("icrl_bench/DarkKeyToDoor-v0", key=(4, 5), goal=(4, 4))
    key_door.reset()
    assert key_door.step(2)[1] == 1.0  # key
    assert key_door.step(2)[1] == 0.0
    assert key_door.step(3)[1] == 0.0  # (4, 5) again: key already held
    assert key_door.step(3)[1] == 1.0  # door


def test_permuted_env_maps_actions():
    env = DarkroomPermutedEnv(perm_idx=5)
    env.reset()
    effective = PERMUTATIONS[5]
    for action in range(5):
        assert env.effective_action(action) == effective[action]
        assert env.action_for(int(effective[action])) == action


def test_episode_ends_at_the_horizon_and_refuses_more_steps():
    env = DarkroomEnv(goal=(0, 0), horizon=3)
    env.reset()
    dones = [env.step(4)[2] for _ in range(3)]
    assert dones == [False, False, True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_bad_task_parameters_and_names():
    with pytest.raises(ValueError, match="goal"):
        DarkroomEnv(goal=(9, 0))
    with pytest.raises(ValueError, match="perm_idx"):
        DarkroomPermutedEnv(perm_idx=120)
    with pytest.raises(IcrlBenchError, match="Did you mean 'darkroom'"):
        get_family("darkrom")
