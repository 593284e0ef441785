"""AD and IDT (and their DICP versions) with continuous actions, on tiny synthetic Meta-World-shaped data:
they overfit, cached decoding equals full forward, the cached sampling planner chooses what full
recompute chooses, actions are clipped float vectors, checkpoints round-trip, training runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from icrl_bench.agents.base import Agent, TaskInfo
from icrl_bench.agents.checkpoint import load_checkpoint, save_checkpoint
from icrl_bench.agents.idt import IDTAgent, SortEpisodes
from icrl_bench.agents.models import build_model, model_config
from icrl_bench.agents.transformer_agent import TransformerAgent, from_checkpoint
from icrl_bench.data import store
from icrl_bench.data.manifest import FORMAT_NAME, FORMAT_VERSION, MANIFEST_KEY, Manifest
from icrl_bench.data.sampler import SamplerConfig, WindowSampler
from icrl_bench.data.schema import continuous_arrays
from icrl_bench.errors import IcrlBenchError
from icrl_bench.provenance import provenance
from icrl_bench.training import load_run_config, train

AGENTS = ("ad", "dicp-ad", "idt", "dicp-idt")
OBS_DIM, ACTION_DIM, HORIZON = 3, 4, 20
ENV = "metaworld-ml1-reach"
DATASET = "metaworld-ml1-reach-tiny-v1"
TINY_TF = {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_inner": 64, "dropout": 0.0, "attn_dropout": 0.0}
TASK = TaskInfo(env=ENV, num_actions=0, obs_dim=OBS_DIM, horizon=HORIZON, task_params=np.zeros((3, 3)), action_dim=ACTION_DIM)


def small_config(agent: str, **changes) -> dict:
    shape = {"n_transit": 20, "low_per_high": 10, "horizon": HORIZON, "target_return": 100.0} if "idt" in agent else {"n_transit": 12}
    return {**shape, "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "transformer": TINY_TF, **changes}


def small_model(agent: str, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(agent, model_config(agent, small_config(agent, **changes), "continuous"))


def histories(n_tasks: int, n_streams: int, n_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Learning-history-shaped data [task, stream, step, ...]: a goal per task, actions that head
    for it, rewards in [0, 10] that grow near it, 20-step episodes."""
    rng = np.random.default_rng(seed)
    goal = rng.uniform(-1, 1, (n_tasks, 1, 1, OBS_DIM)).astype(np.float32)
    obs = rng.uniform(-1, 1, (n_tasks, n_streams, n_steps, OBS_DIM)).astype(np.float32)
    toward = np.clip(goal - obs + 0.05 * rng.standard_normal(obs.shape), -1, 1)
    action = np.concatenate([toward, obs[..., :1] * obs[..., 1:2]], axis=-1).astype(np.float32)
    next_obs = np.clip(obs + 0.5 * action[..., :OBS_DIM], -1, 1).astype(np.float32)
    reward = (10 * np.exp(-2 * np.linalg.norm(next_obs - goal, axis=-1))).astype(np.float32)
    done = np.zeros(obs.shape[:3], bool)
    done[..., HORIZON - 1 :: HORIZON] = True
    return {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": done, "success": reward > 9,
            "task_index": np.arange(n_tasks, dtype=np.int32), "task_params": goal[:, 0, 0], "split": np.array([0] * (n_tasks - 1) + [1], np.uint8)}


def batch_of(data: dict[str, np.ndarray], window: int, transform=None) -> dict[str, torch.Tensor]:
    """Every (task, stream) of `data`'s first task rows, first `window` steps, as one training batch."""
    arrays = {k: v.reshape(-1, *v.shape[2:])[:, :window] for k, v in data.items() if k in ("obs", "action", "reward", "next_obs")}
    if transform is not None:
        arrays = transform(arrays)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


