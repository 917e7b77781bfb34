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


def test_earlier_checkpoint_of_another_recipe_is_not_resumed(bench, tmp_path):
    ckpt = tmp_path / "step_001000"
    ckpt.mkdir()
    token_row = {"model": "tiny-p28", **bench.parse_cell("full:5e-4:1000"), "checkpoint": str(ckpt)}
    done = {"token": token_row}
    longer = bench.parse_cell("full:5e-4:3000")
    assert bench._earlier_checkpoint(done, "tiny-p28", longer) is token_row
    assert bench._earlier_checkpoint(done, "tiny-p28", longer, {"action_head": "l1_regression"}) is None


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
