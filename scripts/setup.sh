#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with the pinned vlamix stack. Idempotent.
#
#   bash scripts/setup.sh            # CPU: torch 2.13.0 CPU build
#   TORCH_SPEC="torch==2.13.0" PIP_EXTRA_INDEX_URL=<your CUDA index> bash scripts/setup.sh   # GPU
#
# timm and torchvision are installed with --no-deps: timm's dependency on torchvision would otherwise
# pull a CUDA torchvision (and possibly another torch). On a CPU torch, vlamix._compat makes the
# CUDA torchvision build importable (no torchvision operator is used).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
stamp="$VENV/.vlamix-setup-$(cat requirements.txt scripts/setup.sh examples/cloud_VLA_finetune/pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi
pip install -q --upgrade pip
pip install -q "$TORCH_SPEC"
pip install -q -r requirements.txt
pip install -q --no-deps timm==1.0.31 torchvision==0.28.0
pip install -q --no-deps -e examples/cloud_VLA_finetune
"$VENV/bin/python" - <<'PY'
import torch, importlib.metadata as md
assert torch.__version__.startswith("2.13.0"), f"unexpected torch {torch.__version__}: pin it (see requirements.txt)"
print("setup: torch", torch.__version__, "| mujoco", md.version("mujoco"), "| tensorflow-cpu", md.version("tensorflow-cpu"))
PY
rm -f "$VENV"/.vlamix-setup-*
touch "$stamp"
