"""The OpenVLA (Prismatic) model, rebuilt from timm and transformers modules: :class:`OpenVLAForActionPrediction`.

Architecture (openvla/openvla ``prismatic/extern/hf/modeling_prismatic.py``, re-implemented, not copied):

- ``vision_backbone``: one or two timm ViTs (DINOv2-L/14 with 4 registers + SigLIP-So400m/14 for OpenVLA). Each
  tower's output is the output of block ``depth - 2`` (the second-to-last block), without the final norm and with the
  prefix (class/register) tokens dropped: [B, 256, D_i] at 224 px. The two towers read channels 0-2 and 3-5 of the
  6-channel ``pixel_values`` and their features are concatenated on channels ([B, 256, 1024 + 1152]).
- ``projector``: fused GELU MLP (fc1 D->4D, GELU, fc2 4D->H, GELU, fc3 H->H) for fused towers, else fc1, GELU, fc2.
- ``language_model``: a transformers causal LM (Llama-2 for OpenVLA) with SDPA attention. The projected patches are
  inserted right after the BOS token: sequence = BOS, 256 patches, the other prompt tokens.

State-dict keys are the official ones (``vision_backbone.featurizer.*``, ``vision_backbone.fused_featurizer.*``,
``projector.fc1/2/3``, ``language_model.model.*``, ``language_model.lm_head.*``). timm names the LayerScale parameter
``gamma``; the official code renames it ``scale_factor`` (transformers used to rewrite keys containing "gamma"), and
so do we, by swapping timm's ``LayerScale`` for :class:`ScaleFactorLayerScale`.

Additions over the official HF class: batched greedy decoding with a KV cache and LEFT padding (the official
``predict_action`` runs one sample at a time), loss/logits computed only where they are needed, and a clear
``KeyError`` for a missing or ambiguous un-normalisation key.

OpenVLA-OFT (``config.action_head == "l1_regression"``; moojink/openvla-oft ``prismatic/extern/hf/
modeling_prismatic.py``, ``vla-scripts/finetune.py``): the same backbone plus ``action_head`` and
``proprio_projector`` (:mod:`vlamix.model.action_head`). Sequence (LIBERO: 2 images, proprio, chunk 8 x 7)::

    BOS | image-1 patches | image-2 patches | proprio | prompt (after BOS) + action prefix | 56 slots | EOS (| pads)

The action slots' input embeddings are zero (only their rotary positions differ), the whole sequence attends
bidirectionally to every non-pad key (OFT's patched transformers, moojink/transformers-openvla-oft
``LlamaSdpaAttention``: the causal mask replaced by its last row), and the head reads the final-norm hidden state
one position BEFORE each slot (the action prefix's state for the first slot): :meth:`forward_actions`.

Size: one file, as transformers' ``modeling_*.py``: the architecture, its attention masks and the decoding that
must use them stay together (the module tree is the official checkpoint's).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vlamix.core.compat import import_timm
from vlamix.core.constants import IGNORE_INDEX
from vlamix.data.normalization import NORM_EPS, unnormalize_actions  # imports no TensorFlow
from vlamix.model.action_head import ACTION_MODULES, L1RegressionActionHead, ProprioProjector
from vlamix.model.action_tokenizer import ActionTokenizer
from vlamix.model.configuration import VLAConfig

timm = import_timm()

from timm.layers import LayerScale as _TimmLayerScale  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.cache_utils import DynamicCache  # noqa: E402

logger = logging.getLogger(__name__)

#: ``logits`` modes of :meth:`OpenVLAForActionPrediction.forward`.
LOGITS_MODES = ("all", "labeled", "last", "none")
#: Attention implementations of the language model that :func:`attention_mask_4d` builds masks for.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


class NonFiniteLogitsError(RuntimeError):
    """The model produced a NaN/Inf logit while decoding; the decoded action would be arbitrary.

    Attributes:
        rows: batch rows (ints) whose logits were not finite at some decoding step.
    """

    def __init__(self, rows: list[int], steps: int):
        self.rows = list(rows)
        super().__init__(
            f"non-finite action logits in batch row(s) {self.rows} (within {steps} decoding step(s)); "
            "the decoded action would be arbitrary, so none is returned"
        )


def attention_mask_4d(
    token_mask: torch.Tensor,
    query_length: int,
    dtype: torch.dtype,
    *,
    causal: bool = True,
    implementation: str = "sdpa",
) -> torch.Tensor:
    """The language model's attention mask, built so that NO query row is fully masked.

    Query ``i`` of the last ``query_length`` positions (absolute position ``p = K - Q + i``) attends key ``j``
    when key ``j`` is a token (``token_mask[b, j] == 1``) and, if ``causal``, ``j <= p``. A query that is itself
    padding (a left pad of a batched prompt, a right pad of a training batch) attends to its own position only.
    Such a row would otherwise attend to nothing: transformers 5.x (``masking_utils.sdpa_mask``) no longer
    un-masks it, and some CUDA SDPA kernels return NaN for it; one NaN in a pad row then reaches the real tokens
    of the next layer through ``0 * NaN`` and turns the logits into NaN. Pad keys stay masked for every real
    query, so the real tokens' outputs are those of the unpadded sequence.

    Args:
        token_mask: int/bool [B, K], 1 = token, 0 = padding, over every key position (cache + new tokens).
        query_length: Q, the number of new positions (K for a prefill, 1 for a KV-cache decoding step).
        dtype: compute dtype of the attention (used by "eager").
        causal: causal attention (OpenVLA); False = bidirectional over all non-pad keys (OpenVLA-OFT).
        implementation: "sdpa" -> bool [B, 1, Q, K] (True = attend); "eager" -> additive float ``dtype``
            [B, 1, Q, K] (0 = attend, ``finfo(dtype).min`` = masked), as transformers' eager attention adds it.
    Returns:
        the mask, on ``token_mask``'s device.
    Raises:
        ValueError: unknown implementation, or ``query_length`` outside [1, K].
    """
    if implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"implementation: got {implementation!r}; allowed: {', '.join(ATTN_IMPLEMENTATIONS)}")
    B, K = token_mask.shape
    if not 1 <= query_length <= K:
        raise ValueError(f"query_length must be in [1, {K}], got {query_length}")
    keys = token_mask.to(torch.bool)  # [B, K]
    q_pos = torch.arange(K - query_length, K, device=token_mask.device)  # [Q] absolute positions
    k_pos = torch.arange(K, device=token_mask.device)  # [K]
    allowed = keys[:, None, None, :].expand(B, 1, query_length, K)
    if causal:
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])[None, None]
    self_only = ~keys[:, K - query_length :]  # [B, Q] pad queries
    diagonal = (k_pos[None, :] == q_pos[:, None])[None, None]  # [1, 1, Q, K]
    allowed = torch.where(self_only[:, None, :, None], diagonal, allowed)
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# ============================================================================ vision towers
class ScaleFactorLayerScale(nn.Module):
    """timm's ``LayerScale`` (``x * gamma``) with the parameter named ``scale_factor``, as in the official checkpoint.

    Args:
        dim: channels. init_values: initial value of every scale factor. inplace: multiply in place.
    """

    def __init__(self, dim: int, init_values: float = 1e-5, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.scale_factor = nn.Parameter(torch.full((dim,), float(init_values)))

    @classmethod
    def from_timm(cls, module: nn.Module) -> "ScaleFactorLayerScale":
        """A copy of a timm ``LayerScale`` (same values, device and dtype; stays on meta when built there)."""
        new = cls(module.gamma.shape[0], inplace=bool(getattr(module, "inplace", False)))
        new.scale_factor = nn.Parameter(module.gamma.detach().clone(), requires_grad=module.gamma.requires_grad)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.scale_factor) if self.inplace else x * self.scale_factor


def build_timm_tower(model_id: str, timm_kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(model_id, **timm_kwargs)`` with every ``LayerScale`` renamed to ``scale_factor``.

    Works under ``torch.device("meta")``: timm >= 1.0 computes its stochastic-depth rates on the CPU explicitly,
    and :func:`_linspace_on_cpu` covers older releases that call ``torch.linspace(...).item()`` on the default device.
    """
    with _linspace_on_cpu():
        tower = timm.create_model(model_id, **timm_kwargs)
    for name, module in list(tower.named_modules()):
        if isinstance(module, _TimmLayerScale):
            parent_name, _, child = name.rpartition(".")
            parent = tower.get_submodule(parent_name) if parent_name else tower
            setattr(parent, child, ScaleFactorLayerScale.from_timm(module))
    return tower


