"""How right is DICP's imagination? The world model's predictions vs. Darkroom's true dynamics, in one run.

DICP plans on what its network predicts: the next state and the reward of each action it tries.
This rolls a dicp-ad / dicp-dpt agent out under the standard Darkroom protocol (planning on) and,
for every action query the planner makes, compares the prediction with what the real env would do
(Darkroom's moves are known; the reward is 1 exactly at the test task's goal):

  next-state accuracy      predicted next cell == true next cell
  reward precision         of the predicted rewards of 1, the share that are true
  reward recall            of the true rewards of 1 (a query that reaches the goal), the share predicted
  false positives          how far from the goal the cell of a false "reward 1" is (Manhattan)

by episode range and by beam depth, and prints the ratio of predicted to true rewards (1 = calibrated).
Usage:

    python benchmarks/bench_world_model.py                                  # the shipped dicp-ad, seed 0, 40 episodes
    python benchmarks/bench_world_model.py --agent dicp-ad --checkpoint runs/<run> --json benchmarks/results/world_model.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from machine_facts import machine_facts
from rich.console import Console
from rich.table import Table

from icrl_bench.agents import planner as planner_module
from icrl_bench.agents.registry import make_agent
from icrl_bench.bench.protocols import get_protocol
from icrl_bench.bench.rollout import run_protocol
from icrl_bench.envs.grid import GRID_SIZE, MOVES

EPISODE_RANGES = ((4, 10), (10, 20), (20, 30), (30, 50))


def record_queries(agent, goals: torch.Tensor, horizon: int) -> list[dict]:
    """Wrap the cached world's `expand` (the dense layout's for a dense network) so every action query is
    compared with the true dynamics."""
    moves = torch.as_tensor(np.array(MOVES), dtype=torch.long)
    queries: list[dict] = []
    world_class = planner_module.DenseWorld if agent.model.config.layout == "dense" else planner_module.CachedWorld
    original = world_class.expand

    def expand(world, beams, actions):
        reward, cell = original(world, beams, actions)  # [N, A] each
        state = beams.state.long()  # [N, 2]
        nxt = (state[:, None, :] + moves[actions.long()]).clamp(0, GRID_SIZE - 1)  # [N, A, 2]
        goal = goals[beams.env % len(goals)][:, None, :]  # [N, 1, 2]; envs are seed-major over the tasks
        true_reward = (nxt == goal).all(-1)
        predicted = reward == 1
        queries.append({
            "episode": agent.steps_seen // horizon,
            "depth": len(beams.context) - beams.n_real + 1,
            "cell_right": int((cell == nxt[..., 0] * GRID_SIZE + nxt[..., 1]).sum()),
            "n": cell.numel(),
            "true_positive": int((predicted & true_reward).sum()),
            "predicted": int(predicted.sum()),
            "true": int(true_reward.sum()),
            "fp_distance": (nxt - goal).abs().sum(-1)[predicted & ~true_reward].tolist(),
        })
        return reward, cell

    world_class.expand = expand
    return queries


def summarize(queries: list[dict]) -> dict:
    def rates(rows: list[dict]) -> dict:
        total = {k: sum(r[k] for r in rows) for k in ("cell_right", "n", "true_positive", "predicted", "true")}
        return {
            "next_state_accuracy": total["cell_right"] / max(1, total["n"]),
            "reward_precision": total["true_positive"] / max(1, total["predicted"]),
            "reward_recall": total["true_positive"] / max(1, total["true"]),
            "predicted_over_true": total["predicted"] / max(1, total["true"]),
        }

    out = {}
    for lo, hi in EPISODE_RANGES:
        rows = [q for q in queries if lo <= q["episode"] < hi]
        if not rows:
            continue
        distances = np.bincount([d for q in rows for d in q["fp_distance"]], minlength=2 * GRID_SIZE)
        out[f"episodes {lo}-{hi - 1}"] = {
            **rates(rows),
            "by_depth": {d: rates([q for q in rows if q["depth"] == d]) for d in sorted({q["depth"] for q in rows})},
            "false_positive_distance_hist": distances.tolist(),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="dicp-ad", choices=["dicp-ad", "dicp-dpt"])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped baselines/darkroom/<agent>")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    protocol = get_protocol("darkroom")
    goals = torch.as_tensor(np.asarray(protocol.test_task_params()), dtype=torch.long)
    agent = make_agent(args.agent, args.checkpoint, env="darkroom", beam_k=args.beam)
    queries = record_queries(agent, goals, protocol.horizon)
    rollout = run_protocol(agent, protocol, seeds=[int(s) for s in args.seeds.split(",")], n_episodes=args.episodes)
    summary = summarize(queries)
    table = Table(title=f"{args.agent} imagination vs. Darkroom's dynamics (beam {args.beam}, seeds {args.seeds})")
    for column in ("episodes", "next-state acc", "reward precision", "reward recall", "predicted / true 1s", "false 1s at distance 1"):
        table.add_column(column, justify="right")
    for name, row in summary.items():
        hist = row["false_positive_distance_hist"]
        table.add_row(name, f"{row['next_state_accuracy']:.3f}", f"{row['reward_precision']:.2f}", f"{row['reward_recall']:.2f}",
                      f"{row['predicted_over_true']:.2f}", f"{hist[1] / max(1, sum(hist)):.0%}")
    Console().print(table)
    returns = rollout.returns.mean((0, 1))
    print("mean return per episode:", " ".join(f"{r:.1f}" for r in returns))
    if args.json:
        doc = {"machine": machine_facts(), "agent": args.agent, "checkpoint": args.checkpoint or "shipped", "beam": args.beam,
               "seeds": args.seeds, "episodes": args.episodes, "summary": summary, "returns": returns.tolist()}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
