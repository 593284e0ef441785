"""The batched PPO source against plain references: per-task nn.Modules with autograd,
SB3's own initialisation, a textbook GAE loop, the single Gymnasium envs, and the
builder's determinism and resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icrl_bench.envs import FAMILIES, get_family
from icrl_bench.errors import IcrlBenchError
from icrl_bench.sources import batched_ppo as bp
from icrl_bench.sources.sb3_ppo import PPOConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches: threads only add synchronisation (and on a shared 2-core box, waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_modules(layers: dict[str, torch.nn.Linear]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """One task's policy and value MLPs as SB3 builds them (separate nets, tanh)."""
    tanh = torch.nn.Tanh
    policy = torch.nn.Sequential(layers["pi1"], tanh(), layers["pi2"], tanh(), layers["pi3"])
    value = torch.nn.Sequential(layers["vf1"], tanh(), layers["vf2"], tanh(), layers["vf3"])
    return policy, value


def perturbed_params(n_tasks: int, scale: float = 0.3) -> torch.Tensor:
    """SB3-initialised learners, nudged so the policies are far from uniform (ratios get clipped)."""
    generator = torch.Generator().manual_seed(0)
    flat = bp.stack_modules([bp.sb3_modules(100 + i) for i in range(n_tasks)], torch.device("cpu"))
    return flat + scale * torch.randn(flat.shape, generator=generator)


def random_minibatch(n_tasks: int, m: int, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 9, (n_tasks, m, 2), generator=generator).float(),
        "action": torch.randint(0, 5, (n_tasks, m), generator=generator),
        "log_prob_noise": 0.5 * torch.randn(n_tasks, m, generator=generator),
        "advantage": torch.randn(n_tasks, m, generator=generator) * 2 + 0.3,
        "return": torch.randn(n_tasks, m, generator=generator),
    }


def test_initial_weights_equal_sb3s() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = DummyVecEnv([lambda: get_family("darkroom").make_env(10)] * 2)
    policy = PPO("MlpPolicy", env, seed=7, device="cpu", n_steps=20, batch_size=40).policy
    ours = bp.sb3_modules(7)
    theirs = {
        "pi1": policy.mlp_extractor.policy_net[0],
        "pi2": policy.mlp_extractor.policy_net[2],
        "vf1": policy.mlp_extractor.value_net[0],
        "vf2": policy.mlp_extractor.value_net[2],
        "pi3": policy.action_net,
        "vf3": policy.value_net,
    }
    for name, layer in theirs.items():
        assert torch.equal(layer.weight, ours[name].weight), name
        assert torch.equal(layer.bias, ours[name].bias), name
    assert not torch.equal(bp.sb3_modules(8)["pi2"].weight, ours["pi2"].weight)


