#!/usr/bin/env bash
# Installs the project with its test dependencies and runs the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
python -m ruff check .
python -m pytest "$@"
