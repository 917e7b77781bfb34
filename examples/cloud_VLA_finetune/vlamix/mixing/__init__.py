"""Data-ratio strategies: which frames fine-tuning sees, in what proportions, and how that changes.

- :mod:`vlamix.mixing.weights`: sources and groups, closed-form baselines (static, full_dataset,
  task_balanced, temperature).
- :mod:`vlamix.mixing.skills`: skill of an instruction (``mixing_level: skill``), overridable.
- :mod:`vlamix.mixing.dynamic`: weights that change during training (doremi, exp3, curriculum).
- :mod:`vlamix.mixing.trajectory`: the saved weight trajectory and its plot.

Action-based filtering of steps lives with the data: :mod:`vlamix.data.filters`.
"""

from vlamix.mixing.dynamic import MixingController, dro_update, exp3_epsilon, exp3_probabilities, exp3_reward_update
from vlamix.mixing.skills import DEFAULT_SKILL_VERBS, skill_of, skill_table
from vlamix.mixing.weights import (
    DYNAMIC_STRATEGIES,
    MIXING_LEVELS,
    STRATEGIES,
    Source,
    build_sources,
    natural_weights,
    temperature_weights,
    uniform_weights,
)

__all__ = [
    "DEFAULT_SKILL_VERBS",
    "DYNAMIC_STRATEGIES",
    "MIXING_LEVELS",
    "MixingController",
    "STRATEGIES",
    "Source",
    "build_sources",
    "dro_update",
    "exp3_epsilon",
    "exp3_probabilities",
    "exp3_reward_update",
    "natural_weights",
    "skill_of",
    "skill_table",
    "temperature_weights",
    "uniform_weights",
]
