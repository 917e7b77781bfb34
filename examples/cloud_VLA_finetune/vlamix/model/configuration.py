"""Configuration of the OpenVLA (Prismatic) architecture: :class:`VLAConfig`.

Same fields and serialised keys as the official ``OpenVLAConfig`` (openvla/openvla
``prismatic/extern/hf/configuration_prismatic.py``), so an official ``config.json`` loads unchanged, plus one
optional field of ours, ``vision_tower_overrides``, that shrinks the timm towers (the official config has no way
to do that; the tiny preset and the reference fixture need it).

Differences that come from the transformers version (4.40 there, 5.x here), not from us: transformers 5 no longer
stores the generation parameters (``max_length``, ``do_sample``, ...) and a few other generic keys in a config, so
``to_dict()`` lacks them; every OpenVLA-specific key is present with the official value.

Usage::

    from vlamix.model.configuration import VLAConfig
    cfg = VLAConfig.tiny()              # embedded CPU default
    cfg = VLAConfig.openvla_7b()        # official sizes (7.54 B parameters)
    cfg = VLAConfig.from_json_file("openvla-7b/config.json")
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

from vlamix.core.compat import ensure_torchvision_importable

ensure_torchvision_importable()

from transformers import PretrainedConfig  # noqa: E402
from transformers.models.auto import CONFIG_MAPPING  # noqa: E402

logger = logging.getLogger(__name__)

# === Tables of the official configuration (configuration_prismatic.py), kept verbatim in content ===
#: Prismatic vision backbone id -> input resolution of each tower (pixels).
VISION_BACKBONE_TO_RESOLUTION: dict[str, list[int]] = {
    "clip-vit-l": [224], "siglip-vit-so400m": [224], "dinov2-vit-l": [224], "in1k-vit-l": [224],
    "clip-vit-l-336px": [336],
    "siglip-vit-so400m-384px": [384],
    "dinoclip-vit-l-336px": [336, 336],
    "dinosiglip-vit-so-224px": [224, 224],
    "dinosiglip-vit-so-384px": [384, 384],
}  # fmt: skip
#: Prismatic vision backbone id -> timm model id of each tower.
VISION_BACKBONE_TO_TIMM_ID: dict[str, list[str]] = {
    "clip-vit-l": ["vit_large_patch14_clip_224.openai"],
    "clip-vit-l-336px": ["vit_large_patch14_clip_336.openai"],
    "dinov2-vit-l": ["vit_large_patch14_reg4_dinov2.lvd142m"],
    "in1k-vit-l": ["vit_large_patch16_224.augreg_in21k_ft_in1k"],
    "siglip-vit-so400m": ["vit_so400m_patch14_siglip_224"],
    "siglip-vit-so400m-384px": ["vit_so400m_patch14_siglip_384"],
    "dinoclip-vit-l-336px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_large_patch14_clip_336.openai"],
    "dinosiglip-vit-so-224px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "dinosiglip-vit-so-384px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_384"],
}
#: Prismatic vision backbone id -> timm ``act_layer`` override of each tower (None = timm default).
TIMM_OVERRIDE_ACT_LAYER: dict[str, list[str | None]] = {
    "clip-vit-l": ["quick_gelu"], "clip-vit-l-336px": ["quick_gelu"],
    "dinov2-vit-l": [None], "in1k-vit-l": [None],
    "siglip-vit-so400m": [None], "siglip-vit-so400m-384px": [None],
    "dinoclip-vit-l-336px": [None, "quick_gelu"],
    "dinosiglip-vit-so-224px": [None, None], "dinosiglip-vit-so-384px": [None, None],
}  # fmt: skip
#: Prismatic LLM backbone id -> HF hub id of the base LLM (informational; nothing is downloaded).
LLM_BACKBONE_TO_HF_PATH: dict[str, str] = {
    "llama2-7b-pure": "meta-llama/Llama-2-7b-hf", "llama2-13b-pure": "meta-llama/Llama-2-13b-hf",
    "llama2-7b-chat": "meta-llama/Llama-2-7b-chat-hf", "llama2-13b-chat": "meta-llama/Llama-2-13b-chat-hf",
    "vicuna-v15-7b": "lmsys/vicuna-7b-v1.5", "vicuna-v15-13b": "lmsys/vicuna-13b-v1.5",
    "mistral-v0.1-7b-pure": "mistralai/Mistral-7B-v0.1",
    "mistral-v0.1-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.1",
    "phi-2-3b": "microsoft/phi-2",
}  # fmt: skip
#: Prismatic LLM backbone id -> transformers ``model_type`` of the text config.
LLM_BACKBONE_TO_HF_METACLASS: dict[str, str] = {
    "llama2-7b-pure": "llama", "llama2-13b-pure": "llama", "llama2-7b-chat": "llama", "llama2-13b-chat": "llama",
    "vicuna-v15-7b": "llama", "vicuna-v15-13b": "llama",
    "mistral-v0.1-7b-pure": "mistral", "mistral-v0.1-7b-instruct": "mistral",
    "phi-2-3b": "phi",
}  # fmt: skip
IMAGE_RESIZE_STRATEGIES = ("resize-naive", "resize-crop", "letterbox")

#: Keys of the official ``OpenVLAConfig.to_dict()`` that are specific to OpenVLA/Prismatic (not generic
#: ``PretrainedConfig`` keys); all of them are present in :meth:`VLAConfig.to_dict`.
OPENVLA_KEYS = (
    "vision_backbone_id", "llm_backbone_id", "arch_specifier", "output_projector_states",
    "use_fused_vision_backbone", "timm_model_ids", "timm_override_act_layers", "image_sizes",
    "image_resize_strategy", "hf_llm_id", "llm_max_length", "pad_token_id", "pad_to_multiple_of",
    "text_config", "norm_stats", "n_action_bins", "model_type",
)  # fmt: skip
#: Keyword arguments that the official model passes to ``timm.create_model`` itself; an override may not set them.
_RESERVED_TIMM_KWARGS = ("pretrained", "num_classes", "img_size", "act_layer")
#: Extra keys of the reference fixture's config (``tiny/config.json``) that are not configuration fields.
_FIXTURE_ONLY_KEYS = ("fixture_notes",)
#: How actions are predicted: "tokens" = OpenVLA's 256-bin action tokens decoded one at a time (causal LLM);
#: "l1_regression" = OpenVLA-OFT's parallel decoding of a whole chunk into an MLP head (bidirectional LLM).
ACTION_HEADS = ("tokens", "l1_regression")
#: OpenVLA-OFT's LIBERO recipe (moojink/openvla-oft ``prismatic/vla/constants.py`` LIBERO_CONSTANTS and
#: ``LIBERO.md``'s fine-tuning command): 8-step chunks of 7-D actions, two images (third-person + wrist), 8-D proprio.
OFT_LIBERO_RECIPE = {"action_head": "l1_regression", "action_chunk": 8, "action_dim": 7, "num_images_in_input": 2,
                     "use_proprio": True, "proprio_dim": 8}


class VLAConfig(PretrainedConfig):
    """OpenVLA configuration (``model_type`` "openvla"); a ``transformers`` config whose ``text_config`` is a
    ``LlamaConfig`` (or the config class of ``llm_backbone_id``'s family).

    Fields (official meaning, see ``configuration_prismatic.py``):
        vision_backbone_id: Prismatic id, e.g. "dinosiglip-vit-so-224px" (DINOv2 + SigLIP fused towers).
        llm_backbone_id: Prismatic id, e.g. "llama2-7b-pure".
        arch_specifier: "no-align+fused-gelu-mlp" for OpenVLA (informational: as in the official HF code, the
            projector type follows ``use_fused_vision_backbone``).
        use_fused_vision_backbone: two towers whose patch features are concatenated on channels (None = derived
            from the backbone id).
        image_resize_strategy: "resize-naive" (OpenVLA), "resize-crop" or "letterbox".
        text_config: dict or config of the LLM (vocab 32064 = 32000 + pad_to_multiple_of for OpenVLA-7B).
        llm_max_length, pad_token_id (32000), pad_to_multiple_of (64), output_projector_states: as official.
        norm_stats: ``dataset_statistics.json`` content {dataset: {"action": {"q01", "q99", "mask", ...}}} or None.
        n_action_bins: uniform bins in [-1, 1] per action dimension (256).
        vision_tower_overrides: ours, optional. One dict per tower of extra ``timm.create_model`` keyword
            arguments (e.g. ``{"embed_dim": 64, "depth": 3, "num_heads": 2}``); None = official sizes.
    Action recipe (ours; absent from official configs, whose defaults are OpenVLA's; OpenVLA-OFT keeps these as
    module constants and script arguments, moojink/openvla-oft ``prismatic/vla/constants.py``, ``finetune.py``):
        action_head: "tokens" (OpenVLA) or "l1_regression" (OpenVLA-OFT: ``action_head`` and, with proprio,
            ``proprio_projector`` submodules; bidirectional attention over the whole sequence).
        action_chunk: actions predicted per observation (``NUM_ACTIONS_CHUNK``; 1 for "tokens").
        action_dim: dimensions of one action (7). num_images_in_input: images per observation (1; OFT LIBERO: 2,
            third-person then wrist, their patches concatenated). use_proprio: one proprio token after the patches.
        proprio_dim: proprio dimensions (8 = EEF position, axis-angle, two gripper joint positions).
    Derived (set from ``vision_backbone_id`` / ``llm_backbone_id``, stored in ``to_dict()`` as official):
        timm_model_ids, timm_override_act_layers, image_sizes, hf_llm_id.

    Raises:
        ValueError: an unknown backbone id or resize strategy, or a malformed ``vision_tower_overrides``
            (the message names the field and the allowed values).
    """

    model_type = "openvla"

    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"
    use_fused_vision_backbone: bool | None = None
    image_resize_strategy: str = "resize-naive"
    text_config: Any = None
    llm_max_length: int = 2048
    pad_token_id: int | None = 32000
    pad_to_multiple_of: int = 64
    output_projector_states: bool = False
    norm_stats: dict | None = None
    n_action_bins: int = 256
    vision_tower_overrides: list | None = None
    action_head: str = "tokens"
    action_chunk: int = 1
    action_dim: int = 7
    num_images_in_input: int = 1
    use_proprio: bool = False
    proprio_dim: int = 8

    def __post_init__(self, **kwargs: Any) -> None:
        self._check_action_recipe()
        if self.vision_backbone_id not in VISION_BACKBONE_TO_RESOLUTION:
            raise ValueError(
                f"config field 'vision_backbone_id': got {self.vision_backbone_id!r}; "
                f"allowed: {', '.join(VISION_BACKBONE_TO_RESOLUTION)}"
            )
        if self.llm_backbone_id not in LLM_BACKBONE_TO_HF_PATH:
            raise ValueError(
                f"config field 'llm_backbone_id': got {self.llm_backbone_id!r}; allowed: {', '.join(LLM_BACKBONE_TO_HF_PATH)}"
            )
        if self.image_resize_strategy not in IMAGE_RESIZE_STRATEGIES:
            raise ValueError(
                f"config field 'image_resize_strategy': got {self.image_resize_strategy!r}; "
                f"allowed: {', '.join(IMAGE_RESIZE_STRATEGIES)}"
            )
        if self.use_fused_vision_backbone is None:
            self.use_fused_vision_backbone = any(
                self.vision_backbone_id.startswith(v) for v in ("dinoclip", "dinosiglip")
            )
        self.timm_model_ids = list(VISION_BACKBONE_TO_TIMM_ID[self.vision_backbone_id])
        self.timm_override_act_layers = list(TIMM_OVERRIDE_ACT_LAYER[self.vision_backbone_id])
        self.image_sizes = list(VISION_BACKBONE_TO_RESOLUTION[self.vision_backbone_id])
        self.hf_llm_id = LLM_BACKBONE_TO_HF_PATH[self.llm_backbone_id]

        # The reference fixture records its tower sizes as the exact timm calls ("tiny_towers").
        tiny_towers = kwargs.pop("tiny_towers", None)
        if self.vision_tower_overrides is None and tiny_towers is not None:
            self.vision_tower_overrides = _overrides_from_timm_calls(tiny_towers)
        for key in _FIXTURE_ONLY_KEYS:
            kwargs.pop(key, None)
        self.vision_tower_overrides = _check_overrides(self.vision_tower_overrides, len(self.timm_model_ids))

        # The derived values may also arrive as saved keys; the official class derives them the same way.
        for key in ("timm_model_ids", "timm_override_act_layers", "image_sizes", "hf_llm_id"):
            saved = kwargs.pop(key, None)
            if saved is None:
                continue
            saved = list(saved) if isinstance(saved, (list, tuple)) else saved
            if saved != getattr(self, key):
                logger.warning(
                    "config key %r = %r differs from the value derived from the backbone id (%r); using the derived value",
                    key, saved, getattr(self, key),
                )

        metaclass = LLM_BACKBONE_TO_HF_METACLASS[self.llm_backbone_id]
        if self.text_config is None:
            self.text_config = CONFIG_MAPPING[metaclass]()
        elif isinstance(self.text_config, dict):
            text_kwargs = dict(self.text_config)
            text_kwargs.pop("model_type", None)
            text_kwargs.pop("transformers_version", None)
            self.text_config = CONFIG_MAPPING[metaclass](**text_kwargs)
        elif not isinstance(self.text_config, PretrainedConfig):
            raise ValueError(
                f"config field 'text_config': must be a dict or a {metaclass} config, got {type(self.text_config).__name__}"
            )
        super().__post_init__(**kwargs)

    def _check_action_recipe(self) -> None:
        """Raise ``ValueError`` naming the first invalid action-recipe field and its allowed values."""
        if self.action_head not in ACTION_HEADS:
            raise ValueError(
                f"config field 'action_head': got {self.action_head!r}; allowed: {', '.join(ACTION_HEADS)}")
        for name, minimum in (("action_chunk", 1), ("action_dim", 1), ("num_images_in_input", 1), ("proprio_dim", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"config field {name!r}: must be an integer >= {minimum}, got {value!r}")
        if not isinstance(self.use_proprio, bool):
            raise ValueError(f"config field 'use_proprio': must be true or false, got {self.use_proprio!r}")
        if self.action_head == "tokens":
            offs = (("action_chunk", 1), ("num_images_in_input", 1), ("use_proprio", False))
            extras = {k: getattr(self, k) for k, off in offs if getattr(self, k) != off}
            if extras:
                raise ValueError(f"config field 'action_head': 'tokens' predicts one action from one image without "
                                 f"proprio; {extras} need action_head 'l1_regression'")

    def action_recipe(self) -> dict[str, Any]:
        """The action-recipe fields (see the class docstring) as a dict."""
        return {k: getattr(self, k) for k in OFT_LIBERO_RECIPE}

    def with_action_recipe(self, **recipe: Any) -> "VLAConfig":
        """A copy with action-recipe fields replaced (validated).

        Raises:
            ValueError: an unknown field name or an invalid value (named).
        """
        unknown = sorted(set(recipe) - set(OFT_LIBERO_RECIPE))
        if unknown:
            raise ValueError(f"unknown action-recipe fields {unknown}; allowed: {', '.join(OFT_LIBERO_RECIPE)}")
        values = self.to_dict()
        values.update(recipe)
        new = type(self).from_config_dict(values)
        new.norm_stats = copy.deepcopy(self.norm_stats)
        return new

    @property
    def parallel_decoding(self) -> bool:
        """True for OpenVLA-OFT's L1-regression head (bidirectional attention, one forward pass per chunk)."""
        return self.action_head == "l1_regression"

    # ------------------------------------------------------------------ derived quantities
    @property
    def action_vocab_size(self) -> int:
        """Size of the base vocabulary whose last ``n_action_bins`` ids are the action tokens (32000 for OpenVLA):
        the LLM vocab minus the ``pad_to_multiple_of`` padding rows, as the official ``OpenVLAForActionPrediction``."""
        return int(self.text_config.vocab_size) - int(self.pad_to_multiple_of)

    def timm_kwargs(self, tower: int) -> dict[str, Any]:
        """Keyword arguments of ``timm.create_model`` for tower ``tower`` (0 = featurizer, 1 = fused featurizer):
        the official call's (``pretrained=False, num_classes=0, img_size, act_layer``) plus the size overrides."""
        kwargs: dict[str, Any] = {
            "pretrained": False,
            "num_classes": 0,
            "img_size": self.image_sizes[tower],
            "act_layer": self.timm_override_act_layers[tower],
        }
        if self.vision_tower_overrides is not None:
            kwargs.update(self.vision_tower_overrides[tower])
        return kwargs

    # ------------------------------------------------------------------ presets
    @classmethod
    def openvla_7b(cls, norm_stats: dict | None = None) -> "VLAConfig":
        """The official OpenVLA-7B configuration: DINOv2-L/14 (reg4) + SigLIP-So400m/14 at 224 px, fused GELU MLP
        projector, Llama-2-7B (``LlamaConfig()`` defaults) with vocab 32000 + 64 padding rows and pad id 32000.

        Source: openvla/openvla ``vla-scripts/extern/convert_openvla_weights_to_hf.py`` and the released
        ``openvla/openvla-7b`` ``config.json``.
        """
        return cls(
            vision_backbone_id="dinosiglip-vit-so-224px",
            llm_backbone_id="llama2-7b-pure",
            arch_specifier="no-align+fused-gelu-mlp",
            use_fused_vision_backbone=True,
            image_resize_strategy="resize-naive",
            text_config={"vocab_size": 32064, "pad_token_id": 32000, "torch_dtype": "bfloat16"},
            pad_token_id=32000,
            pad_to_multiple_of=64,
            n_action_bins=256,
            norm_stats=norm_stats,
            torch_dtype="bfloat16",
        )

    @classmethod
    def tiny(cls, norm_stats: dict | None = None) -> "VLAConfig":
        """vlamix's embedded CPU default: the OpenVLA-7B architecture (same timm tower ids, fused projector,
        Llama, vocab 32064 so the action ids stay 31744..31999) at toy sizes.

        Towers: embed_dim 64, depth 3 (output = block 1 = depth - 2, as official), 2 heads. LLM: hidden 64,
        MLP 128, 2 layers, 2 heads. About 4.7 M parameters, 4.1 M of them in the two vocabulary matrices.
        """
        tower = {"embed_dim": 64, "depth": 3, "num_heads": 2}
        return cls(
            vision_backbone_id="dinosiglip-vit-so-224px",
            llm_backbone_id="llama2-7b-pure",
            arch_specifier="no-align+fused-gelu-mlp",
            use_fused_vision_backbone=True,
            image_resize_strategy="resize-naive",
            text_config={
                "vocab_size": 32064,
                "pad_token_id": 32000,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 2048,
            },
            pad_token_id=32000,
            pad_to_multiple_of=64,
            n_action_bins=256,
            norm_stats=norm_stats,
            vision_tower_overrides=[dict(tower), dict(tower)],
        )

    @classmethod
    def openvla_7b_oft(cls, norm_stats: dict | None = None) -> "VLAConfig":
        """OpenVLA-7B with OpenVLA-OFT's LIBERO recipe (:data:`OFT_LIBERO_RECIPE`: L1-regression head, 8-step
        chunks, two images, 8-D proprio): the architecture of moojink/openvla-7b-oft-finetuned-libero-*."""
        return cls.openvla_7b(norm_stats=norm_stats).with_action_recipe(**OFT_LIBERO_RECIPE)

    @classmethod
    def tiny_oft(cls, norm_stats: dict | None = None) -> "VLAConfig":
        """The tiny preset with OpenVLA-OFT's LIBERO recipe (:data:`OFT_LIBERO_RECIPE`): same towers and LLM,
        plus the L1 head and proprio projector at hidden size 64; runs the OFT pipeline on a CPU."""
        return cls.tiny(norm_stats=norm_stats).with_action_recipe(**OFT_LIBERO_RECIPE)

    @classmethod
    def tiny_p28(cls, norm_stats: dict | None = None) -> "VLAConfig":
        """The tiny preset with 28 px patches (both towers): 64 vision tokens per image instead of 256, same
        224 px input, widths and LLM. About 2.4x faster per training step on a CPU (docs/LEARNABILITY.md);
        the towers are the same timm ViTs with ``patch_size=28`` passed to ``timm.create_model``.
        """
        config = cls.tiny(norm_stats=norm_stats)
        config.vision_tower_overrides = [dict(t, patch_size=28) for t in config.vision_tower_overrides]
        return config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "VLAConfig":
        """Load an official ``config.json``, one of ours, or the fixture's ``tiny/config.json``.

        Raises:
            FileNotFoundError: no such file. ValueError: not an "openvla" config, or an invalid field.
        """
        with open(json_file, encoding="utf-8") as f:
            values = json.load(f)
        return cls.from_config_dict(values, source=str(json_file))

    @classmethod
    def from_config_dict(cls, values: dict[str, Any], source: str = "<dict>") -> "VLAConfig":
        """Build from a ``to_dict()``-style mapping (validated; ``model_type`` must be "openvla" when present).

        Raises:
            ValueError: ``model_type`` is not "openvla", or an invalid field.
        """
        values = copy.deepcopy(dict(values))
        model_type = values.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"{source}: config field 'model_type' is {model_type!r}; expected {cls.model_type!r}")
        values.pop("transformers_version", None)
        return cls(**values)


