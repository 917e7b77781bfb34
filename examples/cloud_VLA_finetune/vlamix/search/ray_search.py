"""The mixture search under Ray Tune: ``OptunaSearch`` proposes mixtures, trials run in parallel.

Used by :func:`vlamix.search.job.run_search` with ``backend="ray"``. Each Tune trial receives the
cube coordinates ``u0..u{K-2}`` (``tune.uniform(0, 1)``), maps them to mixture weights
(:func:`vlamix.search.optimize.weights_from_params`) and runs that point with
:func:`vlamix.bench.job.run_point` in its worker, exactly as a grid point under
:mod:`vlamix.bench.ray_backend` (same pitfalls handled, same resources from ``benchmarkingjob.ray``).
The objective metric is reported to Tune; the sampler is the same Optuna sampler as the local search
(:func:`vlamix.search.optimize.make_sampler`). Finished trials of an earlier run are handed to
``OptunaSearch`` as ``points_to_evaluate`` + ``evaluated_rewards`` and not run again.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Mapping, Sequence

from vlamix.bench.job import prepare_job, run_point
from vlamix.bench.ray_backend import check_resources, connect, load_ray_settings, prepare_trial_devices
from vlamix.search.optimize import SearchTrace, TrialRecord, make_sampler, param_names, weights_from_params
from vlamix.search.trials import objective_value, trial_point

logger = logging.getLogger(__name__)


def _search_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """Body of one search trial (a Ray worker): weights from ``u*``, run the point, report the objective."""
    os.chdir(config["root"])
    prepare_trial_devices(config["gpus_per_trial"])
    job, points, classes, metric_funcs = prepare_job(config["job_file"], allow_extra=config["allow_extra"])
    template = next(p for p in points if p.algorithm.name == config["algorithm"])
    weights = weights_from_params(config, config["datasets"])
    point = trial_point(template, weights, 0, config["budget"])
    result = run_point(point, job, classes, metric_funcs)
    value = objective_value(result, config["objective"])
    return {"objective": math.nan if value is None else value, "point_id": point.point_id, "status": result.status}


def run_search_ray(job_file, job, spec, template, previous: Sequence[TrialRecord], *, address=None, allow_extra=False) -> SearchTrace:
    """Run the trials the budget has left as Tune trials; returns the whole trace (previous first)."""
    import ray  # optional dependency: ray is only installed for --backend ray
    from ray import tune  # optional dependency, as above
    from ray.tune.search.optuna import OptunaSearch  # optional dependency, as above

    settings = load_ray_settings(job_file)
    trace = SearchTrace(list(spec.datasets), spec.direction, spec.sampler, records=list(previous))
    left = spec.budget - len(previous)
    if left <= 0:
        return trace
    names = param_names(len(spec.datasets))
    mode = "max" if spec.direction == "maximize" else "min"
    done = [r for r in previous if r.value is not None]
    searcher = OptunaSearch(
        metric="objective",
        mode=mode,
        sampler=make_sampler(spec.sampler, seed=spec.seed, k=len(spec.datasets), budget=spec.budget),
        points_to_evaluate=[dict(r.params) for r in done] or None,
        evaluated_rewards=[r.value for r in done] or None,
    )
    started = connect(address)
    try:
        check_resources(settings)
        param_space = {n: tune.uniform(0.0, 1.0) for n in names}
        param_space.update(root=os.getcwd(), job_file=job_file, allow_extra=allow_extra, algorithm=spec.algorithm,
                           datasets=list(spec.datasets), objective=spec.objective, budget=spec.budget,
                           gpus_per_trial=settings.gpus_per_trial)
        tuner = tune.Tuner(
            tune.with_resources(_search_trial, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}),
            param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=left, max_concurrent_trials=settings.max_concurrent_trials,
                                        reuse_actors=False),
            run_config=tune.RunConfig(name=f"{job.name}-search-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=os.path.abspath(os.path.join(job.job_dir, "ray_tune")),
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False), verbose=1),
        )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    finished = []
    for res in grid:
        params = {n: float(res.config[n]) for n in names}
        value = (res.metrics or {}).get("objective")
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        finished.append(((res.metrics or {}).get("timestamp", 0), params, value, (res.metrics or {}).get("point_id")))
    for _, params, value, pid in sorted(finished, key=lambda t: t[0]):
        trace.records.append(TrialRecord(len(trace.records), params, weights_from_params(params, spec.datasets), value, pid))
    return trace
