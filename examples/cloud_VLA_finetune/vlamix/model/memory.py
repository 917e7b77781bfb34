"""Peak memory of a benchmark point, estimated before any work, so that a job that cannot fit is refused with
the estimate instead of being killed for lack of memory hours later.

Estimate (bytes; every term is documented with its source, the constants are calibrated below):

- weights: ``n_params x bytes(dtype)`` (exact count from the model skeleton built on the meta device);
- LoRA (``finetune_mode: lora``): the adapters are float32 (peft upcasts bf16 adapters) with their gradient and
  AdamW's two moments: 16 bytes per trainable parameter, ``r x (in + out)`` per adapted linear layer;
  full fine-tuning: gradient + two AdamW moments in the parameter dtype, 3 x the weights;
- activations kept for the backward pass, per frame and per transformer layer (LLM and both ViT towers):
  ``s h (34 + 5 a s / h)`` bytes in 16-bit precision (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", Sec. 4.1, Eq. 1; x 2 in float32), ``s`` the sequence length,
  ``h`` the hidden size, ``a`` the heads; with gradient checkpointing each layer keeps only its input
  (``2 s h`` bytes) and one layer's activations are recomputed at a time;
- OpenVLA-OFT (L1-regression head): the sequence holds every image's patches, the proprio token and the
  ``chunk x 7`` action slots; the head and proprio projector train in full (no LoRA): gradient + two AdamW moments,
  3 x their weights in the parameter dtype (OFT keeps the head in bf16, ``vla-scripts/finetune.py``);
- policy (rollouts): weights in the evaluation dtype + the KV cache of one batch
  (``2 x layers x s x h x bytes`` per frame) + one layer's activations;
- a fixed runtime overhead (CUDA context and allocator, or the Python / TensorFlow process on the CPU), and on
  the CPU the env workers' memory (one LIBERO + MuJoCo process each).

Calibration (figures a user can compare with): OpenVLA-7B, bf16, this project's builder, on a 2-core / 24 GB
CPU (issue 27, measured at 4c1ee06): 14.5 GB after the build, 16.4 GB peak for one LoRA step at batch 1 with
gradient checkpointing. openvla/openvla README: LoRA fine-tuning at batch 16 without checkpointing needs about
72 GB on one GPU. :data:`ACTIVATION_SAFETY` makes the activation term match the latter (the formula counts a
4h MLP; Llama's SwiGLU MLP and the attention scores of SDPA's math kernel keep more).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from vlamix.model.action_files import is_official_oft_folder, official_recipe
from vlamix.model.checkpoint import TINY_PRESETS
from vlamix.model.configuration import VLAConfig
from vlamix.model.lora import lora_target_modules
from vlamix.model.modeling import OpenVLAForActionPrediction

logger = logging.getLogger(__name__)

GIB = 1024**3
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: Multiplier on the activation formula (calibrated: OpenVLA-7B LoRA, batch 16, no checkpointing ~ 72 GB).
ACTIVATION_SAFETY = 1.35
#: Fixed overhead of the training / policy process: CUDA context + allocator slack, or Python + torch + TF on the CPU.
RUNTIME_OVERHEAD = {"cuda": 1.5 * GIB, "cpu": 2.0 * GIB}
#: Resident memory of one env-worker process (LIBERO, robosuite, MuJoCo, Mesa EGL), CPU RAM.
ENV_WORKER_BYTES = int(0.6 * GIB)
#: Prompt tokens (BOS + "In: What action should the robot take to ...?\nOut:" + action prefix) of a long LIBERO
#: instruction with the Llama tokenizer, plus the 7 action tokens and EOS.
PROMPT_TOKENS = 48


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model: parameter counts and transformer sizes.

    Attributes:
        n_params: all parameters. n_lora_per_rank: LoRA parameters per unit of rank (sum of in + out over the
            adapted linear layers). llm: (layers, hidden, heads). towers: one (layers, hidden, heads, tokens) per ViT.
        vision_tokens: embeddings inserted into the LLM sequence (every image's patches, the proprio token).
        n_action_params: parameters of OFT's action head and proprio projector (0 for the token head; included
            in ``n_params``). extra_tokens: action slots beyond the 7 action tokens of :data:`PROMPT_TOKENS`.
        images: images per observation (the towers run once per image).
    """

    n_params: int
    n_lora_per_rank: int
    llm: tuple[int, int, int]
    towers: tuple[tuple[int, int, int, int], ...]
    vision_tokens: int
    n_action_params: int = 0
    extra_tokens: int = 0
    images: int = 1


