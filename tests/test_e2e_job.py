"""The real product path end to end on a two-point grid: scripted demos in LIBERO -> RLDS -> LoRA
fine-tuning of the tiny OpenVLA -> LIBERO rollouts -> metrics -> Ianvs rank files and the report.

Nothing is faked: the example's own basemodel, metric files and testenv run through the local
runner in a copy of the example (the copy plays the Ianvs root). Budgets are cut to the minimum
(one task, two demonstrations, two optimiser steps, one three-step episode) so it fits CI.
"""

import csv
import json
import os
import shutil

import pytest
import yaml

from bench_constants import TINY_GRID
from vlamix.bench import job as bench_job

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE_REL = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")

GRID = TINY_GRID


def _example_copy(tmp_path, monkeypatch, grid):
    """A copy of the example in ``tmp_path`` (the working directory) whose mixture algorithm runs ``grid``."""
    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), tmp_path / EXAMPLE_REL)
    algo_yaml = tmp_path / EXAMPLE_REL / "testalgorithms" / "vla_dataselect" / "vla_algorithm.yaml"
    algo = yaml.safe_load(algo_yaml.read_text())
    algo["algorithm"]["modules"][0]["hyperparameters"] = [{k: {"values": v}} for k, v in grid.items()]
    algo_yaml.write_text(yaml.safe_dump(algo))
    # the scripted-expert reference row has its own test (test_eval_kit.py), the skill row runs the
    # same code path as the static points: neither runs again here
    job_yaml = tmp_path / EXAMPLE_REL / "benchmarkingjob.yaml"
    job = yaml.safe_load(job_yaml.read_text())
    job["benchmarkingjob"]["test_object"]["algorithms"] = [  # the mixture algorithm only
        a for a in job["benchmarkingjob"]["test_object"]["algorithms"] if a["name"] == "vla_dataselect"]
    job_yaml.write_text(yaml.safe_dump(job))
    monkeypatch.chdir(tmp_path)


@pytest.mark.libero
def test_two_point_grid_end_to_end(tmp_path, monkeypatch):
    _example_copy(tmp_path, monkeypatch, GRID)

    result = bench_job.run_job(os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml"), print_leaderboard=False)
    assert [p.status for p in result.points] == ["completed", "completed"]

    # the scripted expert recorded the dataset once, in the RLDS layout, with its success rate
    rec = json.loads((tmp_path / "workspace/data/libero_rlds/libero_spatial_no_noops/1.0.0/recording.json").read_text())
    assert rec["dataset"] == "libero_spatial_no_noops" and rec["stats"]["successes"] == 2

    with open(result.rank_files["all"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    assert {r["basemodel-lora_rank"] for r in rows} == {"4", "8"}
    for r in rows:
        assert r["algorithm"] == "vla_dataselect" and r["paradigm"] == "singletasklearning"
        assert r["num_episodes"] == "1" and r["recipe"] == "tokens"
        # three policy steps cannot finish a pick-and-place: a success here would be a wrong done flag
        assert float(r["success_rate"]) == 0.0
        assert 0.0 < float(r["success_rate_ci_high"]) < 1.0
        assert 0.0 <= float(r["action_token_accuracy"]) <= 1.0 and float(r["action_l1"]) > 0.0

    for p in result.points:
        pred = json.loads(open(os.path.join(p.output_dir, "prediction.json")).read())
        (episode,) = pred["episodes"]
        assert (episode["suite"], episode["task_id"], episode["steps"], episode["success"]) == ("libero_spatial", 0, 3, False)
        assert pred["config"]["lora_rank"] in (4, 8)
    assert "spatial=1" in open(result.rank_files["report"]).read()

    # a second run resumes: nothing is trained or rolled out again
    again = bench_job.run_job(os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml"), print_leaderboard=False)
    assert [p.status for p in again.points] == ["resumed", "resumed"]


@pytest.mark.libero
def test_an_oft_point_trains_saves_loads_and_rolls_out_chunks_through_the_job(tmp_path, monkeypatch):
    """OpenVLA-OFT (issue 29) through the same route: L1 head, 8-step chunks, wrist image and proprio from the
    recorded demos, rollouts that query the policy once per 8 env steps, chunk offline metrics, resume."""
    _example_copy(tmp_path, monkeypatch, {**GRID, "lora_rank": [4], "eval_max_steps": [10],
                                          "action_head": ["l1_regression"], "action_chunk": [8],
                                          "use_wrist_image": [True], "use_proprio": [True]})

    result = bench_job.run_job(os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml"), print_leaderboard=False)
    (point,) = result.points
    assert point.status == "completed"
    pred = json.loads(open(os.path.join(point.output_dir, "prediction.json")).read())
    (episode,) = pred["episodes"]
    # 10 env steps at 8 actions per observation: exactly 2 policy queries
    assert (episode["steps"], episode["open_loop_steps"], episode["policy_queries"]) == (10, 8, 2)
    assert pred["config"]["action_head"] == "l1_regression" and pred["config"]["use_proprio"] is True
    offline = pred["offline"]
    assert offline["n_frames"] > 0 and offline["action_l1"] > 0.0
    assert offline["action_token_accuracy"] != offline["action_token_accuracy"]  # NaN: no action tokens
    with open(result.rank_files["all"], newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["action_l1"]) == pytest.approx(offline["action_l1"], rel=1e-5)
    assert row["recipe"] == "l1_regression chunk 8 open-loop 8 +wrist +proprio"  # the rank row records the recipe

    again = bench_job.run_job(os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml"), print_leaderboard=False)
    assert [p.status for p in again.points] == ["resumed"]
