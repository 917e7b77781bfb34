"""The policy that LIBERO rollouts query: an OpenVLA-architecture checkpoint behind ``act()``.

A policy maps a batch of processed camera images and instructions to un-normalised actions in
model space (the space of OpenVLA's ``libero_dataset_transform``):

    act(images: uint8 [B, 224, 224, 3], instructions: list[str] (B), suite: str or list[str] (B))
        -> float64 [B, 7] = EEF delta xyz (3) + delta roll-pitch-yaw (3) + gripper (1),
           gripper in [0, 1] with 1 = open, 0 = close.

The rollout (:mod:`vlamix.eval.rollout`) turns the gripper into the environment's convention.
Anything with this ``act`` method can be rolled out; tests use small stand-ins. A policy that declares
``uses_state = True`` also gets ``states=[...]``, the env slots' privileged observations (the scripted
expert, :class:`vlamix.eval.expert_policy.ExpertPolicy`; :func:`vlamix.eval.server.call_policy`).

Action chunks (OpenVLA-OFT checkpoints, ``action_head: l1_regression``; :meth:`VLAPolicy.act_chunk`)::

    act_chunk(images, instructions, suite, wrist_images=None, proprio=None)
        -> float64 [B, chunk, 7], each action as ``act`` returns it (model space, gripper in [0, 1], 1 = open)

``policy.inputs`` names what a policy reads besides the primary image and the instruction (``"wrist_image"``:
uint8 [B, 224, 224, 3] wrist camera processed like the primary image; ``"proprio"``: float [B, 8] raw state = EEF
position (3) + axis-angle (3) + gripper joint positions (2), normalised here with the checkpoint's proprio statistics
as OFT's evaluation does: q01/q99 with clipping, no min == max zeroing), so that a server asks the environments only
for those. ``policy.action_chunk`` is the chunk length (1 for token heads, whose ``act_chunk`` is ``act`` with a chunk
axis). The gripper post-processing is the same for both heads and stays in the rollout (:func:`vlamix.eval.envs.
model_to_env_action`: OFT's ``normalize_gripper_action(binarize=True)`` then ``invert_gripper_action``, in that
order, as OpenVLA's); OFT executes all 8 actions of a chunk before the next observation (``open_loop_steps``).

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

from vlamix.core.constants import ACTION_DIM
from vlamix.core.suites import base_suite
from vlamix.data.normalization import NORM_EPS, normalize_proprio, unnormalize_actions

logger = logging.getLogger(__name__)


@runtime_checkable
class Policy(Protocol):
    """What a rollout needs from a policy (see the module docstring for shapes and units)."""

    def act(self, images: np.ndarray, instructions: Sequence[str], suite: str | Sequence[str]) -> np.ndarray: ...


#: Observation inputs a policy may read besides the primary image and the instruction (``VLAPolicy.inputs``).
POLICY_INPUTS = ("wrist_image", "proprio")


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


#: Accepted ``dtype`` names -> canonical short names (recorded in episode rows).
DTYPE_NAMES = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16"}


def resolve_device(device: str = "auto") -> str:
    """The torch device string rollouts use: "auto" -> "cuda:<current>" when CUDA is available, else "cpu".

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N".
    Returns:
        "cpu" or "cuda:N" (N an index < ``torch.cuda.device_count()``).
    Raises:
        ValueError: another value, or CUDA requested on a machine without it (the message names the value).
    """
    import torch  # torch: `import vlamix.eval` must not load it (env workers import this package)

    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__}); use auto or cpu")
    index = torch.cuda.current_device() if device == "cuda" else int(device[5:])
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return f"cuda:{index}"


def dtype_name(dtype: Any, device: str) -> str:
    """Canonical dtype name for ``device``: "auto"/None -> "bf16" on CUDA, "fp32" on the CPU.

    Raises:
        ValueError: unknown name (lists the allowed ones), or fp16 on the CPU (no fp16 CPU kernels for
        half the model; use bf16 or fp32 there).
    """
    import torch  # torch: `import vlamix.eval` must not load it (env workers import this package)

    if dtype is None or dtype == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    if isinstance(dtype, torch.dtype):
        names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        if dtype not in names:
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        name = names[dtype]
    elif dtype in DTYPE_NAMES:
        name = DTYPE_NAMES[dtype]
    else:
        raise ValueError(f"dtype must be one of auto, fp32, bf16, fp16, got {dtype!r}")
    if name == "fp16" and not str(device).startswith("cuda"):
        raise ValueError("dtype fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return name


def _torch_dtype(dtype: Any, device: str):
    import torch  # torch: `import vlamix.eval` must not load it (env workers import this package)

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name(dtype, device)]


class VLAPolicy:
    """An OpenVLA-architecture checkpoint as a rollout policy (greedy decoding, batched).

    Args:
        checkpoint: checkpoint folder (ours or an official OpenVLA HF folder) or a built-in model
            name, passed to :func:`vlamix.model.checkpoint.load_vla`.
        device: "auto", "cpu", "cuda" or "cuda:N" (:func:`resolve_device`).
        unnorm_key: norm-stats key for un-normalisation; None picks one per suite from its base
            suite (:func:`vlamix.core.suites.base_suite`, then :func:`resolve_unnorm_key`).
        center_crop: centre-crop each image (90% area) and resize back before the processor, as
            OpenVLA's LIBERO eval does for checkpoints trained with random-crop augmentation; None (default)
            follows the checkpoint (:func:`vlamix.model.checkpoint.checkpoint_image_aug`).
        dtype: model dtype (torch.dtype or "auto"/"fp32"/"bf16"/"fp16"); "auto" = bf16 on CUDA, fp32 on CPU.
        merge_adapter: fold a LoRA adapter into the weights (evaluation runs a plain model: no
            adapter overhead per layer; same outputs up to rounding).
    Attributes: ``device`` ("cpu" or "cuda:N") and ``dtype`` ("fp32", "bf16", "fp16") actually used.
    Raises:
        ValueError: a bad device/dtype (CUDA requested without CUDA) before anything is loaded;
        whatever ``load_vla`` raises for a missing or malformed checkpoint.
    """

    def __init__(
        self,
        checkpoint: str,
        device: str = "cpu",
        unnorm_key: str | None = None,
        center_crop: bool | None = None,
        dtype: Any = None,
        merge_adapter: bool = True,
    ):
        # loads torch: `import vlamix.eval` must not (env workers import this package)
        from vlamix.model.checkpoint import checkpoint_image_aug, load_vla

        if center_crop is None:
            center_crop = checkpoint_image_aug(checkpoint)
        device = resolve_device(device)
        name = dtype_name(dtype, device)
        model, processor = load_vla(checkpoint, device=device, dtype=_torch_dtype(name, device),
                                    merge_adapter=merge_adapter)
        self._setup(model, processor, device, unnorm_key, center_crop)
        self.dtype = name
        self.checkpoint = checkpoint

    @classmethod
    def from_model(
        cls, model: Any, processor: Any, device: str = "cpu", unnorm_key: str | None = None, center_crop: bool = False
    ) -> "VLAPolicy":
        """Wrap an already loaded ``(model, processor)`` pair (as returned by ``load_vla``)."""
        self = cls.__new__(cls)
        self._setup(model, processor, device, unnorm_key, center_crop)
        try:
            self.dtype = dtype_name(self._model_dtype(), device)
        except ValueError:
            self.dtype = None
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
        config = getattr(model, "config", None)
        self.parallel = bool(getattr(config, "parallel_decoding", False))
        #: chunk length of one policy query (1 for token heads)
        self.action_chunk = int(config.action_chunk) if self.parallel else 1
        #: observation inputs this policy reads besides the primary image and the instruction (:data:`POLICY_INPUTS`)
        self.inputs: tuple[str, ...] = tuple(
            name for name, used in (("wrist_image", self.parallel and config.num_images_in_input > 1),
                                    ("proprio", self.parallel and bool(config.use_proprio))) if used
        )

    def unnorm_key_for(self, suite: str) -> str:
        """The norm-stats key used for ``suite``: that of its base suite (cached). Raises :class:`UnnormKeyError`."""
        if suite not in self._keys:
            self._keys[suite] = resolve_unnorm_key(getattr(self.model, "norm_stats", None), base_suite(suite),
                                                   self.unnorm_key)
        return self._keys[suite]

    def _model_dtype(self):
        try:
            return next(self.model.parameters()).dtype
        except (AttributeError, StopIteration):
            return None

    def act(self, images: np.ndarray, instructions: Sequence[str], suite: str | Sequence[str],
            variants: Sequence[str] | None = None, *, wrist_images: np.ndarray | None = None,
            proprio: np.ndarray | None = None) -> np.ndarray:
        """Predict one action per image, in one forward pass for the whole batch (for a chunk policy: the first
        action of :meth:`act_chunk`; ``wrist_images`` / ``proprio`` as there).

        Args:
            images: uint8 [B, H, W, 3] RGB (rollouts pass the 224x224 output of
                :func:`vlamix.eval.image.preprocess_image`).
            instructions: B language instructions (the processor lower-cases them).
            suite: LIBERO task suite of every row (str), or one per row (B names): selects each row's
                un-normalisation statistics (:meth:`unnorm_key_for`); the model runs once either way.
            variants: per-image instruction variant (LIBERO-PRO); forwarded to the processor's
                ``inference_inputs(..., variants=...)`` only when one is not "original".
        Returns:
            float64 [B, 7] un-normalised actions in model space (gripper in [0, 1], 1 = open).
        Raises:
            ValueError: wrong image dtype/shape, instruction or suite count; UnnormKeyError: see
            :func:`resolve_unnorm_key`; NonFiniteLogitsError: a NaN/Inf logit in some row
            (:meth:`vlamix.model.modeling.OpenVLAForActionPrediction.predict_action_ids`).
        """
        if self.parallel:
            chunks = self.act_chunk(images, instructions, suite, variants, wrist_images=wrist_images, proprio=proprio)
            return chunks[:, 0]
        import torch  # torch: `import vlamix.eval` must not load it (env workers import this package)

        images, keys = self._checked(images, instructions, suite)
        if self.center_crop:
            images = self.processor.center_crop(images)
        if variants is not None and any(v != "original" for v in variants):
            if len(variants) != images.shape[0]:
                raise ValueError(f"need one instruction variant per image ({images.shape[0]}), got {list(variants)!r}")
            inputs = self.processor.inference_inputs(images, list(instructions), variants=list(variants))
        else:
            inputs = self.processor.inference_inputs(images, list(instructions))
        dtype = self._model_dtype()
        moved = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point() and dtype is not None:
                    value = value.to(dtype)
            moved[name] = value
        with torch.inference_mode():  # as the model's predict_action, with one un-normalisation per row's key
            ids = self.model.predict_action_ids(**moved, action_dim=ACTION_DIM)
        normalized = self.model.action_tokenizer.decode(ids.cpu().numpy())
        actions = np.empty((images.shape[0], ACTION_DIM), dtype=np.float64)
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            actions[rows] = unnormalize_actions(normalized[rows], self.model.get_action_stats(key))
        if actions.shape != (images.shape[0], ACTION_DIM):
            raise RuntimeError(f"predict_action returned shape {list(actions.shape)}, expected [{images.shape[0]}, {ACTION_DIM}]")
        return actions

    def act_chunk(self, images: np.ndarray, instructions: Sequence[str], suite: str | Sequence[str],
                  variants: Sequence[str] | None = None, *, wrist_images: np.ndarray | None = None,
                  proprio: np.ndarray | None = None) -> np.ndarray:
        """Predict a chunk of actions per observation, in one forward pass for the whole batch (OpenVLA-OFT's
        parallel decoding; ``VLAPolicy`` of a token head returns ``act(...)[:, None]``).

        Args:
            images: uint8 [B, H, W, 3] primary RGB (as for :meth:`act`). instructions, suite, variants: as :meth:`act`.
            wrist_images: uint8 [B, H, W, 3] wrist RGB, processed like ``images`` (centre crop included); required
                when ``"wrist_image"`` is in :attr:`inputs`, else ignored.
            proprio: float [B, 8] raw state (EEF position, axis-angle, gripper qpos); required when ``"proprio"`` is
                in :attr:`inputs` (normalised with each row's ``proprio`` statistics, OFT's eval rule), else ignored.
        Returns:
            float64 [B, action_chunk, 7] un-normalised actions in model space (gripper in [0, 1], 1 = open), step-major.
        Raises:
            ValueError: wrong shapes or counts, a needed input missing; UnnormKeyError: see :func:`resolve_unnorm_key`.
        """
        if not self.parallel:
            return self.act(images, instructions, suite, variants)[:, None]
        import torch  # torch: `import vlamix.eval` must not load it (env workers import this package)

        images, keys = self._checked(images, instructions, suite)
        B = images.shape[0]
        wrist = None
        if "wrist_image" in self.inputs:
            if wrist_images is None:
                raise ValueError("this policy reads the wrist camera (inputs include 'wrist_image'); pass wrist_images")
            wrist = np.asarray(wrist_images)
            if wrist.shape != images.shape or wrist.dtype != np.uint8:
                raise ValueError(f"wrist_images must be uint8 {list(images.shape)} like images, got {wrist.dtype} "
                                 f"{list(wrist.shape)}")
        state = None
        if "proprio" in self.inputs:
            if proprio is None:
                raise ValueError("this policy reads the robot state (inputs include 'proprio'); pass proprio")
            raw = np.asarray(proprio, dtype=np.float64)
            if raw.ndim != 2 or raw.shape[0] != B:
                raise ValueError(f"proprio must be [B={B}, P], got shape {list(raw.shape)}")
            state = np.empty(raw.shape, dtype=np.float32)
            for key in dict.fromkeys(keys):
                rows = [i for i, k in enumerate(keys) if k == key]
                state[rows] = normalize_proprio(raw[rows], self.model.norm_stats[key], zero_constant=False)
        if self.center_crop:
            images = self.processor.center_crop(images)
            wrist = self.processor.center_crop(wrist) if wrist is not None else None
        use_variants = variants is not None and any(v != "original" for v in variants)
        if use_variants and len(variants) != B:
            raise ValueError(f"need one instruction variant per image ({B}), got {list(variants)!r}")
        inputs = self.processor.action_chunk_inputs(
            images, list(instructions), num_slots=self.model.action_head.num_slots, wrist_images=wrist,
            variants=list(variants) if use_variants else None)
        dtype = self._model_dtype()
        moved = {k: v.to(self.device) for k, v in inputs.items()}
        moved["pixel_values"] = moved["pixel_values"].to(dtype)
        if state is not None:
            moved["proprio"] = torch.from_numpy(state).to(self.device)
        with torch.inference_mode():
            normalized = self.model.forward_actions(**moved).actions.float().cpu().numpy().astype(np.float64)
        actions = np.empty(normalized.shape, dtype=np.float64)
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            actions[rows] = unnormalize_actions(normalized[rows], self.model.get_action_stats(key), eps=NORM_EPS)
        return actions

    def _checked(self, images: Any, instructions: Sequence[str],
                 suite: str | Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Images as uint8 [B, H, W, 3] and each row's norm-stats key, after the shape and count checks."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [B, H, W, 3], got {images.dtype} {list(images.shape)}")
        if isinstance(instructions, str) or len(instructions) != images.shape[0]:
            raise ValueError(f"need one instruction per image ({images.shape[0]}), got {instructions!r}")
        suites = [suite] * images.shape[0] if isinstance(suite, str) else list(suite)
        if len(suites) != images.shape[0]:
            raise ValueError(f"need one suite, or one per image ({images.shape[0]}), got {suite!r}")
        return images, [self.unnorm_key_for(s) for s in suites]
