"""Copy a finished training run into `baselines/<env>/<agent>/` with a README made from its records.

    .venv/bin/python scripts/ship_baseline.py runs/<run-dir> [--command "icrl-bench train ..."]

The shipped folder holds the weights and checkpoint JSON (not the optimizer state), the run's
config and metrics; every number in the README is read from those records.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from icrl_bench.run_records import read_metrics, training_seconds, world_size

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", help="the command that made the run (default: rebuilt from run.json)")
    parser.add_argument("--hardware", help="where it trained (default: from run.json's device)")
    parser.add_argument("--note", default="", help="a line on how this run was chosen or made, added to the README")
    parser.add_argument("--to", type=Path, help="folder to ship to (default: baselines/<env>/<agent>/, the agent's default checkpoint)")
    args = parser.parse_args()
    run = json.loads((args.run_dir / "run.json").read_text())
    checkpoint = json.loads((args.run_dir / "checkpoint" / "checkpoint.json").read_text())
    records = read_metrics(args.run_dir / "metrics.jsonl")
    elapsed = training_seconds(records)
    agent, env, dataset = run["agent"], run["env"], run["dataset"]
    train = run["config"]["train"]
    world = world_size(run)
    launcher = f"torchrun --standalone --nproc-per-node {world} -m icrl_bench train" if world > 1 else "icrl-bench train"
    command = args.command or " ".join(
        [f"{launcher} --agent {agent} --dataset {dataset['id']}"]
        + ([f"--preset {run['preset']}"] if run.get("preset") else [])
        + ([f"--device {run['device']}"] if run["device"] != "cpu" else [])
        + [f"--set {o}" for o in run.get("overrides", [])]
        + ([f"--time-budget {run['time_budget']['seconds']:g}"] if run.get("time_budget") else [])
    )
    hardware = args.hardware or ("2-core CPU shared with other jobs" if run["device"] == "cpu" else run["device"])
    budget = run.get("time_budget")
    out = args.to or REPO / "baselines" / env / agent
    default_line = (f"`icrl-bench evaluate --agent {agent} --env {env}` uses this checkpoint by default." if args.to is None
                    else f"Evaluate it with `icrl-bench evaluate --agent {agent} --env {env} --checkpoint {out.resolve().relative_to(REPO)}`.")
    fitted = (f" (fitted by --time-budget {budget['seconds']:g} s from the config's {budget['config_steps']:,} steps)" if budget else "")
    per_rank = f" per rank x {world} torchrun ranks" if world > 1 else ""
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.json", checkpoint["weights_file"]):
        shutil.copy2(args.run_dir / "checkpoint" / name, out / "checkpoint" / name)
    for name in ("run.json", "metrics.jsonl"):
        shutil.copy2(args.run_dir / name, out / name)
    validation = {k.removeprefix("val_"): v for k, v in checkpoint["metrics"].items() if k.startswith("val_") and k != "val_loss"}
    prov = checkpoint["provenance"]
    (out / "README.md").write_text(
        f"""# {agent} on {env} (shipped baseline)

Made by the project's own command (`{args.run_dir.name}`):

    {command}

- dataset: `{dataset['id']}` (content hash `{dataset['content_hash']}`)
- training budget: {checkpoint['step']} steps x batch {train['batch_size']}{per_rank} = {checkpoint['step'] * train['batch_size'] * world:,} windows{fitted}, lr {train['lr']}, {elapsed or 0:.0f} s on {run['device']} ({hardware})
- held-out validation at the last step: {', '.join(f'{k} {v:.3f}' for k, v in sorted(validation.items()))}
- weights sha256 `{checkpoint['weights_sha256']}`; code `{prov['code_commit']}`; torch {prov['packages']['torch']}
- optimizer state is not shipped (a run directory has it; `--resume` needs it)
{('- ' + args.note) if args.note else ''}

{default_line}
"""
    )
    print(f"shipped {args.run_dir} to {out}")


if __name__ == "__main__":
    main()
