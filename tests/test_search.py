"""Adaptive mixture search and mixture regression.

The search and the regression are tested on synthetic objectives with a known optimum on the
simplex (as the issue asks); the job-level search runs the real runner with the test-only basemodel
of ``test_ray_backend.py`` (success count = round(4 * spatial weight), action accuracy = spatial weight).
"""

import json
import os

import numpy as np
import pytest
import yaml

from vlamix.core.errors import ConfigError
from vlamix.search.optimize import grid_comparison, search_simplex
from vlamix.search.regression import best_mixture, fit
from vlamix.search.simplex import cube_to_simplex, lattice_for_budget, simplex_to_cube
from test_ray_backend import calls, make_root, rank_rows

D3 = ["a", "b", "c"]
OPT = np.array([0.58, 0.31, 0.11])  # off every lattice a 21-point grid can have


def synthetic(weights):
    """1 - 4 ||w - OPT||^2: maximum 1 at OPT."""
    x = np.array([weights[d] for d in D3])
    return float(1.0 - 4.0 * np.sum((x - OPT) ** 2))


def _dist(weights):
    return float(np.linalg.norm(np.array([weights[d] for d in D3]) - OPT))


def test_cube_to_simplex_is_uniform_and_invertible():
    rng = np.random.default_rng(0)
    w = np.array([cube_to_simplex(rng.random(2)) for _ in range(8000)])
    assert np.allclose(w.sum(axis=1), 1.0) and (w >= 0).all()
    # Dirichlet(1,1,1): every marginal is Beta(1, 2), P(w_i < 0.1) = 1 - 0.9^2 = 0.19
    np.testing.assert_allclose((w < 0.1).mean(axis=0), 0.19, atol=0.02)
    u = rng.random(3)
    np.testing.assert_allclose(simplex_to_cube(cube_to_simplex(u)), u, atol=1e-12)


@pytest.mark.parametrize("sampler, budget, radius", [("tpe", 21, 0.1), ("gp", 21, 0.1)])
def test_search_gets_near_the_optimum_faster_than_a_grid_of_the_same_size(sampler, budget, radius):
    grid_points = lattice_for_budget(3, budget)
    grid = [(dict(zip(D3, g)), synthetic(dict(zip(D3, g)))) for g in grid_points]
    grid_best = max(grid, key=lambda g: g[1])
    assert _dist(grid_best[0]) > 0.12  # the grid cannot get within the radius

    trace = search_simplex(synthetic, D3, budget, sampler=sampler, seed=0)
    assert len(trace.records) == budget
    best = trace.best()
    assert _dist(best.weights) < radius
    comparison = grid_comparison(trace, grid)
    assert comparison["regret"] < 0  # the search's best beats the grid's best
    assert comparison["search_trials_to_match_grid"] < budget
    # the best-so-far curve is monotone and ends at the best value
    bsf = trace.best_so_far()
    assert np.all(np.diff(bsf) >= 0) and bsf[-1] == best.value


def test_random_search_is_the_baseline_it_should_be():
    trace = search_simplex(synthetic, D3, 21, sampler="random", seed=0)
    tpe = search_simplex(synthetic, D3, 21, sampler="tpe", seed=0)
    assert tpe.best().value > trace.best().value


def test_search_resumes_from_previous_trials():
    first = search_simplex(synthetic, D3, 4, sampler="tpe", seed=1)
    seen = []
    resumed = search_simplex(lambda w: seen.append(w) or synthetic(w), D3, 6, sampler="tpe", seed=1, previous=first.records)
    assert len(seen) == 2 and len(resumed.records) == 6
    assert [r.weights for r in resumed.records[:4]] == [r.weights for r in first.records]


@pytest.mark.parametrize("kw, match", [({"budget": 0}, "budget"), ({"sampler": "cma"}, "sampler")])
def test_search_rejects_bad_arguments(kw, match):
    args = {"budget": 3, "sampler": "tpe"}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        search_simplex(synthetic, D3, args["budget"], sampler=args["sampler"])


