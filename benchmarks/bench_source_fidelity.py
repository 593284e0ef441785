"""Does batched PPO learn like stable-baselines3's PPO? Both sources, same Darkroom tasks and seeds.

Why: the batched source is only a faster way to make the same datasets if its learning
histories are statistically the same as SB3's. Bit-equality is not expected (the two draw
their random actions and minibatch shuffles differently; their initial weights are equal),
so we compare what a dataset user sees:

- the mean episode return per decile of the run (each stream's episodes split into tenths),
  averaged over goals, for every seed;
- the final episode's return per goal (the distribution across tasks).

Pass: in every decile, and for the mean final return, the batched mean over seeds lies within
SB3's seed-to-seed spread: SB3's mean +- 2 standard deviations of one seed's goal-averaged
curve (the between-seed SD pooled within goals, divided by sqrt(goals)). A stricter z-score
of the difference of the two means is printed too.

Default: 6 goals at distances 1-6 from the start x 3 seeds, with the paper's PPO settings
except 10 streams and 10K steps per goal instead of 100 and 100K (the `small` preset; each
stream still runs 50 episodes). ~5 minutes on 2 shared cores. `--streams 100 --steps 100000`
gives the paper's setting (SB3 then needs ~2 minutes per run).

    .venv/bin/python benchmarks/bench_source_fidelity.py
    .venv/bin/python benchmarks/bench_source_fidelity.py --streams 100 --steps 100000 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from icrl_bench.envs import get_family
from icrl_bench.sources import batched_ppo
from icrl_bench.sources.sb3_ppo import SOURCE as SB3_SOURCE
from icrl_bench.sources.sb3_ppo import PPOConfig

RESULTS = Path(__file__).parent / "results"
# Goals at Manhattan distance 1..6 from the start cell (4, 4).
GOALS = [(5, 4), (4, 6), (6, 5), (2, 2), (7, 6), (1, 1)]


def episode_returns(reward: np.ndarray, horizon: int) -> np.ndarray:
    """Per-episode returns [S, episodes] of one run's rewards [S, N]."""
    streams, steps = reward.shape
    return reward.reshape(streams, steps // horizon, horizon).sum(-1)


def deciles(returns: np.ndarray) -> np.ndarray:
    """Mean return [10] of each tenth of the run (over streams and that tenth's episodes)."""
    return np.array([chunk.mean() for chunk in np.array_split(returns, 10, axis=1)])


def run(args: argparse.Namespace) -> dict:
    family = get_family("darkroom")
    horizon = family.horizon
    config = PPOConfig(
        n_streams=args.streams, total_timesteps=args.steps, n_steps=20, batch_size=50, n_epochs=20, learning_rate=3e-4
    )
    goals = GOALS[: args.goals]
    tasks = [x * 9 + y for x, y in goals]  # canonical Darkroom index of goal (x, y)
    params = family.task_params()[tasks]
    assert [tuple(p) for p in params] == goals
    seeds = [[1000 * s + t for t in tasks] for s in range(args.seeds)]  # [seed, goal]

    torch.set_num_threads(1)
    curves = {"sb3-ppo": np.zeros((args.seeds, len(goals), 10)), "batched-ppo": np.zeros((args.seeds, len(goals), 10))}
    final = {"sb3-ppo": np.zeros((args.seeds, len(goals))), "batched-ppo": np.zeros((args.seeds, len(goals)))}
    times = {}

    started = time.perf_counter()
    # Batched: every (seed, goal) learner in one batch.
    history = batched_ppo.train_tasks(
        "darkroom", np.tile(params, (args.seeds, 1)), [seed for row in seeds for seed in row], config
    )
    times["batched-ppo"] = time.perf_counter() - started
    rewards = history["reward"].reshape(args.seeds, len(goals), args.streams, -1)
    for s in range(args.seeds):
        for g in range(len(goals)):
            returns = episode_returns(rewards[s, g], horizon)
            curves["batched-ppo"][s, g] = deciles(returns)
            final["batched-ppo"][s, g] = returns[:, -1].mean()
    print(f"batched-ppo: {args.seeds * len(goals)} runs in {times['batched-ppo']:.1f} s", flush=True)

    started = time.perf_counter()
    for s in range(args.seeds):
        for g in range(len(goals)):
            one = SB3_SOURCE.run_task("darkroom", params[g], seeds[s][g], config, "cpu", None)
            returns = episode_returns(one["reward"], horizon)
            curves["sb3-ppo"][s, g] = deciles(returns)
            final["sb3-ppo"][s, g] = returns[:, -1].mean()
            print(f"sb3-ppo: goal {goals[g]} seed {seeds[s][g]}: final return {final['sb3-ppo'][s, g]:.1f}", flush=True)
    times["sb3-ppo"] = time.perf_counter() - started
    return {"goals": goals, "seeds": seeds, "config": vars(args), "curves": curves, "final": final, "times": times}


def compare(result: dict) -> bool:
    """Print both learning curves and the final-return distributions; True if batched passes."""
    curves, final = result["curves"], result["final"]
    n_seeds, n_goals, _ = curves["sb3-ppo"].shape

    def spread(values: np.ndarray) -> np.ndarray:
        """SD of one seed's goal-averaged value: between-seed variance pooled within goals."""
        return np.sqrt(values.var(axis=0, ddof=1).mean(axis=0) / n_goals)

    mean_sb3, mean_batched = curves["sb3-ppo"].mean((0, 1)), curves["batched-ppo"].mean((0, 1))
    sd_sb3, sd_batched = spread(curves["sb3-ppo"]), spread(curves["batched-ppo"])
    z = (mean_batched - mean_sb3) / np.sqrt((sd_sb3**2 + sd_batched**2) / n_seeds)
    inside = np.abs(mean_batched - mean_sb3) <= 2 * sd_sb3
    print("\nmean episode return per decile of the run (mean over goals and seeds; +- = one seed's SD)")
    print(f"{'decile':>6} {'sb3-ppo':>16} {'batched-ppo':>16} {'z':>6}  within SB3 mean +- 2 SD")
    for d in range(10):
        print(
            f"{d + 1:>6} {mean_sb3[d]:>9.2f} +- {sd_sb3[d]:<4.2f} {mean_batched[d]:>9.2f} +- {sd_batched[d]:<4.2f} {z[d]:>6.2f}  {'yes' if inside[d] else 'NO'}"
        )

    final_sb3, final_batched = final["sb3-ppo"], final["batched-ppo"]
    final_sd = spread(final_sb3[..., None])[0]
    final_inside = abs(final_batched.mean() - final_sb3.mean()) <= 2 * final_sd
    print("\nfinal-episode return per goal (mean over streams; one value per seed)")
    optimum = get_family("darkroom").max_return(np.array(result["goals"]))
    for g, goal in enumerate(result["goals"]):
        sb3 = " ".join(f"{v:5.1f}" for v in final_sb3[:, g])
        batched = " ".join(f"{v:5.1f}" for v in final_batched[:, g])
        print(f"goal {goal} (optimum {optimum[g]:>2}): sb3 [{sb3}]  batched [{batched}]")
    print(
        f"mean final return: sb3 {final_sb3.mean():.2f}, batched {final_batched.mean():.2f} "
        f"(SB3 one-seed SD {final_sd:.2f}); within SB3 mean +- 2 SD: {'yes' if final_inside else 'NO'}"
    )
    ks = np.abs(np.searchsorted(np.sort(final_sb3.ravel()), np.linspace(0, 20, 201), side="right") / final_sb3.size
                - np.searchsorted(np.sort(final_batched.ravel()), np.linspace(0, 20, 201), side="right") / final_batched.size).max()  # fmt: skip
    print(f"Kolmogorov-Smirnov distance between the final-return distributions over (goal, seed) runs: {ks:.2f}")
    print(
        f"\nwall time: sb3-ppo {result['times']['sb3-ppo']:.1f} s, batched-ppo {result['times']['batched-ppo']:.1f} s"
    )
    passed = bool(inside.all() and final_inside)
    print(f"fidelity check: {'PASS' if passed else 'FAIL'}")
    return passed


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, 11)
    colors = {"sb3-ppo": "tab:blue", "batched-ppo": "tab:orange"}
    for name, values in result["curves"].items():
        per_seed = values.mean(1)  # [seeds, 10]
        for s, curve in enumerate(per_seed):
            left.plot(x, curve, color=colors[name], alpha=0.35, lw=1)
        left.plot(x, per_seed.mean(0), color=colors[name], lw=2.5, label=f"{name} (mean; thin: seeds)")
    left.set(xlabel="decile of the run", ylabel="mean episode return (over goals)", title="Learning on Darkroom")
    left.legend()
    distance = [abs(gx - 4) + abs(gy - 4) for gx, gy in result["goals"]]
    for offset, (name, values) in zip((-0.1, 0.1), result["final"].items()):
        for s in range(values.shape[0]):
            right.scatter(
                np.array(distance) + offset, values[s], color=colors[name], alpha=0.7, label=name if s == 0 else None
            )
    right.plot(
        sorted(distance),
        get_family("darkroom").max_return(np.array(result["goals"]))[np.argsort(distance)],
        "k--",
        lw=1,
        label="optimum",
    )
    right.set(
        xlabel="goal distance from start", ylabel="final-episode return", title="Final episode, per goal and seed"
    )
    right.legend()
    fig.suptitle(
        f"sb3-ppo vs batched-ppo: {result['config']['streams']} streams, {result['config']['steps']} steps per goal"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goals", type=int, default=6, help="how many of the 6 goals (distance 1..6)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per goal (all streams)")
    parser.add_argument("--out", type=Path, default=RESULTS / "source_fidelity.png")
    args = parser.parse_args()
    result = run(args)
    passed = compare(result)
    plot(result, args.out)
    summary = {
        k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in result.items() if k not in ("curves", "final")
    }
    summary |= {
        "curves": {k: v.tolist() for k, v in result["curves"].items()},
        "final": {k: v.tolist() for k, v in result["final"].items()},
    }
    summary["config"] = {k: str(v) for k, v in summary["config"].items()}
    summary["passed"] = passed
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
