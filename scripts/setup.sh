#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with the pinned vlamix stack. Idempotent.
#
#   bash scripts/setup.sh            # CPU: torch 2.13.0 CPU build
#   TORCH_SPEC="torch==2.13.0" PIP_EXTRA_INDEX_URL=<your CUDA index> bash scripts/setup.sh   # GPU
#   bash scripts/setup.sh --with-ianvs   # also real KubeEdge-Ianvs + Sedna (or VLAMIX_WITH_IANVS=1)
#
# --with-ianvs installs Ianvs's source archive and the Sedna wheel it ships from VLAMIX_IANVS_DIR
# (default ../shared/ianvs, relative to the repository root) with --no-deps, plus the start-up
# modules of requirements-ianvs.txt (pins that change nothing in requirements.txt); .ci/run uses it.
#
# timm and torchvision are installed with --no-deps: timm's dependency on torchvision would otherwise
# pull a CUDA torchvision (and possibly another torch). On a CPU torch, vlamix.core.compat makes the
# CUDA torchvision build importable (no torchvision operator is used).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WITH_IANVS=${VLAMIX_WITH_IANVS:-0}
IANVS_DIR=${VLAMIX_IANVS_DIR:-../shared/ianvs}
for arg in "$@"; do
  case "$arg" in
    --with-ianvs) WITH_IANVS=1 ;;
    *) echo "setup: unknown option $arg (allowed: --with-ianvs)" >&2; exit 2 ;;
  esac
done
ianvs_files=()
if [ "$WITH_IANVS" = 1 ]; then
  shopt -s nullglob
  ianvs_files=("$IANVS_DIR"/sedna-*.whl "$IANVS_DIR"/ianvs-src-*.tar.gz)
  shopt -u nullglob
  if [ "${#ianvs_files[@]}" -ne 2 ]; then
    echo "setup: --with-ianvs needs exactly one sedna-*.whl and one ianvs-src-*.tar.gz in $IANVS_DIR" \
         "(VLAMIX_IANVS_DIR; default ../shared/ianvs beside the repository); found: ${ianvs_files[*]:-nothing}" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
stamp="$VENV/.vlamix-setup-$( (cat requirements.txt requirements-ianvs.txt scripts/setup.sh examples/cloud_VLA_finetune/pyproject.toml; echo "ianvs=$WITH_IANVS ${ianvs_files[*]:-}") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi
pip install -q --upgrade pip
pip install -q "$TORCH_SPEC"
pip install -q -r requirements.txt
pip install -q --no-deps timm==1.0.31 torchvision==0.28.0
pip install -q --no-deps -e examples/cloud_VLA_finetune
if [ "$WITH_IANVS" = 1 ]; then
  pip install -q -r requirements-ianvs.txt
  pip install -q --no-deps "${ianvs_files[@]}"
  echo "setup: ianvs $("$VENV/bin/ianvs" -v) (from $IANVS_DIR)"
fi
"$VENV/bin/python" - <<'PY'
import torch, importlib.metadata as md
assert torch.__version__.startswith("2.13.0"), f"unexpected torch {torch.__version__}: pin it (see requirements.txt)"
print("setup: torch", torch.__version__, "| mujoco", md.version("mujoco"), "| tensorflow-cpu", md.version("tensorflow-cpu"))
PY
rm -f "$VENV"/.vlamix-setup-*
touch "$stamp"