def test_stack_and_unstack_are_inverse() -> None:
    flat = perturbed_params(3)
    restacked = bp.stack_modules([bp.unstack_modules(flat, 3, i) for i in range(3)], torch.device("cpu"))
    assert torch.equal(flat, restacked)
    assert flat.numel() == 3 * bp.N_PARAMS == 3 * 9094


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_loss_terms_gradients_and_adam_equal_a_per_task_loop(ent_coef: float) -> None:
    n_tasks, m, clip_range, vf_coef, lr = 4, 9, 0.2, 0.5, 3e-4
    flat = perturbed_params(n_tasks)
    data = random_minibatch(n_tasks, m)

    # --- the reference: one SB3-style learner per task, autograd, clip_grad_norm_, Adam ---
    references, ref_terms, ref_norms = [], [], []
    for i in range(n_tasks):
        policy, value = reference_modules(bp.unstack_modules(flat, n_tasks, i))
        distribution = torch.distributions.Categorical(logits=policy(data["obs"][i]))
        log_prob = distribution.log_prob(data["action"][i])
        old_log_prob = log_prob.detach() + data["log_prob_noise"][i]
        advantages = data["advantage"][i]
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        ratio = torch.exp(log_prob - old_log_prob)
        policy_loss = -torch.min(
            advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
        ).mean()
        value_loss = torch.nn.functional.mse_loss(data["return"][i], value(data["obs"][i]).flatten())
        entropy_loss = -torch.mean(distribution.entropy())
        loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
        loss.backward()
        parameters = list(policy.parameters()) + list(value.parameters())
        ref_norms.append(float(torch.nn.utils.clip_grad_norm_(parameters, math.inf)))  # the norm only
        ref_terms.append((policy_loss.item(), value_loss.item(), entropy_loss.item(), loss.item(), old_log_prob))
        references.append((policy, value))
    # A clip threshold that scales some tasks' gradients and leaves others alone.
    max_norm = float(np.median(ref_norms))
    for policy, value in references:
        parameters = list(policy.parameters()) + list(value.parameters())
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        torch.optim.Adam(parameters, lr=lr, eps=1e-5).step()

    # --- the batched computation ---
    old_log_prob = torch.stack([t[4] for t in ref_terms])
    p = bp.views(flat, n_tasks)
    logits, values, cache = bp.mlp_forward(p, data["obs"])
    terms = bp.ppo_loss(
        logits, values, data["action"], old_log_prob, data["advantage"], data["return"], clip_range, ent_coef, vf_coef
    )
    for i, (policy_loss, value_loss, entropy_loss, loss, _) in enumerate(ref_terms):
        assert terms.policy_loss[i].item() == pytest.approx(policy_loss, rel=1e-5, abs=1e-6)
        assert terms.value_loss[i].item() == pytest.approx(value_loss, rel=1e-5)
        assert terms.entropy_loss[i].item() == pytest.approx(entropy_loss, rel=1e-5)
        assert terms.loss[i].item() == pytest.approx(loss, rel=1e-5, abs=1e-6)
    ratio = torch.exp(torch.log_softmax(logits, 1).gather(1, data["action"].unsqueeze(1)).squeeze(1) - old_log_prob)
    assert ((ratio - 1).abs() > clip_range).any() and ((ratio - 1).abs() < clip_range).any()  # both branches exercised

    grad = torch.zeros_like(flat)
    g = bp.views(grad, n_tasks)
    bp.mlp_backward(p, g, terms.g_logits, terms.g_values, cache)
    norms = bp.clip_grad_norm(g, n_tasks, max_norm)
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=1e-5)
    scales = np.minimum(1.0, max_norm / (np.array(ref_norms) + 1e-6))
    assert (scales < 1).any() and (scales == 1).any()
    for i, (policy, value) in enumerate(references):
        got = bp.unstack_modules(grad, n_tasks, i)
        want = dict(zip(("pi1", "pi2", "pi3"), (policy[0], policy[2], policy[4]))) | dict(
            zip(("vf1", "vf2", "vf3"), (value[0], value[2], value[4]))
        )
        for name, layer in want.items():
            torch.testing.assert_close(got[name].weight, layer.weight.grad, rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(got[name].bias, layer.bias.grad, rtol=1e-4, atol=1e-7)

    flat.grad = grad
    torch.optim.Adam([flat], lr=lr, betas=bp.ADAM_BETAS, eps=bp.ADAM_EPS, fused=True).step()
    for i, (policy, value) in enumerate(references):
        got = bp.unstack_modules(flat, n_tasks, i)
        for name, layer in (("pi2", policy[2]), ("pi3", policy[4]), ("vf1", value[0]), ("vf3", value[4])):
            torch.testing.assert_close(got[name].weight, layer.weight.detach(), rtol=1e-5, atol=1e-6)


def test_single_sample_minibatch_skips_advantage_normalisation() -> None:
    """SB3 normalises advantages only when the minibatch has more than one sample."""
    flat = perturbed_params(2)
    data = random_minibatch(2, 1)
    logits, values, _ = bp.mlp_forward(bp.views(flat, 2), data["obs"])
    old = torch.log_softmax(logits, 1).gather(1, data["action"].unsqueeze(1)).squeeze(1)  # ratio 1
    terms = bp.ppo_loss(logits, values, data["action"], old, data["advantage"], data["return"], 0.2, 0.0, 0.5)
    torch.testing.assert_close(terms.policy_loss, -data["advantage"][:, 0])


def textbook_gae(rewards, values, dones, last_values, gamma, lam):
    """GAE per stream from `dones[t]` (step t ended an episode): A_t = sum (g l)^k delta_{t+k}."""
    streams, n = rewards.shape
    advantages = np.zeros((streams, n))
    for s in range(streams):
        for t in range(n):
            total, discount = 0.0, 1.0
            for k in range(t, n):
                next_value = last_values[s] if k == n - 1 else values[s, k + 1]
                delta = rewards[s, k] + gamma * next_value * (1 - dones[s, k]) - values[s, k]
                total += discount * delta
                if dones[s, k]:
                    break
                discount *= gamma * lam
            advantages[s, t] = total
    return advantages, advantages + values


def test_gae_equals_a_textbook_loop_and_sb3s_buffer() -> None:
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    rng = np.random.default_rng(0)
    streams, n, gamma, lam = 5, 12, 0.99, 0.95
    rewards = rng.random((streams, n)).astype(np.float32)
    values = rng.normal(size=(streams, n)).astype(np.float32)
    dones = rng.random((streams, n)) < 0.2
    dones[0, -1] = True
    last_values = rng.normal(size=streams).astype(np.float32)
    starts_before = np.ones(streams, dtype=np.float32)  # the rollout began with fresh episodes
    episode_starts = np.concatenate([starts_before[:, None], dones[:, :-1]], axis=1).astype(np.float32)

    advantages, returns = bp.gae(
        torch.tensor(rewards),
        torch.tensor(values),
        torch.tensor(episode_starts),
        torch.tensor(last_values),
        torch.tensor(dones[:, -1]),
        gamma,
        lam,
    )
    want_adv, want_ret = textbook_gae(rewards, values, dones, last_values, gamma, lam)
    np.testing.assert_allclose(advantages.numpy(), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns.numpy(), want_ret, rtol=1e-5, atol=1e-5)

    buffer = RolloutBuffer(
        n, spaces.Box(0, 8, (2,)), spaces.Discrete(5), "cpu", gae_lambda=lam, gamma=gamma, n_envs=streams
    )
    buffer.rewards, buffer.values, buffer.episode_starts = rewards.T.copy(), values.T.copy(), episode_starts.T.copy()
    buffer.compute_returns_and_advantage(torch.tensor(last_values), dones[:, -1])
    np.testing.assert_allclose(advantages.numpy(), buffer.advantages.T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_batched_env_equals_the_gymnasium_env(name: str) -> None:
    family = get_family(name)
    tasks = np.linspace(0, family.n_tasks - 1, 5).astype(int)
    env = family.batched(family.task_params()[tasks])
    singles = [family.make_env(int(t)) for t in tasks]
    obs = env.reset().numpy()
    for i, single in enumerate(singles):
        np.testing.assert_array_equal(obs[i], single.reset(seed=0)[0])
    rng = np.random.default_rng(0)
    for _ in range(2 * family.horizon + 3):  # across two episode ends
        actions = rng.integers(0, 5, len(tasks))
        step = env.step(torch.as_tensor(actions))
        for i, single in enumerate(singles):
            next_obs, reward, terminated, truncated, _ = single.step(int(actions[i]))
            np.testing.assert_array_equal(step.next_obs[i].numpy(), next_obs)
            assert step.reward[i].item() == reward
            assert bool(step.done[i]) == (terminated or truncated)
            if terminated or truncated:
                next_obs, _ = single.reset()
            np.testing.assert_array_equal(step.obs[i].numpy(), next_obs)


def test_counter_based_sampling_is_uniform_and_follows_the_probabilities() -> None:
    keys = bp.task_keys([0, 1, 2**40 + 3], torch.device("cpu"))
    assert len(set(keys.tolist())) == 3
    u = bp.uniform(bp.hash_words(keys.unsqueeze(1), 1, 0, 0, torch.arange(20_000)))  # [3, 20000]
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert abs(np.corrcoef(u[0].numpy(), u[1].numpy())[0, 1]) < 0.03
    probs = torch.tensor([0.1, 0.4, 0.05, 0.25, 0.2])
    log_probs = probs.log().view(1, 5, 1).expand(3, 5, 20_000)
    counts = torch.bincount(bp.sample_actions(log_probs, u).flatten(), minlength=5).float() / u.numel()
    torch.testing.assert_close(counts, probs, atol=0.01, rtol=0)
    order = bp.shuffled(keys, rollout=0, epoch=0, size=100)
    assert (order.sort(1).values == torch.arange(100)).all()
    assert not torch.equal(order[0], order[1]) and not torch.equal(order[0], bp.shuffled(keys, 0, 1, 100)[0])


SMALL = PPOConfig(n_streams=6, total_timesteps=6 * 20 * 4, n_steps=20, batch_size=32, n_epochs=2)


def test_histories_are_consistent_and_independent_of_batch_mates(monkeypatch) -> None:
    family = get_family("darkroom")
    tasks = [3, 40, 77]
    params = family.task_params()[tasks]
    together = bp.train_tasks("darkroom", params, [10, 11, 12], SMALL)
    alone = bp.train_tasks("darkroom", params[1:2], [11], SMALL)
    for name, values in together.items():
        assert values.shape[:3] == (3, 6, 80)
        np.testing.assert_array_equal(values[1], alone[name][0])
    again = bp.train_tasks("darkroom", params, [10, 11, 12], SMALL)
    for name in together:
        np.testing.assert_array_equal(together[name], again[name])
    monkeypatch.setattr(bp, "CPU_ACTIVATION_BUDGET", 2 * 32 * 64 * 4 * 2)  # chunks of 2 tasks
    assert bp.cpu_chunks(3, SMALL.batch_size) == [slice(0, 2), slice(2, 3)]
    chunked = bp.SOURCE.run("darkroom", tasks, [10, 11, 12], SMALL, "cpu", None)
    for name in together:
        np.testing.assert_array_equal(np.stack([h[name] for h in chunked]), together[name])
    other_seed = bp.train_tasks("darkroom", params[1:2], [99], SMALL)
    assert not np.array_equal(other_seed["action"][0], alone["action"][0])
    # The recorded transitions chain: next_obs is obs's successor, episodes end every horizon.
    obs, next_obs, done, reward = together["obs"], together["next_obs"], together["done"], together["reward"]
    assert done[..., family.horizon - 1 :: family.horizon].all() and done.sum() == 3 * 6 * 80 // family.horizon
    continuing = ~done[..., :-1]
    np.testing.assert_array_equal(next_obs[:, :, :-1][continuing], obs[:, :, 1:][continuing])
    assert (obs[:, :, 1:][done[..., :-1]] == 4).all()  # a new episode starts at the centre
    at_goal = (next_obs == params[:, None, None, :]).all(-1)
    np.testing.assert_array_equal(reward == 1, at_goal)


def test_learns_a_near_goal() -> None:
    """PPO with the paper's settings finds a goal next to the start within a few thousand steps."""
    config = PPOConfig(n_streams=10, total_timesteps=10 * 20 * 30, n_steps=20, batch_size=50, n_epochs=20)
    goal = np.array([[5, 4]])  # one step from the centre: the optimal return is 20
    history = bp.train_tasks("darkroom", goal, [0], config)
    returns = history["reward"][0].reshape(10, 30, 20).sum(-1)  # [streams, episodes]
    assert returns[:, :5].mean() < 5 and returns[:, -5:].mean() > 10  # SB3: ~1.5 -> ~16 here


def test_cuda_without_cuda_is_a_one_line_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(IcrlBenchError, match="CUDA is not available"):
        bp.train_tasks("darkroom", np.array([[1, 1]]), [0], SMALL, device="cuda")
    with pytest.raises(IcrlBenchError, match="unknown --device .gpu0."):
        bp.train_tasks("darkroom", np.array([[1, 1]]), [0], SMALL, device="gpu0")


def test_registered_source_runs_through_the_builder_deterministically_and_resumes(tmp_path, monkeypatch) -> None:
    from icrl_bench.data import build, store
    from icrl_bench.data.recipes import resolve
    from icrl_bench.sources import SOURCES, get_source

    assert "batched-ppo" in SOURCES and get_source("batched-ppo").name == "batched-ppo"
    first = build.build_dataset(
        "darkroom", "tiny", source="batched-ppo", root=tmp_path / "a", workers=1, show_progress=False
    )
    second = build.build_dataset(
        "darkroom", "tiny", source="batched-ppo", root=tmp_path / "b", workers=1, show_progress=False
    )
    assert first.dataset_id == resolve("darkroom", "tiny", source="batched-ppo").dataset_id and first.tasks_run == 9
    _, manifest = store.open_dataset(first.path, first.dataset_id)
    assert manifest["source"]["name"] == "batched-ppo"
    assert first.content_hash == second.content_hash

    # Interrupt a build made of several jobs after its first job, then resume it.
    monkeypatch.setattr(type(get_source("batched-ppo")), "tasks_per_job", 4)
    real_write = build._write_rows
    calls = []

    def write_then_stop(*args, **kwargs):
        real_write(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_write_rows", write_then_stop)
    with pytest.raises(build.BuildInterrupted):
        build.build_dataset(
            "darkroom", "tiny", source="batched-ppo", root=tmp_path / "c", workers=1, show_progress=False
        )
    monkeypatch.setattr(build, "_write_rows", real_write)
    resumed = build.build_dataset(
        "darkroom", "tiny", source="batched-ppo", root=tmp_path / "c", workers=1, show_progress=False
    )
    assert len(calls) == 1 and resumed.tasks_run == 9 - 4
    assert resumed.content_hash == first.content_hash  # same data whether batched by 9 or by 4
