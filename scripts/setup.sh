#!/usr/bin/env bash
# Create .venv and install icrl-bench into it, torch first (a CPU build where one is
# available locally; an unpinned torch would pull several GB of CUDA packages).
# Re-running is cheap: nothing is reinstalled while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.icrl-bench-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$(grep '^torch==' constraints.txt)"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
