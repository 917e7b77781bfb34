"""The adaptive mixture search as a job: ``vlamix search -f benchmarkingjob.yaml [--backend ray]``.

The job file gets a ``search:`` block in ``benchmarkingjob`` (Ianvs ignores unknown keys, so the
same file still runs the grid under ``ianvs -f``)::

    benchmarkingjob:
      search:
        datasets: [libero_spatial_no_noops, libero_object_no_noops, libero_goal_no_noops]
        objective: success_rate      # a testenv metric (rank column)
        direction: maximize          # optional: from rank.sort_by (descend = maximize)
        budget: 12                   # trials
        sampler: tpe                 # tpe | gp | random (vlamix.search.optimize)
        seed: 0
        algorithm: vla_dataselect    # optional when the job has one algorithm

Every trial is the job's grid point with ``mixture`` replaced by the trial's weights (rounded to 4
decimals): it runs with :func:`vlamix.bench.job.run_point` (sequential) or as a Ray Tune trial
driven by ``ray.tune.search.optuna.OptunaSearch`` (``--backend ray``; trials run in parallel, up to
``ray.max_concurrent_trials``), gets a normal point folder, and is a normal row of
``rank/all_rank.csv`` (with the finished grid points of the job). The other hyperparameters of the
algorithm must have one value each (the search replaces the grid, not its other axes).

Outputs in ``<job dir>/search/``: ``trace.json`` (every trial: weights, objective, point id, best so
far; a rerun resumes from it, finished trials count toward the budget) and, in the report folder,
``search.md`` + ``search_trace.png``: the trace and, when grid points of the job are finished, the
regret of the search's best against the grid's best and the trials each needed
(:func:`vlamix.search.optimize.grid_comparison`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import yaml

from vlamix.bench.dataset import load_index
from vlamix.core.index import index_names
from vlamix.bench.job import (
    GridPoint,
    JobResult,
    finish_job,
    prepare_job,
    run_point,
)
from vlamix.bench.records import PointResult, resume_point, write_json
from vlamix.core.errors import ConfigError
from vlamix.search.ray_search import run_search_ray
from vlamix.search.regression import suggest
from vlamix.search.trials import direction_from_rank, objective_value, trial_point
from vlamix.search.optimize import DIRECTIONS, SAMPLERS, SearchTrace, TrialRecord, grid_comparison, search_simplex

logger = logging.getLogger(__name__)

SEARCH_BLOCK = "search"
SEARCH_DIR = "search"
TRACE_FILE = "trace.json"


@dataclass(frozen=True)
class SearchSpec:
    """A validated ``search:`` block (see the module docstring)."""

    datasets: tuple[str, ...]
    objective: str
    direction: str
    budget: int
    sampler: str
    seed: int
    algorithm: str


def load_search_spec(job_file: str, job, points: Sequence[GridPoint]) -> SearchSpec:
    """Read and validate ``benchmarkingjob.search`` against the loaded job.

    Raises:
        ConfigError: field ``search.<key>``: missing block, unknown key, budget < 1, unknown
            sampler/direction, an objective that is no testenv metric, a dataset that is not in the
            train index, fewer than 2 datasets, an unknown algorithm, or an algorithm whose other
            hyperparameters have several values.
    """
    with open(job_file, encoding="utf-8") as fh:
        raw = (yaml.safe_load(fh) or {}).get("benchmarkingjob", {})
    block = raw.get(SEARCH_BLOCK) if isinstance(raw, Mapping) else None
    if not isinstance(block, Mapping):
        raise ConfigError(SEARCH_BLOCK, f"{job_file} has no 'search:' mapping in benchmarkingjob")
    allowed = ("datasets", "objective", "direction", "budget", "sampler", "seed", "algorithm")
    for key in block:
        if key not in allowed:
            raise ConfigError(f"search.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    budget = block.get("budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError("search.budget", f"must be an integer >= 1 (trials), got {budget!r}")
    sampler = block.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError("search.sampler", f"unknown searcher {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    seed = block.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("search.seed", f"must be an integer >= 0, got {seed!r}")
    objective = block.get("objective")
    metrics = list(job.testenv.metric_names)
    if objective not in metrics:
        raise ConfigError("search.objective", f"{objective!r} is not a metric of the testenv; allowed: {', '.join(metrics)}")
    direction = block.get("direction") or direction_from_rank(job, objective)
    if direction not in DIRECTIONS:
        raise ConfigError("search.direction", f"must be one of {', '.join(DIRECTIONS)} (or the objective must be in rank.sort_by), got {direction!r}")
    known = index_names(load_index(job.testenv.train_index, "train"))
    datasets = block.get("datasets")
    if not isinstance(datasets, list) or len(datasets) < 2 or len(set(datasets)) != len(datasets):
        raise ConfigError("search.datasets", f"must be a list of at least 2 different datasets, got {datasets!r}")
    for name in datasets:
        if name not in known:
            raise ConfigError("search.datasets", f"unknown dataset {name!r}; allowed (the train index): {', '.join(known)}")
    names = [a.name for a in job.algorithms]
    algorithm = block.get("algorithm", names[0] if len(names) == 1 else None)
    if algorithm not in names:
        raise ConfigError("search.algorithm", f"must name one of the job's algorithms {names}, got {algorithm!r}")
    mine = [p for p in points if p.algorithm.name == algorithm]
    variants = {json.dumps({k: v for k, v in p.basemodel.hyperparameters.items() if k != "mixture"}, sort_keys=True, default=str)
                for p in mine}
    if len(variants) > 1:
        raise ConfigError("search.algorithm", f"'{algorithm}' has {len(variants)} combinations of hyperparameters other than "
                          "mixture; the search needs one value for each (it replaces the mixture axis only)")
    return SearchSpec(tuple(datasets), objective, direction, budget, sampler, seed, algorithm)


def run_search(
    job_file: str,
    *,
    backend: str = "local",
    address: str | None = None,
    allow_extra: bool = False,
    print_leaderboard: bool = True,
) -> tuple[JobResult, SearchTrace, dict[str, Any]]:
    """Run the job's mixture search; returns ``(job result with grid + search rows, trace, grid comparison)``.

    Raises:
        ConfigError: an invalid ``search:`` (or ``ray:``) block, before any trial.
        JobConfigError, FileNotFoundError, ModuleLoadError: as :func:`vlamix.bench.job.run_job`.
    """
    job, points, classes, metric_funcs = prepare_job(job_file, allow_extra=allow_extra)
    spec = load_search_spec(job_file, job, points)
    template = next(p for p in points if p.algorithm.name == spec.algorithm)
    grid_done = [r for r in (resume_point(p, p.output_dir(job.job_dir), metric_funcs, job, False) for p in points) if r is not None]
    search_dir = os.path.join(job.job_dir, SEARCH_DIR)
    os.makedirs(search_dir, exist_ok=True)
    previous = _read_trace(os.path.join(search_dir, TRACE_FILE), spec)
    results: dict[str, PointResult] = {}

    if backend == "ray":

        trace = run_search_ray(job_file, job, spec, template, previous, address=address, allow_extra=allow_extra)
        for rec in trace.records:
            point = trial_point(template, rec.weights, rec.number + 1, spec.budget)
            done = resume_point(point, point.output_dir(job.job_dir), metric_funcs, job, False)
            if done is not None:
                results[point.point_id] = done
    else:
        trace_ids: list[str] = []

        def objective(weights: dict[str, float]) -> float | None:
            point = trial_point(template, weights, len(previous) + len(trace_ids) + 1, spec.budget)
            result = run_point(point, job, classes, metric_funcs)
            results[point.point_id] = result
            trace_ids.append(point.point_id)
            return objective_value(result, spec.objective)

        trace = search_simplex(objective, spec.datasets, spec.budget, sampler=spec.sampler, seed=spec.seed,
                               direction=spec.direction, previous=previous)
        for rec, pid in zip(trace.records[len(previous):], trace_ids):
            rec.point_id = pid
        for rec in previous:
            point = trial_point(template, rec.weights, rec.number + 1, spec.budget)
            done = resume_point(point, point.output_dir(job.job_dir), metric_funcs, job, False)
            if done is not None:
                results[point.point_id] = done

    grid = [(r.point.basemodel.hyperparameters.get("mixture", {}), objective_value(r, spec.objective)) for r in grid_done
            if r.point.algorithm.name == spec.algorithm]
    grid = [(dict(_normalised(w, spec.datasets)), v) for w, v in grid if v is not None]
    comparison = grid_comparison(trace, grid)
    write_json(os.path.join(search_dir, TRACE_FILE), {**trace.to_dict(), "objective": spec.objective, "seed": spec.seed,
                                                       "budget": spec.budget, "grid_comparison": comparison})
    grid_ids = {r.point.point_id for r in grid_done}
    all_results = grid_done + [r for pid, r in results.items() if pid not in grid_ids]
    job_result = finish_job(job, all_results, print_leaderboard=print_leaderboard, metric_funcs=metric_funcs)
    report = write_search_report(trace, comparison, spec, os.path.join(job.job_dir, "report"), job_dir=job.job_dir)
    job_result.rank_files["search_report"] = report
    main_report = job_result.rank_files.get("report")
    if main_report and os.path.isfile(main_report):  # a pointer from the job's report to the search section
        with open(main_report, "a", encoding="utf-8") as fh:
            fh.write(f"\n## Mixture search\n\nSee [{os.path.basename(report)}]({os.path.relpath(report, os.path.dirname(main_report))}) "
                     f"({len(trace.records)} {spec.sampler} trials of {spec.objective}).\n")
    return job_result, trace, comparison


def _normalised(weights: Mapping[str, float], datasets: Sequence[str]) -> dict[str, float]:
    total = float(sum(weights.get(d, 0.0) for d in datasets)) or 1.0
    return {d: float(weights.get(d, 0.0)) / total for d in datasets}


def _read_trace(path: str, spec: SearchSpec) -> list[TrialRecord]:
    """Finished trials of an earlier run of the same search (same datasets, sampler, seed, objective)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)
    same = (saved.get("datasets") == list(spec.datasets) and saved.get("sampler") == spec.sampler
            and saved.get("seed") == spec.seed and saved.get("objective") == spec.objective)
    if not same:
        logger.warning("%s belongs to another search (datasets/sampler/seed/objective differ); starting afresh", path)
        return []
    return [TrialRecord(t["number"], t["params"], t["weights"], t["value"], t.get("point_id")) for t in saved.get("trials", [])][: spec.budget]


