"""Success statistics: Wilson interval against its closed form and defining equation; summarize on constructed rows."""

import math

import pytest

from vlamix.eval.stats import Z_95, summarize, wilson_interval


@pytest.mark.parametrize("n", [1, 10, 50])
def test_wilson_no_success_upper_bound_closed_form(n):
    low, high = wilson_interval(0, n)
    assert low == 0.0
    assert high == pytest.approx(Z_95**2 / (n + Z_95**2), rel=1e-12)


def test_wilson_all_successes_mirrors_no_success():
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(10 / (10 + Z_95**2), rel=1e-12)
    assert low == pytest.approx(1.0 - wilson_interval(0, 10)[1], rel=1e-12)


@pytest.mark.parametrize("k,n", [(1, 10), (5, 10), (7, 20), (33, 50)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    # Wilson's bounds are the two roots p of (k/n - p)^2 = z^2 p (1 - p) / n.
    low, high = wilson_interval(k, n)
    phat = k / n
    for p in (low, high):
        assert (phat - p) ** 2 == pytest.approx(Z_95**2 * p * (1 - p) / n, rel=1e-9)
    assert low < phat < high


def test_wilson_known_value_and_z():
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    # a wider quantile gives a wider interval
    low99, high99 = wilson_interval(5, 10, z=2.5758293035489)
    assert low99 < low and high99 > high


def test_wilson_edge_and_invalid_inputs():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for bad in [(11, 10), (-1, 10), (1, -1), (True, 3), (1.5, 3)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="z"):
        wilson_interval(1, 3, z=0)


def _row(suite, task, ep, success, error=None, instruction=None):
    return {"suite": suite, "task_id": task, "episode_index": ep, "success": success, "error": error,
            "instruction": instruction or f"do {suite} {task}", "versions": {"mujoco": "2.3.7"}}


def _rows():
    rows = []
    rows += [_row("libero_spatial", 0, i, s) for i, s in enumerate([True, True, False, True])]  # 3/4
    rows += [_row("libero_spatial", 1, i, s) for i, s in enumerate([False, True, False, False])]  # 1/4
    rows += [_row("libero_object", 0, 0, True), _row("libero_object", 0, 1, False, error="RuntimeError: boom")]
    return rows


def test_summarize_totals_per_task_per_suite_and_worst():
    s = summarize(_rows())
    # the error episode (libero_object/0 #1) is neither a success nor a failure: it is left out
    assert s["n_episodes"] == 9 and s["n_successes"] == 5 and s["n_errors"] == 1
    assert s["success_rate"] == pytest.approx(5 / 9)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(5, 9))
    assert list(s["per_task"]) == ["libero_spatial/0", "libero_spatial/1", "libero_object/0"]
    t = s["per_task"]["libero_spatial/0"]
    assert (t["n"], t["n_successes"], t["success_rate"]) == (4, 3, 0.75)
    assert t["instruction"] == "do libero_spatial 0"
    assert s["per_task"]["libero_object/0"]["success_rate"] == 1.0
    assert s["per_task"]["libero_object/0"]["n"] == 1
    assert s["worst_task"] == "libero_spatial/1"
    assert s["worst_task_success_rate"] == 0.25
    assert s["per_suite"]["libero_spatial"]["success_rate"] == 0.5
    assert s["per_suite"]["libero_spatial"]["n"] == 8
    assert s["per_suite"]["libero_object"]["n_successes"] == 1
    assert s["mean_task_success_rate"] == pytest.approx((0.75 + 0.25 + 1.0) / 3)
    assert s["versions"] == {"mujoco": "2.3.7"}


def test_summarize_repeated_episode_counts_once_last_row_wins():
    rows = _rows() + [_row("libero_spatial", 1, 0, True)]  # re-run of spatial/1 episode 0, now a success
    s = summarize(rows)
    assert s["n_episodes"] == 9 and s["n_successes"] == 6
    assert s["per_task"]["libero_spatial/1"]["success_rate"] == 0.5
    assert s["worst_task"] == "libero_spatial/1"


def test_summarize_mixed_versions_and_errors():
    rows = _rows()
    rows[0]["versions"] = {"mujoco": "3.1.0"}
    assert summarize(rows)["versions"]["mujoco"] == "2.3.7 | 3.1.0"
    with pytest.raises(ValueError, match="no episode rows"):
        summarize([])
    with pytest.raises(ValueError, match="'success'"):
        summarize([{"suite": "libero_spatial", "task_id": 0}])
    with pytest.raises(ValueError, match="bool"):
        summarize([{"suite": "libero_spatial", "task_id": 0, "success": "yes"}])
    assert math.isclose(summarize([_row("libero_goal", 3, 0, False)])["ci_high"], Z_95**2 / (1 + Z_95**2))
