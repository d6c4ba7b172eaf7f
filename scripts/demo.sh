#!/usr/bin/env bash
# Installs the project and runs the demo: a local Ray, the service, and a real long-tail job on digits_lt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
exec longtail demo "$@"
