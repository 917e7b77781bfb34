"""LoRA on every linear layer of OpenVLA, with peft (the openvla ``vla-scripts/finetune.py`` recipe).

Recipe (finetune.py): ``LoraConfig(r=32, lora_alpha=min(32, 16), lora_dropout=0.0, target_modules="all-linear",
init_lora_weights="gaussian")`` on the whole ``OpenVLAForActionPrediction``. For a ``PreTrainedModel`` peft's
"all-linear" selects every ``nn.Linear`` except the output layer (``lm_head``). Our model is a plain ``nn.Module``,
for which peft's shorthand would include ``lm_head``; :func:`lora_target_modules` therefore lists the same layers
explicitly: all linear layers of both vision towers (including their unused last block and SigLIP's attention-pool
head, as official), the projector and the LLM, but not ``language_model.lm_head``. OpenVLA-OFT's action head and
proprio projector are not adapted either: OFT builds them beside the LoRA-wrapped VLA and trains all their
weights (``vla-scripts/finetune.py``: ``init_module(L1RegressionActionHead, ...)`` after ``get_peft_model``);
:func:`apply_lora` leaves them trainable.

Usage::

    from vlamix.model.lora import apply_lora, merge_lora
    peft_model = apply_lora(model, rank=32, alpha=16)   # only LoRA weights trainable
    plain = merge_lora(peft_model)                        # W + (alpha / r) B A folded in
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn as nn

from vlamix.core.compat import ensure_torchvision_importable

ensure_torchvision_importable()

from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict  # noqa: E402
from peft.tuners.lora import Linear as LoraLinear  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

from vlamix.model.action_head import ACTION_MODULES  # noqa: E402

logger = logging.getLogger(__name__)

#: Module name of the LLM output layer, excluded from LoRA as peft's "all-linear" excludes the output embeddings.
OUTPUT_LAYER = "language_model.lm_head"


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of every ``nn.Linear`` of ``model`` except the LLM output layer (sorted): peft's "all-linear";
    OFT's action head and proprio projector (fully trained, never adapted) are left out too."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return sorted(n for n in names if n != OUTPUT_LAYER and not n.endswith("." + OUTPUT_LAYER)
                  and n.split(".", 1)[0] not in ACTION_MODULES)


def apply_lora(model: nn.Module, rank: int = 32, alpha: int = 16, dropout: float = 0.0) -> PeftModel:
    """Wrap ``model`` with LoRA adapters on all linear layers; freezes everything else.

    Args:
        model: ``OpenVLAForActionPrediction``. rank: LoRA rank r (32). alpha: scaling numerator, the update is
            (alpha / r) B A (OpenVLA: min(rank, 16)). dropout: LoRA dropout (0.0).
    Returns:
        ``peft.PeftModel``; calling it runs the model's ``forward``; ``predict_action`` etc. pass through. Trainable:
        the adapters, and every weight of OFT's action head and proprio projector when the model has them.
    Raises:
        ValueError: rank < 1, alpha <= 0 or dropout outside [0, 1).
    """
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    config = LoraConfig(
        r=int(rank),
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=lora_target_modules(model),
        init_lora_weights="gaussian",
    )
    peft_model = get_peft_model(model, config)
    for name in ACTION_MODULES:  # OFT: trained in full beside the adapters
        module = getattr(model, name, None)
        if module is not None:
            module.requires_grad_(True)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA rank %d alpha %s: %d trainable of %d parameters (%.2f%%)", rank, alpha, trainable, total,
                100.0 * trainable / max(total, 1))
    return peft_model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the LoRA updates into the base weights, in place, and return the plain model (no peft wrappers).

    Per adapted layer: ``W <- cast(float32(W) + s * float32(B) @ float32(A))`` with ``s = alpha / r``, i.e. the
    update is computed and added in float32 and the result is rounded to the weight's dtype ONCE. peft's own
    ``merge_and_unload`` computes the update in the adapter dtype on CUDA (it upcasts only on the CPU) and adds it
    to the bf16 weight in bf16, which moved tiny-model actions by up to 0.94 (normalised units) against the
    unmerged adapter in a bf16 run. One layer at a time, so the extra memory is one float32 copy of the largest
    adapted weight (180 MB for Llama-2-7B's MLP), never a second copy of the model; the base weights keep their
    storage. A model without adapters is returned unchanged.

    Raises:
        NotImplementedError: an adapter type this recipe does not cover (DoRA, fan-in-fan-out layers, non-linear
            LoRA layers), rather than merging it wrongly.
    """
    if not isinstance(model, PeftModel):
        return model
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            if not isinstance(module, LoraLinear) or module.fan_in_fan_out:
                raise NotImplementedError(f"merge_lora: {name} is a {type(module).__name__}; only nn.Linear LoRA layers merge here")
            weight = module.get_base_layer().weight
            for adapter in module.active_adapters:
                if adapter not in module.lora_A:
                    continue
                if module.use_dora.get(adapter, False):
                    raise NotImplementedError(f"merge_lora: {name} uses DoRA")
                a = module.lora_A[adapter].weight.to(device=weight.device, dtype=torch.float32)  # [r, in]
                b = module.lora_B[adapter].weight.to(device=weight.device, dtype=torch.float32)  # [out, r]
                merged = weight.float().addmm_(b, a, alpha=float(module.scaling[adapter]))  # [out, in], float32
                weight.copy_(merged)  # the single rounding to the weight's dtype
                del merged
    return model.unload()  # drop the adapters and wrappers; the base layers keep the merged weights


def is_lora_model(model: nn.Module) -> bool:
    """True for a ``peft.PeftModel``."""
    return isinstance(model, PeftModel)


def base_model_of(model: nn.Module) -> nn.Module:
    """The wrapped ``OpenVLAForActionPrediction`` of a PeftModel (with its LoRA layers), or ``model`` itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def save_lora_adapter(model: PeftModel, folder: str) -> None:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (peft format) into ``folder``.

    Raises:
        TypeError: ``model`` has no adapters.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"save_lora_adapter needs a peft model (apply_lora), got {type(model).__name__}")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)


def load_lora_adapter(model: nn.Module, folder: str, is_trainable: bool = False) -> PeftModel:
    """Attach the adapter saved in ``folder`` to ``model`` (an ``OpenVLAForActionPrediction``).

    Raises:
        FileNotFoundError: ``folder`` has no ``adapter_config.json``.
    """
    if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
        raise FileNotFoundError(f"no LoRA adapter (adapter_config.json) in {folder}")
    return PeftModel.from_pretrained(model, folder, is_trainable=is_trainable)


def set_adapter_state(model: PeftModel, state: dict) -> Any:
    """Load adapter tensors (``adapter_model.safetensors`` content) into ``model``'s LoRA layers (peft's
    ``set_peft_model_state_dict``); returns its result (``missing_keys``, ``unexpected_keys``)."""
    return set_peft_model_state_dict(model, state)
