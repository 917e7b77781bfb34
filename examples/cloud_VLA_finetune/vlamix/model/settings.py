"""The model section of a benchmark point (:class:`ModelConfig`): which VLA, and how it is fine-tuned."""

from __future__ import annotations

from dataclasses import dataclass

from vlamix.core.errors import ConfigError
from vlamix.core.settings import check_choice, check_int, check_range, setting

#: Built-in model configurations (no download); anything else is a checkpoint folder path.
BUILTIN_MODELS = ("tiny", "tiny-p28")
FINETUNE_MODES = ("lora", "full")


@dataclass(frozen=True)
class ModelConfig:
    """The base model and the fine-tuning recipe (OpenVLA's LoRA: rank 32, alpha min(rank, 16), dropout 0)."""

    path: str = setting(
        "tiny", role="train", yaml="model", allowed="tiny, tiny-p28, or an OpenVLA checkpoint folder",
        doc="built-in random-init model of the OpenVLA architecture, or a checkpoint folder (e.g. openvla/openvla-7b)")
    lora_rank: int = setting(32, role="train", doc="LoRA rank r on every linear layer but lm_head", allowed=">= 1")
    lora_alpha: int = setting(16, role="train", doc="LoRA scale numerator: the update is (alpha / r) B A", allowed=">= 1")
    lora_dropout: float = setting(0.0, role="train", allowed="[0, 1)", doc="LoRA dropout")
    finetune_mode: str = setting(
        "lora", role="train", key_omits_default=True, allowed=", ".join(FINETUNE_MODES),
        doc="lora: only the adapters train; full: every base weight trains too (for a random-init base)")

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

    @property
    def builtin(self) -> bool:
        """True for a built-in preset (no folder)."""
        return self.path in BUILTIN_MODELS
