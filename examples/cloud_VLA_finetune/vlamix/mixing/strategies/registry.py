"""The registry of data-ratio strategies: ``strategy`` name -> :class:`~vlamix.mixing.strategies.base.Strategy` class."""

from __future__ import annotations

from vlamix.core.registry import Registry
from vlamix.mixing.strategies.base import Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
