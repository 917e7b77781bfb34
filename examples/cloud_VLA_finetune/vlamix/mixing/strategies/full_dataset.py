"""``full_dataset``: every chosen dataset concatenated, natural proportions ``p(g) = n_g / sum(n)``."""

from __future__ import annotations

from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy
from vlamix.mixing.weights import baseline_group_weights, group_frames


@STRATEGIES.register("full_dataset")
class FullDataset(Strategy):
    """Natural proportions of the kept training frames; the mixture's weights only choose the datasets."""

    name = "full_dataset"
    uses_mixture_weights = False

    @classmethod
    def describe(cls, mixing, data, by):
        return "full_dataset"

    @classmethod
    def initial_weights(cls, mixing, data, sources):
        return baseline_group_weights("full_dataset", group_frames(sources))
