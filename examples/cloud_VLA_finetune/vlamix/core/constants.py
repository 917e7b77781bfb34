"""Constants shared across vlamix, each with its source.

Sources:
    openvla/openvla ``experiments/robot/libero/run_libero_eval.py`` (max steps, wait steps),
    openvla/openvla ``prismatic/vla/datasets/rlds/oxe/configs.py`` (LIBERO dataset keys),
    openvla/openvla ``vla-scripts/finetune.py`` (LoRA recipe, prompt).
"""

from __future__ import annotations

#: Action layout: EEF delta xyz (3) + delta roll-pitch-yaw (3) + gripper (1).
ACTION_DIM = 7
#: Steps of the dummy action executed before the policy acts, so objects settle (reference protocol).
NUM_STEPS_WAIT = 10
#: Episode step limit per task suite, from ``run_libero_eval.py`` (longest training demo + margin).
SUITE_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
#: The task suites of the standard LIBERO benchmark that this tool evaluates on.
LIBERO_SUITES = tuple(SUITE_MAX_STEPS)
#: RLDS dataset names of ``openvla/modified_libero_rlds`` (and of our scripted-expert datasets) -> task suite.
DATASET_TO_SUITE = {
    "libero_spatial_no_noops": "libero_spatial",
    "libero_object_no_noops": "libero_object",
    "libero_goal_no_noops": "libero_goal",
    "libero_10_no_noops": "libero_10",
    "libero_90_no_noops": "libero_90",
}
#: RLDS version directory used by ``modified_libero_rlds``: ``<root>/<name>/1.0.0/``.
RLDS_VERSION = "1.0.0"
#: Camera resolution of the RLDS images and of the rollouts before resizing (pixels).
RLDS_IMAGE_SIZE = 256
#: Prompt of OpenVLA (``PurePromptBuilder`` for ``llama2-7b-pure``); the instruction is lower-cased.
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
#: Label id ignored by the cross-entropy loss (PyTorch default).
IGNORE_INDEX = -100

#: Per-step training log of a run folder (JSON lines; written by vlamix.train.finetune).
TRAIN_LOG_NAME = "train_log.jsonl"
