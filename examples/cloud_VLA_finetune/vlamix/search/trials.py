"""One trial of the mixture search: a grid point with the trial's mixture, and its objective value
(shared by the sequential search, :mod:`vlamix.search.job`, and the Ray one, :mod:`vlamix.search.ray_search`)."""

from __future__ import annotations

import copy
import math
import numbers
from typing import Mapping

from vlamix.bench.job import BASEMODEL, GridPoint, ModulePoint
from vlamix.bench.records import PointResult


def direction_from_rank(job, metric: str) -> str | None:
    """"maximize" / "minimize" for ``metric`` from the job's ``rank.sort_by`` (descend / ascend), None when absent."""
    for entry in job.rank.sort_by:
        if isinstance(entry, Mapping) and metric in entry:
            return "maximize" if entry[metric] == "descend" else "minimize"
        if entry == metric:
            return "minimize"
    return None


def trial_point(template: GridPoint, weights: Mapping[str, float], number: int, total: int) -> GridPoint:
    """``template`` with the basemodel's ``mixture`` set to ``weights`` (a normal grid point)."""
    modules = []
    for m in template.modules:
        hps = copy.deepcopy(dict(m.hyperparameters))
        if m.type == BASEMODEL:
            hps["mixture"] = dict(weights)
        modules.append(ModulePoint(m.type, m.name, m.url, hps))
    return GridPoint(algorithm=template.algorithm, modules=tuple(modules), number=number, total=total)


def objective_value(result: PointResult, metric: str) -> float | None:
    """A finished trial's objective (the metric as a float), None for a failed trial or a NaN / non-numeric value."""
    value = result.metrics.get(metric) if result.ok else None
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(float(value)):
        return float(value)
    return None