class _linspace_on_cpu(torch.overrides.TorchFunctionMode):
    """Send ``torch.linspace`` calls without an explicit device to the CPU (they feed ``.item()``, which meta
    tensors cannot do); every other call is untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


class PrismaticVisionBackbone(nn.Module):
    """One or two (fused) timm ViT towers returning the patch features of their second-to-last block.

    Args:
        config: :class:`VLAConfig` (``timm_model_ids``, image sizes, act layers, tower overrides).
    Attributes:
        featurizer, fused_featurizer (or None): the timm towers. embed_dim: total feature channels.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        ids = config.timm_model_ids
        if not 1 <= len(ids) <= 2:
            raise ValueError(f"config field 'timm_model_ids': 1 or 2 towers supported, got {ids}")
        self.use_fused_vision_backbone = bool(config.use_fused_vision_backbone)
        if self.use_fused_vision_backbone and len(ids) != 2:
            raise ValueError(f"config field 'use_fused_vision_backbone' is true but there is one tower: {ids}")
        self.featurizer = build_timm_tower(ids[0], config.timm_kwargs(0))
        self.fused_featurizer = (
            build_timm_tower(ids[1], config.timm_kwargs(1)) if self.use_fused_vision_backbone else None
        )
        self.embed_dim = self.featurizer.embed_dim + (
            self.fused_featurizer.embed_dim if self.fused_featurizer is not None else 0
        )
        self.num_images_in_input = int(getattr(config, "num_images_in_input", 1))

    @property
    def num_patches(self) -> int:
        """Patches per image (256 for 224 px and patch 14)."""
        return int(self.featurizer.patch_embed.num_patches)

    @staticmethod
    def _tower_features(tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] -> float [B, num_patches, D]: block ``depth - 2`` output, no norm, no prefix tokens
        (what the official ``get_intermediate_layers(n={depth - 2})`` returns)."""
        (features,) = tower.forward_intermediates(
            images,
            indices=[len(tower.blocks) - 2],
            norm=False,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return features

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values float [B, N * 3 * n_towers, H, W] (N = ``num_images_in_input`` images, each its towers'
        channels) -> patch features float [B, N * P, embed_dim]: each image's towers concatenated on channels, the
        images concatenated on patches in input order (OFT's multi-image ``PrismaticVisionBackbone.forward``).

        Raises:
            ValueError: the channel count is not ``N * 3 * n_towers``.
        """
        per_image = 3 * (2 if self.fused_featurizer is not None else 1)
        N = self.num_images_in_input
        B, C = pixel_values.shape[:2]
        if C != N * per_image:
            raise ValueError(f"pixel_values has {C} channels; this model reads {N} image(s) of {per_image} channels")
        if N > 1:  # one tower call for all images: [B, N * c, H, W] -> [B * N, c, H, W]
            pixel_values = pixel_values.reshape(B * N, per_image, *pixel_values.shape[2:])
        if self.fused_featurizer is None:
            features = self._tower_features(self.featurizer, pixel_values)
        else:
            img, img_fused = torch.split(pixel_values, [3, 3], dim=1)
            features = torch.cat(
                [self._tower_features(self.featurizer, img), self._tower_features(self.fused_featurizer, img_fused)],
                dim=2,
            )
        return features.reshape(B, N * features.shape[1], features.shape[2]) if N > 1 else features


