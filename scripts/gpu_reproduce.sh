#!/usr/bin/env bash
# The six agents of a grid world (Darkroom by default) at the paper's training config on one GPU,
# trained side by side, then evaluated under the env's standard protocol (darkroom/v1: 8 test goals
# x 5 seeds x 50 episodes).
#
#     bash scripts/gpu_reproduce.sh OUTDIR [--wheels DIR] [--root DIR] [--device cuda]
#                                   [--budget paper|tiny] [--train-seconds 300] [--eval-seconds 150]
#                                   [--agents ad,dicp-ad,dpt,dicp-dpt,idt,dicp-idt] [--keep-every N]
#                                   [--env darkroom|darkroom-permuted]
#
# Written for the GPU machine of a cluster: no network, its own Python (3.12) and CUDA torch.
# It never installs torch: with --wheels DIR (made by scripts/fetch_wheels.sh --missing-on on a
# networked machine: the packages the GPU machine lacks) it installs every wheel of DIR, offline,
# into a folder on PYTHONPATH before the system's packages. The code is this checkout (its
# configs and recipes live beside it). Without --wheels, the dependencies must be importable.
#
# The dataset (<env>-v3, the paper's size) is taken from --root if it is there, else built with --device.
# Each agent trains in its own process (a 4-layer, width-32 Transformer leaves a big GPU idle;
# six processes keep it busy) with the paper's config and `--time-budget`: the first steps'
# speed fixes the total steps (at most the paper's 50K) and the cosine schedule follows it, so
# the run ends in time; run.json records the steps actually run. `--budget tiny` is the CPU dry
# run of the same path (tiny dataset, a few steps, a 2-task smoke evaluation) that the tests run.
#
# OUTDIR gets icrl-bench-gpu.tar.gz (runs: run.json, metrics, checkpoints; results JSON and
# plots; logs; timings.json), summary.md and timings.json.
set -euo pipefail
usage="usage: bash scripts/gpu_reproduce.sh OUTDIR [--wheels DIR] [--root DIR] [--device cuda|cpu] [--budget paper|tiny] [--train-seconds N] [--eval-seconds N] [--agents a,b]"
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || { echo "$usage" >&2; exit 2; }
out="$(mkdir -p "$1" && cd "$1" && pwd)"; shift
wheels="" root="" device=cuda budget=paper train_s=300 eval_s=150 agents="ad,dicp-ad,dpt,dicp-dpt,idt,dicp-idt" keep_every=0 env=darkroom
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --budget) budget="$2"; shift 2 ;;
        --train-seconds) train_s="$2"; shift 2 ;;
        --eval-seconds) eval_s="$2"; shift 2 ;;
        --agents) agents="$2"; shift 2 ;;
        --keep-every) keep_every="$2"; shift 2 ;;  # snapshots for benchmarks/bench_learning_curves.py
        --env) env="$2"; shift 2 ;;
        *) echo "error: unknown option $1. $usage" >&2; exit 2 ;;
    esac
done
case "$budget" in paper|tiny) ;; *) echo "error: --budget is paper or tiny, got $budget" >&2; exit 2 ;; esac
case "$env" in darkroom|darkroom-permuted) ;; *) echo "error: --env is darkroom or darkroom-permuted, got $env" >&2; exit 2 ;; esac
work="$out/work"; rm -rf "$work"; mkdir -p "$work/runs" "$work/results" "$work/logs"
root="${root:-$work/data}"
now() { date +%s.%N; }
t0=$(now)

