#!/usr/bin/env bash
# The main job on the small embedded default, end to end on a laptop CPU (~3 min):
#   build the small Darkroom dataset (~1 min), train DICP-AD briefly (the machinery, not the
#   paper's numbers), then evaluate the shipped AD checkpoint (its laptop budget: 27 min of one
#   CPU core, baselines/darkroom/ad/) on the 8 unseen test goals: its return rises over the episodes,
#   learning each goal in context, and show the leaderboard.
# Data goes to $ICRL_BENCH_ROOT or the user cache dir; runs and results under ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run() { echo "+ icrl-bench $*"; .venv/bin/icrl-bench "$@"; }
run build-dataset darkroom --preset small
run datasets info darkroom-small-v3 --tasks 10
run datasets verify darkroom-small-v3
run train --agent dicp-ad --dataset darkroom-small-v3 --preset cpu --steps 300 --threads 1 --out demo/runs --quiet
run evaluate --agent ad --env darkroom --seeds 0 --out demo/results --quiet
.venv/bin/python - <<'PY'
import json
curve = json.load(open("demo/results/ad-darkroom-s1-e50.json"))["summary"]["return_curve"]
print("in-context learning on unseen goals, mean return per episode (shipped AD, seed 0):")
print("  " + "  ".join(f"ep {e}: {curve[e - 1]:.1f}" for e in (1, 5, 10, 20, 30, 50)))
PY
run leaderboard show --env darkroom
