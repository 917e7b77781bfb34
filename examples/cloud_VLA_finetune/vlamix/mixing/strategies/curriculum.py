"""``curriculum``: a schedule of weights, ``[{step: 0, weights: {...}}, {step: N, weights: {...}}, ...]``.

After ``s_i`` optimiser steps the weights of phase ``i`` apply (the last phase with ``step <= steps done``);
group names are datasets at the dataset level, else tasks or skills.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from vlamix.core.errors import ConfigError
from vlamix.core.labels import fmt_weight, short_dataset
from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy
from vlamix.mixing.weights import group_frames, normalised_phase


def check_curriculum(phases, datasets: list[str] | None) -> None:
    """A well-formed schedule (also when another strategy ignores it: it is part of the train key).

    Args:
        phases: the ``curriculum`` value. datasets: the mixture's datasets when the level is ``dataset``
            (phase names must be among them), else None.
    Raises:
        ConfigError: field ``curriculum``.
    """
    form = "a list of {step: int, weights: {name: weight}} starting at step 0"
    if not isinstance(phases, (list, tuple)) or not phases:
        raise ConfigError("curriculum", f"strategy curriculum needs {form}, got {phases!r}")
    previous = -1
    for i, phase in enumerate(phases):
        if not isinstance(phase, Mapping) or set(phase) != {"step", "weights"}:
            raise ConfigError("curriculum", f"phase {i} must be {{step, weights}}, got {phase!r}")
        step, weights = phase["step"], phase["weights"]
        if isinstance(step, bool) or not isinstance(step, int) or step <= previous or (i == 0 and step != 0):
            raise ConfigError("curriculum", f"phase {i}: step must be an integer, 0 for the first phase and increasing, got {step!r}")
        previous = step
        if not isinstance(weights, Mapping) or not weights or not all(
            not isinstance(w, bool) and isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights.values()
        ) or sum(weights.values()) <= 0:
            raise ConfigError("curriculum", f"phase {i}: weights must map names to numbers >= 0, not all 0, got {weights!r}")
        if datasets is not None:
            unknown = [n for n in weights if n not in datasets]
            if unknown:
                raise ConfigError("curriculum", f"phase {i}: {unknown} are not datasets of the mixture; allowed: {', '.join(datasets)}")


@STRATEGIES.register("curriculum")
class Curriculum(Strategy):
    """Piecewise-constant weights over steps (see the module docstring)."""

    name = "curriculum"
    params = ("mixing_level", "skill_map", "curriculum")
    uses_mixture_weights = False
    dynamic = True

    @classmethod
    def check(cls, mixing, data):
        super().check(mixing, data)
        check_curriculum(mixing.curriculum, data.selected_datasets() if mixing.resolved_level() == "dataset" else None)

    @classmethod
    def describe(cls, mixing, data, by):
        phases = " -> ".join(
            f"@{int(p['step'])} {':'.join(short_dataset(n) for n in p['weights'])}="
            f"{':'.join(fmt_weight(w) for w in p['weights'].values())}"
            for p in mixing.curriculum or ()
        )
        return f"curriculum {phases}{by}"

    @classmethod
    def initial_weights(cls, mixing, data, sources):
        return normalised_phase(mixing.curriculum[0]["weights"], list(group_frames(sources)))

    def __init__(self, mixing, groups, initial):
        super().__init__(mixing, groups, initial)
        self.phases: list[tuple[int, np.ndarray]] = []
        for phase in mixing.curriculum:
            w = normalised_phase(phase["weights"], self.groups)
            self.phases.append((int(phase["step"]), np.array([w[g] for g in self.groups])))

    def after_step(self, step: int) -> dict[str, float] | None:
        for start, w in self.phases[1:]:
            if start == step:
                self.weights = w.copy()
                self.history.append(self._row(step, "phase", None, None))
                return self.current()
        return None
