"""The model section of a benchmark point (:class:`ModelConfig`): which VLA, and how it is fine-tuned."""

from __future__ import annotations

from dataclasses import dataclass

from vlamix.core.errors import ConfigError
from vlamix.core.settings import check_bool, check_choice, check_int, check_range, setting

#: Built-in model configurations (no download); anything else is a checkpoint folder path.
BUILTIN_MODELS = ("tiny", "tiny-p28")
FINETUNE_MODES = ("lora", "full")
#: Action recipes (:data:`vlamix.model.configuration.ACTION_HEADS`): OpenVLA's tokens, OpenVLA-OFT's L1 regression.
ACTION_HEAD_CHOICES = ("tokens", "l1_regression")


@dataclass(frozen=True)
class ModelConfig:
    """The base model and the fine-tuning recipe (OpenVLA's LoRA: rank 32, alpha min(rank, 16), dropout 0), and the
    action recipe: OpenVLA's action tokens, or OpenVLA-OFT's parallel decoding (moojink/openvla-oft, LIBERO recipe:
    ``action_head: l1_regression``, ``action_chunk: 8``, ``use_wrist_image: true``, ``use_proprio: true``)."""

    path: str = setting(
        "tiny", role="train", yaml="model", allowed="tiny, tiny-p28, or an OpenVLA checkpoint folder",
        doc="built-in random-init model of the OpenVLA architecture, or a checkpoint folder (e.g. openvla/openvla-7b)")
    lora_rank: int = setting(32, role="train", doc="LoRA rank r on every linear layer but lm_head", allowed=">= 1")
    lora_alpha: int = setting(16, role="train", doc="LoRA scale numerator: the update is (alpha / r) B A", allowed=">= 1")
    lora_dropout: float = setting(0.0, role="train", allowed="[0, 1)", doc="LoRA dropout")
    finetune_mode: str = setting(
        "lora", role="train", key_omits_default=True, allowed=", ".join(FINETUNE_MODES),
        doc="lora: only the adapters train; full: every base weight trains too (for a random-init base)")
    action_head: str = setting(
        "tokens", role="train", key_omits_default=True, allowed=", ".join(ACTION_HEAD_CHOICES),
        doc="tokens: OpenVLA's 256-bin action tokens, decoded one by one (causal); l1_regression: OpenVLA-OFT's "
            "parallel decoding of a whole chunk (bidirectional attention, MLP head, L1 loss)")
    action_chunk: int = setting(
        1, role="train", key_omits_default=True, unit="actions",
        doc="actions predicted per observation (OpenVLA-OFT on LIBERO: 8); above 1 needs action_head l1_regression")
    use_wrist_image: bool = setting(
        False, role="train", key_omits_default=True,
        doc="also feed the wrist camera (observation/wrist_image) as a second image; needs action_head l1_regression")
    use_proprio: bool = setting(
        False, role="train", key_omits_default=True,
        doc="feed the 8-D state (observation/state: EEF position, axis-angle, 2 gripper joints), q01/q99-normalised, "
            "as one token through a projector; needs action_head l1_regression")

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field (whether a folder exists is an environment check)."""
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("model", f"must be one of {BUILTIN_MODELS} or a checkpoint folder path")
        check_choice("finetune_mode", self.finetune_mode, FINETUNE_MODES)
        check_int("lora_rank", self.lora_rank, 1)
        check_int("lora_alpha", self.lora_alpha, 1)
        check_range("lora_dropout", self.lora_dropout, 0.0, 1.0)
        if not self.lora_dropout < 1.0:
            raise ConfigError("lora_dropout", f"must be a number in [0, 1) (1 drops every LoRA input), got {self.lora_dropout!r}")
        check_choice("action_head", self.action_head, ACTION_HEAD_CHOICES)
        check_int("action_chunk", self.action_chunk, 1)
        check_bool("use_wrist_image", self.use_wrist_image)
        check_bool("use_proprio", self.use_proprio)
        if self.action_head == "tokens":
            for name, off in (("action_chunk", 1), ("use_wrist_image", False), ("use_proprio", False)):
                if getattr(self, name) != off:
                    raise ConfigError(name, f"{getattr(self, name)!r} needs action_head l1_regression (OpenVLA-OFT); "
                                      f"with action_head tokens allowed: {off!r}")

    def action_recipe(self) -> dict:
        """The action-recipe fields of :class:`vlamix.model.configuration.VLAConfig` this section asks for (what
        :func:`vlamix.model.checkpoint.load_vla` takes as ``recipe``)."""
        return {"action_head": self.action_head, "action_chunk": self.action_chunk,
                "num_images_in_input": 2 if self.use_wrist_image else 1, "use_proprio": self.use_proprio}

    @property
    def parallel_decoding(self) -> bool:
        """True for OpenVLA-OFT's L1-regression head."""
        return self.action_head == "l1_regression"

    @property
    def builtin(self) -> bool:
        """True for a built-in preset (no folder)."""
        return self.path in BUILTIN_MODELS
