"""``doremi_transfer``: DoReMi's step 3, a fresh static run on the time-averaged weights of a DoReMi run.

The DoReMi run of the same parameters (trained first, or reused by its train key) gives its
``time_averaged_weights``; the point then trains on them as a static mixture
(:func:`vlamix.pipeline.reference.resolve_training_config`). Unlike DoReMi, proxy and final model have the same
size (the point's ``model``). Needs ``mixing_level: dataset``.
"""

from __future__ import annotations

from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy
from vlamix.mixing.strategies.doremi import reference_label


@STRATEGIES.register("doremi_transfer")
class DoReMiTransfer(Strategy):
    """Static weights transferred from a DoReMi proxy run (the loop itself runs ``static``)."""

    name = "doremi_transfer"
    params = ("balance_by_size", "mixing_update_every", "dro_eta", "dro_smoothing", "dro_reference", "dro_reference_batches")
    levels = ("dataset",)

    @classmethod
    def describe(cls, mixing, data, by):
        return (f"doremi_transfer eta={mixing.dro_eta:g} c={mixing.dro_smoothing:g} K={mixing.mixing_update_every} "
                f"ref={reference_label(mixing)}")
