"""Per-group loss weights: weigh a rare group's loss more instead of (or besides) sampling it more.

``loss_weighting`` (:class:`vlamix.pipeline.config.BenchConfig`) is the third answer to task imbalance next to
the sampling strategies (:mod:`vlamix.mixing.weights`) and the curriculum: each training frame's
action-token loss is multiplied by the weight ``w_g`` of its group (the mixing level's groups:
dataset, task or skill), with

``none``                   ``w_g = 1``
``inverse_frequency``      ``w_g = c / n_g``
``inverse_sqrt_frequency`` ``w_g = c / sqrt(n_g)``

where ``n_g`` is the group's kept training frames (after action filtering) and ``c`` normalises the
weights so that the expected weight of a sampled frame is 1::

    sum_g p_g w_g = 1        (p_g = the sampler's group weights)

so the loss scale, and with it the effective learning rate, stays comparable with an unweighted
run. Groups with ``n_g = 0`` or ``p_g = 0`` draw no frame; their weight is still defined
(``c / n_g``, 0 for ``n_g = 0``) but does not enter the normalisation.

Examples: with natural sampling (``full_dataset`` or ``temperature`` T = 1, ``p_g = n_g / N``),
``inverse_frequency`` gives ``w_g = N / (G n_g)`` and every group contributes ``p_g w_g = 1 / G`` of
the expected loss, the loss-side counterpart of ``task_balanced`` sampling; with uniform sampling
(``task_balanced``, T = inf) it gives ``w_g = G / (n_g sum_h 1/n_h)``.

Dynamic strategies (doremi, exp3, curriculum) change ``p`` during training: the trainer
renormalises against the current sampling weights at every weight change (the ``1/n`` shape stays,
only ``c`` changes), so the expected weight per frame is 1 at every step. ``n_g`` is fixed for the
run.

The recipe ("per-task loss weighting" against task imbalance) is the inverse-frequency class
weighting of imbalanced classification: scikit-learn's ``class_weight="balanced"``
(``sklearn/utils/class_weight.py``) is ``N / (G n_g)``, the natural-sampling case above; the
square-root variant is the softer form that leaves some of the natural imbalance in place.
NumPy only; the weighted loss itself is :func:`vlamix.train.loss_weighting.weighted_action_loss`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

LOSS_WEIGHTINGS = ("none", "inverse_frequency", "inverse_sqrt_frequency")
#: Exponent a of ``w_g ~ n_g^(-a)`` per weighting.
_EXPONENT = {"none": 0.0, "inverse_frequency": 1.0, "inverse_sqrt_frequency": 0.5}


def raw_loss_weights(counts: Sequence[float], weighting: str) -> np.ndarray:
    """Unnormalised weights ``n_g^(-a)`` (a = 0, 1 or 1/2): float64 [G]; 0 where ``n_g = 0``.

    Raises:
        ValueError: unknown ``weighting``, or counts that are negative, non-finite or all zero.
    """
    if weighting not in _EXPONENT:
        raise ValueError(f"unknown loss weighting {weighting!r}; allowed: {', '.join(LOSS_WEIGHTINGS)}")
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not np.all(np.isfinite(n)) or np.any(n < 0) or n.sum() <= 0:
        raise ValueError(f"counts must be finite, >= 0 and not all zero, got {list(np.atleast_1d(n))}")
    a = _EXPONENT[weighting]
    with np.errstate(divide="ignore"):
        return np.where(n > 0, np.power(np.where(n > 0, n, 1.0), -a), 0.0)


def loss_weights(counts: Sequence[float], sampling: Sequence[float], weighting: str) -> np.ndarray:
    """Normalised per-group loss weights: float64 [G] with ``sum_g p_g w_g = 1``.

    Args:
        counts: kept training frames per group, [G] (>= 0, not all 0).
        sampling: the sampler's group weights p, [G] (>= 0; normalised here).
        weighting: one of :data:`LOSS_WEIGHTINGS`.
    Returns:
        ``w = r / sum(p * r)`` with ``r`` = :func:`raw_loss_weights`; all ones for ``none`` when every
        sampled group has frames.
    Raises:
        ValueError: unknown ``weighting``, bad counts, a sampling vector of another length, negative
            or all zero, or one that only samples groups without frames.
    """
    r = raw_loss_weights(counts, weighting)
    p = np.asarray(sampling, dtype=np.float64)
    if p.shape != r.shape or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"sampling weights must be {r.size} finite numbers >= 0, not all zero, got {list(np.atleast_1d(p))}")
    p = p / p.sum()
    expected = float(np.sum(p * r))
    if not expected > 0:
        raise ValueError(f"the sampling weights {p.tolist()} only give weight to groups without frames ({list(counts)})")
    return r / expected


def named_loss_weights(
    counts: Mapping[str, float], sampling: Mapping[str, float], weighting: str
) -> dict[str, float]:
    """:func:`loss_weights` by group name, in the order of ``counts``.

    Raises:
        KeyError: a group of ``counts`` missing from ``sampling``. ValueError: see :func:`loss_weights`.
    """
    names = list(counts)
    w = loss_weights([counts[g] for g in names], [sampling[g] for g in names], weighting)
    return dict(zip(names, w.tolist()))


def expected_weight(weights: Sequence[float], sampling: Sequence[float]) -> float:
    """``sum_g p_g w_g`` with ``p`` normalised: the mean weight of a sampled frame (1 after normalisation)."""
    p = np.asarray(sampling, dtype=np.float64)
    return float(np.sum(p / p.sum() * np.asarray(weights, dtype=np.float64)))
