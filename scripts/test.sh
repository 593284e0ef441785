#!/usr/bin/env bash
# Install (if needed), lint (ruff, as CI enforces it) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -q "$@"
