"""DICP planning with the KV cache vs. full recompute, in one run on the same model and states.

For each DICP agent this rolls the agent out (no planning) on the standard Darkroom test tasks x
seeds until its context is full, then, at the same real states, plans a few steps both ways:

  cache      the shared context encoded once per step, each beam extending a copy (planner.CachedWorld);
             the context's own encoding is *included* in its time (nothing reused from acting);
  recompute  every candidate's whole sequence encoded from scratch (planner.RecomputeWorld).

It checks that both choose the same actions (and the same imagined rewards and next states
along the way) and prints the wall time per action (per env decision) and the ratio. The
network has the paper's Darkroom shape with random weights, and its world-model heads scaled up
so that predictions vary (timings do not depend on the weights; pass --checkpoint for a trained
one). Usage:

    python benchmarks/bench_planning.py                        # beam 10, 5 seeds x 8 test tasks = 40 envs
    python benchmarks/bench_planning.py --beam 5 --agents dicp-ad --checkpoint runs/dicp-ad-darkroom-v1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from machine_facts import machine_facts
from rich.console import Console
from rich.table import Table

from icrl_bench.agents import planner as planner_module
from icrl_bench.agents.base import TaskInfo
from icrl_bench.agents.checkpoint import load_checkpoint
from icrl_bench.agents.idt import IDTAgent
from icrl_bench.agents.models import build_model, model_config
from icrl_bench.agents.planner import IDTBeams, IDTWorld, beam_search, plan
from icrl_bench.agents.transformer_agent import TransformerAgent
from icrl_bench.bench.protocols import get_protocol
from icrl_bench.envs import get_family
from icrl_bench.envs.grid import N_ACTIONS

PAPER_SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 32, "n_inner": 128, "dropout": 0.0, "attn_dropout": 0.0}


def make_agent(name: str, checkpoint: str | None):
    if checkpoint:
        loaded = load_checkpoint(checkpoint, agent=name)
        model = loaded.model
    else:
        values = {"n_transit": 80, "transformer": PAPER_SHAPE}
        if name == "dicp-idt":
            values.update(low_per_high=10, horizon=20, target_return=20.0)
        torch.manual_seed(0)
        model = build_model(name, model_config(name, values))
        heads = [model.decisions_to_go.pred_reward, model.decisions_to_go.pred_next_state] if name == "dicp-idt" else [
            model.dynamics.pred_reward, model.dynamics.pred_next_state]
        with torch.no_grad():
            for head in heads:
                head.weight.normal_(0.0, 1.0)
    cls = IDTAgent if name == "dicp-idt" else TransformerAgent
    return cls(name, model, beam_k=0, seed=0)


def warm_states(agent, env_name: str, seeds: list[int], steps: int):
    """Roll the agent (no planning) for `steps` steps on the protocol's test tasks x seeds; yield before each later step."""
    protocol = get_protocol(env_name)
    family = get_family(protocol.env)
    rows = np.tile(protocol.test_task_params(), (len(seeds), 1))
    env = family.batched(rows)
    agent.reset(len(rows), TaskInfo(env=protocol.env, num_actions=N_ACTIONS, obs_dim=2, horizon=family.horizon, task_params=rows))
    obs = env.reset().numpy()
    for t in range(steps):
        yield t, obs
        action = agent.act(obs)
        step = env.step(torch.as_tensor(action))
        agent.observe(obs, action, step.reward.numpy(), step.next_obs.numpy(), step.done.numpy())
        obs = step.obs.numpy()