class PrismaticProjector(nn.Module):
    """Patch features -> LLM embeddings. Fused towers: fc1 (D -> 4D), GELU, fc2 (4D -> H), GELU, fc3 (H -> H);
    single tower: fc1 (D -> H), GELU, fc2 (H -> H). GELU is the exact (erf) one, as official."""

    def __init__(self, use_fused_vision_backbone: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.use_fused_vision_backbone = use_fused_vision_backbone
        self.vision_dim, self.llm_dim = vision_dim, llm_dim
        if use_fused_vision_backbone:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim, bias=True)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim, bias=True)
            self.fc3 = nn.Linear(llm_dim, llm_dim, bias=True)
            self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim, bias=True)
            self.fc2 = nn.Linear(llm_dim, llm_dim, bias=True)
            self.act_fn1 = nn.GELU()

    def forward(self, img_patches: torch.Tensor) -> torch.Tensor:
        """float [B, P, vision_dim] -> float [B, P, llm_dim]."""
        x = self.fc2(self.act_fn1(self.fc1(img_patches)))
        if self.use_fused_vision_backbone:
            x = self.fc3(self.act_fn2(x))
        return x


# ============================================================================ model
@dataclass
class VLAOutput:
    """Result of :meth:`OpenVLAForActionPrediction.forward`.

    Attributes:
        loss: float32 scalar, mean cross-entropy over the label tokens (None without labels; NaN if no label is set).
        logits: depends on the ``logits`` mode: "all" -> [B, 1 + P + (L - 1), V] (position t predicts token t + 1);
            "labeled" -> [N, V], one row per label token (row-major over batch and position), aligned with
            ``targets``; "last" -> [B, 1, V]; "none" -> None. Model dtype.
        targets: int64 [N], the label token ids of the "labeled" rows (None otherwise).
        projector_features: [B, P, H] projected patch embeddings.
        hidden_states: tuple of [B, T, H] (LLM input embeddings, then each layer) if requested, else None.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    projector_features: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ActionChunkOutput:
    """Result of :meth:`OpenVLAForActionPrediction.forward_actions` (parallel decoding).

    Attributes:
        actions: float [B, chunk, action_dim] normalised actions (head dtype), step-major.
        action_hidden_states: float [B, chunk * action_dim, H]: the head's input (final-norm hidden states one
            position before each action slot).
        loss: float32 scalar mean absolute error against ``target_actions`` over every entry of the chunk (OFT's
            ``torch.nn.L1Loss()``), or None without targets.
    """

    actions: torch.Tensor
    action_hidden_states: torch.Tensor
    loss: torch.Tensor | None = None


#: Attention modes of :meth:`OpenVLAForActionPrediction.forward_actions`.
ATTENTION_MODES = ("bidirectional", "causal")


class OpenVLAForActionPrediction(nn.Module):
    """OpenVLA: vision towers + projector + causal LLM; predicts 7-D actions as 7 discrete tokens. With
    ``config.action_head == "l1_regression"``, OpenVLA-OFT: one bidirectional pass predicts a chunk of actions
    through an MLP head (:meth:`forward_actions`, :meth:`predict_action_chunk`).

    Args:
        config: :class:`VLAConfig`. The modules are built in the current default dtype and device (use
            ``with torch.device("meta"):`` for a weight-less skeleton).
    Attributes:
        vision_backbone, projector, language_model: the three parts (official names).
        action_head (:class:`~vlamix.model.action_head.L1RegressionActionHead`) and proprio_projector
            (:class:`~vlamix.model.action_head.ProprioProjector`): OFT's modules, None when not configured.
        action_tokenizer: :class:`ActionTokenizer` on the last ``n_action_bins`` ids of the base vocabulary.
        norm_stats: the config's ``dataset_statistics.json`` content (property; assigning updates the config).
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        if not isinstance(config, VLAConfig):
            raise TypeError(f"config must be a VLAConfig, got {type(config).__name__}")
        self.config = config
        self.vision_backbone = PrismaticVisionBackbone(config)
        self.projector = PrismaticProjector(
            bool(config.use_fused_vision_backbone),
            vision_dim=self.vision_backbone.embed_dim,
            llm_dim=config.text_config.hidden_size,
        )
        text_config = copy.deepcopy(config.text_config)
        self.language_model = AutoModelForCausalLM.from_config(
            text_config, attn_implementation="sdpa", dtype=torch.get_default_dtype()
        )
        self.action_tokenizer = ActionTokenizer(n_bins=config.n_action_bins, vocab_size=config.action_vocab_size)
        self.pad_token_id = config.pad_token_id
        self._gradient_checkpointing = False
        hidden = config.text_config.hidden_size
        self.action_head = self.proprio_projector = None
        if config.parallel_decoding:
            self.action_head = L1RegressionActionHead(hidden, config.action_dim, config.action_chunk)
            if config.use_proprio:
                self.proprio_projector = ProprioProjector(hidden, config.proprio_dim)
            # Guard for a call without a 4-D mask (we always pass one): SDPA must then not fall back to causal.
            for module in self.language_model.modules():
                if hasattr(module, "is_causal"):
                    module.is_causal = False

    # ------------------------------------------------------------------ properties
    @property
    def norm_stats(self) -> dict | None:
        return self.config.norm_stats

    @norm_stats.setter
    def norm_stats(self, value: dict | None) -> None:
        self.config.norm_stats = value

    @property
    def num_patches(self) -> int:
        """Patches per image (256)."""
        return self.vision_backbone.num_patches

    @property
    def num_vision_tokens(self) -> int:
        """Embeddings inserted after BOS: the patches of every input image, plus the proprio token if any (OFT's
        ``NUM_PATCHES``: 2 x 256 + 1 = 513 on LIBERO)."""
        return self.num_patches * self.vision_backbone.num_images_in_input + int(self.proprio_projector is not None)

    @property
    def causal(self) -> bool:
        """Causal attention (token head); False for the L1 head (bidirectional over every non-pad key)."""
        return not self.config.parallel_decoding

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # ------------------------------------------------------------------ switches
    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in the backward pass (LLM decoder layers and ViT blocks), non-reentrant."""
        llm = self.language_model
        if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5 name
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for tower in self._towers():
            tower.set_grad_checkpointing(True)
        self._gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Undo :meth:`gradient_checkpointing_enable`."""
        llm = self.language_model
        if hasattr(llm, "activation_checkpointing_disable"):
            llm.activation_checkpointing_disable()
        else:
            llm.gradient_checkpointing_disable()
        for tower in self._towers():
            tower.set_grad_checkpointing(False)
        self._gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """True after :meth:`gradient_checkpointing_enable`."""
        return bool(getattr(self, "_gradient_checkpointing", False))

    def _towers(self) -> list[nn.Module]:
        vb = self.vision_backbone
        return [vb.featurizer] + ([vb.fused_featurizer] if vb.fused_featurizer is not None else [])

    @property
    def attn_implementation(self) -> str:
        """The language model's attention implementation ("sdpa" or "eager")."""
        return str(self.language_model.config._attn_implementation)

    def set_attn_implementation(self, implementation: str) -> None:
        """Switch the language model between "sdpa" and "eager" attention (same weights, same outputs).

        Raises:
            ValueError: another implementation (our masks are built for these two only).
        """
        if implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation: got {implementation!r}; allowed: {', '.join(ATTN_IMPLEMENTATIONS)}")
        self.language_model.set_attn_implementation(implementation)

    def llm_attention_mask(self, token_mask: torch.Tensor, query_length: int) -> torch.Tensor:
        """4-D mask of the language model for the last ``query_length`` of the ``token_mask`` [B, K] positions:
        :func:`attention_mask_4d` (no fully masked query row) for this model's attention implementation."""
        return attention_mask_4d(token_mask, query_length, self.dtype, causal=self.causal,
                                 implementation=self.attn_implementation)

    def _apply(self, fn, recurse: bool = True):
        # ``.to(dtype)`` would also cast the rotary inverse frequencies; keep them float32 as transformers builds them.
        result = super()._apply(fn, recurse)
        self.reset_rotary_buffers()
        return result

    def reset_rotary_buffers(self) -> None:
        """(Re)compute the LLM's non-persistent rotary buffers (``inv_freq``, ``original_inv_freq``) in float32 on the
        model's device. Needed after building on the meta device and after a dtype cast."""
        for module in self.language_model.modules():
            if not (hasattr(module, "inv_freq") and hasattr(module, "config") and hasattr(module, "rope_type")):
                continue
            device = module.inv_freq.device
            if device.type == "meta":
                device = self.projector.fc1.weight.device
            if device.type == "meta":
                continue
            fresh = type(module)(config=module.config)
            for name in ("inv_freq", "original_inv_freq"):
                if hasattr(module, name):
                    module.register_buffer(name, getattr(fresh, name).to(device=device), persistent=False)

    # ------------------------------------------------------------------ multimodal inputs
    def _multimodal_inputs(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        *,
        proprio: torch.Tensor | None = None,
        zero_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Insert the projected patches (then the proprio token, if ``proprio``) after each sample's BOS (its first
        attended token); text embeddings where ``zero_mask`` [B, L] is true are zeroed (OFT's action slots).

        Returns:
            embeds [B, T, H], attention mask int64 [B, T], position ids int64 [B, T] (from the mask, so left
            padding is transparent), labels int64 [B, T] or None (patches ignored), projected patches [B, P, H];
            T = L + P.
        Raises:
            ValueError: batch sizes differ, a sample has no attended token, or proprio is given to a model without
                a proprio projector (or missing for one with it).
        """
        if (proprio is None) != (self.proprio_projector is None):
            raise ValueError("proprio must be given exactly when the model has a proprio projector "
                             "(config.use_proprio)")
        if input_ids.dim() != 2 or pixel_values.dim() != 4:
            raise ValueError(
                f"expected input_ids [B, L] and pixel_values [B, C, H, W], got {tuple(input_ids.shape)} and "
                f"{tuple(pixel_values.shape)}"
            )
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"batch sizes differ: input_ids {input_ids.shape[0]} vs pixel_values {pixel_values.shape[0]}"
            )
        B, L = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(torch.long)
        if not bool((attention_mask.sum(dim=1) > 0).all()):
            raise ValueError("every sample needs at least one attended token (attention_mask row of zeros)")

        patch_features = self.vision_backbone(pixel_values.to(self.dtype))
        patches = self.projector(patch_features)  # [B, P, H]
        if proprio is not None:  # one token after the patches (OFT ``_process_proprio_features``)
            proprio_token = self.proprio_projector(proprio.reshape(B, -1)).to(patches.dtype)
            patches = torch.cat([patches, proprio_token[:, None]], dim=1)
        P, H = patches.shape[1], patches.shape[2]
        text = self.get_input_embeddings()(input_ids)  # [B, L, H]
        if zero_mask is not None:
            text = text.masked_fill(zero_mask.to(torch.bool)[..., None], 0.0)

        # Insertion point k = index of the first attended token (BOS) + 1; 1 unless the batch is left-padded.
        k = attention_mask.argmax(dim=1) + 1  # [B]
        t = torch.arange(L + P, device=input_ids.device)[None, :]  # [1, T]
        is_patch = (t >= k[:, None]) & (t < k[:, None] + P)  # [B, T]
        text_idx = torch.where(t < k[:, None], t, t - P).clamp(0, L - 1)  # [B, T]
        patch_idx = (t - k[:, None]).clamp(0, P - 1)  # [B, T]
        embeds = torch.where(
            is_patch[..., None],
            patches.gather(1, patch_idx[..., None].expand(-1, -1, H)),
            text.gather(1, text_idx[..., None].expand(-1, -1, H)),
        )
        mask = torch.where(is_patch, torch.ones_like(text_idx), attention_mask.gather(1, text_idx))
        position_ids = (mask.cumsum(dim=1) - 1).masked_fill(mask == 0, 1)
        mm_labels = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)}")
            mm_labels = torch.where(is_patch, torch.full_like(text_idx, IGNORE_INDEX), labels.gather(1, text_idx))
        return embeds, mask, position_ids, mm_labels, patches

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        logits: str = "all",
        output_hidden_states: bool = False,
        **action_inputs: Any,
    ) -> VLAOutput | ActionChunkOutput:
        """Teacher-forced forward pass.

        For an L1-regression model (OpenVLA-OFT) this is :meth:`forward_actions` (``action_mask``, ``proprio``,
        ``target_actions``, ``attention`` as keywords; ``labels``/``logits``/``output_hidden_states`` unused), so
        that DDP and peft wrappers, which call ``forward``, train it.

        Args:
            pixel_values: float [B, 6, 224, 224] (two towers' normalised images stacked on channels).
            input_ids: int64 [B, L], starting with BOS (right padding; left padding is also handled).
            attention_mask: int64/bool [B, L] (1 = token, 0 = padding); None = all ones.
            labels: int64 [B, L] target ids, IGNORE_INDEX (-100) where no loss is taken; the model shifts them
                (position t predicts label t + 1), patch positions are ignored.
            logits: which logits to return (see :class:`VLAOutput`): "all" (official), "labeled" (only rows that
                predict a label: the same loss at a fraction of the memory, for training with a 32k vocabulary),
                "last", or "none".
            output_hidden_states: also return the LLM hidden states.
        Returns:
            :class:`VLAOutput` (sequence length T = 1 + P + (L - 1)).
        Raises:
            ValueError: unknown ``logits`` mode or inconsistent shapes; labels given to an L1-regression model.
            TypeError: action keywords given to a token-head model.
        """
        if self.config.parallel_decoding:
            if labels is not None:
                raise ValueError("an L1-regression model trains on target_actions, not token labels")
            return self.forward_actions(pixel_values, input_ids, attention_mask, **action_inputs)
        if action_inputs:
            raise TypeError(f"forward() got unexpected keywords {sorted(action_inputs)} (action_head 'tokens')")
        if logits not in LOGITS_MODES:
            raise ValueError(f"logits must be one of {LOGITS_MODES}, got {logits!r}")
        embeds, mask, position_ids, mm_labels, patches = self._multimodal_inputs(
            pixel_values, input_ids, attention_mask, labels
        )
        out = self.language_model.model(
            inputs_embeds=embeds,
            attention_mask=self.llm_attention_mask(mask, embeds.shape[1]),
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.last_hidden_state  # [B, T, H], after the final norm
        lm_head = self.get_output_embeddings()

        loss = targets = None
        labeled_logits = None
        if mm_labels is not None:
            shift_labels = mm_labels[:, 1:]  # [B, T - 1]
            select = shift_labels != IGNORE_INDEX
            targets = shift_labels[select]  # [N]
            labeled_logits = lm_head(hidden[:, :-1][select])  # [N, V]
            loss = F.cross_entropy(labeled_logits.float(), targets, reduction="mean")

        if logits == "all":
            out_logits = lm_head(hidden)
        elif logits == "labeled":
            if mm_labels is None:
                raise ValueError("logits='labeled' needs labels")
            out_logits = labeled_logits
        elif logits == "last":
            out_logits = lm_head(hidden[:, -1:])
        else:
            out_logits = None
        return VLAOutput(
            loss=loss,
            logits=out_logits,
            targets=targets if logits == "labeled" else None,
            projector_features=patches,
            hidden_states=getattr(out, "hidden_states", None) if output_hidden_states else None,
        )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def predict_action_ids(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        action_dim: int = 7,
        return_logits: bool = False,
        check_finite: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Batched greedy decoding of ``action_dim`` tokens with a KV cache.

        Prompts of different lengths must be LEFT-padded (``VLAProcessor.inference_inputs`` does it): the last
        position of every row is then a real token; positions come from the attention mask, so a padded batch
        gives the per-sample results. As the official ``generate`` call, the argmax runs over the whole vocabulary
        (non-action ids decode onto the extreme bins); unlike it, decoding never stops early at EOS.

        Args:
            pixel_values: float [B, 6, 224, 224]. input_ids: int64 [B, L] ending with the action prefix (the empty
                token 29871 for the Llama tokenizer). attention_mask: [B, L] or None (all ones).
            action_dim: tokens to generate (7). return_logits: also return the logits of every step.
            check_finite: raise :class:`NonFiniteLogitsError` when a row's logits are not all finite at some step
                (one device sync per call, after the last step); False only for diagnostics.
        Returns:
            int64 [B, action_dim] token ids, and float [B, action_dim, V] logits if ``return_logits``.
        Raises:
            ValueError: a row does not end with an attended token (right padding).
            NonFiniteLogitsError: a NaN/Inf logit (argmax over it would pick an arbitrary id, and the action
                de-tokenised from it would look valid); its ``rows`` name the batch rows.
        """
        self._require_head("tokens", "predict_action_ids")
        if attention_mask is not None and not bool((attention_mask[:, -1] != 0).all()):
            raise ValueError("predict_action_ids needs LEFT-padded prompts (the last position of every row attended)")
        embeds, mask, position_ids, _, _ = self._multimodal_inputs(pixel_values, input_ids, attention_mask, None)
        llm = self.language_model.model
        lm_head = self.get_output_embeddings()
        cache = DynamicCache(config=self.language_model.config)
        out = llm(inputs_embeds=embeds, attention_mask=self.llm_attention_mask(mask, embeds.shape[1]),
                  position_ids=position_ids, past_key_values=cache, use_cache=True)
        step_logits = lm_head(out.last_hidden_state[:, -1])  # [B, V]
        ids, all_logits = [], []
        finite = torch.ones(step_logits.shape[0], dtype=torch.bool, device=step_logits.device)  # [B], no sync per step
        for step in range(action_dim):
            finite &= torch.isfinite(step_logits).all(dim=-1)
            next_ids = step_logits.argmax(dim=-1)  # [B]
            ids.append(next_ids)
            if return_logits:
                all_logits.append(step_logits)
            if step == action_dim - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position_ids = position_ids[:, -1:] + 1
            out = llm(
                inputs_embeds=self.get_input_embeddings()(next_ids[:, None]),
                attention_mask=self.llm_attention_mask(mask, 1),
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            step_logits = lm_head(out.last_hidden_state[:, -1])
        if check_finite and not bool(finite.all()):
            raise NonFiniteLogitsError(torch.nonzero(~finite).flatten().tolist(), action_dim)
        token_ids = torch.stack(ids, dim=1)
        if return_logits:
            return token_ids, torch.stack(all_logits, dim=1)
        return token_ids

    @torch.no_grad()
    def predict_action(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        unnorm_key: str | None = None,
    ) -> np.ndarray:
        """Greedy action prediction, decoded and un-normalised with ``norm_stats[unnorm_key]["action"]``.

        Where the stats' mask is true: ``a = 0.5 (n + 1) (q99 - q01) + q01``; where false (the gripper), the
        normalised value ``n`` is kept (official ``predict_action``).

        Args:
            pixel_values, input_ids, attention_mask: as :meth:`predict_action_ids` (left-padded batch).
            unnorm_key: dataset name in ``norm_stats``; None is allowed only when there is exactly one.
        Returns:
            float64 numpy [B, action_dim] actions (action_dim = len(q01), 7 for LIBERO).
        Raises:
            KeyError: ``unnorm_key`` missing or ambiguous (the message lists the available keys).
        """
        stats = self.get_action_stats(unnorm_key)
        ids = self.predict_action_ids(pixel_values, input_ids, attention_mask, action_dim=len(stats["q01"]))
        normalized = self.action_tokenizer.decode(ids.cpu().numpy())
        return unnormalize_actions(normalized, stats)

    def _require_head(self, head: str, method: str) -> None:
        if self.config.action_head != head:
            other = "forward_actions / predict_action_chunk" if head == "tokens" else "forward / predict_action_ids"
            raise ValueError(f"{method} is for action_head {head!r}; this model's is {self.config.action_head!r} "
                             f"(use {other})")

    # ------------------------------------------------------------------ parallel decoding (OpenVLA-OFT)
    def forward_actions(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        action_mask: torch.Tensor,
        proprio: torch.Tensor | None = None,
        target_actions: torch.Tensor | None = None,
        *,
        attention: str = "bidirectional",
    ) -> ActionChunkOutput:
        """One forward pass predicting a chunk of actions per sample (OFT's L1-regression training forward and its
        ``predict_action`` parallel path: ``vla-scripts/finetune.py`` ``run_forward_pass``,
        ``modeling_prismatic.py`` ``_regression_or_discrete_prediction``).

        Args:
            pixel_values: float [B, N * 6, 224, 224] (N images, each its two towers' channels; primary first).
            input_ids: int64 [B, L]: BOS, prompt, action prefix, ``chunk * action_dim`` slot ids, EOS; right or left
                padded (``VLAProcessor.action_chunk_inputs``).
            attention_mask: [B, L] (1 = token) or None (all ones).
            action_mask: bool [B, L], true on the ``chunk * action_dim`` slots of every row (their embeddings are
                zeroed; their ids are never read).
            proprio: float [B, proprio_dim] normalised proprio (required iff the model has a proprio projector).
            target_actions: float [B, chunk, action_dim] normalised ground truth; gives ``loss``.
            attention: "bidirectional" (the recipe); "causal" only to show what stock transformers did to OFT
                checkpoints (issues #5, #135 of moojink/openvla-oft: 98% -> 30-60% success, no error).
        Returns:
            :class:`ActionChunkOutput`.
        Raises:
            ValueError: a token-head model; a row without exactly ``chunk * action_dim`` slots, or a slot at the
                first attended position; inconsistent shapes; an unknown ``attention``.
        """
        self._require_head("l1_regression", "forward_actions")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention: got {attention!r}; allowed: {', '.join(ATTENTION_MODES)}")
        B, L = input_ids.shape
        n = self.action_head.num_slots
        action_mask = action_mask.to(device=input_ids.device, dtype=torch.bool)
        if action_mask.shape != (B, L) or not bool((action_mask.sum(dim=1) == n).all()):
            raise ValueError(f"action_mask must be bool [B, L] = {[B, L]} with exactly {n} slots per row, got "
                             f"{list(action_mask.shape)} with {action_mask.sum(dim=1).tolist()} slots")
        embeds, mask, position_ids, _, patches = self._multimodal_inputs(
            pixel_values, input_ids, attention_mask, None, proprio=proprio, zero_mask=action_mask
        )
        P = patches.shape[1]
        first = (attention_mask.to(torch.long).argmax(dim=1) if attention_mask is not None
                 else torch.zeros(B, dtype=torch.long, device=input_ids.device))
        slots = torch.arange(L, device=input_ids.device).expand(B, L)[action_mask].view(B, n)  # text positions
        if not bool((slots > first[:, None]).all()):
            raise ValueError("an action slot sits at or before a row's BOS; slots must follow the prompt")
        causal = attention == "causal"
        out = self.language_model.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask_4d(mask, embeds.shape[1], self.dtype, causal=causal,
                                             implementation=self.attn_implementation),
            position_ids=position_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state  # [B, T, H], after the final norm
        # text position j (after BOS) sits at multimodal position j + P; the head reads position j + P - 1
        read = (slots + P - 1)[..., None].expand(-1, -1, hidden.shape[2])
        action_hidden = hidden.gather(1, read)  # [B, n, H]
        actions = self.action_head(action_hidden)
        loss = None
        if target_actions is not None:
            target = target_actions.to(device=actions.device)
            if target.shape != actions.shape:
                raise ValueError(f"target_actions {tuple(target.shape)} must have the shape of the prediction "
                                 f"{tuple(actions.shape)}")
            loss = F.l1_loss(actions.float(), target.float())
        return ActionChunkOutput(actions=actions, action_hidden_states=action_hidden, loss=loss)

    @torch.no_grad()
    def predict_action_chunk(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        action_mask: torch.Tensor,
        proprio: torch.Tensor | None = None,
        unnorm_key: str | None = None,
    ) -> np.ndarray:
        """Un-normalised action chunks (OFT ``predict_action``, batched).

        Where the stats' mask is true: ``a = 0.5 (n + 1) (q99 - q01 + 1e-8) + q01`` (OFT ``_unnormalize_actions``);
        where false (the gripper) ``n`` is kept. No clipping of ``n``.

        Args:
            pixel_values, input_ids, attention_mask, action_mask, proprio: as :meth:`forward_actions`.
            unnorm_key: dataset name in ``norm_stats``; None only when there is exactly one.
        Returns:
            float64 numpy [B, chunk, action_dim] in model space (gripper 1 = open, 0 = close).
        Raises:
            KeyError: ``unnorm_key`` missing or ambiguous. ValueError: see :meth:`forward_actions`.
        """
        stats = self.get_action_stats(unnorm_key)
        out = self.forward_actions(pixel_values, input_ids, attention_mask, action_mask, proprio)
        normalized = out.actions.float().cpu().numpy().astype(np.float64)
        return unnormalize_actions(normalized, stats, eps=NORM_EPS)

    # ------------------------------------------------------------------ norm stats
    def resolve_unnorm_key(self, unnorm_key: str | None) -> str:
        """The key of ``norm_stats`` to use (``unnorm_key``, or the only key when None).

        Raises:
            KeyError: no norm stats; ``unnorm_key`` is None and there are several; or it is not a key. The message
                lists the available keys.
        """
        stats = self.norm_stats or {}
        available = sorted(stats)
        if not available:
            raise KeyError("this model has no norm stats (config.norm_stats is empty); cannot un-normalise actions")
        if unnorm_key is None:
            if len(available) != 1:
                raise KeyError(
                    f"the model has norm stats for several datasets; pass unnorm_key, one of: {', '.join(available)}"
                )
            return available[0]
        if unnorm_key not in stats:
            raise KeyError(f"unnorm_key {unnorm_key!r} not in the norm stats; available: {', '.join(available)}")
        return unnorm_key

    def get_action_stats(self, unnorm_key: str | None = None) -> dict[str, Any]:
        """``norm_stats[key]["action"]`` (q01, q99, mask, ...) for the resolved key (see :meth:`resolve_unnorm_key`)."""
        return self.norm_stats[self.resolve_unnorm_key(unnorm_key)]["action"]

    def get_action_dim(self, unnorm_key: str | None = None) -> int:
        """Action dimensionality from the norm stats (7 for LIBERO)."""
        return len(self.get_action_stats(unnorm_key)["q01"])


# ============================================================================ initialisation
def init_tiny_weights_(model: OpenVLAForActionPrediction, seed: int, action_logit_scale: float = 3.0) -> None:
    """Deterministic random initialisation of a small model (the "tiny" preset), in place.

    Every state-dict tensor is redrawn, keys in sorted order, from one ``torch.Generator`` seeded ``seed``
    (z = standard normal, CPU, float32, then copied to the model's device/dtype):

    - norm weights (LayerNorm, RMSNorm) and LayerScale factors: 1; norm and linear biases: 0;
    - ``pos_embed``, ``cls_token``, ``reg_token``, ``attn_pool.latent``: 0.02 z;
    - every other tensor with 2+ dims: z / sqrt(fan_in), fan_in = numel / shape[0];
    - then the ``lm_head`` rows of the action tokens are multiplied by ``action_logit_scale``;
    - OFT's ``action_head.*`` / ``proprio_projector.*`` keys are drawn last (same rules), so the backbone of a tiny
      model with the L1 head equals the tiny token model of the same seed.

    Why not timm's / transformers' defaults (std 0.02, LayerScale 1e-5): at these sizes they make the logits
    ~1e-3 and nearly independent of the image (the reference fixture's README reports the same). Unit-variance
    activations keep the image visible in the logits. The action-row scale makes the untrained model emit action
    tokens (otherwise 31,808 of 32,064 ids are text tokens and greedy decoding almost never picks an action id).
    """
    gen = torch.Generator().manual_seed(int(seed))
    state = model.state_dict()
    norm_types = (nn.LayerNorm,)
    norm_param_names = set()
    for name, module in model.named_modules():
        if isinstance(module, norm_types) or type(module).__name__.endswith("RMSNorm"):
            for pname, _ in module.named_parameters(recurse=False):
                norm_param_names.add(f"{name}.{pname}" if name else pname)
    small_suffixes = ("pos_embed", "cls_token", "reg_token", "attn_pool.latent")
    lm_head_key = "language_model.lm_head.weight"
    action_keys = sorted(k for k in state if k.split(".", 1)[0] in ACTION_MODULES)
    with torch.no_grad():
        for key in sorted(set(state) - set(action_keys)) + action_keys:
            tensor = state[key]
            if not tensor.is_floating_point():
                continue
            z = torch.randn(tuple(tensor.shape), generator=gen, dtype=torch.float32)
            if key in norm_param_names:
                value = torch.ones_like(z) if key.endswith("weight") else torch.zeros_like(z)
            elif key.endswith("scale_factor"):
                value = torch.ones_like(z)
            elif key.endswith(small_suffixes):
                value = 0.02 * z
            elif tensor.dim() >= 2:
                fan_in = tensor.numel() // tensor.shape[0]
                value = z / math.sqrt(fan_in)
            else:
                value = torch.zeros_like(z)
            if key == lm_head_key:
                tok = model.action_tokenizer
                value[tok.first_action_id : tok.last_action_id + 1] *= action_logit_scale
            tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
