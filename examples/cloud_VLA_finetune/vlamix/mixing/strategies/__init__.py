"""Data-ratio strategies, one module each, found by name.

Each module defines a :class:`vlamix.mixing.strategies.base.Strategy` subclass and registers it under
its ``strategy`` name in :data:`STRATEGIES`; every module of this package is imported here, so adding a
strategy is one new module (and its test), nothing else. ``STRATEGIES.get(name)`` returns the class, or
raises :class:`vlamix.core.errors.ConfigError` for field ``strategy`` with "did you mean".

The class is both the strategy's declaration (the configuration fields it reads, the mixing levels it
supports, its label, its initial group weights) and the run's weight controller (updates during
training, state for resume).
"""

from __future__ import annotations

import importlib
import pkgutil

from vlamix.mixing.strategies.base import MIXING_LEVELS, Strategy
from vlamix.mixing.strategies.registry import STRATEGIES

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module}")


def strategy_params() -> tuple[str, ...]:
    """Every configuration field some strategy reads (the train key resets the ones a point's strategy ignores)."""
    return tuple(dict.fromkeys(p for name in STRATEGIES for p in STRATEGIES.get(name).params))


__all__ = ["MIXING_LEVELS", "STRATEGIES", "Strategy", "strategy_params"]
