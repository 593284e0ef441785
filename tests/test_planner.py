"""DICP planning: the known-best action on a hand-made world, cached == recomputed on trained models,
never past the episode's end, `--beam` errors, seeds and forward-pass counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from icrl_bench.agents import planner as planner_module
from icrl_bench.agents.checkpoint import load_checkpoint
from icrl_bench.agents.models import build_model, model_config
from icrl_bench.agents.planner import beam_search
from icrl_bench.agents.transformer_agent import TransformerAgent, from_checkpoint
from icrl_bench.bench.protocols import get_protocol
from icrl_bench.bench.rollout import run_protocol
from icrl_bench.cli import app
from icrl_bench.errors import IcrlBenchError
from icrl_bench.training import train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny forwards: one thread is several times faster than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- a hand-made world with known rewards -------------------------------------------------------------


class TableWorld:
    """Cells 0..3, 5 actions. From cell 0: action 1 pays 1 now and leads to dead cell 3 (never pays
    again); action 3 pays 0 and leads to cell 1, where every action pays 2 and stays. Everything else
    pays 0 and goes to cell 3. Beams are cell tensors [N]."""

    num_actions = 5

    def __init__(self) -> None:
        self.reward = torch.zeros(4, 5, dtype=torch.long)
        self.next = torch.full((4, 5), 3, dtype=torch.long)
        self.reward[0, 1] = 1
        self.next[0, 3] = 1
        self.reward[1, :] = 2
        self.next[1, :] = 1
        self.levels = 0

    def expand(self, beams: torch.Tensor, actions: torch.Tensor):
        self.levels += 1
        return self.reward[beams[:, None], actions], self.next[beams[:, None], actions]

    def advance(self, beams, parent, action, reward, next_cell):
        return next_cell


def test_the_planner_picks_the_known_best_action():
    world = TableWorld()
    logits = torch.tensor([[0.0, 5.0, 0.0, 1.0, 0.0]] * 3)  # the policy prefers the greedy action 1, then 3
    root = torch.zeros(3, dtype=torch.long)
    depth = torch.tensor([3, 1, 2])  # env 1's episode ends after this step
    chosen = beam_search(world, root, logits, beam_k=2, depth=depth, sample=False)
    assert chosen.tolist() == [3, 1, 3]  # long-sighted (0 + 2 > 1 + 0), but not past the episode's end
    assert world.levels == 3  # the deepest env's depth, no more
    tie = TableWorld()
    tie.reward[1, :] = 1  # now 1 + 0 == 0 + 1 at depth 2: the tie goes to the policy's first candidate
    assert beam_search(tie, root, logits, beam_k=2, depth=torch.tensor([2, 2, 2]), sample=False).tolist() == [1, 1, 1]
    greedy = beam_search(TableWorld(), root, logits, beam_k=1, depth=depth, sample=False)
    assert greedy.tolist() == [1, 1, 1]  # beam 1 keeps only the best first step
    # Sampled candidate orders change ties only: the long-sighted choice is the same.
    assert beam_search(TableWorld(), root, logits, 5, depth, sample=True, generator=torch.Generator().manual_seed(0))[0] == 3


# ---- trained tiny models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """dicp-ad and dicp-idt (both layouts), dicp-dpt trained for a few steps on darkroom-tiny (seconds each)."""
    out = tmp_path_factory.mktemp("planner-runs")
    runs = {}
    for key in ("dicp-ad", "dicp-ad-dense", "dicp-dpt", "dicp-idt", "dicp-idt-dense"):
        agent = key.removesuffix("-dense")
        model = {"n_transit": 20, "low_per_high": 10} if "idt" in agent else {"n_transit": 10}
        if key.endswith("-dense"):
            model["layout"] = "dense"
        config = {
            "agent": agent, "env": "darkroom",
            "model": {**model, "transformer": {"n_layer": 2, "n_head": 2, "n_embd": 16, "n_inner": 32, "dropout": 0.0, "attn_dropout": 0.0}},
            "train": {"lr": 3e-3, "batch_size": 32, "steps": 30, "log_interval": 10, "eval_interval": 30, "ckpt_interval": 30,
                      "val_max_tasks": 2, "val_windows_per_task": 2},
        }
        path = out / f"{key}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = train(agent, "darkroom-tiny-v3", device="cpu", out=out / "runs", root=tiny_root, show_progress=False, config_path=path)
        runs[key] = result.run_dir
    return runs


class Recorder:
    """Wraps an agent: keeps every action it takes."""

    def __init__(self, agent):
        self.agent, self.actions = agent, []

    def reset(self, num_envs, task_info):
        self.agent.reset(num_envs, task_info)

    def act(self, obs):
        action = self.agent.act(obs)
        self.actions.append(action.copy())
        return action

    def observe(self, *args):
        self.agent.observe(*args)


@pytest.mark.parametrize("agent", ["dicp-ad", "dicp-ad-dense", "dicp-dpt", "dicp-idt", "dicp-idt-dense"])
def test_cached_planning_chooses_exactly_what_full_recompute_chooses(agent: str, trained: dict[str, Path], monkeypatch) -> None:
    predictions: dict[str, list] = {"cache": [], "recompute": []}
    for cls in (planner_module.CachedWorld, planner_module.RecomputeWorld, planner_module.IDTWorld, planner_module.DenseWorld):
        original = cls.expand

        def spy(self, beams, actions, _original=original):
            reward, cell = _original(self, beams, actions)
            key = "cache" if getattr(self, "cached", isinstance(self, planner_module.CachedWorld)) else "recompute"
            predictions[key].append((reward.clone(), cell.clone()))
            return reward, cell

        monkeypatch.setattr(cls, "expand", spy)
    protocol = get_protocol("darkroom")
    actions = {}
    for planner in ("cache", "recompute"):
        recorder = Recorder(from_checkpoint(agent.removesuffix("-dense"), trained[agent], beam_k=3, planner=planner, seed=7))
        run_protocol(recorder, protocol, seeds=[0], n_episodes=3)
        actions[planner] = np.stack(recorder.actions)
        if planner == "cache" and not agent.startswith("dicp-idt"):  # windows' real parts were kept from one real step and extended at the next
            assert recorder.agent.prefixes.found > 0 and recorder.agent.prefixes.encoded > 0
    assert np.array_equal(actions["cache"], actions["recompute"])
    cache, recompute = predictions["cache"], predictions["recompute"]
    assert len(cache) == len(recompute) > 0
    for (r1, s1), (r2, s2) in zip(cache, recompute):  # every imagined reward and next state, level by level
        assert torch.equal(r1, r2) and torch.equal(s1, s2)
    assert len(torch.unique(torch.cat([s.flatten() for _, s in cache]))) > 1  # it does predict different next states


def test_imagined_transitions_slide_the_window_as_in_the_official_code(trained: dict[str, Path], monkeypatch) -> None:
    """Every imagined sequence has the trained length n_transit + 1 (context, query, action) once the
    window is full: each imagined transition pushes out the oldest real one, never grows the context."""
    lengths, dropped = [], []
    original = planner_module.query_tokens

    def spy(model, context, state):
        tokens = original(model, context, state)
        lengths.append(tokens.shape[1] + 1)  # + the action query
        real = agent.context.obs[0]  # the agent's real window [n_transit - 1, dim] while it plans
        shift = [d for d in range(len(real)) if torch.equal(context.obs[0, : len(real) - d], real[d:])]
        dropped.append(min(shift))  # how many real transitions this sequence left out
        return tokens

    monkeypatch.setattr(planner_module, "query_tokens", spy)
    agent = from_checkpoint("dicp-ad", trained["dicp-ad"], beam_k=2, planner="recompute")
    run_protocol(agent, get_protocol("darkroom"), seeds=[0], n_episodes=2)
    n_transit = agent.model.config.n_transit
    assert max(lengths) == min(lengths) == n_transit + 1  # planning starts with a full window, and it stays full
    assert set(dropped) == set(range(8))  # depth d drops the d - 1 oldest real transitions (darkroom: up to 8 levels)


def test_dense_imagined_windows_slide_and_keep_the_trained_length(trained: dict[str, Path], monkeypatch) -> None:
    """The dense world's imagined sequences are n_transit tokens (context, query) at every depth, as training's."""
    agent = from_checkpoint("dicp-ad", trained["dicp-ad-dense"], beam_k=2, planner="recompute")
    lengths, original = [], type(agent.model).sequence

    def spy(model, context, query_obs):
        tokens = original(model, context, query_obs)
        lengths.append(tokens.shape[1])
        return tokens

    monkeypatch.setattr(type(agent.model), "sequence", spy)
    run_protocol(agent, get_protocol("darkroom"), seeds=[0], n_episodes=2)
    assert lengths[0] == 1  # acting's first step, from an empty context; everything after: planning and full windows
    assert len(lengths) > 8 and set(lengths[1:]) == {agent.model.config.n_transit}


def test_planning_never_looks_past_the_episode_end(trained: dict[str, Path], monkeypatch) -> None:
    seen = []
    original = planner_module.beam_search

    def spy(world, root, logits, beam_k, depth, *args, **kwargs):
        levels = []
        expand = world.expand
        world.expand = lambda beams, actions: (levels.append(1), expand(beams, actions))[1]
        chosen = original(world, root, logits, beam_k, depth, *args, **kwargs)
        seen.append((depth.clone(), len(levels)))
        return chosen

    monkeypatch.setattr(planner_module, "beam_search", spy)
    agent = from_checkpoint("dicp-ad", trained["dicp-ad"], beam_k=2)
    agent_t = []
    plan = agent.plan
    agent.plan = lambda obs, logits: (agent_t.append(agent.t_episode.clone()), plan(obs, logits))[1]
    run_protocol(agent, get_protocol("darkroom"), seeds=[0], n_episodes=2)
    horizon, planning_horizon = 20, 8
    assert len(seen) == 2 * horizon - 10  # planning from step n_transit = 10 on
    for (depth, levels), t in zip(seen, agent_t):
        assert torch.equal(depth, (horizon - t).clamp(max=planning_horizon)) and levels == int(depth.max())
    assert min(levels for _, levels in seen) == 1  # the last step of an episode looks at that step only


def test_beam_on_an_agent_without_a_world_model_is_a_one_line_error(trained: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    for agent in ("ad", "random"):
        result = runner.invoke(app, ["evaluate", "--agent", agent, "--beam", "3", "--out", str(tmp_path), "-q"])
        assert result.exit_code == 1 and "no world model" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) <= 3  # one message (rich may wrap it)
    for beam in ("0", "2"):
        ok = runner.invoke(app, ["evaluate", "--agent", "dicp-ad", "--checkpoint", str(trained["dicp-ad"]), "--beam", beam, "--seeds", "0",
                                 "--episodes", "1", "--out", str(tmp_path), "-q"])
        assert ok.exit_code == 0, ok.output
        results = json.loads((tmp_path / "dicp-ad-darkroom-s1-e1.json").read_text())
        assert results["agent"]["settings"] == {"beam_k": int(beam)} and f"--set beam_k={beam}" in results["command"]
    negative = runner.invoke(app, ["evaluate", "--agent", "dicp-ad", "--beam", "-1", "--out", str(tmp_path), "-q"])
    assert negative.exit_code == 1 and "--beam must be >= 0" in negative.output
    ad = build_model("ad", model_config("ad", {"n_transit": 10}))
    with pytest.raises(IcrlBenchError, match="no world model"):
        TransformerAgent("ad", ad, beam_k=2)
    assert TransformerAgent("ad", ad).beam_k == 0 and from_checkpoint("dicp-ad", trained["dicp-ad"]).beam_k == 10


def test_beam_zero_turns_planning_off_and_forward_passes_count_it(trained: dict[str, Path]) -> None:
    protocol = get_protocol("darkroom")
    costs = {}
    for beam_k in (0, 2):
        agent = from_checkpoint("dicp-ad", trained["dicp-ad"], beam_k=beam_k)
        before = agent.forward_passes
        rollout = run_protocol(agent, protocol, seeds=[0], n_episodes=1)
        costs[beam_k] = rollout.forward_passes / rollout.steps
        assert agent.forward_passes - before == rollout.forward_passes
    # No planning: one forward per step to act (+1 to extend the cache while the window grows).
    assert 1 <= costs[0] <= 2 and costs[2] > costs[0] + 1


@pytest.mark.parametrize("agent", ["dicp-ad", "dicp-idt"])
def test_set_seed_changes_sampled_actions_reproducibly(agent: str, trained: dict[str, Path]) -> None:
    def actions(seed: int) -> np.ndarray:
        recorder = Recorder(from_checkpoint(agent, trained[agent], beam_k=2))
        recorder.agent.set_seed(seed)
        run_protocol(recorder, get_protocol("darkroom"), seeds=[0], n_episodes=2)
        return np.stack(recorder.actions)

    assert np.array_equal(actions(1), actions(1)) and not np.array_equal(actions(1), actions(2))


def test_the_harness_seed_list_reaches_the_agent(trained: dict[str, Path]) -> None:
    agent = from_checkpoint("dicp-dpt", trained["dicp-dpt"], beam_k=0)
    first = run_protocol(agent, get_protocol("darkroom"), seeds=[0], n_episodes=2).returns
    again = run_protocol(agent, get_protocol("darkroom"), seeds=[0], n_episodes=2).returns
    assert agent.seed != 0 and np.array_equal(first, again)  # the harness's set_seed took effect, reproducibly
    assert load_checkpoint(trained["dicp-dpt"], agent="dicp-dpt").model.config.dynamics
