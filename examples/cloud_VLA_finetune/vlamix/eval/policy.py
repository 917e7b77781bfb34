"""The policy that LIBERO rollouts query: an OpenVLA-architecture checkpoint behind ``act()``.

A policy maps a batch of processed camera images and instructions to un-normalised actions in
model space (the space of OpenVLA's ``libero_dataset_transform``):

    act(images: uint8 [B, 224, 224, 3], instructions: list[str] (B), suite: str)
        -> float64 [B, 7] = EEF delta xyz (3) + delta roll-pitch-yaw (3) + gripper (1),
           gripper in [0, 1] with 1 = open, 0 = close.

The rollout (:mod:`vlamix.eval.rollout`) turns the gripper into the environment's convention.
Anything with this ``act`` method can be rolled out; tests use small stand-ins.

Reference: openvla/openvla ``experiments/robot/openvla_utils.py`` (``get_vla_action``: optional
centre crop, prompt, ``predict_action(..., unnorm_key)``) and
``experiments/robot/libero/run_libero_eval.py`` (the ``_no_noops`` un-normalisation key fallback).

Usage::

    from vlamix.eval.policy import VLAPolicy
    policy = VLAPolicy("workspace/ckpt", device="cpu")
    actions = policy.act(images, ["put the bowl on the plate"], suite="libero_spatial")
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from vlamix.constants import ACTION_DIM

logger = logging.getLogger(__name__)


@runtime_checkable
class Policy(Protocol):
    """What a rollout needs from a policy (see the module docstring for shapes and units)."""

    def act(self, images: np.ndarray, instructions: Sequence[str], suite: str) -> np.ndarray: ...


class UnnormKeyError(KeyError):
    """No action un-normalisation statistics fit the request; the message lists the available keys."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def resolve_unnorm_key(norm_stats: Mapping[str, Any] | None, suite: str, unnorm_key: str | None = None) -> str:
    """The key of ``norm_stats`` whose action statistics un-normalise actions for ``suite``.

    Order: ``unnorm_key`` if given (it must exist); else ``<suite>_no_noops`` (the RLDS dataset
    names of ``openvla/modified_libero_rlds``, the official fallback); else ``suite``; else the only
    key when there is exactly one.

    Args:
        norm_stats: the checkpoint's ``dataset_statistics.json`` content ({dataset name: {...}}).
        suite: LIBERO task suite name, e.g. "libero_spatial".
        unnorm_key: explicit key, or None.
    Returns:
        the key (str).
    Raises:
        UnnormKeyError (a KeyError): no key fits; the message names the tried keys and lists the available ones.
    """
    keys = list(norm_stats or {})
    if unnorm_key is not None:
        if unnorm_key in keys:
            return unnorm_key
        raise UnnormKeyError(
            f"unnorm_key '{unnorm_key}' is not in the checkpoint's norm stats; available keys: {', '.join(keys) or '(none)'}"
        )
    for candidate in (f"{suite}_no_noops", suite):
        if candidate in keys:
            return candidate
    if len(keys) == 1:
        logger.info("un-normalising actions for suite '%s' with the checkpoint's only norm-stats key '%s'", suite, keys[0])
        return keys[0]
    raise UnnormKeyError(
        f"no action norm stats for suite '{suite}': tried '{suite}_no_noops' and '{suite}'; available keys: "
        f"{', '.join(keys) or '(none: the checkpoint has no dataset_statistics.json)'}; pass unnorm_key to choose one"
    )


def _torch_dtype(dtype: Any, device: str):
    import torch

    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be a torch.dtype or one of {', '.join(names)}, got {dtype!r}")
    return names[dtype]