def plan_both(agent, obs: np.ndarray, beam_k: int, planning_horizon: int, horizon: int):
    """(actions, seconds, predictions) for cache and recompute at the agent's current state."""
    out = {}
    if isinstance(agent, IDTAgent):
        agent.action_logits(obs)  # makes the block's decision z and the cache up to s_t (acting's own work)
        depth = torch.full((len(obs),), agent.model.config.low_per_high - agent.t_low)
        envs = torch.arange(len(obs))
        for way in ("cache", "recompute"):
            gen = torch.Generator().manual_seed(1)
            start = time.perf_counter()
            with torch.inference_mode():
                if way == "cache":  # re-encode the block too, so neither way reuses acting's work
                    h, cache = agent.model.decisions_to_go.transformer(torch.cat(agent.low_tokens, dim=1))
                    root = IDTBeams(envs, agent.t_low, cache=cache)
                else:
                    tokens = torch.cat(agent.low_tokens, dim=1)
                    h, _ = agent.model.decisions_to_go.transformer(tokens)
                    root = IDTBeams(envs, agent.t_low, tokens=tokens)
                world = IDTWorld(agent.model, agent.z, cached=way == "cache")
                actions = beam_search(world, root, agent.model.decisions_to_go.pred_action(h[:, -1]), beam_k, depth, True, gen)
            out[way] = (actions, time.perf_counter() - start)
        return out
    query = torch.as_tensor(obs, dtype=torch.float32)
    depth = (horizon - agent.t_episode).clamp(min=1, max=planning_horizon)
    for way in ("cache", "recompute"):
        gen = torch.Generator().manual_seed(1)
        start = time.perf_counter()
        actions = plan(agent.model, agent.context, query, beam_k, depth, cached=way == "cache", sample=True, generator=gen)
        out[way] = (actions, time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="dicp-ad,dicp-dpt,dicp-idt")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--decisions", type=int, default=4, help="planning steps timed per agent")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    env_name, horizon = "darkroom", get_family("darkroom").horizon
    rows = []
    for name in args.agents.split(","):
        agent = make_agent(name, args.checkpoint)
        n_transit = agent.model.config.n_transit
        predictions: dict[str, list] = {"cache": [], "recompute": []}
        originals = {}
        for cls in (planner_module.CachedWorld, planner_module.RecomputeWorld, IDTWorld):
            originals[cls] = cls.expand

            def spy(self, beams, actions, _original=originals[cls], predictions=predictions):
                reward, cell = _original(self, beams, actions)
                cached = getattr(self, "cached", isinstance(self, planner_module.CachedWorld))
                predictions["cache" if cached else "recompute"].append((reward, cell))
                return reward, cell

            cls.expand = spy
        same, times = True, {"cache": 0.0, "recompute": 0.0}
        n_envs = 0
        try:
            for t, obs in warm_states(agent, env_name, seeds, n_transit + args.decisions):
                if t < n_transit:
                    continue
                result = plan_both(agent, obs, args.beam, planner_module.planning_horizon(env_name), horizon)
                same &= torch.equal(result["cache"][0], result["recompute"][0])
                for way in times:
                    times[way] += result[way][1]
                n_envs = len(obs)
        finally:
            for cls, original in originals.items():
                cls.expand = original
        same_predictions = len(predictions["cache"]) == len(predictions["recompute"]) and all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(predictions["cache"], predictions["recompute"]))
        actions = args.decisions * n_envs
        rows.append({
            "agent": name, "beam_k": args.beam, "envs": n_envs, "decisions": args.decisions,
            "cache_ms_per_action": 1e3 * times["cache"] / actions, "recompute_ms_per_action": 1e3 * times["recompute"] / actions,
            "ratio": times["recompute"] / times["cache"], "same_actions": bool(same), "same_predictions": bool(same_predictions),
        })
    table = Table(title=f"DICP planning, beam_k {args.beam}, Darkroom, {torch.get_num_threads()} CPU thread(s)")
    for column in ("agent", "envs", "cache ms/action", "recompute ms/action", "speed-up", "same actions", "same imagined r, s'"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["agent"], str(r["envs"]), f"{r['cache_ms_per_action']:.2f}", f"{r['recompute_ms_per_action']:.2f}", f"{r['ratio']:.1f}x",
                      str(r["same_actions"]), str(r["same_predictions"]))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_facts(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
