"""``doremi``: excess-loss group DRO on the sampling weights during training.

Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining", Algorithm 1; applied
to robot data by Hejna et al. 2024, "Re-Mix: Optimizing Data Mixtures for Large Scale Imitation Learning".
Every ``mixing_update_every`` (K) steps, with ``L_g`` the group's mean training loss of the last K steps::

    lambda_g = max(L_g - L_ref_g, 0)                        excess loss, clipped at zero
    alpha'   = alpha * exp(eta * lambda)                    exponentiated-gradient step
    alpha    = (1 - c) * alpha' / sum(alpha') + c * alpha_0 smoothing toward the initial weights

so every weight stays >= ``c * alpha_0[g]``. ``L_ref``: the initial model's per-group loss on
``dro_reference_batches`` batches drawn uniformly over groups (``dro_reference: initial``), a saved run's
per-group training loss over the last quarter of its log (a run folder), or the run of the same point with
``strategy: static`` trained first (``auto``, :mod:`vlamix.pipeline.reference`). Differences from DoReMi: the
weights set the sampling proportions of the run itself (no separate proxy), and the reference loss is a
per-group constant rather than a per-example forward pass of a reference model (which would double the step
cost of a 7B model). The run reports the final and the time-averaged weights (DoReMi's output is the average).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from vlamix.core.constants import TRAIN_LOG_NAME
from vlamix.core.errors import ConfigError
from vlamix.core.io import find_train_log, read_jsonl
from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy, nan_to_none, none_to_nan

#: ``dro_reference`` that measures the reference losses with the initial model.
DRO_REFERENCE_INITIAL = "initial"
#: ``dro_reference`` that trains a reference run on the initial weights first (vlamix.pipeline.reference).
DRO_REFERENCE_AUTO = "auto"


def dro_update(
    weights: Sequence[float], excess: Sequence[float], eta: float, smoothing: float, initial: Sequence[float]
) -> np.ndarray:
    """One DoReMi step (see the module docstring).

    Args:
        weights: current weights alpha, float [G] (sum 1). excess: clipped excess losses lambda >= 0, float [G].
        eta: step size > 0. smoothing: c in [0, 1]. initial: alpha_0, float [G] (sum 1).
    Returns:
        new weights, float64 [G], sum 1, each >= ``c * initial[g]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    lam = np.asarray(excess, dtype=np.float64)
    init = np.asarray(initial, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(w) + eta * lam
    logits -= logits[np.isfinite(logits)].max()
    step = np.exp(logits)
    step /= step.sum()
    return (1.0 - smoothing) * step + smoothing * init / init.sum()


def reference_label(mixing) -> str:
    """``initial``, ``auto`` or the base name of the reference run folder."""
    ref = mixing.dro_reference
    return ref if ref in (DRO_REFERENCE_INITIAL, DRO_REFERENCE_AUTO) else os.path.basename(os.path.normpath(ref))


@STRATEGIES.register("doremi")
class DoReMi(Strategy):
    """Group DRO against a reference loss (see the module docstring)."""

    name = "doremi"
    params = ("balance_by_size", "mixing_level", "skill_map", "mixing_update_every", "dro_eta", "dro_smoothing",
              "dro_reference", "dro_reference_batches")
    dynamic = True

    @classmethod
    def check(cls, mixing, data):
        super().check(mixing, data)
        if mixing.dro_reference == DRO_REFERENCE_AUTO and mixing.resolved_level() != "dataset":
            # the reference run is a static (dataset-level) mixture
            raise ConfigError("mixing_level", f"dro_reference auto and doremi_transfer weight datasets; got "
                              f"{mixing.mixing_level!r}, allowed: dataset")

    @classmethod
    def describe(cls, mixing, data, by):
        return (f"doremi eta={mixing.dro_eta:g} c={mixing.dro_smoothing:g} K={mixing.mixing_update_every} "
                f"ref={reference_label(mixing)}{by}")

    def __init__(self, mixing, groups, initial):
        super().__init__(mixing, groups, initial)
        self.eta = float(mixing.dro_eta)
        self.smoothing = float(mixing.dro_smoothing)
        self.reference: np.ndarray | None = None

    @property
    def needs_reference(self) -> bool:
        return self.reference is None

    def set_reference(self, losses: Sequence[float]) -> None:
        """Per-group reference loss L_ref, float [G] (nats); a NaN entry gives that group no excess.

        Raises:
            ValueError: wrong length.
        """
        ref = np.asarray(losses, dtype=np.float64)
        if ref.shape != (len(self.groups),):
            raise ValueError(f"expected {len(self.groups)} reference losses, got shape {list(ref.shape)}")
        self.reference = ref

    def after_step(self, step: int) -> dict[str, float] | None:
        if step % self.every != 0:
            return None
        window = self._window_loss()
        ref = self.reference if self.reference is not None else np.full(len(self.groups), np.nan)
        excess = np.where(np.isfinite(self.last_loss) & np.isfinite(ref), np.maximum(self.last_loss - ref, 0.0), 0.0)
        self.weights = dro_update(self.weights, excess, self.eta, self.smoothing, self.initial)
        self.history.append(self._row(step, "update", window, excess))
        return self.current()

    def extra_state(self) -> dict[str, Any]:
        return {"reference": None if self.reference is None else nan_to_none(self.reference)}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.reference = None if state["reference"] is None else none_to_nan(state["reference"])


def reference_losses_from_run(path: str, groups: Sequence[str], *, tail_fraction: float = 0.25) -> np.ndarray:
    """Per-group reference loss of a saved run: the mean of its logged ``group_loss`` values over
    the last ``tail_fraction`` of its optimiser steps.

    Args:
        path: a run folder with ``train_log.jsonl``, or one of its ``step_*`` checkpoints.
        groups: the groups needed, in order.
    Returns:
        float64 [G] (nats).
    Raises:
        FileNotFoundError: no ``train_log.jsonl``. ValueError: the run logged no loss for some group.
    """
    log = find_train_log(path)
    if log is None:
        raise FileNotFoundError(f"no {TRAIN_LOG_NAME} in {path} or its parent folder")
    rows = read_jsonl(log)  # a torn last line (killed run) is skipped
    last_step = max((int(r.get("step", 0)) for r in rows), default=0)
    first = last_step - max(1, int(round(tail_fraction * last_step))) + 1
    values: dict[str, list[float]] = {g: [] for g in groups}
    for row in rows:
        if int(row.get("step", 0)) >= first:
            for g, v in (row.get("group_loss") or {}).items():
                if g in values and v is not None:
                    values[g].append(float(v))
    missing = [g for g, v in values.items() if not v]
    if missing:
        raise ValueError(f"reference run {log} logged no loss for groups {missing} in its last {last_step - first + 1} steps")
    return np.array([float(np.mean(values[g])) for g in groups])
