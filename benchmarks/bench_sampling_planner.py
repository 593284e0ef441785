"""DICP's sampling planner (Meta-World) with the KV cache vs. full recompute, in one run on the same model and states.

For dicp-ad and dicp-idt at the paper's Meta-World size (baselines/metaworld-ml1/<agent>.yaml:
n_transit 1000; 11 observation dims, 4 action dims), two agents share one network and one seed,
one planning each way (sampling.py):

  cache      the K candidates go in as sibling action queries after the KV cache that acting
             keeps (AD: the context and the query state; IDT: the block so far);
  recompute  every candidate's whole sequence [context, query state, candidate] is encoded from
             scratch, as the official code does (`planner="recompute"`).

Both see the same stream of random transitions (100-step episodes) until the context is full
(n_transit steps: 10 episodes), then plan `--decisions` steps, K candidates per env and step.
While the context fills, AD only observes: acting would not change the state the timed steps
start from (once its window slides, AD re-encodes the context at every step); IDT acts too, as it
makes its blocks' decisions while acting. The time per action (per env decision) is the whole `act`: the policy at the query state, the K
draws and their scores; the scoring alone is timed too. Both must choose the same actions from the
same draws. The weights are random (timings do not depend on them), with the reward head scaled
up so that the candidates' predicted rewards differ. CPU seconds are given next to wall time
because on a shared machine wall time depends on the neighbours. Usage:

    python benchmarks/bench_sampling_planner.py                 # K = 10, 10 envs, 1 thread: ~2 min of CPU
    python benchmarks/bench_sampling_planner.py --envs 40 --threads 2 --agents dicp-idt
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

from icrl_bench.agents.base import TaskInfo
from icrl_bench.agents.idt import IDTAgent
from icrl_bench.agents.models import build_model
from icrl_bench.agents.sampling import PAPER_SAMPLES
from icrl_bench.agents.transformer_agent import TransformerAgent
from icrl_bench.envs import get_family
from icrl_bench.training import load_run_config

ENV = "metaworld-ml1-reach"  # any 11-dim ML1 task: the configs are the same for all of them
WAYS = ("cache", "recompute")
RESULTS = Path(__file__).parent / "results" / "sampling_planner.json"


def make_model(name: str) -> torch.nn.Module:
    """The paper-size network with random weights; its reward head scaled so that predictions vary within [0, reward_max]."""
    family, config = get_family(ENV), load_run_config(name, ENV, kind="continuous").model
    values = {**config.to_dict(), "obs_dim": family.obs_dim, "action_dim": family.action_dim}
    if name == "dicp-idt":  # what training takes from the dataset (train.fit_to_dataset)
        values.update(horizon=family.horizon, target_return=config.reward_max * family.horizon)
    torch.manual_seed(0)
    model = build_model(name, type(config).from_dict(values))
    head = model.decisions_to_go.pred_reward if name == "dicp-idt" else model.dynamics.pred_reward
    with torch.no_grad():
        head.weight.mul_(10.0)
        head.bias.fill_(config.reward_max / 2)
    return model


def run(name: str, n_envs: int, samples: int, decisions: int) -> dict:
    """Roll both agents in lockstep; time the `decisions` steps after the context is full."""
    model = make_model(name)
    family, n_transit = get_family(ENV), model.config.n_transit
    cls = IDTAgent if name == "dicp-idt" else TransformerAgent
    # beam_start -1: plan at every timed step (when the official rule plans does not change what a plan costs)
    agents = {way: cls(name, model, seed=0, planner=way, samples=samples, beam_start=-1) for way in WAYS}
    scored: dict[str, list[tuple[float, torch.Tensor]]] = {way: [] for way in WAYS}  # (seconds, predicted rewards [E, K]) per step

    for way, agent in agents.items():
        def timed_scoring(rows, candidates, _score=agent.score_candidates, _scored=scored[way]):
            start = time.perf_counter()
            rewards = _score(rows, candidates)
            _scored.append((time.perf_counter() - start, rewards))
            return rewards

        agent.score_candidates = timed_scoring
        agent.reset(n_envs, TaskInfo(env=ENV, num_actions=0, obs_dim=family.obs_dim, horizon=family.horizon,
                                     task_params=np.zeros((n_envs, 3)), action_dim=family.action_dim))
    rng = np.random.default_rng(0)
    wall, cpu = dict.fromkeys(WAYS, 0.0), dict.fromkeys(WAYS, 0.0)
    same = True
    for t in range(n_transit + decisions):
        obs = rng.uniform(-1, 1, (n_envs, family.obs_dim)).astype(np.float32)
        reward = rng.uniform(0, model.config.reward_max, n_envs).astype(np.float32)
        next_obs = rng.uniform(-1, 1, (n_envs, family.obs_dim)).astype(np.float32)
        done = np.full(n_envs, t % family.horizon == family.horizon - 1)
        if t < n_transit:  # filling the context: the history's actions are random too
            action = rng.uniform(-1, 1, (n_envs, family.action_dim)).astype(np.float32)
            actions = dict.fromkeys(WAYS, action)
            if name == "dicp-idt":
                for agent in agents.values():
                    agent.act(obs)
        else:
            actions = {}
            for way, agent in agents.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                actions[way] = agent.act(obs)
                wall[way] += time.perf_counter() - start
                cpu[way] += time.process_time() - start_cpu
            same &= np.array_equal(actions["cache"], actions["recompute"])
        for way, agent in agents.items():
            agent.observe(obs, actions[way], reward, next_obs, done)
    assert all(len(scored[way]) == decisions for way in WAYS), "every timed step must plan"
    rewards = {way: torch.stack([r for _, r in scored[way]]) for way in WAYS}  # [decisions, E, K]
    n_actions = decisions * n_envs
    ms = lambda seconds: 1e3 * seconds / n_actions
    return {
        "agent": name, "n_transit": n_transit, "samples": samples, "envs": n_envs, "decisions": decisions,
        "cache_ms_per_action": ms(wall["cache"]), "recompute_ms_per_action": ms(wall["recompute"]),
        "ratio": wall["recompute"] / wall["cache"],
        "cache_cpu_ms_per_action": ms(cpu["cache"]), "recompute_cpu_ms_per_action": ms(cpu["recompute"]),
        "cpu_ratio": cpu["recompute"] / cpu["cache"],
        "cache_scoring_ms_per_action": ms(sum(s for s, _ in scored["cache"])),
        "recompute_scoring_ms_per_action": ms(sum(s for s, _ in scored["recompute"])),
        "same_actions": bool(same),
        "max_reward_difference": float((rewards["cache"] - rewards["recompute"]).abs().max()),
        "draw_beats_mean": float((rewards["cache"].argmax(-1) > 0).float().mean()),  # so that `same_actions` tells something
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="dicp-ad,dicp-idt")
    parser.add_argument("--samples", type=int, default=PAPER_SAMPLES, help="K: candidate actions per env and step")
    parser.add_argument("--envs", type=int, default=10)
    parser.add_argument("--decisions", type=int, default=10, help="planning steps timed per agent (10: one IDT block)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(name, args.envs, args.samples, args.decisions) for name in args.agents.split(",")]
    table = Table(title=f"DICP sampling planner, K {args.samples}, Meta-World, {torch.get_num_threads()} CPU thread(s), ms per action")
    for column in ("agent", "envs", "cache", "recompute", "speed-up (CPU)", "scoring: cache / recompute", "same actions"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["agent"], str(r["envs"]), f"{r['cache_ms_per_action']:.2f}", f"{r['recompute_ms_per_action']:.2f}",
                      f"{r['ratio']:.1f}x ({r['cpu_ratio']:.1f}x)",
                      f"{r['cache_scoring_ms_per_action']:.2f} / {r['recompute_scoring_ms_per_action']:.2f}", str(r["same_actions"]))
    Console().print(table)
    if not all(r["same_actions"] for r in rows):
        raise SystemExit("the cached planner chose other actions than full recompute: figures not written")
    args.json.write_text(json.dumps({"machine": machine_facts(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
