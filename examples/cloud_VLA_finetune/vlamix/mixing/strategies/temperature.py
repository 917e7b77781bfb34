"""``temperature``: ``p(g) = n_g^(1/T) / sum(n^(1/T))``; T = 1 natural, T -> inf uniform.

As in multilingual data sampling (Arivazhagan et al. 2019, "Massively Multilingual NMT in the Wild", sec. 4.2;
the temperature sampling of mT5 / XLM-R).
"""

from __future__ import annotations

from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy
from vlamix.mixing.weights import baseline_group_weights, group_frames


@STRATEGIES.register("temperature")
class Temperature(Strategy):
    """Frame counts to the power 1/T (``temperature``)."""

    name = "temperature"
    params = ("mixing_level", "skill_map", "temperature")
    uses_mixture_weights = False

    @classmethod
    def describe(cls, mixing, data, by):
        return f"temperature T={mixing.temperature:g}{by}"

    @classmethod
    def initial_weights(cls, mixing, data, sources):
        return baseline_group_weights("temperature", group_frames(sources), mixing.temperature)
