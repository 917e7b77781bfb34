"""Trials-to-optimum of the adaptive mixture search against a grid of the same size, on a synthetic
objective with a known optimum on the simplex (the one of ``tests/test_search.py``).

Objective: ``f(w) = 1 - 4 ||w - w*||^2`` over 3 datasets, ``w* = (0.58, 0.31, 0.11)`` (on no lattice a
grid of <= 36 points has). For each sampler (tpe, gp, random) and seed, a search of ``--budget``
trials; the grid is the finest simplex lattice with at most ``--budget`` points, in lattice order.
Reported per sampler (median over seeds, and every seed): the distance of the best trial to ``w*``,
the trials needed to get within ``--radius`` of ``w*`` (None: never), the trials needed to match the
grid's best value, and the regret of the search's best against the grid's best (< 0: search better).
Prints ONE JSON object. Not part of the test suite.

Usage::

    .venv/bin/python benchmarks/bench_search.py --budget 21 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from vlamix.search.optimize import grid_comparison, search_simplex
from vlamix.search.simplex import lattice_for_budget

D = ["a", "b", "c"]
OPT = np.array([0.58, 0.31, 0.11])


def f(w):
    x = np.array([w[d] for d in D])
    return float(1.0 - 4.0 * np.sum((x - OPT) ** 2))


def dist(w):
    return float(np.linalg.norm(np.array([w[d] for d in D]) - OPT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=21)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--radius", type=float, default=0.1)
    args = parser.parse_args()
    lattice = lattice_for_budget(3, args.budget)
    grid = [(dict(zip(D, g)), f(dict(zip(D, g)))) for g in lattice]
    grid_d = [dist(w) for w, _ in grid]
    out = {"budget": args.budget, "grid_points": len(grid), "grid_best_distance": round(min(grid_d), 4),
           "grid_trials_within_radius": next((i + 1 for i, d in enumerate(grid_d) if d < args.radius), None), "samplers": {}}
    for sampler in ("tpe", "gp", "random"):
        runs = []
        for seed in range(args.seeds):
            t = time.time()
            trace = search_simplex(f, D, args.budget, sampler=sampler, seed=seed)
            ds = [dist(r.weights) for r in trace.records]
            cmp = grid_comparison(trace, grid)
            runs.append({"seed": seed, "best_distance": round(min(ds), 4),
                         "trials_within_radius": next((i + 1 for i, d in enumerate(ds) if d < args.radius), None),
                         "trials_to_match_grid": cmp["search_trials_to_match_grid"], "regret": round(cmp["regret"], 4),
                         "seconds": round(time.time() - t, 1)})
        within = [r["trials_within_radius"] for r in runs if r["trials_within_radius"] is not None]
        out["samplers"][sampler] = {
            "median_best_distance": statistics.median(r["best_distance"] for r in runs),
            "runs_within_radius": f"{len(within)}/{len(runs)}",
            "median_trials_within_radius": statistics.median(within) if within else None,
            "runs": runs,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
