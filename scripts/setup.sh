#!/usr/bin/env bash
# Creates .venv (once) and installs the project into it, CPU torch first.
# A GPU user picks their own torch build: TORCH_SPEC="torch==2.5.1" or install it into .venv beforehand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if ! python -c "import torch" >/dev/null 2>&1; then
    # torch==2.13.0 is a CPU build; a bare `torch` would pull several GB of CUDA wheels.
    python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
python -m pip install -q -e ".[all,test]"