@pytest.fixture(scope="module")
def continuous_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a synthetic continuous dataset (4 tasks x 3 streams x 200 steps), written
    as the builder writes Meta-World's (no Meta-World needed)."""
    root = tmp_path_factory.mktemp("continuous-root")
    data = histories(4, 3, 200)
    path = root / "datasets" / DATASET
    path.parent.mkdir(parents=True)
    group = store.create(path, continuous_arrays(OBS_DIM, ACTION_DIM, 3), 4, 3, 200)
    for name, values in data.items():
        group[name][...] = values
    digests = store.digests(group)
    group.attrs[MANIFEST_KEY] = Manifest.build_new({
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "dataset_id": DATASET, "family": "metaworld-ml1", "env": ENV,
        "version": 1, "preset": "tiny", "description": "synthetic continuous histories", "recipe": None,
        "source": {"name": "synthetic", "hyperparameters": {}}, "seeds": {"base": 0, "rule": "histories(seed=0)"},
        "build": {"wall_time_s": 0.0, "workers": 1, "device": "cpu"},
        "shape": {"n_tasks": 4, "n_streams": 3, "n_steps": 200},
        "env_spec": {"gym_id": "Meta-World/ML1-reach-v3", "kind": "continuous", "horizon": HORIZON, "obs_dim": OBS_DIM,
                     "action_dim": ACTION_DIM, "param_names": ["goal_x", "goal_y", "goal_z"], "n_env_tasks": 4},
        "split": {"seed": 0, "rule": "the last task is the test task", "train": [0, 1, 2], "test": [3]},
        "next_obs_at_episode_end": "true terminal observation",
        "arrays": {name: {"shape": list(group[name].shape), "dtype": str(group[name].dtype), "chunks": list(group[name].chunks),
                          "sha256": digest, "doc": ""} for name, digest in digests.items()},
        "content_hash": store.content_hash(digests),
        "provenance": provenance(),
    }).to_dict()
    store.consolidate(path)
    return root


# ---- learning ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent,changes", [(a, {}) for a in AGENTS] + [("dicp-ad", {"learn_transition": True}), ("dicp-idt", {"learn_transition": True})])
def test_overfits_a_tiny_batch(agent: str, changes: dict) -> None:
    model = small_model(agent, **changes)
    transform = SortEpisodes(HORIZON) if "idt" in agent else None
    batch = batch_of(histories(8, 2, 40), model.window, transform)  # 16 windows
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    history = []
    for _ in range(150):  # train mode throughout: IDT samples its decisions z, as in training
        loss, metrics = model(batch)
        history.append(metrics)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    first = {k: float(v) for k, v in history[0].items()}
    last = {k: float(np.median([float(m[k]) for m in history[-10:]])) for k in history[-1]}  # the NLL spikes now and then
    assert last["mse_action"] < 0.1 * first["mse_action"]
    assert last["loss_action"] < first["loss_action"] - 1.0  # Gaussian NLL: the variance shrinks too
    if agent.startswith("dicp-"):
        assert last["loss_reward"] < 0.05 * first["loss_reward"]  # rewards are 0..10
        assert ("loss_next_state" in last) == bool(changes)
        if changes:
            assert last["loss_next_state"] < 0.5 * first["loss_next_state"]


def test_idt_sorts_float_rewards_into_float_return_to_go() -> None:
    reward = np.array([[1.5, 0.25, 0.0, 0.5, 3.0, 1.0]], np.float32)  # one stream, 3 episodes of 2 steps
    out = SortEpisodes(2)({"reward": reward, "action": np.arange(6, dtype=np.float32)[None, :, None]})
    np.testing.assert_allclose(out["reward"], [[0.0, 0.5, 1.5, 0.25, 3.0, 1.0]])
    assert out["return_to_go"].dtype == np.float32
    np.testing.assert_allclose(out["return_to_go"], [[4.0, 4.0, 4.0, 2.5, 4.0, 1.0]])  # every episode starts at the best return, 4
    np.testing.assert_array_equal(out["action"][0, :, 0], [2, 3, 0, 1, 4, 5])


# ---- acting ---------------------------------------------------------------------------------------------


def random_step(rng: np.random.Generator, n: int, t: int) -> tuple[np.ndarray, ...]:
    obs = rng.uniform(-1, 1, (n, OBS_DIM)).astype(np.float32)
    return obs, rng.uniform(0, 10, n).astype(np.float32), rng.uniform(-1, 1, (n, OBS_DIM)).astype(np.float32), np.full(n, t % HORIZON == HORIZON - 1)


def test_cached_ad_acting_equals_full_recompute() -> None:
    """The policy from the cached context equals a full forward, before and after the window slides."""
    model = small_model("dicp-ad")
    actor = TransformerAgent("dicp-ad", model, samples=0)
    actor.reset(3, TASK)
    rng = np.random.default_rng(0)
    for t in range(16):  # n_transit - 1 = 11 context transitions: slides after step 11
        obs, reward, next_obs, done = random_step(rng, 3, t)
        cached = actor.action_logits(obs)
        with torch.no_grad():
            full, _ = model.policy(torch.as_tensor(obs), actor.context, None)
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
        action = actor.act(obs)
        actor.observe(obs, action, reward, next_obs, done)
    assert len(actor.context) == 11 and actor.context.action.shape == (3, 11, ACTION_DIM)


