"""The example's metric files, called the way Ianvs calls them: ``metric(test_dataset.y, prediction)``.

Expected values are computed here from constructed episode rows (Wilson interval in closed form),
independently of ``vlamix.eval.stats``.
"""

import math
import os

import numpy as np
import pytest

from vlamix.bench.job import resolve_registered
from vlamix.bench.spec import load_testenv

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TESTENV = "./examples/cloud_VLA_finetune/singletask_learning_bench/testenv/testenv.yaml"
Z = 1.959963984540054


@pytest.fixture(scope="module")
def metric_funcs():
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        env = load_testenv(TESTENV)
        return {m.name: resolve_registered(m.url, m.name) for m in env.metrics}
    finally:
        os.chdir(cwd)


def _rows():
    """10 episodes: libero_spatial task 0 succeeds 5/5, task 1 succeeds 2/5."""
    rows = []
    for task_id, successes in ((0, 5), (1, 2)):
        for ep in range(5):
            rows.append({"suite": "libero_spatial", "task_id": task_id, "episode_index": ep,
                         "instruction": f"task {task_id}", "success": ep < successes, "steps": 100})
    return rows


def _wilson(k, n):
    p = k / n
    denom = 1 + Z * Z / n
    center = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return center - half, center + half


def test_success_metrics_from_constructed_rows(metric_funcs):
    prediction = {"episodes": _rows(), "offline": {"action_token_accuracy": 0.9, "action_l1": 0.05}, "config": {}}
    y_true = np.array(["0"] * 5)
    low, high = _wilson(7, 10)  # the metrics round to 6 decimals: compare within 5e-7
    assert metric_funcs["success_rate"](y_true, prediction) == pytest.approx(0.7, abs=5e-7)
    assert metric_funcs["success_rate_ci_low"](y_true, prediction) == pytest.approx(low, abs=5e-7)
    assert metric_funcs["success_rate_ci_high"](y_true, prediction) == pytest.approx(high, abs=5e-7)
    assert metric_funcs["num_episodes"](y_true, prediction) == 10
    assert metric_funcs["worst_task_success_rate"](y_true, prediction) == pytest.approx(0.4, abs=5e-7)
    assert metric_funcs["action_token_accuracy"](y_true, prediction) == 0.9
    assert metric_funcs["action_l1"](y_true, prediction) == 0.05
    # values are plain Python numbers (they go to result.json and the CSV)
    assert type(metric_funcs["num_episodes"](y_true, prediction)) is int
    assert type(metric_funcs["success_rate"](y_true, prediction)) is float


def test_ci_bounds_at_zero_and_all_successes(metric_funcs):
    none = [{"suite": "libero_object", "task_id": 0, "episode_index": i, "success": False} for i in range(10)]
    assert metric_funcs["success_rate_ci_low"](None, {"episodes": none}) == 0.0
    assert metric_funcs["success_rate_ci_high"](None, {"episodes": none}) == pytest.approx(Z * Z / (10 + Z * Z), abs=5e-7)
    every = [dict(r, success=True) for r in none]
    assert metric_funcs["success_rate_ci_high"](None, {"episodes": every}) == 1.0
    assert metric_funcs["success_rate_ci_low"](None, {"episodes": every}) == pytest.approx(10 / (10 + Z * Z), abs=5e-7)


def test_offline_metrics_missing_are_nan(metric_funcs):
    for prediction in ({"episodes": _rows()}, {"episodes": _rows(), "offline": {"action_l1": None}}):
        assert math.isnan(metric_funcs["action_token_accuracy"](None, prediction))
        assert math.isnan(metric_funcs["action_l1"](None, prediction))


def test_prediction_without_episodes_is_an_error(metric_funcs):
    with pytest.raises(ValueError, match="episodes"):
        metric_funcs["success_rate"](None, {"summary": {"success_rate": 1.0}})
    with pytest.raises(TypeError, match="prediction dict"):
        metric_funcs["success_rate"](None, "workspace/result.json")


