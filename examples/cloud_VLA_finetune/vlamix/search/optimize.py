"""Adaptive search over mixture weights with Optuna: TPE or a Gaussian-process sampler.

The search space is the simplex over K datasets, parametrised by K-1 uniform coordinates
(:func:`vlamix.search.simplex.cube_to_simplex`, uniform over mixtures). The objective is any function
of the weights (a rank metric of a trained and evaluated point in :mod:`vlamix.search.job`; a
synthetic function in the tests); the budget is a number of trials.

Samplers (Optuna 5):

* ``tpe``: ``optuna.samplers.TPESampler(multivariate=True)`` (Bergstra et al. 2011; Falkner et al.
  2018 for the multivariate kernel), start-up trials drawn at random.
* ``gp``: ``optuna.samplers.GPSampler`` (Matern-5/2 GP, log-EI acquisition).
* ``random``: ``optuna.samplers.RandomSampler``, uniform over the simplex (the baseline).

Start-up: ``n_startup = min(10, max(K + 1, budget // 3))`` random trials before the model is used
(Optuna's default of 10 would leave nothing to a budget of 8).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vlamix.search.simplex import cube_to_simplex

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "gp", "random")
DIRECTIONS = ("maximize", "minimize")


def n_startup_trials(k: int, budget: int) -> int:
    """Random trials before the sampler's model is used (see the module docstring)."""
    return min(10, max(k + 1, budget // 3))


def make_sampler(name: str, *, seed: int, k: int, budget: int):
    """An Optuna sampler by name (see :data:`SAMPLERS`).

    Raises:
        ValueError: unknown name.
    """
    import optuna  # optional dependency: optuna is only needed by `vlamix search`

    startup = n_startup_trials(k, budget)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, deterministic_objective=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")


def param_names(k: int) -> list[str]:
    """Names of the K-1 cube coordinates: ``u0 .. u{K-2}``."""
    return [f"u{i}" for i in range(k - 1)]


def weights_from_params(params: Mapping[str, float], datasets: Sequence[str], decimals: int = 4) -> dict[str, float]:
    """Cube coordinates -> ``{dataset: weight}`` rounded to ``decimals`` (so a mixture names one point folder)."""
    w = cube_to_simplex([params[n] for n in param_names(len(datasets))])
    return {d: round(float(x), decimals) for d, x in zip(datasets, w)}


@dataclass
class TrialRecord:
    """One search trial: its number (0-based), cube coordinates, weights, objective value (None if
    the trial failed) and the grid point id that ran it (when it ran a job point)."""

    number: int
    params: dict[str, float]
    weights: dict[str, float]
    value: float | None
    point_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "params": self.params, "weights": self.weights, "value": self.value, "point_id": self.point_id}


@dataclass
class SearchTrace:
    """The trials of a search in the order they finished, and the direction of the objective."""

    datasets: list[str]
    direction: str
    sampler: str
    records: list[TrialRecord] = field(default_factory=list)

    def values(self) -> np.ndarray:
        """float64 [N]: objective per trial (NaN for failed ones)."""
        return np.array([np.nan if r.value is None else r.value for r in self.records], dtype=np.float64)

    def best_so_far(self) -> np.ndarray:
        """float64 [N]: best objective among trials ``0..i`` (NaN until one succeeded)."""
        sign = 1.0 if self.direction == "maximize" else -1.0
        out, best = [], -math.inf
        for v in self.values():
            if not math.isnan(v):
                best = max(best, sign * v)
            out.append(sign * best if best > -math.inf else math.nan)
        return np.array(out)

    def best(self) -> TrialRecord | None:
        """The best successful trial (first one on ties), or None."""
        ok = [r for r in self.records if r.value is not None and not math.isnan(r.value)]
        if not ok:
            return None
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(ok, key=lambda r: (sign * r.value, -r.number))

    def to_dict(self) -> dict[str, Any]:
        return {"datasets": self.datasets, "direction": self.direction, "sampler": self.sampler,
                "trials": [r.to_dict() for r in self.records], "best_so_far": _nan_none(self.best_so_far())}


def _nan_none(x: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in x]


def search_simplex(
    objective: Callable[[dict[str, float]], float | None],
    datasets: Sequence[str],
    budget: int,
    *,
    sampler: str = "tpe",
    seed: int = 0,
    direction: str = "maximize",
    previous: Sequence[TrialRecord] = (),
) -> SearchTrace:
    """Run ``budget`` trials of ``objective(weights)`` chosen by ``sampler`` (ask/tell, one at a time).

    Args:
        objective: ``{dataset: weight}`` -> value, or None when the trial failed (it is told to
            Optuna as failed and counts toward the budget).
        datasets: K >= 2 dataset names (the simplex's vertices).
        previous: finished trials of an earlier run of the same search (resume); they count toward
            ``budget`` and the sampler starts from them.
    Returns:
        :class:`SearchTrace` (previous trials first).
    Raises:
        ValueError: ``budget < 1``, fewer than 2 datasets, unknown sampler or direction.
    """
    import optuna  # optional dependency: optuna is only needed by `vlamix search`
    from optuna.distributions import FloatDistribution  # optional dependency, as above

    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if len(datasets) < 2:
        raise ValueError(f"the search needs at least 2 datasets, got {list(datasets)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = param_names(len(datasets))
    dists = {n: FloatDistribution(0.0, 1.0) for n in names}
    study = optuna.create_study(direction=direction, sampler=make_sampler(sampler, seed=seed, k=len(datasets), budget=budget))
    trace = SearchTrace(list(datasets), direction, sampler)
    for rec in previous:
        state = optuna.trial.TrialState.COMPLETE if rec.value is not None else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(params=rec.params, distributions=dists, value=rec.value, state=state))
        trace.records.append(rec)
    while len(trace.records) < budget:
        trial = study.ask(dists)
        params = {n: float(trial.params[n]) for n in names}
        weights = weights_from_params(params, datasets)
        value = objective(weights)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            value = None
        else:
            study.tell(trial, float(value))
        trace.records.append(TrialRecord(len(trace.records), params, weights, None if value is None else float(value)))
        logger.info("search trial %d/%d: %s -> %s", len(trace.records), budget, weights, value)
    return trace


def grid_comparison(trace: SearchTrace, grid: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, Any]:
    """Regret of the search's best against a grid's best, and the trials each needed.

    Args:
        grid: ``(weights, value)`` of the grid's points in grid order (failed points left out).
    Returns:
        ``{grid_points, grid_best, grid_best_weights, grid_trials_to_best, search_trials, search_best,
        search_best_weights, search_trials_to_best, regret, search_trials_to_match_grid}``;
        ``regret`` = grid best minus search best for ``maximize`` (the reverse for ``minimize``):
        > 0 when the grid found a better point. ``*_trials_to_best``: 1-based index of the trial that
        first reached that run's best; ``search_trials_to_match_grid``: first search trial at least as
        good as the grid's best (None if none).
    """
    sign = 1.0 if trace.direction == "maximize" else -1.0
    out: dict[str, Any] = {"grid_points": len(grid), "search_trials": len(trace.records)}
    best = trace.best()
    if grid:
        values = np.array([v for _, v in grid], dtype=np.float64)
        gi = int(np.argmax(sign * values))
        out.update(grid_best=float(values[gi]), grid_best_weights=dict(grid[gi][0]), grid_trials_to_best=gi + 1)
    if best is not None:
        out.update(search_best=best.value, search_best_weights=best.weights, search_trials_to_best=best.number + 1)
    if grid and best is not None:
        out["regret"] = sign * (out["grid_best"] - best.value)
        bsf = trace.best_so_far()
        hit = [i for i, v in enumerate(bsf) if not math.isnan(v) and sign * v >= sign * out["grid_best"]]
        out["search_trials_to_match_grid"] = hit[0] + 1 if hit else None
    return out
