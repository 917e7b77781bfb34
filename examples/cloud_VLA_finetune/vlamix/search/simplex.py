"""The probability simplex as a search space: a uniform bijection from the unit cube, and grids.

:func:`cube_to_simplex` maps ``u in [0, 1)^(K-1)`` to mixture weights ``w`` (``w >= 0``, ``sum w = 1``)
by stick-breaking with the inverse CDFs of ``Beta(1, K-i)``::

    v_i = 1 - (1 - u_i)^(1 / (K - i))         i = 1 .. K-1
    w_i = v_i * prod_{j<i} (1 - v_j),   w_K = prod_{j<K} (1 - v_j)

With ``u`` uniform on the cube, ``w`` is ``Dirichlet(1, ..., 1)``, i.e. uniform on the simplex
(stick-breaking construction of the Dirichlet distribution; Devroye 1986, "Non-Uniform Random Variate
Generation", XI.4). The map is smooth and one-to-one, so a sampler that spreads its draws evenly over
the cube (Optuna's TPE start-up trials, the GP sampler's Sobol start) spreads them evenly over the
mixtures, and no two parameter vectors name the same mixture (unlike sorted uniforms).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np


def cube_to_simplex(u: Sequence[float]) -> np.ndarray:
    """``u``: float [K-1] in [0, 1] -> weights float64 [K] (sum 1). K = 1 for an empty ``u``.

    Raises:
        ValueError: a value outside [0, 1] or not finite.
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(u)) or np.any(u < 0) or np.any(u > 1):
        raise ValueError(f"cube coordinates must be in [0, 1], got {u.tolist()}")
    k = u.size + 1
    w = np.empty(k)
    rest = 1.0
    for i, ui in enumerate(u):
        v = 1.0 - (1.0 - ui) ** (1.0 / (k - 1 - i))
        w[i] = v * rest
        rest *= 1.0 - v
    w[-1] = rest
    return w


def simplex_to_cube(w: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`cube_to_simplex`: weights float [K] (normalised here) -> float64 [K-1].

    Raises:
        ValueError: negative, non-finite or all-zero weights.
    """
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    w = w / w.sum()
    k = w.size
    u = np.empty(k - 1)
    rest = 1.0
    for i in range(k - 1):
        v = 0.0 if rest <= 0 else min(1.0, w[i] / rest)
        u[i] = 1.0 - (1.0 - v) ** (k - 1 - i)
        rest -= w[i]
    return u


def simplex_lattice(k: int, divisions: int) -> np.ndarray:
    """All weights with coordinates in ``{0, 1/m, ..., 1}`` summing to 1: float64 [C(m+k-1, k-1), k]
    (``m = divisions``), in lexicographic order of the counts. The grid a user would write."""
    if k < 1 or divisions < 1:
        raise ValueError(f"need k >= 1 and divisions >= 1, got k={k}, divisions={divisions}")
    rows = [c for c in itertools.product(range(divisions + 1), repeat=k) if sum(c) == divisions]
    return np.array(sorted(rows, reverse=True), dtype=np.float64) / divisions


def lattice_for_budget(k: int, budget: int) -> np.ndarray:
    """The finest :func:`simplex_lattice` with at most ``budget`` points (at least the K vertices...
    or fewer when ``budget < k``: then the first ``budget`` points of the 1-division lattice)."""
    m = 1
    while len(simplex_lattice(k, m + 1)) <= budget:
        m += 1
    return simplex_lattice(k, m)[:budget]