def test_cached_idt_acting_equals_full_recompute() -> None:
    model = small_model("dicp-idt")
    actor = IDTAgent("dicp-idt", model, samples=0)
    actor.reset(3, TASK)
    rng = np.random.default_rng(0)
    d2g = model.decisions_to_go
    rewards = np.zeros(3, np.float32)  # of the episode so far
    for t in range(45):  # 4 decisions (and their reviews), the last one half done
        obs, reward, next_obs, done = random_step(rng, 3, t)
        cached = actor.action_logits(obs)
        with torch.no_grad():
            full, _ = d2g.transformer(torch.cat(actor.low_tokens, 1))
        torch.testing.assert_close(cached, d2g.pred_action(full[:, -1]), atol=1e-5, rtol=0)
        reward_out, next_state = actor.predict_dynamics(torch.zeros(3, ACTION_DIM))
        assert reward_out.shape == (3, 1) and next_state is None
        actor.observe(obs, rng.uniform(-1, 1, (3, ACTION_DIM)).astype(np.float32), reward, next_obs, done)
        rewards = reward if t % HORIZON == 0 else rewards + reward
        if t % 10 == 9:  # a block ended: return-to-go fell by its rewards, or starts again with the episode
            expected = np.full(3, 100.0, np.float32) if done[0] else 100.0 - rewards
            torch.testing.assert_close(actor.rtg, torch.as_tensor(expected))
    assert len(actor.blocks) == 2  # n_high = 2 blocks of context


def planning_agent(agent: str, planner: str, **options) -> TransformerAgent | IDTAgent:
    """A DICP agent whose reward head is scaled up so that its predictions differ between candidates."""
    model = small_model(agent)
    head = model.decisions_to_go.pred_reward if "idt" in agent else model.dynamics.pred_reward
    with torch.no_grad():
        head.weight.mul_(100.0)
        head.bias.fill_(5.0)
    cls = IDTAgent if "idt" in agent else TransformerAgent
    return cls(agent, model, seed=7, planner=planner, samples=6, **options)


