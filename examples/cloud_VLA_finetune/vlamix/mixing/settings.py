"""The data-ratio strategy section of a benchmark point (:class:`MixingConfig`).

Which strategy runs and its parameters; the strategy classes themselves (:mod:`vlamix.mixing.strategies`)
declare which of these fields they read, which levels they support and their label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from vlamix.core.errors import ConfigError
from vlamix.core.settings import check_choice, check_int, check_positive, check_range, setting
from vlamix.mixing.loss_weights import LOSS_WEIGHTINGS
from vlamix.mixing.strategies import MIXING_LEVELS, STRATEGIES, Strategy
from vlamix.mixing.strategies.curriculum import check_curriculum
from vlamix.mixing.strategies.doremi import DRO_REFERENCE_AUTO, DRO_REFERENCE_INITIAL

if TYPE_CHECKING:  # annotations only: the data layer sits above mixing
    from vlamix.data.settings import DataConfig


@dataclass(frozen=True)
class MixingConfig:
    """Strategy, mixing level and every strategy's parameters (a strategy reads only its own)."""

    strategy: str = setting(
        "static", role="train", allowed="the registered strategies (vlamix.mixing.strategies)",
        doc="static, full_dataset, task_balanced, temperature, doremi, exp3, curriculum or doremi_transfer")
    mixing_level: str | None = setting(
        None, role="train", allowed="dataset, task, skill, null",
        doc="what weights are given to; null = the strategy's default (task for task_balanced, else dataset)")
    temperature: float = setting(2.0, role="train", allowed="> 0, .inf", doc="T of the temperature strategy: n^(1/T)")
    skill_map: Mapping[str, str] | None = setting(
        None, role="train", doc="overrides of the instruction -> skill mapping (verb or whole instruction -> skill)")
    mixing_update_every: int = setting(10, role="train", unit="steps", doc="optimiser steps between weight updates (doremi, exp3)", allowed=">= 1")
    dro_eta: float = setting(1.0, role="train", allowed="> 0", doc="DoReMi's exponentiated-gradient step size")
    dro_smoothing: float = setting(
        0.05, role="train", allowed="[0, 1]", doc="DoReMi's mix of the initial weights kept in every update")
    dro_reference: str = setting(
        DRO_REFERENCE_INITIAL, role="train", allowed="initial, auto, or a run folder",
        doc="reference loss: the initial model's, a static run trained first (auto), or a saved run's")
    dro_reference_batches: int = setting(4, role="train", unit="batches", doc="batches per reference-loss estimate", allowed=">= 1")
    exp3_smoothing: float = setting(0.9, role="train", allowed="[0, 1)", doc="moving-average factor of EXP3's reward estimates")
    curriculum: tuple[Mapping[str, Any], ...] | None = setting(
        None, role="train", doc="[{step: 0, weights: {...}}, ...]: group weights from each step on")
    loss_weighting: str = setting(
        "none", role="train", allowed=", ".join(LOSS_WEIGHTINGS),
        doc="per-group loss weights over the mixing level's groups (1/n or 1/sqrt(n), normalised)")

    # ------------------------------------------------------------------ derived
    def strategy_class(self) -> type[Strategy]:
        """The registered class of ``strategy``. Raises ConfigError (with "did you mean") for an unknown name."""
        return STRATEGIES.get(self.strategy)

    def resolved_level(self) -> str:
        """``mixing_level``, or the strategy's default when it is null."""
        return self.mixing_level if self.mixing_level is not None else self.strategy_class().default_level

    def label(self, data: "DataConfig") -> str:
        """The strategy and the parameters it uses, e.g. ``temperature T=2 by task``, plus the loss weighting."""
        cls = self.strategy_class()
        level = self.resolved_level()
        by = "" if level == cls.default_level else f" by {level}"
        label = cls.describe(self, data, by)
        if self.loss_weighting != "none":
            label += f" + loss {self.loss_weighting}" + ("" if by or self.strategy == "task_balanced" else f" by {level}")
        return label

    # ------------------------------------------------------------------ values (pure)
    def check(self, data: "DataConfig") -> None:
        """Raise :class:`ConfigError` naming the first invalid field (no disk access; whether a ``dro_reference``
        run folder exists is an environment check)."""
        cls = self.strategy_class()
        if self.mixing_level is not None:
            check_choice("mixing_level", self.mixing_level, MIXING_LEVELS)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError("temperature", f"must be a number > 0 (1 = natural proportions, .inf = uniform), got {self.temperature!r}")
        if self.skill_map is not None:
            if not isinstance(self.skill_map, Mapping) or not all(
                isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip() for k, v in self.skill_map.items()
            ):
                raise ConfigError("skill_map", f"must be null or a mapping verb-or-instruction -> skill name, got {self.skill_map!r}")
        check_int("mixing_update_every", self.mixing_update_every, 1)
        check_positive("dro_eta", self.dro_eta)
        check_range("dro_smoothing", self.dro_smoothing, 0.0, 1.0)
        check_int("dro_reference_batches", self.dro_reference_batches, 1)
        if not isinstance(self.dro_reference, str) or not self.dro_reference:
            raise ConfigError("dro_reference", f"must be '{DRO_REFERENCE_INITIAL}', '{DRO_REFERENCE_AUTO}' or a run folder, "
                              f"got {self.dro_reference!r}")
        if isinstance(self.exp3_smoothing, bool) or not isinstance(self.exp3_smoothing, (int, float)) or not 0 <= self.exp3_smoothing < 1:
            raise ConfigError("exp3_smoothing", f"must be a number in [0, 1), got {self.exp3_smoothing!r}")
        cls.check(self, data)
        if self.curriculum is not None and self.strategy != "curriculum":  # ignored, but part of the train key
            check_curriculum(self.curriculum, data.selected_datasets() if self.resolved_level() == "dataset" else None)
        check_choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
