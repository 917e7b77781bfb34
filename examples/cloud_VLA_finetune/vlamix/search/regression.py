"""Mixture regression: predict a metric from the mixture weights and suggest the best mixture.

``vlamix suggest -f benchmarkingjob.yaml [--metric success_rate]`` reads the finished points of the
job (grid points and search trials: every ``<job dir>/<algorithm>/<point id>/`` whose ``result.json``
says ``completed``), fits the model below to (normalised mixture weights, metric), and prints the
predicted best mixture with its predicted value and a 95% prediction interval.

Model: Scheffé's quadratic mixture polynomial (Scheffé 1958, "Experiments with Mixtures", JRSS-B;
the standard model of mixture experiments, without intercept because ``sum w = 1``)::

    y = sum_i b_i w_i + sum_{i<j} b_ij w_i w_j + noise            (p = K + K(K-1)/2 terms)

fitted by ridge least squares (``lambda = ridge``, default 1e-6 times the trace of ``X^T X / p``, only
to keep the solve stable) with NumPy. This is the quadratic route of RegMix (Liu et al. 2024,
arXiv 2407.01492, which also fits LightGBM) and of Data Mixing Laws (Ye et al. 2024, arXiv
2403.16952). Reported:

* leave-one-out RMSE, from the hat matrix ``H = X (X^T X + lambda I)^-1 X^T``: ``e_i / (1 - H_ii)``;
* the best mixture: the maximiser (or minimiser) of the fitted polynomial over 20000 Dirichlet(1)
  draws plus the lattice of step 1/20 (seeded, so repeatable);
* its prediction interval ``yhat +- t_{0.975, n - p_eff} * s * sqrt(1 + x0^T (X^T X + lambda I)^-1 x0)``
  with ``p_eff = trace(H)`` and ``s^2 = RSS / (n - p_eff)``.

At least ``p + 2`` points are needed (``ValueError`` otherwise); with fewer, no regression is shown.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from vlamix.search.simplex import simplex_lattice


def design(weights: np.ndarray) -> np.ndarray:
    """Scheffé quadratic terms: float64 [N, K] weights (rows sum 1) -> float64 [N, K + K(K-1)/2]."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    pairs = [w[:, i] * w[:, j] for i, j in itertools.combinations(range(w.shape[1]), 2)]
    return np.column_stack([w, *pairs]) if pairs else w


def n_terms(k: int) -> int:
    """Number of model terms for K datasets."""
    return k + k * (k - 1) // 2


@dataclass
class MixtureRegression:
    """A fitted quadratic mixture model (see the module docstring)."""

    datasets: list[str]
    coef: np.ndarray           # float64 [p]
    inverse: np.ndarray        # float64 [p, p]: (X^T X + lambda I)^-1
    sigma: float               # residual standard deviation (s)
    dof: float                 # n - p_eff
    loo_rmse: float
    n: int

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """float [N, K] -> float64 [N]."""
        return design(weights) @ self.coef

    def interval(self, weights: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Prediction interval at ``weights`` float [N, K]: (low, high), float64 [N] each."""
        x = design(weights)
        half = stats.t.ppf(0.5 + level / 2, self.dof) * self.sigma * np.sqrt(1.0 + np.einsum("ij,jk,ik->i", x, self.inverse, x))
        y = x @ self.coef
        return y - half, y + half


def fit(datasets: Sequence[str], weights: np.ndarray, values: np.ndarray, *, ridge: float = 1e-6) -> MixtureRegression:
    """Fit the model to float [N, K] weights (normalised here) and float [N] values.

    Raises:
        ValueError: fewer than ``p + 2`` points, mismatched shapes, or non-finite values.
    """
    w = np.asarray(weights, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(datasets) or y.shape != (w.shape[0],):
        raise ValueError(f"weights must be [N, {len(datasets)}] and values [N], got {w.shape} and {y.shape}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(y))):
        raise ValueError("weights and values must be finite")
    w = w / w.sum(axis=1, keepdims=True)
    p = n_terms(len(datasets))
    if len(y) < p + 2:
        raise ValueError(f"{len(y)} points; the quadratic model over {len(datasets)} datasets needs at least {p + 2}")
    x = design(w)
    gram = x.T @ x
    lam = ridge * np.trace(gram) / p
    inverse = np.linalg.inv(gram + lam * np.eye(p))
    coef = inverse @ x.T @ y
    hat = np.einsum("ij,jk,ik->i", x, inverse, x)
    resid = y - x @ coef
    loo = resid / np.maximum(1.0 - hat, 1e-9)
    p_eff = float(hat.sum())
    dof = max(len(y) - p_eff, 1.0)
    sigma = math.sqrt(float(resid @ resid) / dof)
    return MixtureRegression(list(datasets), coef, inverse, sigma, dof, float(np.sqrt(np.mean(loo**2))), len(y))


def best_mixture(model: MixtureRegression, *, direction: str = "maximize", seed: int = 0, draws: int = 20000) -> dict[str, Any]:
    """The model's best mixture over Dirichlet(1) draws + the 1/20 lattice: ``{weights, predicted, low, high}``."""
    k = len(model.datasets)
    rng = np.random.default_rng(seed)
    cands = np.vstack([rng.dirichlet(np.ones(k), draws), simplex_lattice(k, 20)])
    pred = model.predict(cands)
    i = int(np.argmax(pred) if direction == "maximize" else np.argmin(pred))
    low, high = model.interval(cands[i : i + 1])
    return {"weights": dict(zip(model.datasets, cands[i].round(4).tolist())), "predicted": float(pred[i]),
            "low": float(low[0]), "high": float(high[0])}


def finished_points(job_dir: str, metric: str) -> list[tuple[dict[str, float], float]]:
    """``(mixture, metric value)`` of every completed point folder under ``job_dir`` (grid and search)."""
    out = []
    for algo in sorted(os.listdir(job_dir)) if os.path.isdir(job_dir) else []:
        folder = os.path.join(job_dir, algo)
        for pid in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            try:
                with open(os.path.join(folder, pid, "result.json")) as fh:
                    result = json.load(fh)
                with open(os.path.join(folder, pid, "point.json")) as fh:
                    point = json.load(fh)
            except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
                continue
            value = (result.get("metrics") or {}).get(metric)
            mixture = next((m["hyperparameters"].get("mixture") for m in point.get("modules", []) if m.get("type") == "basemodel"), None)
            if result.get("status") == "completed" and isinstance(value, (int, float)) and isinstance(mixture, Mapping):
                out.append(({str(k): float(v) for k, v in mixture.items()}, float(value)))
    return out


def suggest(job_dir: str, metric: str, *, direction: str = "maximize", datasets: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit on the job's finished points and return ``{datasets, n, loo_rmse, best: best_mixture(...)}``.

    Raises:
        ValueError: too few points (see :func:`fit`).
    """
    rows = finished_points(job_dir, metric)
    names = list(datasets) if datasets else sorted({d for w, _ in rows for d in w})
    w = np.array([[m.get(d, 0.0) for d in names] for m, _ in rows], dtype=np.float64).reshape(-1, len(names))
    keep = w.sum(axis=1) > 0
    model = fit(names, w[keep], np.array([v for _, v in rows])[keep])
    return {"datasets": names, "metric": metric, "direction": direction, "n": model.n, "loo_rmse": model.loo_rmse,
            "best": best_mixture(model, direction=direction), "model": "Scheffe quadratic mixture polynomial, ridge least squares"}
