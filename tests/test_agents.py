"""AD, DPT and their DICP variants: cached acting equals recomputation, they overfit, checkpoints, sampler."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from icrl_bench.agents.base import Agent, TaskInfo
from icrl_bench.agents.checkpoint import load_checkpoint, save_checkpoint
from icrl_bench.agents.models import MODEL_SPECS, build_model, model_config, model_spec
from icrl_bench.agents.tokens import Transitions
from icrl_bench.agents.transformer_agent import TransformerAgent, from_checkpoint
from icrl_bench.data.sampler import SamplerConfig, WindowSampler, make_loader, validation_batches
from icrl_bench.errors import IcrlBenchError

AGENTS = sorted(MODEL_SPECS)
FLAT = [a for a in AGENTS if MODEL_SPECS[a].family != "idt"]  # one sequence per window: AD and DPT
IDTS = [a for a in AGENTS if MODEL_SPECS[a].family == "idt"]
SMALL = {"n_transit": 8, "transformer": {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_inner": 64, "dropout": 0.0, "attn_dropout": 0.0}}
SMALL_IDT = {"n_transit": 20, "low_per_high": 10, "horizon": 20, "target_return": 10.0,
             "transformer": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_inner": 64, "dropout": 0.0, "attn_dropout": 0.0}}
DARKROOM = TaskInfo(env="darkroom", num_actions=5, obs_dim=2, horizon=20, task_params=np.zeros((3, 2)))


def small_model(agent: str, **changes):
    torch.manual_seed(0)
    base = SMALL_IDT if agent in IDTS else SMALL
    return build_model(agent, model_config(agent, {**base, **changes}))


def sampler_for(agent: str, tiny_root: Path, batch_size: int) -> WindowSampler:
    model_cfg = model_config(agent, SMALL_IDT if agent in IDTS else SMALL)
    spec = MODEL_SPECS[agent]
    transform = spec.transform(model_cfg) if spec.transform else None
    return WindowSampler("darkroom-tiny-v3", tiny_root, SamplerConfig(window=model_cfg.n_transit, batch_size=batch_size), spec.arrays, transform)


def random_transition(rng: np.random.Generator, n: int):
    obs, next_obs = rng.integers(0, 9, (n, 2)), rng.integers(0, 9, (n, 2))
    return obs, rng.integers(0, 5, n), rng.integers(0, 2, n), next_obs, np.zeros(n, bool)


@pytest.mark.parametrize("agent, layout", [(a, "dicp") for a in FLAT] + [("ad", "dense"), ("dicp-ad", "dense"), ("dicp-ad", "dense+xy")])
def test_cached_acting_equals_full_recompute(agent: str, layout: str) -> None:
    """Logits of the agent's cached acting equal a full forward of the same context, before and after the window slides."""
    xy = {"state_features": "cell+xy"} if layout.endswith("+xy") else {}
    model = small_model(agent, layout=layout.removesuffix("+xy"), **xy)
    actor = TransformerAgent(agent, model)
    actor.reset(3, DARKROOM)
    rng = np.random.default_rng(0)
    for step in range(12):  # n_transit - 1 = 7 context transitions: slides after step 7
        obs = rng.integers(0, 9, (3, 2))
        cached = actor.action_logits(obs)
        with torch.no_grad():
            full, _ = model.policy(torch.as_tensor(obs, dtype=torch.float32), actor.context, None)
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
        actor.observe(*random_transition(rng, 3))
    assert len(actor.context) == 7