def rollout(actor, steps: int, n_envs: int = 3) -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Actions [steps, E, A] on fixed random observations, and every (candidates, predicted rewards) planned."""
    scored = []
    score = actor.score_candidates

    def spy(rows, candidates):
        rewards = score(rows, candidates)
        scored.append((candidates.clone(), rewards.clone()))
        return rewards

    actor.score_candidates = spy
    actor.reset(n_envs, TASK)
    rng = np.random.default_rng(1)
    actions = []
    for t in range(steps):
        obs, reward, next_obs, done = random_step(rng, n_envs, t)
        action = actor.act(obs)
        actor.observe(obs, action, reward, next_obs, done)
        actions.append(action)
    return np.stack(actions), scored


@pytest.mark.parametrize("agent", ["dicp-ad", "dicp-idt"])
def test_cached_sampling_planner_chooses_what_full_recompute_chooses(agent: str) -> None:
    runs = {planner: rollout(planning_agent(agent, planner, beam_start=-1, plan_from_step=5), 40) for planner in ("cache", "recompute")}
    (cached_actions, cached), (recomputed_actions, recomputed) = runs["cache"], runs["recompute"]
    assert np.array_equal(cached_actions, recomputed_actions)
    assert len(cached) == len(recomputed) >= 30
    picks = []
    for (c1, r1), (c2, r2) in zip(cached, recomputed):
        assert torch.equal(c1, c2)  # the same random draws
        torch.testing.assert_close(r1, r2, atol=1e-4, rtol=0)
        picks.append(r1.argmax(-1))
    picks = torch.cat(picks)
    assert (picks > 0).any() and (picks == 0).any()  # sometimes a draw beats the mean, sometimes not
    assert len(torch.unique(torch.cat([r for _, r in cached]))) > 10  # the rewards do differ


@pytest.mark.parametrize("agent", ["dicp-ad", "dicp-idt"])
def test_planning_follows_the_official_rules(agent: str) -> None:
    """Plan once `plan_from_step` steps were seen (default n_transit) and past `beam_start` in the
    episode (IDT: both taken at the block's first step); samples 0 or 1 never plans."""
    beam_start = 0 if "idt" in agent else 5
    _, scored = rollout(planning_agent(agent, "cache", beam_start=beam_start), 60)
    if "idt" in agent:  # blocks start at t = 0 and 10 of each 20-step episode: only those at t = 10 > 0, from step 20 on
        expected = sum(10 for start in range(20, 60, 10) if start % HORIZON > beam_start)
    else:  # n_transit 12
        expected = sum(1 for step in range(12, 60) if step % HORIZON > beam_start)
    assert len(scored) == expected
    cls = IDTAgent if "idt" in agent else TransformerAgent
    for samples in (0, 1):
        _, none = rollout(cls(agent, small_model(agent), samples=samples, beam_start=-1, plan_from_step=0), 30)
        assert none == []


@pytest.mark.parametrize("agent", AGENTS)
def test_checkpoint_round_trip_and_acting(agent: str, tmp_path: Path) -> None:
    model = small_model(agent)
    save_checkpoint(tmp_path / "ckpt", agent, model, {"lr": 0.1}, {"id": DATASET, "content_hash": "x", "env": ENV}, 5)
    loaded = load_checkpoint(tmp_path / "ckpt", agent=agent)
    assert loaded.model.config == model.config and loaded.meta["model_config"]["kind"] == "continuous"
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    actor = from_checkpoint(agent, tmp_path / "ckpt", seed=3, beam_start=-1)
    assert isinstance(actor, Agent) and actor.samples == (10 if agent.startswith("dicp-") else 0)
    actor.reset(5, TaskInfo(env=ENV, num_actions=0, obs_dim=OBS_DIM, horizon=HORIZON, task_params=np.zeros((5, 3))))
    rng = np.random.default_rng(1)
    clipped = False
    for t in range(25):  # past n_transit: the window slides and dicp-* plan
        obs, reward, next_obs, done = random_step(rng, 5, t)
        action = actor.act(obs)
        assert action.shape == (5, ACTION_DIM) and action.dtype == np.float32
        assert (np.abs(action) <= 1.0).all()
        clipped |= bool((np.abs(action) == 1.0).any())  # an untrained Gaussian (std ~1) often draws outside the box
        actor.observe(obs, action, reward, next_obs, done)
    assert clipped


def test_options_and_env_mismatches_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(IcrlBenchError, match="plans by sampling candidates, not beam search; use --samples"):
        TransformerAgent("dicp-ad", small_model("dicp-ad"), beam_k=3)
    with pytest.raises(IcrlBenchError, match="--samples 4: ad has no world model"):
        TransformerAgent("ad", small_model("ad"), samples=4)
    grid = build_model("dicp-ad", model_config("dicp-ad", {"n_transit": 8}))
    with pytest.raises(IcrlBenchError, match="discrete actions: it plans by beam search"):
        TransformerAgent("dicp-ad", grid, samples=4)
    with pytest.raises(IcrlBenchError, match="not defined for continuous actions"):
        model_config("dpt", {}, "continuous")
    with pytest.raises(IcrlBenchError, match="config is for discrete actions, but the data's actions are continuous"):
        model_config("ad", {"kind": "discrete"}, "continuous")
    actor = TransformerAgent("ad", small_model("ad"))
    with pytest.raises(IcrlBenchError, match="trained on 3-dim observations and 4-dim actions, but env .* has 11 and 4"):
        actor.reset(2, TaskInfo(env=ENV, num_actions=0, obs_dim=11, horizon=100, task_params=np.zeros((2, 3)), action_dim=4))
    with pytest.raises(IcrlBenchError, match="continuous actions; env darkroom has 5 discrete ones"):
        actor.reset(2, TaskInfo(env="darkroom", num_actions=5, obs_dim=2, horizon=20, task_params=np.zeros((2, 2))))


# ---- data and training ------------------------------------------------------------------------------------


def test_holding_out_validation_goals_is_refused_before_any_run_directory(continuous_root: Path, tmp_path: Path) -> None:
    with pytest.raises(IcrlBenchError, match="metaworld-ml1-reach has no validation goals .* train without train.hold_out_validation_goals"):
        train("ad", DATASET, device="cpu", out=tmp_path / "runs", root=continuous_root, show_progress=False,
              overrides=["train.hold_out_validation_goals=true", "train.steps=2"])
    assert not list((tmp_path / "runs").glob("*"))


def test_sampler_windows_over_float_arrays(continuous_root: Path) -> None:
    sampler = WindowSampler(DATASET, continuous_root, SamplerConfig(window=30, batch_size=8, pool_size=2))
    batch = sampler.batch(0)
    assert batch["obs"].shape == (8, 30, OBS_DIM) and batch["obs"].dtype == torch.float32
    assert batch["action"].shape == (8, 30, ACTION_DIM) and batch["reward"].dtype == torch.float32
    assert set(batch["row"].tolist()) <= {0, 1, 2}  # row 3 is a test task


@pytest.mark.parametrize("env", ["metaworld-ml1-reach", "metaworld-ml1-hammer", "metaworld-ml10"])
@pytest.mark.parametrize("agent", AGENTS)
def test_metaworld_baselines_hold_the_papers_hyperparameters(agent: str, env: str) -> None:
    paper = load_run_config(agent, env, kind="continuous")
    assert paper.model.kind == "continuous" and paper.model.n_transit == 1000 and paper.model.learn_var and not paper.model.learn_transition
    t = paper.model.transformer
    if "idt" in agent:
        assert (t.n_embd, t.n_layer, t.n_head, t.n_inner, paper.train.lr) == (32, 4, 4, 128, 1e-3)
        assert (paper.model.low_per_high, paper.model.dim_z) == (10, 8)
    else:
        assert (t.n_embd, t.n_layer, t.n_head, t.n_inner, paper.train.lr) == (64, 4, 8, 256, 0.01)
    assert (paper.train.batch_size, paper.train.steps, t.dropout) == (512, 50_000, 0.1)
    cpu = load_run_config(agent, env, "cpu", kind="continuous")
    assert cpu.model.n_transit == 1000 and cpu.train.steps * cpu.train.batch_size < paper.train.steps * paper.train.batch_size


@pytest.mark.parametrize("agent", ["dicp-ad", "dicp-idt"])
def test_training_on_a_continuous_dataset(agent: str, continuous_root: Path, tmp_path: Path) -> None:
    """The trainer fits the network to the data (sizes; IDT's horizon and return) and its checkpoint acts."""
    config = {"agent": agent, "env": "metaworld-ml1", "model": {**small_config(agent), "obs_dim": 99},  # the dataset's 3 wins
              "train": {"lr": 3e-3, "batch_size": 8, "steps": 6, "log_interval": 2, "eval_interval": 6, "ckpt_interval": 6,
                        "pool_size": 2, "val_max_tasks": 2, "val_windows_per_task": 2}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = train(agent, DATASET, device="cpu", out=tmp_path / "runs", root=continuous_root, show_progress=False, config_path=path)
    meta = json.loads((result.run_dir / "checkpoint" / "checkpoint.json").read_text())
    assert meta["model_config"]["kind"] == "continuous" and meta["model_config"]["obs_dim"] == OBS_DIM
    if "idt" in agent:
        assert meta["model_config"]["horizon"] == HORIZON and meta["model_config"]["target_return"] == 10.0 * HORIZON
    assert {"loss_action", "mse_action", "loss_reward"} <= set(result.final_metrics) and "val_loss_reward" in result.val_metrics
    actor = from_checkpoint(agent, result.run_dir)
    actor.reset(2, TaskInfo(env=ENV, num_actions=0, obs_dim=OBS_DIM, horizon=HORIZON, task_params=np.zeros((2, 3))))
    assert actor.act(np.zeros((2, OBS_DIM), np.float32)).shape == (2, ACTION_DIM)
    interrupted = train(agent, DATASET, device="cpu", out=tmp_path / "runs2", root=continuous_root, show_progress=False, config_path=path, stop_after=3)
    resumed = train(resume=interrupted.run_dir, device="cpu", show_progress=False)  # the run's recorded config says continuous
    a, b = load_checkpoint(result.run_dir).model.state_dict(), load_checkpoint(resumed.run_dir).model.state_dict()
    assert resumed.step == 6 and all(torch.equal(a[k], b[k]) for k in a)


def test_grid_checkpoints_without_a_kind_still_load(tmp_path: Path) -> None:
    """Checkpoints saved before continuous actions existed record no kind: they are discrete."""
    import json
    import shutil

    legacy = tmp_path / "dicp-ad"  # an H200 checkpoint of 2026-11-30: its weights do not yet bind checkpoint.json's hash
    shutil.copytree(Path(__file__).parents[1] / "reproduction" / "darkroom" / "gpu-h200-20261130" / "run1" / "dicp-ad" / "checkpoint", legacy)
    meta = json.loads((legacy / "checkpoint.json").read_text())
    del meta["model_config"]["kind"]  # as the first checkpoints were written
    (legacy / "checkpoint.json").write_text(json.dumps(meta))
    loaded = load_checkpoint(legacy)
    assert "kind" not in loaded.meta["model_config"] and loaded.model.config.kind == "discrete"
