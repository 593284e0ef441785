#!/usr/bin/env bash
# The main job on the small embedded default, end to end on a laptop CPU:
#   build the small Darkroom dataset (~1 min), train DICP-AD briefly (~3 min), evaluate it
#   under the standard protocol on one seed, and show the leaderboard.
# Data goes to $ICRL_BENCH_ROOT or the user cache dir; runs and results under ./demo/.
# A short run shows the machinery, not the paper's numbers: `--preset cpu` without --steps
# trains for 2,000 steps, and the paper's config wants a GPU (docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run() { echo "+ icrl-bench $*"; .venv/bin/icrl-bench "$@"; }
run build-dataset darkroom --preset small
run datasets info darkroom-small-v3 --tasks 10
run datasets verify darkroom-small-v3
run train --agent dicp-ad --dataset darkroom-small-v3 --preset cpu --steps 300 --threads 1 --out demo/runs --quiet
run_dir="$(ls -td demo/runs/dicp-ad-darkroom-small-v3-cpu-* | head -n 1)"
run evaluate --agent dicp-ad --checkpoint "$run_dir" --env darkroom --seeds 0 --out demo/results --quiet
run leaderboard show --env darkroom
