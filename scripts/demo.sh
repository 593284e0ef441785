#!/usr/bin/env bash
# The main job on the small embedded default: build the small Darkroom dataset (minutes on
# 2 cores), inspect and verify it. Data goes to $ICRL_BENCH_ROOT or the user cache dir.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run() { echo "+ icrl-bench $*"; .venv/bin/icrl-bench "$@"; }
run build-dataset darkroom --preset small
run datasets info darkroom-small-v2
run datasets verify darkroom-small-v2
run datasets list