def write_search_report(trace: SearchTrace, comparison: Mapping[str, Any], spec: SearchSpec, report_dir: str,
                        job_dir: str | None = None) -> str:
    """``<report_dir>/search.md`` (trace table, best, grid comparison, and the mixture regression of
    :mod:`vlamix.search.regression` on the job's finished points when there are enough) and
    ``search_trace.png``; returns the .md path."""
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    os.makedirs(report_dir, exist_ok=True)
    values, best = trace.values(), trace.best_so_far()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = list(range(1, len(values) + 1))
    ax.plot(x, values, "o", label=f"{spec.objective} per trial")
    ax.plot(x, best, "-", label="best so far")
    if "grid_best" in comparison:
        ax.axhline(comparison["grid_best"], color="gray", ls="--", label=f"grid best ({comparison['grid_points']} points)")
    ax.set_xlabel("trial")
    ax.set_ylabel(spec.objective)
    ax.set_title(f"{spec.sampler} search over {len(spec.datasets)} datasets")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = os.path.join(report_dir, "search_trace.png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    lines = [f"# Mixture search ({spec.sampler}, {spec.direction} {spec.objective}, budget {spec.budget}, seed {spec.seed})", "",
             "| trial | " + " | ".join(spec.datasets) + f" | {spec.objective} | best so far |",
             "|---|" + "---|" * (len(spec.datasets) + 2)]
    for rec, b in zip(trace.records, best):
        v = "failed" if rec.value is None else f"{rec.value:.4g}"
        lines.append(f"| {rec.number + 1} | " + " | ".join(f"{rec.weights[d]:.3f}" for d in spec.datasets) + f" | {v} | "
                     + ("" if math.isnan(b) else f"{b:.4g}") + " |")
    lines += ["", f"![search trace]({os.path.basename(png)})", ""]
    if "search_best" in comparison:
        lines.append(f"Best trial: {comparison['search_best_weights']} -> {comparison['search_best']:.4g} "
                     f"(trial {comparison['search_trials_to_best']}).")
    if "grid_best" in comparison and "regret" in comparison:
        lines.append(f"Grid of the same job: best {comparison['grid_best']:.4g} at {comparison['grid_best_weights']} "
                     f"(point {comparison['grid_trials_to_best']} of {comparison['grid_points']}); regret of the search "
                     f"{comparison['regret']:+.4g} (> 0: the grid was better); trials the search needed to match the grid: "
                     f"{comparison['search_trials_to_match_grid']}.")
    if job_dir is not None:
        try:
            reg = suggest(job_dir, spec.objective, direction=spec.direction, datasets=spec.datasets)
        except ValueError as err:
            lines.append(f"\nMixture regression: not shown ({err}).")
        else:
            b = reg["best"]
            lines.append(f"\nMixture regression ({reg['model']}, {reg['n']} points, leave-one-out RMSE {reg['loo_rmse']:.3g}): "
                         f"predicted best {b['weights']} -> {b['predicted']:.4g} (95% prediction interval {b['low']:.4g} .. {b['high']:.4g}).")
    path = os.path.join(report_dir, "search.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
