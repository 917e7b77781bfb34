"""``static``: the user's mixture weights, normalised (times the dataset sizes with ``balance_by_size``)."""

from __future__ import annotations

from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy


@STRATEGIES.register("static")
class Static(Strategy):
    """Fixed dataset weights: ``p(d) = w_d / sum(w)`` (or ``w_d n_d / sum(w n)`` with ``balance_by_size``, OpenVLA's
    ``balance_weights``)."""

    name = "static"
    params = ("balance_by_size",)
    levels = ("dataset",)

    @classmethod
    def describe(cls, mixing, data, by):
        return f"static {data.mixture_label()}" + (" x size" if data.balance_by_size else "")
