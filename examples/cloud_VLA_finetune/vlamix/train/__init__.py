"""vlamix.train: LoRA fine-tuning of OpenVLA-architecture models on RLDS mixtures.

Modules:
    finetune     ``finetune(cfg, out_dir)`` / ``FineTuner`` (AdamW on LoRA, grad accumulation, bf16 autocast,
                 gradient checkpointing, DDP under torchrun, checkpoints, resume); CLI
                 ``vlamix finetune --config X --out DIR``
    metrics      teacher-forced action-token accuracy and L1 (as openvla ``vla-scripts/finetune.py`` logs)
    state        seeding, RNG capture/restore, ``training_state.pt``
    distributed  ``torchrun`` process group and rank helpers
"""

from vlamix.train.finetune import FineTuner, checkpoint_name, finetune

__all__ = ["FineTuner", "checkpoint_name", "finetune"]
