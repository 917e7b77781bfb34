"""vlamix.model: the OpenVLA (Prismatic) architecture, built from timm and transformers modules.

Modules:
    configuration    ``VLAConfig`` (official ``OpenVLAConfig`` fields; presets ``tiny()`` and ``openvla_7b()``)
    modeling         ``OpenVLAForActionPrediction`` (forward with loss, batched greedy ``predict_action``)
    action_tokenizer ``ActionTokenizer`` (256 bins in [-1, 1] on token ids 31744..31999)
    processor        ``VLAProcessor`` (image transform, eval centre crop, prompt, training / inference batches)
    tokenizer        ``build_tiny_tokenizer`` (the tiny preset's byte-level BPE)
    checkpoint       ``load_vla`` / ``save_vla`` (official HF folders, ours, "tiny")
    lora             ``apply_lora`` / ``merge_lora`` (peft, the OpenVLA fine-tuning recipe)

The names below are imported lazily, so ``import vlamix.model.action_tokenizer`` does not pull in torch/timm.

Usage::

    from vlamix.model import load_vla
    model, processor = load_vla("tiny")
    inputs = processor.inference_inputs(images, ["put the bowl on the plate"])
    actions = model.predict_action(**inputs, unnorm_key="libero_spatial_no_noops")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VLAConfig": "vlamix.model.configuration",
    "OpenVLAForActionPrediction": "vlamix.model.modeling",
    "VLAOutput": "vlamix.model.modeling",
    "unnormalize_actions": "vlamix.model.modeling",
    "ActionTokenizer": "vlamix.model.action_tokenizer",
    "VLAProcessor": "vlamix.model.processor",
    "build_tiny_tokenizer": "vlamix.model.tokenizer",
    "load_vla": "vlamix.model.checkpoint",
    "save_vla": "vlamix.model.checkpoint",
    "build_tiny": "vlamix.model.checkpoint",
    "apply_lora": "vlamix.model.lora",
    "merge_lora": "vlamix.model.lora",
    "save_lora_adapter": "vlamix.model.lora",
    "load_lora_adapter": "vlamix.model.lora",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vlamix.model' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
