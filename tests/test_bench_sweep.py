"""The temperature sweep jobs: 5 temperatures at the task level plus inverse_frequency loss weighting at
T = 1, exactly 6 points (two algorithms, not the 5 x 2 cross product), one budget and one evaluation."""

import math
import os

import pytest

from vlamix.bench.job import expand_grid, validate_grid
from vlamix.bench.spec import load_job
from vlamix.pipeline.config import train_key
from bench_constants import METRICS

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")
SWEEP = os.path.join(EXAMPLE, "benchmarkingjob_temperature_sweep.yaml")
SWEEP_7B = os.path.join(EXAMPLE, "benchmarkingjob_temperature_sweep_openvla7b.yaml")
EXPECTED = [(0.5, "none"), (1.0, "none"), (2.0, "none"), (5.0, "none"), (math.inf, "none"), (1.0, "inverse_frequency")]
SAME = ("mixture", "model", "demos", "data_dir", "train_steps", "batch_size", "grad_accumulation_steps", "learning_rate",
        "precision", "eval_suites", "eval_tasks", "trials_per_task", "eval_max_steps", "strategy", "mixing_level")  # fmt: skip


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("path", [SWEEP, SWEEP_7B])
def test_sweep_job_expands_to_the_six_intended_points(path):
    job = load_job(path)
    assert job.testenv.metric_names == METRICS and job.workspace == "./workspace"
    points = expand_grid(job)
    hps = [p.basemodel.hyperparameters for p in points]
    assert [(h["temperature"], h["loss_weighting"]) for h in hps] == EXPECTED
    assert [p.algorithm.name for p in points] == ["vla_temperature"] * 5 + ["vla_loss_weighting"]
    for name in SAME:  # one budget, one evaluation, task-level temperature sampling everywhere
        assert len({repr(h.get(name)) for h in hps}) == 1, name
    assert hps[0]["strategy"] == "temperature" and hps[0]["mixing_level"] == "task"
    assert {"basemodel-temperature", "basemodel-loss_weighting"} <= set(job.rank.selected_dataitem["hyperparameters"])
    if path == SWEEP:  # the CPU job validates as is (the 7B job needs the user's model and data)
        configs = validate_grid(points)
        assert [c.strategy_label() for c in configs] == [
            "temperature T=0.5 by task", "temperature T=1 by task", "temperature T=2 by task", "temperature T=5 by task",
            "temperature T=inf by task", "temperature T=1 by task + loss inverse_frequency",
        ]  # fmt: skip
        assert len({train_key(c) for c in configs}) == 6  # six trainings, none reused
        assert configs[0].get("model") == "tiny" and configs[0].get("demos") == "scripted"
    else:
        assert hps[0]["model"] == "./models/openvla-7b" and hps[0]["demos"] == "none" and hps[0]["precision"] == "bf16"
        assert (hps[0]["batch_size"], hps[0]["grad_accumulation_steps"], hps[0]["train_steps"]) == (8, 2, 10000)
