"""benchmarks/bench_learnability.py: cells under another recipe (``--set``) never share a run with the token cells."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import bench_learnability  # a script, not a package: importable from benchmarks/ only

    return bench_learnability


def test_overrides_parse_as_yaml_and_name_their_own_run(bench):
    cell = bench.parse_cell("full:5e-4:3000")
    overrides = dict(bench.parse_override(t) for t in ("action_head=l1_regression", "action_chunk=8", "use_proprio=true"))
    assert overrides == {"action_head": "l1_regression", "action_chunk": 8, "use_proprio": True}
    token_run = bench.run_key("tiny-p28", cell)
    oft_run = bench.run_key("tiny-p28", cell, overrides)
    assert token_run == "tiny-p28_full_lr0.0005"  # the study's existing run names stay valid
    assert oft_run == "tiny-p28_full_lr0.0005_action_chunk-8_action_head-l1_regression_use_proprio-True"
    assert bench.cell_key(cell, "tiny-p28", overrides) == oft_run + "_s3000"


def test_a_longer_cell_resumes_only_from_a_shorter_cell_of_its_own_recipe(bench, tmp_path):
    import json

    oft = {"action_head": "l1_regression", "action_chunk": 8}
    done = {}
    for name, overrides in (("token", None), ("oft", oft)):
        ckpt = tmp_path / name / "step_001000"
        ckpt.mkdir(parents=True)
        row = {"model": "tiny-p28", **bench.parse_cell("full:5e-4:1000"), "checkpoint": str(ckpt), "overrides": overrides}
        done[name] = json.loads(json.dumps(row))  # as read back from cells.jsonl
    longer = bench.parse_cell("full:5e-4:3000")
    assert bench._earlier_checkpoint(done, "tiny-p28", longer)["checkpoint"].endswith("token/step_001000")
    assert bench._earlier_checkpoint(done, "tiny-p28", longer, oft)["checkpoint"].endswith("oft/step_001000")
    assert bench._earlier_checkpoint(done, "tiny-p28", longer, {"action_head": "l1_regression"}) is None


def test_mean_skips_figures_a_head_does_not_log(bench):
    assert bench._mean([{"a": None}, {"a": 1.0}, {}, {"a": 3.0}], "a") == 2.0
    assert bench._mean([{"a": None}, {}], "a") is None  # an L1 head logs no token accuracy
    assert bench._fmt(None, ".3f") == bench._fmt(float("nan"), ".3f") == "-" and bench._fmt(0.25, ".3f") == "0.250"


def test_the_cell_s_evaluation_fields_reach_the_rollouts(bench, monkeypatch, tmp_path):
    """``--set open_loop_steps=1`` must change what the rollouts execute, not only the row's recipe label."""
    import importlib
    import json

    calls = {}

    def fake_finetune(cfg, run_dir, resume_from=None, log_every=100):
        ckpt = os.path.join(run_dir, "step_000002")
        os.makedirs(ckpt)
        with open(os.path.join(run_dir, "train_log.jsonl"), "w") as f:
            f.write(json.dumps({"step": 2, "loss": 0.5, "action_accuracy": None, "l1_loss": 0.5}) + "\n")
        return ckpt

    def fake_evaluate(ckpt, suite, tasks, trials, out_jsonl=None, **kwargs):
        calls.update(kwargs, suite=suite, tasks=tasks, trials=trials)
        return [{"success": i == 0, "error": None, "suite": suite, "task_id": 0} for i in range(trials)]

    module = importlib.import_module  # the modules themselves (vlamix.train exports a function named finetune)
    monkeypatch.setattr(module("vlamix.train.finetune"), "finetune", fake_finetune)
    monkeypatch.setattr(module("vlamix.eval.offline"), "offline_metrics", lambda *a, **k: {"action_l1": 0.1})
    monkeypatch.setattr(module("vlamix.eval.rollout"), "evaluate_checkpoint", fake_evaluate)
    argv = ["--model", "tiny-p28", "--cells", "full:5e-4:2", "--trials", "2", "--workers", "3", "--out", str(tmp_path / "s"),
            "--set", "action_head=l1_regression", "--set", "action_chunk=8", "--set", "open_loop_steps=1",
            "--set", "eval_max_steps=50", "--set", "num_steps_wait=4"]
    assert bench.main(argv) == 0
    assert (calls["open_loop_steps"], calls["max_steps"], calls["num_steps_wait"]) == (1, 50, 4)
    assert calls["rollout"].eval_workers == 3 and calls["center_crop"] is False and calls["trials"] == 2
    (row,) = [json.loads(line) for line in open(tmp_path / "s" / "cells.jsonl")]
    assert row["recipe"] == "l1_regression chunk 8 open-loop 1" and row["action_accuracy_last20"] is None
    assert row["successes"] == 1 and row["episodes"] == 2


@pytest.mark.parametrize("name, flag", [("learning_rate", "--cells"), ("seed", "--seed"), ("model", "--model")])
def test_fields_the_script_sets_cannot_be_overridden(bench, capsys, tmp_path, name, flag):
    with pytest.raises(SystemExit):
        bench.main(["--set", f"{name}=1", "--trials", "0", "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert f"--set {name}: set by this script; use {flag}" in err
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("text", ["action_head", "=8", ""])
def test_malformed_override_is_refused(bench, text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="FIELD=VALUE"):
        bench.parse_override(text)


def test_a_bad_field_fails_before_training(bench, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "run_cell", lambda *a, **k: pytest.fail("trained despite a bad field"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--set", "action_head=regression", "--trials", "0", "--out", str(tmp_path / "study")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "action_head" in err and "l1_regression" in err  # names the field and the allowed values
    assert not (tmp_path / "study").exists()
