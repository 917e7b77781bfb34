"""Report sweep plots: per-task success rate and offline accuracy against a numeric hyperparameter,
read back from the data written beside the PNG."""

import csv
import json
import math

import matplotlib.image
import pytest

from configs import checked
from vlamix.report.markdown import write_report
from vlamix.report.sweep import sweep_axes, write_sweep_plots

TASKS = ["libero_spatial/0", "libero_spatial/1", "libero_object/0", "libero_object/1"]
TEMPERATURES = [2.0, 0.5, math.inf, 1.0, 5.0]  # grid order is not plot order


def _prediction(temperature, weighting, srs, acc):
    cfg = checked({
        "mixture": {"libero_spatial_no_noops": 1, "libero_object_no_noops": 1}, "strategy": "temperature",
        "mixing_level": "task", "temperature": temperature, "loss_weighting": weighting,
    })  # fmt: skip
    per_task = {t: {"success_rate": sr, "instruction": f"instruction of {t}"} for t, sr in zip(TASKS, srs)}
    return {
        "config": cfg.to_dict(),
        "summary": {"success_rate": sum(srs) / 4, "ci_low": 0.0, "ci_high": 1.0, "n_episodes": 4,
                    "worst_task_success_rate": min(srs), "per_task": per_task},
        "offline": {"action_token_accuracy": acc, "action_l1": 0.2},
        "mixing": {"strategy_label": cfg.strategy_label(), "mixing_level": "task", "step": 40,
                   "initial_weights": {"a": 0.5, "b": 0.5}, "final_weights": {"a": 0.5, "b": 0.5},
                   "loss_weights": {"a": 0.75, "b": 1.25} if weighting != "none" else None},
    }  # fmt: skip


def _sr(t, k):
    """A distinct success rate per (temperature, task)."""
    return round(((0.1 * k + (0.37 if math.isinf(t) else 0.07 * t)) % 1.0), 4)


@pytest.fixture(scope="module")
def predictions():
    preds = [_prediction(t, "none", [_sr(t, k) for k in range(4)], 0.1 + (0.5 if math.isinf(t) else 0.01 * t)) for t in TEMPERATURES]
    preds.append(_prediction(1.0, "inverse_frequency", [0.9, 0.8, 0.7, 0.6], 0.33))
    return preds


def test_sweep_plot_has_one_line_per_task_read_back_from_its_data(tmp_path, predictions):
    assert sweep_axes(predictions) == ["temperature"]  # loss_weighting is no number: it splits families
    (plot,) = write_sweep_plots(predictions, str(tmp_path))
    assert plot.field == "temperature"
    image = matplotlib.image.imread(plot.png)
    assert image.ndim == 3 and image.shape[1] > 800  # a real two-panel PNG
    with open(plot.json) as fh:
        data = json.load(fh)
    assert data["series"] == plot.series
    series = data["series"]
    plain = [s for s in series if s["family"] == "loss_weighting=none" and s["metric"] == "success_rate"]
    assert [s["task"] for s in plain] == TASKS  # one line per task
    order = [0.5, 1.0, 2.0, 5.0, math.inf]
    for k, s in enumerate(plain):
        assert s["x"] == [0.5, 1.0, 2.0, 5.0, "inf"]
        assert s["y"] == [_sr(t, k) for t in order]
        assert s["instruction"] == f"instruction of {TASKS[k]}"
    (acc,) = [s for s in series if s["family"] == "loss_weighting=none" and s["metric"] == "action_token_accuracy"]
    assert acc["y"] == pytest.approx([0.1 + (0.5 if math.isinf(t) else 0.01 * t) for t in order])
    alt = [s for s in series if s["family"] == "loss_weighting=inverse_frequency"]
    assert [(s["task"], s["x"], s["y"]) for s in alt] == [
        *[(t, [1.0], [y]) for t, y in zip(TASKS, [0.9, 0.8, 0.7, 0.6])], (None, [1.0], [0.33])
    ]
    with open(plot.csv) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * 5 + 5  # (4 tasks + accuracy) x 5 temperatures, + 5 single points
    assert {r["x"] for r in rows} == {"0.5", "1.0", "2.0", "5.0", "inf"}


def test_report_embeds_the_sweep_and_the_loss_weights(tmp_path, predictions):
    text = open(write_report(predictions, str(tmp_path))).read()
    assert "## Sweep over temperature" in text and "(sweep_temperature.png)" in text
    assert (tmp_path / "sweep_temperature.json").is_file()
    row = next(line for line in text.splitlines() if line.startswith("| temperature T=1 by task + loss inverse_frequency | task |"))
    assert row.rstrip().endswith("| a 0.750, b 1.250 |")  # the loss-weights column


def test_no_sweep_plot_without_a_varying_number(tmp_path, predictions):
    same = [p for p in predictions if p["config"]["temperature"] == 1.0]
    assert sweep_axes(same) == [] and write_sweep_plots(same, str(tmp_path)) == []
