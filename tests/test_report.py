"""Report: leaderboard order, labels and per-task table built from constructed results."""

from vlamix.report.markdown import leaderboard_rows, write_report
from vlamix.core.labels import point_label


def _result(weights, sr, lo, hi, n, per_task):
    mixture = dict(zip(["libero_spatial_no_noops", "libero_object_no_noops"], weights))
    return {
        "config": {"mixture": mixture},
        "summary": {"success_rate": sr, "ci_low": lo, "ci_high": hi, "n_episodes": n,
                    "worst_task_success_rate": min(v["success_rate"] for v in per_task.values()),
                    "per_task": per_task},
        "offline": {"action_token_accuracy": 0.5, "action_l1": 0.1},
    }


def test_leaderboard_sorted_by_success_rate_then_ci_low(tmp_path):
    results = [
        _result([1, 2], 0.25, 0.10, 0.47, 20, {"libero_spatial/0": {"success_rate": 0.1}, "libero_object/0": {"success_rate": 0.4}}),
        _result([2, 1], 0.50, 0.30, 0.70, 20, {"libero_spatial/0": {"success_rate": 0.6}, "libero_object/0": {"success_rate": 0.4}}),
        _result([1, 1], 0.25, 0.12, 0.45, 20, {"libero_spatial/0": {"success_rate": 0.3}, "libero_object/0": {"success_rate": 0.2}}),
    ]
    rows = leaderboard_rows(results)
    assert [r["mixture"] for r in rows] == ["spatial:object=2:1", "spatial:object=1:1", "spatial:object=1:2"]
    assert point_label(results[0]) == "spatial:object=1:2"

    path = write_report(results, str(tmp_path))
    text = open(path).read()
    # per-task table: one row per mixture, in the input order, with the task columns
    assert "| mixture | libero_spatial/0 | libero_object/0 |" in text
    assert "| spatial:object=2:1 | 0.60 | 0.40 |" in text
    assert (tmp_path / "success_rate.png").stat().st_size > 1000
    assert (tmp_path / "per_task.png").stat().st_size > 1000


def test_ranked_results_keep_the_callers_order(tmp_path):
    per_task = {"libero_spatial/0": {"success_rate": 0.0}}
    results = [_result([1, 2], 0.0, 0.0, 0.5, 4, per_task), _result([2, 1], 0.25, 0.05, 0.7, 4, per_task)]
    assert [r["mixture"] for r in leaderboard_rows(results, ranked=True)] == ["spatial:object=1:2", "spatial:object=2:1"]
    text = open(write_report(results, str(tmp_path), ranked=True)).read()
    assert text.index("spatial:object=1:2 |") < text.index("spatial:object=2:1 |")


def test_strategy_rows_weights_and_filter_counts_in_the_report(tmp_path):
    per_task = {"libero_spatial/0": {"success_rate": 0.5}}
    history = [
        {"step": 0, "weights": {"libero_spatial_no_noops": 0.5, "libero_object_no_noops": 0.5}},
        {"step": 20, "weights": {"libero_spatial_no_noops": 0.8, "libero_object_no_noops": 0.2}},
    ]
    dynamic = _result([1, 1], 0.5, 0.2, 0.8, 4, per_task)
    dynamic["mixing"] = {
        "strategy_label": "doremi eta=1 c=0.05 K=5 ref=initial", "mixing_level": "dataset", "step": 40,
        "initial_weights": history[0]["weights"], "final_weights": history[1]["weights"],
        "time_averaged_weights": {"libero_spatial_no_noops": 0.65, "libero_object_no_noops": 0.35},
        "realised_proportions": {"libero_spatial_no_noops": 0.648, "libero_object_no_noops": 0.352},
        "filter_counts": {"libero_spatial_no_noops": {"total": 10, "kept": 8, "nonfinite": 0, "out_of_range": 1,
                                                      "near_zero_motion": 1, "dataset_list": 0}},
        "trajectory": history,
    }  # fmt: skip
    static = _result([2, 1], 0.25, 0.05, 0.7, 4, per_task)
    assert point_label(dynamic) == "doremi eta=1 c=0.05 K=5 ref=initial"
    text = open(write_report([static, dynamic], str(tmp_path))).read()
    assert "| doremi eta=1 c=0.05 K=5 ref=initial | dataset | spatial 0.500, object 0.500 | spatial 0.800, object 0.200 | " \
           "spatial 0.650, object 0.350 | spatial 0.648, object 0.352 |" in text
    assert "| doremi eta=1 c=0.05 K=5 ref=initial | spatial | 10 | 8 | 0 | 1 | 1 | 0 |" in text
    assert (tmp_path / "mixing_weights.png").stat().st_size > 1000


def test_points_with_the_same_mixture_are_told_apart_by_the_fields_that_differ(tmp_path):
    """Same strategy label at two budgets (the learnable job's equal-exposure point): every table names the
    differing config field; identical configs (the same point in two algorithms) get ``#2``."""
    from vlamix.report.kit import unique_labels

    per_task = {"libero_object/0": {"success_rate": 0.5}}
    short, long_, other = (_result([1, 1], sr, 0.2, 0.8, 20, per_task) for sr in (0.45, 0.6, 0.1))
    short["config"].update(train_steps=3000, learning_rate=5e-4, seed=7)
    long_["config"].update(train_steps=6000, learning_rate=5e-4, seed=7)
    other["config"] = {"mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1}, "train_steps": 3000}
    twin = {**short, "config": dict(short["config"])}
    labels = unique_labels([short, long_, other, twin])
    assert labels == ["spatial:object=1:1 (train_steps=3000)", "spatial:object=1:1 (train_steps=6000)",
                      "spatial:object=2:1", "spatial:object=1:1 (train_steps=3000) #2"]
    assert [r["mixture"] for r in leaderboard_rows([short, long_], ranked=True)] == labels[:2]
    text = open(write_report([long_, short], str(tmp_path), ranked=True)).read()
    assert "| spatial:object=1:1 (train_steps=6000) | 0.50 |" in text  # per-task table
    assert "spatial:object=1:1 (train_steps=3000) |    0.450" in text  # leaderboard
