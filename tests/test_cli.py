"""``vlamix`` command exit codes: 2 and one stderr line for bad input (nothing runs), 1 for a failed run."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from vlamix import cli

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PKG = os.path.join(REPO, "examples", "cloud_VLA_finetune")
EXAMPLE_REL = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")
JOB = os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("vlamix: ")
    return err


def test_evaluate_missing_checkpoint_is_bad_input(tmp_path, capsys):
    # before: FileNotFoundError traceback from the rollout workers
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--tasks", "1", "--trials", "1"]) == 2
    assert "--checkpoint" in _error_line(capsys)


def test_evaluate_unknown_suite_is_bad_input(capsys):
    # before: ValueError traceback from plan_episodes
    assert cli.main(["evaluate", "--checkpoint", "tiny", "--suites", "libero_kitchen"]) == 2
    line = _error_line(capsys)
    assert "libero_kitchen" in line and "libero_spatial" in line  # the value and the allowed names


def test_evaluate_fails_when_every_episode_errored(tmp_path, monkeypatch, capsys):
    def all_errored(checkpoint, specs, rollout=None, **kwargs):  # stand-in for the rollout runtime: every worker crashed
        return [{"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index, "success": False, "steps": 0,
                 "error": "EGL context lost"} for s in specs]

    monkeypatch.setattr(cli, "evaluate", all_errored)
    args = ["evaluate", "--checkpoint", "tiny", "--tasks", "1", "--trials", "2", "--out", str(tmp_path / "e.jsonl")]
    assert cli.main(args) == 1  # before: 0 with success_rate 0.0, as if the policy had failed
    assert "all 2 episodes" in _error_line(capsys)

    def one_ok(checkpoint, specs, rollout=None, **kwargs):
        rows = all_errored(checkpoint, specs)
        rows[0]["error"] = None
        return rows

    monkeypatch.setattr(cli, "evaluate", one_ok)
    assert cli.main(args) == 0


def test_record_demos_of_an_unsupported_suite_is_bad_input(tmp_path, capsys):
    # before: UnsupportedTaskError traceback after the simulator started
    assert cli.main(["record-demos", "--suites", "libero_90", "--tasks", "1", "--data-dir", str(tmp_path / "d")]) == 2
    assert "libero_90" in _error_line(capsys)
    assert not (tmp_path / "d").exists()


@pytest.fixture
def example_root(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), tmp_path / EXAMPLE_REL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _set(root, **values):
    path = root / EXAMPLE_REL / "testalgorithms" / "vla_dataselect" / "vla_algorithm.yaml"
    algo = yaml.safe_load(path.read_text())
    hps = algo["algorithm"]["modules"][0]["hyperparameters"]
    for k, v in values.items():  # replace the field's entry (a field listed twice is an error) or add one
        hps[:] = [e for e in hps if k not in e] + [{k: {"values": [v]}}]
    path.write_text(yaml.safe_dump(algo))


def _vlamix(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PKG, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "vlamix.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_run_dry_run_validates_every_point_and_runs_nothing(example_root):
    # before: `vlamix run` had no --dry-run (argparse exit 2 "unrecognized arguments")
    ok = _vlamix("run", "-f", JOB, "--dry-run")
    assert ok.returncode == 0, ok.stderr
    assert "grid point 1/" in ok.stdout
    _set(example_root, eval_tasks=11)
    bad = _vlamix("run", "-f", JOB, "--dry-run")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'eval_tasks'" in bad.stderr and "has 10" in bad.stderr
    assert not (example_root / "workspace").exists()  # nothing recorded, trained or written