@pytest.mark.parametrize("agent", [a for a in FLAT if MODEL_SPECS[a].dynamics])
def test_dynamics_query_equals_training_forward(agent: str, tiny_root: Path) -> None:
    """The planner path (policy cache + action-query token) gives the logits the training sequence gives."""
    model = small_model(agent).eval()
    sampler = WindowSampler("darkroom-tiny-v3", tiny_root, SamplerConfig(window=8, batch_size=4), MODEL_SPECS[agent].arrays)
    batch = sampler.batch(0)
    steps = Transitions.from_batch(batch)
    context, query = steps.slice(None, 7), steps.slice(7, 8)
    with torch.no_grad():
        logits, query_cache = model.policy(query.obs[:, 0].float(), context)
        reward_logits, state_logits = model.predict_dynamics(query_cache, query.action[:, 0])
        # the same heads read off one full forward of the training sequence
        head = model.dynamics
        if MODEL_SPECS[agent].family == "ad":
            tokens = [model.embed_context(context), model.query_state_token(query.obs[:, 0])]
        else:
            tokens = [model.embed_context.state_only(query.obs[:, 0]), model.embed_context(context)]
        tokens.append(head.query_action_token(query.action[:, 0]))
        h, _ = model.transformer(torch.cat(tokens, 1))
    torch.testing.assert_close(logits, model.pred_action(h[:, -2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(reward_logits, head.pred_reward(h[:, -1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(state_logits, head.pred_next_state(h[:, -1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("agent, layout", [(a, "dicp") for a in AGENTS] + [("ad", "dense"), ("dicp-ad", "dense")])
def test_overfits_a_tiny_batch(agent: str, layout: str, tiny_root: Path) -> None:
    model = small_model(agent, layout=layout)
    batch = sampler_for(agent, tiny_root, 16 if agent in IDTS else 32).batch(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    first = None
    for _ in range(150 if agent in IDTS else 250):
        loss, metrics = model(batch)
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    _, metrics = model(batch)
    assert float(metrics["loss"]) < 0.2 * first
    assert float(metrics["acc_action"]) > 0.95
    if MODEL_SPECS[agent].dynamics:
        assert float(metrics["acc_next_state"]) > 0.95 and float(metrics["acc_reward"]) > 0.95


@pytest.mark.parametrize("agent", ["dicp-ad", "dpt", "dicp-idt"])
def test_checkpoint_round_trip(agent: str, tmp_path: Path) -> None:
    model = small_model(agent)
    save_checkpoint(tmp_path / "ckpt", agent, model, {"lr": 0.1}, {"id": "darkroom-tiny-v3", "content_hash": "x", "env": "darkroom"}, 5)
    loaded = load_checkpoint(tmp_path / "ckpt", agent=agent)
    assert loaded.meta["step"] == 5 and loaded.meta["provenance"]["packages"]
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    actor = from_checkpoint(agent, tmp_path / "ckpt", seed=3)
    assert isinstance(actor, Agent)
    actor.reset(3, DARKROOM)
    rng = np.random.default_rng(1)
    for _ in range(3):
        actions = actor.act(rng.integers(0, 9, (3, 2)))
        assert actions.shape == (3,) and ((0 <= actions) & (actions < 5)).all()
        actor.observe(*random_transition(rng, 3))


def test_bad_checkpoints(tmp_path: Path) -> None:
    model = small_model("ad")
    save_checkpoint(tmp_path / "ckpt", "ad", model, {}, {"id": "d", "content_hash": "x", "env": "darkroom"}, 1)
    with pytest.raises(IcrlBenchError, match="of agent 'ad', not 'dpt'"):
        from_checkpoint("dpt", tmp_path / "ckpt")
    with pytest.raises(IcrlBenchError, match="unknown trainable agent 'adx'.*Known: ad, dicp-ad"):
        from_checkpoint("adx", tmp_path / "ckpt")
    with pytest.raises(IcrlBenchError, match="no checkpoint"):
        from_checkpoint("ad", tmp_path / "nowhere")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IcrlBenchError, match="modified or partly copied"):
        from_checkpoint("ad", tmp_path / "ckpt")
    actor = TransformerAgent("ad", model, {"dataset": {"env": "darkroom"}})
    with pytest.raises(IcrlBenchError, match="trained on darkroom"):
        actor.reset(2, TaskInfo(env="dark-key-to-door", num_actions=5, obs_dim=2, horizon=50, task_params=np.zeros((2, 4))))


# ---- IDT -------------------------------------------------------------------------------------------


def test_idt_sorts_episodes_and_relabels_return_to_go() -> None:
    from icrl_bench.agents.idt import SortEpisodes

    rng = np.random.default_rng(0)
    reward = rng.integers(0, 2, (3, 40)).astype(np.uint8)  # 3 streams, 4 episodes of horizon 10
    chunk = {"reward": reward, "obs": np.stack([reward, reward], -1), "action": np.arange(40)[None].repeat(3, 0)}
    out = SortEpisodes(10)(chunk)
    returns = out["reward"].reshape(3, 4, 10).sum(-1)
    assert (np.diff(returns, axis=1) >= 0).all()  # ascending by return
    assert sorted(returns.ravel()) == sorted(reward.reshape(3, 4, 10).sum(-1).ravel())
    assert (out["obs"][..., 0] == out["reward"]).all()  # every array permuted alike
    rtg = out["return_to_go"].reshape(3, 4, 10)
    assert (rtg[:, :, 0] == returns.max(1, keepdims=True)).all()  # each episode starts at the stream's best return
    assert (rtg[:, :, :-1] - rtg[:, :, 1:] == out["reward"].reshape(3, 4, 10)[:, :, :-1]).all()
    fixed = SortEpisodes(10, start=12.0)(chunk)  # return_to_go_label train-max: every episode starts where acting does
    assert (fixed["reward"] == out["reward"]).all()
    rtg = fixed["return_to_go"].reshape(3, 4, 10)
    assert (rtg[:, :, 0] == 12).all() and rtg.dtype == out["return_to_go"].dtype
    assert (rtg[:, :, :-1] - rtg[:, :, 1:] == out["reward"].reshape(3, 4, 10)[:, :, :-1]).all()


def test_idt_return_to_go_label_picks_where_training_episodes_start(tiny_root: Path) -> None:
    """The model config's `return_to_go_label` reaches the training transform: train-max relabels from the fitted
    target_return, and an unfitted config or an unknown label is refused."""
    from icrl_bench.data.dataset import load_dataset
    from icrl_bench.training.config import fit_to_dataset

    ds = load_dataset("darkroom-tiny-v3", root=tiny_root)
    spec = model_spec("idt")
    chunk = {k: np.asarray(ds[k][0]) for k in spec.arrays}
    official = fit_to_dataset(model_config("idt", {}, "discrete"), ds)
    variant = fit_to_dataset(model_config("idt", {"return_to_go_label": "train-max"}, "discrete"), ds)
    best = spec.transform(official)(chunk)["return_to_go"].reshape(len(chunk["reward"]), -1, official.horizon)[:, :, 0]
    fixed = spec.transform(variant)(chunk)["return_to_go"].reshape(best.shape + (-1,))[:, :, 0]
    assert (fixed == variant.target_return).all() and (best == best.max(1, keepdims=True)).all()
    assert (best < variant.target_return).any()  # the official labels tell some task's optimum apart from train-max
    with pytest.raises(IcrlBenchError, match="target_return"):
        spec.transform(model_config("idt", {"return_to_go_label": "train-max"}, "discrete"))
    with pytest.raises(IcrlBenchError, match="return_to_go_label must be one of stream-best, train-max"):
        model_config("idt", {"return_to_go_label": "optimum"}, "discrete")


@pytest.mark.parametrize("agent, layout", [(a, layout) for a in IDTS for layout in ("dicp", "dense")])
def test_idt_cached_acting_equals_full_recompute(agent: str, layout: str) -> None:
    from icrl_bench.agents.idt import IDTAgent

    model = small_model(agent, layout=layout)
    actor = IDTAgent(agent, model)
    actor.reset(3, DARKROOM)
    rng = np.random.default_rng(0)
    d2g = model.decisions_to_go
    for step in range(45):  # 4 decisions (and their reviews), the last one half done
        obs = rng.integers(0, 9, (3, 2))
        cached = actor.action_logits(obs)
        with torch.no_grad():
            full, _ = d2g.transformer(torch.cat(actor.low_tokens, 1))
        torch.testing.assert_close(cached, d2g.pred_action(full[:, -1]), atol=1e-5, rtol=0)
        if MODEL_SPECS[agent].dynamics:
            reward_logits, state_logits = actor.predict_dynamics(torch.tensor([0, 1, 2]))
            assert reward_logits.shape == (3, 2) and state_logits.shape == (3, 81)
        actor.observe(*random_transition(rng, 3)[:4], np.full(3, step % 20 == 19))
    assert len(actor.blocks) == 2  # n_high = 2 blocks of context


@pytest.mark.parametrize("agent, features, layout", [(a, "cell", "dicp") for a in IDTS] + [("idt", "cell+xy", "dicp")]
                         + [(a, "cell+xy", "dense") for a in IDTS])
def test_idt_acting_equals_training_forward(agent: str, features: str, layout: str, tiny_root: Path) -> None:
    """Acting teacher-forced through a sorted stream (reset / action_logits / observe) gives, block by block, the
    action logits of the training forward on the window that ends at that block: return-to-go falls by each block's
    reward and restarts at every episode as in the relabelled data, and the context of blocks slides as a window does."""
    from icrl_bench.agents.idt import IDTAgent, SortEpisodes
    from icrl_bench.data.dataset import load_dataset

    ds = load_dataset("darkroom-tiny-v3", root=tiny_root)
    model = small_model(agent, state_features=features, layout=layout)
    c, L = model.config, model.config.low_per_high
    arrays = ("obs", "action", "reward", "next_obs", "done")
    rewarded = 0
    for row in range(ds.n_tasks):
        data = SortEpisodes(c.horizon)({k: np.asarray(ds[k][row]) for k in arrays})  # [stream, T, ...]
        stream = int(data["reward"].sum(1).argmax())  # the stream with the most reward: return-to-go moves
        # episodes in descending order of return (each keeps its relabelled return-to-go): the rewarded ones come
        # first, so what their rewards did to return-to-go reaches the blocks and episodes after them
        data = {k: np.flip(v[stream].reshape(-1, c.horizon, *v.shape[2:]), 0).reshape(v.shape[1:]) for k, v in data.items()}  # [T, ...]
        rewarded += int(data["reward"].sum())
        model.config.target_return = float(data["return_to_go"][0])  # the stream's best return, where its episodes start
        actor = IDTAgent(agent, model, sample=False)  # eval mode: z is the mean in both paths
        actor.reset(1, DARKROOM)
        acting, world = [], []
        for t in range(len(data["reward"])):
            acting.append(actor.action_logits(data["obs"][t][None])[0])
            if c.dynamics:  # the world model's reward and next state of the action the data took
                world.append(torch.cat(actor.predict_dynamics(torch.as_tensor(data["action"][t][None])), dim=-1)[0])
            actor.observe(*(data[k][t][None] for k in arrays))
        acting = torch.stack(acting)  # [T, A]
        for b in range(len(acting) // L):
            start, end = max(0, b - c.n_high + 1) * L, (b + 1) * L  # the window of (at most n_high) blocks ending at block b
            window = {k: torch.as_tensor(v[None, start:end]) for k, v in data.items() if k != "done"}
            with torch.no_grad():
                blocks = model.blocks(window)
                action, reward, next_state = model.decisions_to_go.heads(model.hidden(blocks), blocks["a"])  # [1, H, L, k]
            torch.testing.assert_close(acting[b * L:end], action[0, -1], atol=1e-5, rtol=0)
            if c.dynamics:
                torch.testing.assert_close(torch.stack(world[b * L:end]), torch.cat([reward, next_state], -1)[0, -1], atol=1e-5, rtol=0)
    assert rewarded > 0


@pytest.mark.parametrize("agent", IDTS)
def test_dense_idt_predicts_each_step_of_a_block_from_its_past_only(agent: str) -> None:
    """Dense IDT: changing step t's action changes no action prediction at or before t (no leak) and does change
    t + 1's in the same block; dicp-idt's reward and next state at t read the action given at t."""
    model = small_model(agent, layout="dense").eval()
    rng = np.random.default_rng(2)
    batch = {"obs": torch.as_tensor(rng.integers(0, 9, (2, 20, 2))), "action": torch.as_tensor(rng.integers(0, 5, (2, 20))),
             "reward": torch.as_tensor(rng.integers(0, 2, (2, 20))), "next_obs": torch.as_tensor(rng.integers(0, 9, (2, 20, 2))),
             "return_to_go": torch.as_tensor(rng.integers(0, 5, (2, 20)))}

    def heads(b):
        blocks = model.blocks(b)
        with torch.no_grad():
            out = model.decisions_to_go.heads(model.hidden(blocks), blocks["a"])
        return [x.reshape(2, 20, -1) if x is not None else None for x in out]

    before = heads(batch)
    changed = {**batch, "action": batch["action"].clone()}
    changed["action"][:, 14] = (changed["action"][:, 14] + 1) % 5  # step 4 of the second block
    after = heads(changed)
    torch.testing.assert_close(before[0][:, :15], after[0][:, :15])
    assert not torch.allclose(before[0][:, 15], after[0][:, 15])
    if model.config.dynamics:
        torch.testing.assert_close(before[2][:, :14], after[2][:, :14])
        assert not torch.allclose(before[2][:, 14], after[2][:, 14])


def test_idt_modules_are_created_in_the_order_seeded_runs_drew_their_weights_in() -> None:
    """A training seed fixes the initial weights through the order modules draw them: adding the dense layout
    must not have changed it for the official layout, nor may a later change for either."""
    order = {
        ("dicp-idt", "dicp"): ["embed_z", "embed_state", "embed_action", "embed_reward", "pred_action", "pred_next_state", "pred_reward"],
        ("dicp-idt", "dense"): ["embed_z", "embed_state", "pred_action", "embed_prev_action", "embed_prev_reward", "dynamics"],
    }
    for (agent, layout), names in order.items():
        d2g = small_model(agent, layout=layout).decisions_to_go
        assert [name for name, _ in d2g.named_children()][1:] == names  # after its transformer


def test_idt_cell_xy_embeds_coordinates() -> None:
    """With cell+xy, two cells that share a learned vector still differ by their coordinates, as the dense AD's tokens do."""
    model = small_model("idt", state_features="cell+xy")
    embed = model.decisions_to_go.embed_state
    with torch.no_grad():
        embed.cell.weight.zero_()
        out = embed(torch.tensor([0, 1, 9, 80]))  # cells (0, 0), (0, 1), (1, 0), (8, 8)
        torch.testing.assert_close(out[3] - out[0], embed.xy.weight.sum(1))  # (1, 1) after scaling to [0, 1]
        torch.testing.assert_close(out[2] - out[0], embed.xy.weight[:, 0] / 8)
    with pytest.raises(IcrlBenchError, match="dense-layout option"):
        small_model("dpt", state_features="cell+xy")  # the dicp layout of AD and DPT fixes its own tokens


def test_idt_return_to_go_from_the_task_optimum_is_per_task() -> None:
    """return_to_go=task-optimum starts each env's episodes at its own task's optimal return (the official grid
    evaluation, privileged), restarting there after every episode; the default starts all at the config's target."""
    from icrl_bench.agents.idt import IDTAgent
    from icrl_bench.envs.families import get_family

    goals = np.array([[4, 5], [0, 0], [8, 1]])
    info = TaskInfo(env="darkroom", num_actions=5, obs_dim=2, horizon=20, task_params=goals)
    optimum = get_family("darkroom").max_return(goals)
    assert optimum.tolist() == [20, 13, 14]
    rng = np.random.default_rng(0)
    for setting, start in (("task-optimum", optimum), ("train-max", np.full(3, 10.0))):
        actor = IDTAgent("idt", small_model("idt"), return_to_go=setting)
        actor.reset(3, info)
        assert actor.rtg.tolist() == list(map(float, start))
        for step in range(20):  # a whole episode with reward 1 everywhere: two blocks, then the restart
            actor.action_logits(rng.integers(0, 9, (3, 2)))
            obs, action, _, next_obs, _ = random_transition(rng, 3)
            actor.observe(obs, action, np.ones(3), next_obs, np.full(3, step == 19))
            if step == 9:
                assert actor.rtg.tolist() == list(map(float, start - 10))
        assert actor.rtg.tolist() == list(map(float, start))
    with pytest.raises(IcrlBenchError, match="return_to_go must be one of"):
        IDTAgent("idt", small_model("idt"), return_to_go="best")


# ---- the window sampler ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of darkroom-tiny-v3 whose rows 1, 4 and 7 are test tasks (tiny has only train tasks)."""
    root = tmp_path_factory.mktemp("split-root")
    shutil.copytree(tiny_root / "datasets", root / "datasets")
    group = zarr.open_group(str(root / "datasets" / "darkroom-tiny-v3"), mode="r+")
    split = np.zeros(9, np.uint8)
    split[[1, 4, 7]] = 1
    group["split"][:] = split
    return root


def test_sampler_never_yields_a_test_task(split_root: Path) -> None:
    config = SamplerConfig(window=20, batch_size=64, pool_size=4, refresh_every=1)
    sampler = WindowSampler("darkroom-tiny-v3", split_root, config)
    seen = set()
    for step in range(60):
        batch = sampler.batch(step)
        seen |= set(batch["row"].tolist())
        assert batch["obs"].shape == (64, 20, 2) and batch["action"].shape == (64, 20)
    assert seen == {0, 2, 3, 5, 6, 8}
    val = validation_batches("darkroom-tiny-v3", split_root, config)
    assert set(torch.cat([b["row"] for b in val]).tolist()) == {0, 2, 3, 5, 6, 8}
    assert sampler.n_train_streams == 3  # the last stream of each task is held out for validation


def test_sampler_windows_are_contiguous_history(tiny_root: Path) -> None:
    """A window is consecutive steps of one stream: next_obs[t] == obs[t+1] except at episode ends."""
    sampler = WindowSampler("darkroom-tiny-v3", tiny_root, SamplerConfig(window=30, batch_size=16), ("obs", "next_obs", "done"))
    batch = sampler.batch(3)
    same = (batch["next_obs"][:, :-1] == batch["obs"][:, 1:]).all(-1)
    assert bool((same | batch["done"][:, :-1]).all())


def with_step_index(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A chunk transform that records each step's index in its stream, so a window shows where it starts."""
    S, T = chunk["reward"].shape
    return {**chunk, "t": np.broadcast_to(np.arange(T), (S, T)).copy()}


def test_sampler_starts_windows_at_multiples_of_start_every(tiny_root: Path) -> None:
    """start_every=10 lines every window (validation windows too) up with IDT's blocks as acting cuts
    them; start_every=1 (the default) draws exactly the windows it always drew, so runs made before
    the option resume exactly and validate on the same windows."""
    arrays = ("obs", "action", "reward")
    config = SamplerConfig(window=20, batch_size=64, pool_size=3)
    aligned = WindowSampler("darkroom-tiny-v3", tiny_root, replace(config, start_every=10), arrays, with_step_index)
    anywhere = WindowSampler("darkroom-tiny-v3", tiny_root, config, arrays, with_step_index)
    starts = {1: set(), 10: set()}
    for step in range(10):
        for every, sampler in ((10, aligned), (1, anywhere)):
            t = sampler.batch(step)["t"]
            assert bool((t == t[:, :1] + torch.arange(20)).all())  # contiguous, and inside the stream
            starts[every] |= set(t[:, 0].tolist())
    assert starts[10] and all(start % 10 == 0 for start in starts[10])
    assert any(start % 10 for start in starts[1])
    default = WindowSampler("darkroom-tiny-v3", tiny_root, config, arrays).batch(7)
    assert all(torch.equal(default[k], anywhere.batch(7)[k]) for k in default)
    val = {every: validation_batches("darkroom-tiny-v3", tiny_root, replace(config, start_every=every), arrays, with_step_index)
           for every in (1, 10)}
    val_starts = {every: set(torch.cat([b["t"][:, 0] for b in batches]).tolist()) for every, batches in val.items()}
    assert all(start % 10 == 0 for start in val_starts[10]) and len(val_starts[10]) > 1 and any(s % 10 for s in val_starts[1])
    assert val_starts[1] == set(np.unique(np.linspace(0, anywhere.n_steps - 20, 16).round().astype(int)).tolist())  # as before the option
    with pytest.raises(ValueError, match="start_every must be >= 1"):
        SamplerConfig(window=20, batch_size=4, start_every=0)


def test_sampler_is_a_function_of_the_step_even_in_workers(tiny_root: Path) -> None:
    config = SamplerConfig(window=8, batch_size=8, pool_size=3, refresh_every=2)
    sampler = WindowSampler("darkroom-tiny-v3", tiny_root, config, start_step=5)
    loader = iter(make_loader(sampler, num_workers=2))
    for step in range(5, 11):
        expected, got = WindowSampler("darkroom-tiny-v3", tiny_root, config).batch(step), next(loader)
        assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_sampler_refuses_unfit_datasets(tiny_root: Path) -> None:
    with pytest.raises(IcrlBenchError, match="fewer than the window"):
        WindowSampler("darkroom-tiny-v3", tiny_root, SamplerConfig(window=500, batch_size=2))
    with pytest.raises(IcrlBenchError, match="build it with `icrl-bench build-dataset darkroom --preset small`"):
        WindowSampler("darkroom-small-v3", tiny_root, SamplerConfig(window=5, batch_size=2))


@pytest.mark.parametrize("agent", ["ad", "dicp-ad"])
def test_dense_layout_predicts_every_step_from_the_past_only(agent: str) -> None:
    """Changing step t's action changes no prediction at or before t (no leak), and does change t + 1's;
    dicp-ad's reward and next state at t depend on the past and the action given, never on later steps."""
    model = small_model(agent, layout="dense").eval()
    rng = np.random.default_rng(1)
    batch = {"obs": torch.as_tensor(rng.integers(0, 9, (2, 8, 2))), "action": torch.as_tensor(rng.integers(0, 5, (2, 8))),
             "reward": torch.as_tensor(rng.integers(0, 2, (2, 8))), "next_obs": torch.as_tensor(rng.integers(0, 9, (2, 8, 2)))}

    def logits(b):
        steps = Transitions.from_batch(b)
        with torch.no_grad():
            h, _ = model.transformer(model.tokens(steps.obs, None, steps))
        return model.pred_action(h)

    before = logits(batch)
    changed = {**batch, "action": batch["action"].clone()}
    changed["action"][:, 4] = (changed["action"][:, 4] + 1) % 5
    after = logits(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5], after[:, 5])
    if model.dynamics is not None:
        def world(b):
            steps = Transitions.from_batch(b)
            with torch.no_grad():
                h, _ = model.transformer(model.tokens(steps.obs, None, steps))
                return model.dynamics(h, steps.action)

        (r0, s0), (r1, s1) = world(batch), world(changed)
        torch.testing.assert_close(r0[:, :4], r1[:, :4])
        torch.testing.assert_close(s0[:, :4], s1[:, :4])
        assert not torch.allclose(s0[:, 4], s1[:, 4])  # the action given at t is what the world model reads


def test_dense_layout_is_refused_where_it_is_not_implemented() -> None:
    for agent in ("dicp-dpt", "dpt"):
        with pytest.raises(IcrlBenchError, match="layout 'dense' is implemented for ad, idt and their DICP variants on the grid worlds only"):
            model_config(agent, {**SMALL, "layout": "dense"})
    with pytest.raises(IcrlBenchError, match="not for idt \\(continuous\\)"):
        model_config("idt", {"layout": "dense"}, kind="continuous")
    with pytest.raises(IcrlBenchError, match="layout must be one of dicp, dense"):
        model_config("ad", {**SMALL, "layout": "sparse"})
    with pytest.raises(IcrlBenchError, match="state_features 'cell\\+xy' is a dense-layout option"):
        model_config("ad", {**SMALL, "state_features": "cell+xy"})
    with pytest.raises(IcrlBenchError, match="state_features must be one of cell, cell\\+xy"):
        model_config("ad", {**SMALL, "layout": "dense", "state_features": "xy"})


def test_cell_xy_tokens_see_coordinates() -> None:
    """With state_features cell+xy, two cells' tokens differ by the linear map of their coordinates' difference."""
    model = small_model("dicp-ad", layout="dense", state_features="cell+xy").eval()
    with torch.no_grad():
        model.embed_state.weight.zero_()  # leave only the coordinates and the "none" action and reward
        first, second = (model.tokens(torch.tensor([[cell]]), None, None)[0, 0] for cell in ([2, 3], [2, 4]))
        step = model.embed_xy.weight[:, 1] / (model.config.grid_size - 1)
    torch.testing.assert_close(second - first, step, atol=1e-6, rtol=0)


def test_an_edited_checkpoint_json_is_refused(tmp_path: Path) -> None:
    """The JSON sidecar was covered by no hash: n_transit could be edited, or the env removed."""
    import json

    model = small_model("dicp-ad")
    save_checkpoint(tmp_path / "ckpt", "dicp-ad", model, {"lr": 0.01}, {"id": "darkroom-tiny-v3", "content_hash": "a" * 64, "env": "darkroom"}, 3)
    assert load_checkpoint(tmp_path / "ckpt").meta["step"] == 3
    for edit in (lambda m: m["model_config"].update(n_transit=9), lambda m: m["dataset"].pop("env")):
        shutil.rmtree(tmp_path / "edited", ignore_errors=True)
        shutil.copytree(tmp_path / "ckpt", tmp_path / "edited")
        meta = json.loads((tmp_path / "edited" / "checkpoint.json").read_text())
        edit(meta)
        (tmp_path / "edited" / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(IcrlBenchError, match="was changed after its weights were saved"):
            load_checkpoint(tmp_path / "edited")


def test_the_registry_declares_every_trainable_agent_and_what_it_can_do() -> None:
    from icrl_bench.agents.registry import BUILTINS, plans

    trainable = {a.name for a in BUILTINS.values() if a.needs_checkpoint}
    assert set(MODEL_SPECS) == trainable == {"ad", "dpt", "idt", "dicp-ad", "dicp-dpt", "dicp-idt"}
    assert {n for n in MODEL_SPECS if MODEL_SPECS[n].dynamics} == {n for n in BUILTINS if plans(n)} == {"dicp-ad", "dicp-dpt", "dicp-idt"}
    assert not plans("random") and not plans("no-such-agent")
    for name in FLAT:  # the network a name builds answers the planner's question itself
        assert small_model(name).query_after_context == (MODEL_SPECS[name].family == "ad")
    assert not small_model("ad", layout="dense").query_after_context


def test_sibling_tokens_equal_one_token_after_each_copy_of_the_cache() -> None:
    from icrl_bench.agents.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    net = Transformer(TransformerConfig(n_layer=2, n_head=2, n_embd=16, n_inner=32, dropout=0.0, attn_dropout=0.0)).eval()
    with torch.no_grad():
        _, cache = net(torch.randn(3, 5, 16))
        siblings = torch.randn(3, 4, 16)
        h, same = net(siblings, cache, siblings=True)
        one_by_one, _ = net(siblings.reshape(12, 1, 16), cache.repeat_interleave(4))
    torch.testing.assert_close(h, one_by_one.reshape(3, 4, 16), atol=1e-5, rtol=0)
    assert same is cache and len(cache) == 5
