"""One batch of every seed's envs vs. one batch per seed (a resumable sharded evaluation), in one run.

`icrl-bench reproduce` evaluates Darkroom's agents as one batch each and Darkroom-Permuted's seed
by seed (`EVAL_BY_SEED` in icrl_bench/bench/reproduction.py): a one-seed batch can be kept and
resumed, but it holds a fifth of the envs, and the planner's per-call overhead is then shared by
fewer of them. This evaluates each agent both ways on the same checkpoint, one thread, and prints
the seconds spent acting, the ratio, and whether the curves agree (they need not: the two ways draw
from differently seeded generators). Usage:

    python benchmarks/bench_seed_batches.py                           # the shipped Darkroom dicp-ad, 10 episodes
    python benchmarks/bench_seed_batches.py --agents dicp-ad,ad --episodes 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from machine_facts import machine_facts
from rich.console import Console
from rich.table import Table

from icrl_bench.bench.harness import evaluate
from icrl_bench.executors import ExecutorConfig


def acting_seconds(results: dict) -> float:
    cost = results["cost"]
    return cost["act_s_per_step"] * cost["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="dicp-ad")
    parser.add_argument("--env", default="darkroom")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    table = Table(title=f"{args.env}, {args.episodes} episodes, the protocol's seeds, 1 thread")
    for column in ("agent", "one batch: acting s", "per seed: acting s", "per seed / one batch"):
        table.add_column(column, justify="right")
    rows = []
    for agent in args.agents.split(","):
        one = evaluate(agent, env=args.env, n_episodes=args.episodes)
        per_seed = evaluate(agent, env=args.env, n_episodes=args.episodes, executor=ExecutorConfig("local", workers=1))
        row = {"agent": agent, "one_batch_s": acting_seconds(one), "per_seed_s": acting_seconds(per_seed),
               "envs_per_batch": [one["cost"]["num_envs"], per_seed["cost"]["num_envs"] // per_seed["cost"]["shards"]]}
        row["ratio"] = row["per_seed_s"] / row["one_batch_s"]
        rows.append(row)
        table.add_row(agent, f"{row['one_batch_s']:.1f}", f"{row['per_seed_s']:.1f}", f"{row['ratio']:.2f}x")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_facts(), "env": args.env, "episodes": args.episodes, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