@dataclass(frozen=True)
class MemoryEstimate:
    """One stage's estimated peak: ``total`` bytes on ``device``, with ``parts`` (name -> bytes)."""

    stage: str
    device: str
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    def describe(self) -> str:
        inner = ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.parts.items() if v >= 0.05 * GIB)
        return f"{self.stage} on {self.device}: {self.total / GIB:.1f} GiB ({inner})"


def _layer_activation_bytes(tokens: int, hidden: int, heads: int, nbytes: int) -> float:
    """Korthikanti et al. 2022, Eq. 1: activations of one transformer layer for one sample (16-bit: x 1)."""
    return tokens * hidden * (34 + 5 * heads * tokens / hidden) * (nbytes / 2)


@functools.lru_cache(maxsize=16)
def _shape_of_config_json(config_json: str) -> ModelShape:
    config = VLAConfig.from_config_dict(json.loads(config_json), source="<memory estimate>")
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config)
    n_params = sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    per_rank = sum(modules[n].in_features + modules[n].out_features for n in lora_target_modules(model)
                   if isinstance(modules[n], nn.Linear))
    text = config.text_config
    towers = []
    for tower in model._towers():
        prefix = int(getattr(tower, "num_prefix_tokens", 0))
        towers.append((len(tower.blocks), int(tower.embed_dim), int(tower.blocks[0].attn.num_heads),
                       int(tower.patch_embed.num_patches) + prefix))
    n_action = sum(p.numel() for m in (model.action_head, model.proprio_projector) if m is not None
                   for p in m.parameters())
    extra = model.action_head.num_slots - config.action_dim if model.action_head is not None else 0
    return ModelShape(n_params, per_rank, (text.num_hidden_layers, text.hidden_size, text.num_attention_heads),
                      tuple(towers), model.num_vision_tokens, n_action, extra, config.num_images_in_input)


def model_shape(model: str, recipe: dict | None = None) -> ModelShape:
    """:class:`ModelShape` of a built-in preset name or a checkpoint folder (its ``config.json``; a LoRA
    checkpoint without weights has its base model's config; an official OpenVLA-OFT folder its derived recipe),
    with ``recipe`` (action-recipe fields, :meth:`VLAConfig.with_action_recipe`) applied. Built on the meta device:
    no weights are read.

    Raises:
        FileNotFoundError: no ``config.json`` in the folder.
    """
    if model in TINY_PRESETS:
        config = TINY_PRESETS[model]()
    else:
        with open(os.path.join(model, "config.json"), encoding="utf-8") as fh:
            values = json.load(fh)
        values.pop("norm_stats", None)  # irrelevant to the shape, and large
        config = VLAConfig.from_config_dict(values, source=model)
        if is_official_oft_folder(model) and not config.parallel_decoding:
            config = config.with_action_recipe(**official_recipe(model))
    if recipe:
        config = config.with_action_recipe(**recipe)
    values = json.loads(config.to_json_string(use_diff=False))
    values.pop("norm_stats", None)
    return _shape_of_config_json(json.dumps(values, sort_keys=True))


