"""DICP planning with the windows' real parts kept across real steps (real_prefixes.py) vs. encoded anew each step.

Both ways are the cached planner; they differ only in `TransformerAgent.reuse_prefixes`. Each agent
(default: the shipped Darkroom dicp-ad and dicp-dpt) acts on the standard Darkroom test tasks x
seeds for a few episodes, both ways from the same seed; planning starts once the context is full
(step n_transit), so with 6 episodes of 20 steps, 40 of the 120 steps plan. The script checks that
both ways take the same actions and prints the seconds spent acting, the ratio, and how many
prefixes were extended (found) or encoded from their start. Usage:

    python benchmarks/bench_real_prefixes.py --json benchmarks/results/real_prefixes.json
    python benchmarks/bench_real_prefixes.py --agents dicp-dpt --episodes 8
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

from icrl_bench.agents.transformer_agent import from_checkpoint
from icrl_bench.bench.protocols import get_protocol
from icrl_bench.bench.rollout import run_protocol
from icrl_bench.paths import shipped


class TimedRecorder:
    """Wraps an agent: keeps its actions and the seconds spent in act()."""

    def __init__(self, agent) -> None:
        self.agent, self.actions, self.seconds = agent, [], 0.0

    def reset(self, num_envs, task_info) -> None:
        self.agent.reset(num_envs, task_info)

    def act(self, obs):
        start = time.perf_counter()
        action = self.agent.act(obs)
        self.seconds += time.perf_counter() - start
        self.actions.append(action.copy())
        return action

    def observe(self, *args) -> None:
        self.agent.observe(*args)


def run(name: str, checkpoint: Path, env: str, seeds: list[int], episodes: int, reuse: bool) -> TimedRecorder:
    agent = from_checkpoint(name, checkpoint, seed=0)
    agent.reuse_prefixes = reuse
    recorder = TimedRecorder(agent)
    run_protocol(recorder, get_protocol(env), seeds=seeds, n_episodes=episodes)
    return recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="dicp-ad,dicp-dpt")
    parser.add_argument("--env", default="darkroom")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.agents.split(","):
        checkpoint = shipped("baselines", args.env, name)
        anew = run(name, checkpoint, args.env, seeds, args.episodes, reuse=False)
        kept = run(name, checkpoint, args.env, seeds, args.episodes, reuse=True)
        prefixes = kept.agent.prefixes
        rows.append({
            "agent": name, "checkpoint": str(checkpoint), "layout": kept.agent.model.config.layout, "envs": len(kept.actions[0]),
            "steps": len(kept.actions), "anew_s": anew.seconds, "kept_s": kept.seconds, "ratio": anew.seconds / kept.seconds,
            "same_actions": bool(np.array_equal(np.stack(anew.actions), np.stack(kept.actions))),
            "prefixes_found": prefixes.found, "prefixes_encoded": prefixes.encoded,
        })
    table = Table(title=f"DICP planning on {args.env}: real prefixes kept across steps vs. encoded anew, "
                        f"{args.episodes} episodes, {torch.get_num_threads()} CPU thread(s)")
    for column in ("agent", "layout", "envs x steps", "anew s", "kept s", "speed-up", "found / encoded", "same actions"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["agent"], r["layout"], f"{r['envs']} x {r['steps']}", f"{r['anew_s']:.1f}", f"{r['kept_s']:.1f}", f"{r['ratio']:.2f}x",
                      f"{r['prefixes_found']} / {r['prefixes_encoded']}", str(r["same_actions"]))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_facts(), "episodes": args.episodes, "seeds": seeds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