# -- install (offline) ----------------------------------------------------------------------------
PY="${PYTHON:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # the checkout is the code (configs and recipes live in it)
if [ -n "$wheels" ]; then
    ls "$wheels"/*.whl > /dev/null 2>&1 || { echo "error: $wheels holds no wheels; make them with scripts/fetch_wheels.sh" >&2; exit 1; }
    # The wheels go into one folder on the path before the system's packages; torch stays the system's.
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" "$wheels"/*.whl
    export PYTHONPATH="$repo:$work/site:${PYTHONPATH#"$repo:"}"
fi
"$PY" -c "import icrl_bench, torch" || { echo "error: icrl-bench or a dependency is not importable with $PY; pass --wheels DIR (scripts/fetch_wheels.sh)" >&2; exit 1; }
icrl() { "$PY" -m icrl_bench "$@"; }
if [ "$device" != cpu ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "error: torch sees no CUDA GPU; run with --device cpu (and --budget tiny for a dry run)" >&2; exit 1; }
fi
t_install=$(now)

# -- dataset -----------------------------------------------------------------------------------------
if [ "$budget" = paper ]; then dataset="$env-v3"; preset_args=(); else dataset="$env-tiny-v3"; preset_args=(--preset tiny); fi
icrl build-dataset "$env" "${preset_args[@]}" --root "$root" --device "$device" > "$work/logs/build-dataset.log" 2>&1
t_dataset=$(now)

# -- train, one process per agent ----------------------------------------------------------------------
IFS=, read -r -a agent_list <<< "$agents"
train_args=(--dataset "$dataset" --root "$root" --device "$device" --out "$work/runs" --quiet)
if [ "$budget" = paper ]; then
    train_args+=(--time-budget "$train_s" --set train.num_workers=2 --set "train.keep_every=$keep_every")
else
    train_args+=(--steps 4 --set train.batch_size=4 --set train.num_workers=0 --set model.transformer.n_layer=1
                 --set model.n_transit=20 --set train.val_max_tasks=2 --set train.val_windows_per_task=2)
fi
pids=()
for agent in "${agent_list[@]}"; do
    icrl train --agent "$agent" "${train_args[@]}" > "$work/logs/train-$agent.log" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do wait "${pids[$i]}" || { echo "training ${agent_list[$i]} failed: see logs/train-${agent_list[$i]}.log" >&2; failed=1; }; done
t_train=$(now)

# -- evaluate, one process per agent (standard protocol; a smoke run for the tiny budget) ---------------
eval_args=(--env "$env" --out "$work/results" --quiet --set "device=$device")
[ "$budget" = tiny ] && eval_args+=(--seeds 0 --episodes 2 --tasks 2)
pids=()
for agent in "${agent_list[@]}"; do
    run_dir="$(ls -d "$work/runs/$agent-$dataset-"* 2>/dev/null | head -n 1)"
    [ -n "$run_dir" ] || continue
    timeout "$eval_s" "$PY" -m icrl_bench evaluate --agent "$agent" --checkpoint "$run_dir" "${eval_args[@]}" \
        > "$work/logs/evaluate-$agent.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
t_eval=$(now)

# -- timings, summary, archive ---------------------------------------------------------------------------
"$PY" - "$work" "$t0" "$t_install" "$t_dataset" "$t_train" "$t_eval" "$budget" "$device" <<'PY'
import glob, json, os, platform, sys
import torch
work, t0, t_install, t_dataset, t_train, t_eval = sys.argv[1], *map(float, sys.argv[2:7])
budget, device = sys.argv[7], sys.argv[8]
runs = {}
for run_json in sorted(glob.glob(f"{work}/runs/*/run.json")):
    meta = json.load(open(run_json))
    lines = [json.loads(l) for l in open(os.path.join(os.path.dirname(run_json), "metrics.jsonl"))]
    last = [l for l in lines if "samples_per_s" in l][-1:]
    runs[meta["agent"]] = {"run": os.path.basename(os.path.dirname(run_json)), "steps": meta["config"]["train"]["steps"],
                           "batch_size": meta["config"]["train"]["batch_size"], "time_budget": meta.get("time_budget"),
                           "train_s": last[0]["elapsed_s"] if last else None, "final": {k: v for k, v in (lines[-1] if lines else {}).items()}}
results = {}
for path in sorted(glob.glob(f"{work}/results/*.json")):
    r = json.load(open(path))
    curve = r["summary"]["return_curve"]  # mean return per episode over seeds x tasks
    results[r["agent"]["name"]] = {"file": os.path.basename(path), "ep20": curve[19] if len(curve) >= 20 else None,
                           "ep50": curve[49] if len(curve) >= 50 else None, "final_return": r["summary"]["final_return"],
                           "total_s": r.get("cost", {}).get("total_s")}
timings = {"budget": budget, "device": device, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "torch": torch.__version__, "python": platform.python_version(),
           "install_s": t_install - t0, "dataset_s": t_dataset - t_install, "train_s": t_train - t_dataset,
           "evaluate_s": t_eval - t_train, "total_s": t_eval - t0, "runs": runs, "results": results}
json.dump(timings, open(f"{work}/timings.json", "w"), indent=2, default=str)
lines = [f"# gpu_reproduce: budget {budget} on {timings['gpu'] or device} (torch {torch.__version__})", "",
         f"install {timings['install_s']:.0f} s, dataset {timings['dataset_s']:.0f} s, train {timings['train_s']:.0f} s, "
         f"evaluate {timings['evaluate_s']:.0f} s, total {timings['total_s']:.0f} s", "",
         "| agent | steps x batch | train s | ep 20 | ep 50 | evaluate s |", "|---|---|---|---|---|---|"]
fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
for agent, run in runs.items():
    res = results.get(agent, {})
    lines.append(f"| {agent} | {run['steps']} x {run['batch_size']} | {run['train_s'] or 0:.0f} | {fmt(res.get('ep20'))} | "
                 f"{fmt(res.get('ep50'))} | {fmt(res.get('total_s'))} |")
open(f"{work}/summary.md", "w").write("\n".join(lines) + "\n")
PY
cp "$work/timings.json" "$work/summary.md" "$out/"
tar -czf "$out/icrl-bench-gpu.tar.gz" -C "$work" --exclude='*.old' runs results logs timings.json summary.md
cat "$out/summary.md"
exit "$failed"