def _overrides_from_timm_calls(tiny_towers: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn the fixture's ``tiny_towers.calls`` (exact timm calls) into ``vision_tower_overrides``."""
    try:
        calls = tiny_towers["calls"]
        return [{k: v for k, v in call["kwargs"].items() if k not in _RESERVED_TIMM_KWARGS} for call in calls]
    except (KeyError, TypeError) as err:
        raise ValueError(f"config field 'tiny_towers': expected {{'calls': [{{'kwargs': {{...}}}}, ...]}}: {err}") from err


def _check_overrides(overrides: Any, n_towers: int) -> list[dict[str, Any]] | None:
    if overrides is None:
        return None
    if not isinstance(overrides, (list, tuple)) or len(overrides) != n_towers:
        raise ValueError(
            f"config field 'vision_tower_overrides': must be None or a list of {n_towers} dicts (one per tower), "
            f"got {overrides!r}"
        )
    out = []
    for i, item in enumerate(overrides):
        if not isinstance(item, dict):
            raise ValueError(f"config field 'vision_tower_overrides[{i}]': must be a dict, got {item!r}")
        bad = sorted(k for k in item if k in _RESERVED_TIMM_KWARGS)
        if bad:
            raise ValueError(
                f"config field 'vision_tower_overrides[{i}]': may not set {bad}; these come from the backbone id"
            )
        out.append(dict(item))
    return out
