#!/usr/bin/env bash
# Installs the project with its test dependencies, runs ruff and the type check, then the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
python -m ruff check .
# mypy: lt_core strict, jobs, service against mypy-baseline.txt (see the script's --help).
python scripts/typecheck.py
python -m pytest "$@"
