#!/usr/bin/env bash
# Set up .venv (first run only) and run the default benchmark grid (three suites: static spatial:object:goal
# mixtures 2:2:1 and 1:1:1, a skill-level task_balanced row, the scripted-expert reference row; tiny
# OpenVLA-architecture model, scripted-expert demonstrations recorded on first run and cached).
# Results: workspace/vla_mixture_bench/rank/{all_rank,selected_rank}.csv and .../report/report.md
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
bash scripts/setup.sh
exec .venv/bin/vlamix run -f "${1:-examples/cloud_VLA_finetune/singletask_learning_bench/benchmarkingjob.yaml}"