def test_strategy_and_filter_columns_from_the_mixing_record(metric_funcs):
    counts = {
        "libero_spatial_no_noops": {"total": 100, "kept": 90, "nonfinite": 1, "out_of_range": 2, "near_zero_motion": 7, "dataset_list": 0},
        "libero_object_no_noops": {"total": 50, "kept": 0, "nonfinite": 0, "out_of_range": 0, "near_zero_motion": 0, "dataset_list": 50},
    }
    pred = {"episodes": _rows(), "mixing": {"strategy_label": "temperature T=2 by task", "filter_counts": counts}}
    assert metric_funcs["mixing_strategy"](None, pred) == "temperature T=2 by task"
    assert metric_funcs["steps_kept"](None, pred) == 90
    assert metric_funcs["steps_dropped_nonfinite"](None, pred) == 1
    assert metric_funcs["steps_dropped_out_of_range"](None, pred) == 2
    assert metric_funcs["steps_dropped_near_zero_motion"](None, pred) == 7
    assert metric_funcs["steps_dropped_dataset_list"](None, pred) == 50
    bare = {"episodes": _rows()}
    assert metric_funcs["mixing_strategy"](None, bare) == ""
    assert math.isnan(metric_funcs["steps_kept"](None, bare))


def test_recipe_column_from_the_points_config(metric_funcs):
    """``recipe`` names the action recipe the point's config resolves to: the open-loop steps of a null
    ``open_loop_steps`` are the whole chunk, the optional OFT inputs are listed, and the reference row has none."""
    from vlamix.pipeline.config import BenchConfig

    mixture = {"mixture": {"libero_spatial_no_noops": 1}}
    oft = {"action_head": "l1_regression", "action_chunk": 8, "use_wrist_image": True, "use_proprio": True}
    cases = [
        ({}, "tokens"),
        (oft, "l1_regression chunk 8 open-loop 8 +wrist +proprio"),
        ({**oft, "use_wrist_image": False, "open_loop_steps": 3}, "l1_regression chunk 8 open-loop 3 +proprio"),
        ({"action_head": "l1_regression", "action_chunk": 4}, "l1_regression chunk 4 open-loop 4"),
    ]
    for fields, expected in cases:
        config = BenchConfig.from_dict({**mixture, **fields}).to_dict()
        assert metric_funcs["recipe"](None, {"episodes": _rows(), "config": config}) == expected
    # a prediction written before the recipe existed trained tokens; a reference row and a bare one have no recipe
    assert metric_funcs["recipe"](None, {"episodes": _rows(), "config": {"mixture": {"libero_spatial_no_noops": 1}}}) == "tokens"
    assert math.isnan(metric_funcs["recipe"](None, {"episodes": _rows(), "config": {"eval_seed": 7}, "reference": True}))
    assert math.isnan(metric_funcs["recipe"](None, {"episodes": _rows()}))


def test_float_metrics_survive_ianvs_csv_round_trip(metric_funcs):
    """Ianvs appends a rerun's rows to the all_rank.csv it reads back with pandas and deduplicates
    selected_rank.csv by value: a metric must read back exactly as it was computed."""
    import io

    pd = pytest.importorskip("pandas")
    values = []
    for k, n in [(1, 3), (7, 10), (2, 7), (13, 1000), (0, 9)]:
        episodes = [{"suite": "libero_spatial", "task_id": i % 2, "episode_index": i, "success": i < k} for i in range(n)]
        pred = {"episodes": episodes, "offline": {"action_token_accuracy": k / (n + 0.3), "action_l1": 1 / (n + 7.1)}}
        values += [metric_funcs[m](None, pred) for m in ("success_rate", "success_rate_ci_low", "success_rate_ci_high",
                                                           "worst_task_success_rate", "action_token_accuracy", "action_l1")]
    assert all(v == round(v, 6) for v in values)
    buf = io.StringIO()
    pd.DataFrame({"v": values}).to_csv(buf)
    buf.seek(0)
    assert pd.read_csv(buf, index_col=0)["v"].tolist() == values
