"""vlamix: which data mixture should a vision-language-action model be fine-tuned on?

The library behind the KubeEdge-Ianvs example ``examples/cloud_VLA_finetune``. It LoRA-fine-tunes an
OpenVLA-architecture model on ratio-weighted mixtures of LIBERO RLDS datasets, evaluates every
checkpoint with LIBERO rollouts in MuJoCo and ranks the mixtures by success rate.

Sub-packages:
    vlamix.model  OpenVLA (Prismatic) architecture, action tokenizer, processor, checkpoint I/O.
    vlamix.data   RLDS reading/writing, mixture sampling, action norm stats.
    vlamix.sim    LIBERO environments, scripted expert, demonstration recording.
    vlamix.train  LoRA fine-tuning loop.
    vlamix.eval   LIBERO rollouts and success-rate statistics.
    vlamix.bench  Benchmark-job runner that reproduces Ianvs's grid and rank files.
"""

__version__ = "0.1.0"