class VLAPolicy:
    """An OpenVLA-architecture checkpoint as a rollout policy (greedy decoding, batched).

    Args:
        checkpoint: checkpoint folder (ours or an official OpenVLA HF folder) or a built-in model
            name, passed to :func:`vlamix.model.checkpoint.load_vla`.
        device: torch device string ("cpu", "cuda", "cuda:1").
        unnorm_key: norm-stats key for un-normalisation; None picks one per suite
            (:func:`resolve_unnorm_key`).
        center_crop: centre-crop each image (90% area) and resize back before the processor, as
            OpenVLA's LIBERO eval does for checkpoints trained with random-crop augmentation.
        dtype: model dtype (torch.dtype or "fp32"/"bf16"); default bf16 on CUDA, fp32 on CPU.
    Raises:
        whatever ``load_vla`` raises for a missing or malformed checkpoint.
    """

    def __init__(
        self,
        checkpoint: str,
        device: str = "cpu",
        unnorm_key: str | None = None,
        center_crop: bool = False,
        dtype: Any = None,
    ):
        from vlamix.model.checkpoint import load_vla

        model, processor = load_vla(checkpoint, device=device, dtype=_torch_dtype(dtype, device))
        self._setup(model, processor, device, unnorm_key, center_crop)
        self.checkpoint = checkpoint

    @classmethod
    def from_model(
        cls, model: Any, processor: Any, device: str = "cpu", unnorm_key: str | None = None, center_crop: bool = False
    ) -> "VLAPolicy":
        """Wrap an already loaded ``(model, processor)`` pair (as returned by ``load_vla``)."""
        self = cls.__new__(cls)
        self._setup(model, processor, device, unnorm_key, center_crop)
        self.checkpoint = None
        return self

    def _setup(self, model: Any, processor: Any, device: str, unnorm_key: str | None, center_crop: bool) -> None:
        if not isinstance(center_crop, bool):
            raise ValueError(f"center_crop must be true or false, got {center_crop!r}")
        self.model = model
        self.processor = processor
        self.device = device
        self.unnorm_key = unnorm_key
        self.center_crop = center_crop
        self._keys: dict[str, str] = {}
        if hasattr(model, "eval"):
            model.eval()

    def unnorm_key_for(self, suite: str) -> str:
        """The norm-stats key used for ``suite`` (cached). Raises :class:`UnnormKeyError`."""
        if suite not in self._keys:
            self._keys[suite] = resolve_unnorm_key(getattr(self.model, "norm_stats", None), suite, self.unnorm_key)
        return self._keys[suite]

    def _model_dtype(self):
        try:
            return next(self.model.parameters()).dtype
        except (AttributeError, StopIteration):
            return None

    def act(self, images: np.ndarray, instructions: Sequence[str], suite: str) -> np.ndarray:
        """Predict one action per image.

        Args:
            images: uint8 [B, H, W, 3] RGB (rollouts pass the 224x224 output of
                :func:`vlamix.eval.image.preprocess_image`).
            instructions: B language instructions (the processor lower-cases them).
            suite: LIBERO task suite, selects the un-normalisation statistics.
        Returns:
            float64 [B, 7] un-normalised actions in model space (gripper in [0, 1], 1 = open).
        Raises:
            ValueError: wrong image dtype/shape or instruction count; UnnormKeyError: see
            :func:`resolve_unnorm_key`; RuntimeError: the model returned a wrong shape.
        """
        import torch

        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {list(images.shape)}")
        if isinstance(instructions, str) or len(instructions) != images.shape[0]:
            raise ValueError(f"need one instruction per image ({images.shape[0]}), got {instructions!r}")
        key = self.unnorm_key_for(suite)
        if self.center_crop:
            images = self.processor.center_crop(images)
        inputs = self.processor.inference_inputs(images, list(instructions))
        dtype = self._model_dtype()
        moved = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point() and dtype is not None:
                    value = value.to(dtype)
            moved[name] = value
        with torch.inference_mode():
            actions = self.model.predict_action(**moved, unnorm_key=key)
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().float().cpu().numpy()
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (images.shape[0], ACTION_DIM):
            raise RuntimeError(f"predict_action returned shape {list(actions.shape)}, expected [{images.shape[0]}, {ACTION_DIM}]")
        return actions