def _activations(shape: ModelShape, batch: int, nbytes: int, checkpointing: bool) -> float:
    layers, hidden, heads = shape.llm
    seq = shape.vision_tokens + PROMPT_TOKENS + shape.extra_tokens
    stacks = [(layers, hidden, heads, seq)] + list(shape.towers) * shape.images
    if checkpointing:  # layer inputs kept, one layer recomputed at a time
        kept = sum(n * t * h * nbytes for n, h, _, t in stacks)
        one = max(_layer_activation_bytes(t, h, a, nbytes) for _, h, a, t in stacks)
        per_frame = kept + one
    else:
        per_frame = sum(n * _layer_activation_bytes(t, h, a, nbytes) for n, h, a, t in stacks)
    return ACTIVATION_SAFETY * per_frame * batch


def estimate_training(shape: ModelShape, *, precision: str, finetune_mode: str, lora_rank: int, batch_size: int,
                      gradient_checkpointing: bool, device: str) -> MemoryEstimate:
    """Peak memory of fine-tuning (weights, trainable state, activations of one micro-batch, overhead).

    Args:
        precision: "fp32" or "bf16" (resolved). finetune_mode: "lora" or "full". batch_size: frames per
            micro-batch. device: "cpu" or "cuda".
    """
    nbytes = BYTES[precision]
    parts = {"weights": float(shape.n_params * nbytes)}
    if finetune_mode == "full":
        parts["gradients + AdamW"] = 3.0 * shape.n_params * nbytes
    else:
        parts["LoRA + gradients + AdamW"] = 16.0 * lora_rank * shape.n_lora_per_rank
        if shape.n_action_params:
            parts["action head + gradients + AdamW"] = 3.0 * shape.n_action_params * nbytes
    parts["activations"] = _activations(shape, batch_size, nbytes, gradient_checkpointing)
    parts["runtime"] = RUNTIME_OVERHEAD["cuda" if device.startswith("cuda") else "cpu"]
    return MemoryEstimate("training", device, parts)


def estimate_policy(shape: ModelShape, *, dtype: str, batch: int, device: str, env_workers: int = 0) -> MemoryEstimate:
    """Peak memory of rollouts: the policy in ``dtype`` with the KV cache of ``batch`` frames, plus (on the CPU,
    where the env workers share the RAM) ``env_workers`` LIBERO processes."""
    nbytes = BYTES[dtype]
    layers, hidden, heads = shape.llm
    seq = shape.vision_tokens + PROMPT_TOKENS + shape.extra_tokens
    parts = {"weights": float(shape.n_params * nbytes),
             "KV cache": float(2 * layers * seq * hidden * nbytes * batch),
             "activations": _layer_activation_bytes(seq, hidden, heads, nbytes) * batch,
             "runtime": RUNTIME_OVERHEAD["cuda" if device.startswith("cuda") else "cpu"]}
    if not device.startswith("cuda"):
        parts["env workers"] = float(env_workers * ENV_WORKER_BYTES)
    return MemoryEstimate("rollouts", device, parts)


def available_bytes(device: str) -> float:
    """Memory this process could still use on ``device``: free GPU memory (``torch.cuda.mem_get_info``) for
    "cuda[:N]", else ``MemAvailable`` of ``/proc/meminfo`` plus this process's resident set (what it holds is
    what the point reuses), falling back to total physical memory where /proc is absent."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return float(torch.cuda.mem_get_info(index)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        with open("/proc/self/status", encoding="ascii") as fh:
            rss = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:")), 0)
        return float(info["MemAvailable"] + rss)
    except (OSError, KeyError, ValueError):
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def device_label(device: str) -> str:
    """What a device is, for the cost columns of the rank files: the GPU's name for "cuda[:N]"
    (``torch.cuda.get_device_name``, e.g. "NVIDIA H100 80GB HBM3"), "cpu (<n> cores)" for the CPU (``os.cpu_count``)."""
    device = str(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_name(index)
    if device.startswith("cuda"):
        return device
    return f"cpu ({os.cpu_count()} cores)"