def test_regression_recovers_a_planted_quadratic_optimum_from_noisy_samples():
    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.ones(3), 40)
    y = np.array([synthetic(dict(zip(D3, row))) for row in w]) + rng.normal(0, 0.02, len(w))
    model = fit(D3, w, y)
    best = best_mixture(model)
    assert _dist(best["weights"]) < 0.05
    assert best["low"] < 1.0 < best["high"] and best["high"] - best["low"] < 0.2
    assert model.loo_rmse == pytest.approx(0.02, rel=0.5)  # the noise level, not 0 and not the spread of y
    with pytest.raises(ValueError, match="at least 8"):
        fit(D3, w[:7], y[:7])


# ------------------------------------------------------------------------------------- job level
def _add_search(root, **search):
    job = yaml.safe_load((root / "fake_job.yaml").read_text())
    job["benchmarkingjob"]["search"] = {"datasets": ["libero_spatial_no_noops", "libero_object_no_noops"],
                                        "objective": "action_token_accuracy", "direction": "maximize", "budget": 4, "sampler": "tpe",
                                        "seed": 0, **search}
    (root / "fake_job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))


def test_job_search_trials_are_rank_rows_and_compare_with_the_grid(tmp_path, monkeypatch):
    from vlamix.bench import job as bench_job
    from vlamix.search.job import run_search

    root = make_root(tmp_path)
    _add_search(root, direction="maximize")
    monkeypatch.chdir(root)
    grid = bench_job.run_job("fake_job.yaml", print_leaderboard=False)  # the 1:3 and 3:1 grid
    result, trace, comparison = run_search("fake_job.yaml", print_leaderboard=False)

    rows = rank_rows(result.rank_files["all"])
    assert len(rows) == 2 + 4  # grid points + search trials, each a normal row
    accuracy = sorted(float(r["action_token_accuracy"]) for r in rows)
    spatial = sorted([0.25, 0.75] + [r.weights["libero_spatial_no_noops"] for r in trace.records])
    assert accuracy == pytest.approx(spatial, abs=1e-4)
    assert comparison["grid_points"] == 2 and comparison["grid_best"] == pytest.approx(0.75)
    assert comparison["regret"] == pytest.approx(0.75 - trace.best().value)
    saved = json.load(open(os.path.join("workspace", "fake_job", "search", "trace.json")))
    assert [t["point_id"] for t in saved["trials"]] == [r.point_id for r in trace.records]
    assert all(os.path.isfile(os.path.join("workspace", "fake_job", "fake_algo", t["point_id"], "result.json")) for t in saved["trials"])
    section = open(result.rank_files["search_report"]).read()
    assert "regret" in section and "predicted best" in section

    # vlamix suggest on the 6 finished points: accuracy = spatial weight exactly, so the fit is exact
    from vlamix.search.regression import suggest

    out = suggest(os.path.join("workspace", "fake_job"), "action_token_accuracy")
    assert out["n"] == 6 and out["loo_rmse"] < 1e-3
    assert out["best"]["weights"]["libero_spatial_no_noops"] == pytest.approx(1.0, abs=0.01)
    assert out["best"]["predicted"] == pytest.approx(1.0, abs=0.01)

    # a rerun with a larger budget resumes: only the new trials train
    trains = len([c for c in calls(root) if c["call"] == "train"])
    _add_search(root, direction="maximize", budget=5)
    _, again, _ = run_search("fake_job.yaml", print_leaderboard=False)
    assert len(again.records) == 5 and len([c for c in calls(root) if c["call"] == "train"]) == trains + 1
    assert len(grid.points) == 2


@pytest.mark.parametrize(
    "search, field",
    [
        ({"sampler": "cmaes"}, "search.sampler"),
        ({"budget": 0}, "search.budget"),
        ({"datasets": ["libero_spatial_no_noops", "libero_moon_no_noops"]}, "search.datasets"),
        ({"objective": "reward"}, "search.objective"),
        ({"algorithm": "other"}, "search.algorithm"),
    ],
)
def test_bad_search_values_fail_before_any_work(tmp_path, monkeypatch, search, field):
    from vlamix.search.job import run_search

    root = make_root(tmp_path)
    _add_search(root, **search)
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError) as err:
        run_search("fake_job.yaml", print_leaderboard=False)
    assert err.value.field == field
    assert not calls(root) and not (root / "workspace").exists()
