"""The training section of a benchmark point (:class:`TrainConfig`): steps, batch, optimiser, precision, seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlamix.core.errors import ConfigError
from vlamix.core.settings import check_bool, check_choice, check_int, check_positive, setting
from vlamix.model.settings import BUILTIN_MODELS

#: "auto" = fp32 for the built-in tiny presets on a machine without CUDA, else bf16 (OpenVLA-7B in fp32 needs
#: 30 GB for its weights alone; :func:`resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, model: str) -> str:
    """``precision`` with "auto" resolved for ``model``: "fp32" for a built-in tiny preset on a machine
    without CUDA, "bf16" otherwise."""
    if precision != "auto":
        return precision
    return "fp32" if model in BUILTIN_MODELS and not torch.cuda.is_available() else "bf16"


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation budget and recipe (AdamW, constant learning rate, loss on the action tokens)."""

    train_steps: int = setting(40, role="train", may_change_on_resume=True, unit="optimiser steps", doc="optimiser steps", allowed=">= 0")
    batch_size: int = setting(8, role="train", unit="frames", doc="frames per micro-batch (per data-parallel rank)", allowed=">= 1")
    grad_accumulation_steps: int = setting(1, role="train", unit="micro-batches", doc="micro-batches per optimiser step", allowed=">= 1")
    learning_rate: float = setting(5e-4, role="train", allowed="> 0", doc="AdamW learning rate (constant)")
    precision: str = setting(
        "auto", role="train", allowed=", ".join(PRECISIONS),
        doc="auto: fp32 for the tiny presets without CUDA, else bf16 (weights in bf16 and bf16 autocast)")
    gradient_checkpointing: bool = setting(
        False, role="train", may_change_on_resume=True, doc="recompute activations in the backward pass (less memory)")
    seed: int = setting(7, role="train", allowed="[0, 2**32)", doc="seed of the data stream and the initial weights")

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        check_int("train_steps", self.train_steps, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("grad_accumulation_steps", self.grad_accumulation_steps, 1)
        check_positive("learning_rate", self.learning_rate)
        check_choice("precision", self.precision, PRECISIONS)
        check_bool("gradient_checkpointing", self.gradient_checkpointing)
        check_int("seed", self.seed, 0)
        if self.seed >= 2**32:
            raise ConfigError("seed", f"must be an integer in [0, 2**32) (NumPy's seed range), got {self.seed!r}")
