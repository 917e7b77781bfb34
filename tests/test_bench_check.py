"""``vlamix check -f`` and what the basemodel does once per Ianvs process (``vlamix.bench.ianvs``).

The job is checked as a whole before anything trains: every grid point's hyperparameters, the
testenv indexes, the module and metric files. These tests use the example's real files in a copy
(the copy plays the Ianvs root) and never train: a wrong check would either pass the bad point or
create the workspace.
"""

import io
import logging
import os
import shutil
import sys

import pytest
import yaml

from vlamix import cli
from vlamix.bench import ianvs

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE = os.path.join("examples", "cloud_VLA_finetune")
BENCH = os.path.join(EXAMPLE, "singletask_learning_bench")
JOB_YAML = os.path.join(BENCH, "benchmarkingjob.yaml")
ALGO_YAML = os.path.join(BENCH, "testalgorithms", "vla_dataselect", "vla_algorithm.yaml")


@pytest.fixture
def root(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(REPO, BENCH), tmp_path / BENCH, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_grid(root, grid):
    """The job with one algorithm (vla_dataselect, no reference row) whose grid is ``grid``."""
    job_path = root / JOB_YAML
    job = yaml.safe_load(job_path.read_text())
    algorithms = job["benchmarkingjob"]["test_object"]["algorithms"]
    job["benchmarkingjob"]["test_object"]["algorithms"] = [a for a in algorithms if a["name"] == "vla_dataselect"]
    job_path.write_text(yaml.safe_dump(job))
    path = root / ALGO_YAML
    algo = yaml.safe_load(path.read_text())
    algo["algorithm"]["modules"][0]["hyperparameters"] = [{k: {"values": v}} for k, v in grid.items()]
    path.write_text(yaml.safe_dump(algo))


def test_check_accepts_the_shipped_job_and_lists_its_points(root, capsys):
    assert cli.main(["check", "-f", JOB_YAML]) == 0
    out = capsys.readouterr().out
    from vlamix.bench.job import expand_grid
    from vlamix.bench.spec import load_job

    job = load_job(JOB_YAML)
    n_points, n_metrics = len(expand_grid(job)), len(job.testenv.metric_names)
    assert n_points >= 3 and n_metrics >= 13  # the ratio grid (+ reference rows) and every rank column
    assert f"job 'vla_mixture_bench' is valid: {n_points} grid point(s), {n_metrics} metric(s)" in out
    assert f"grid point {n_points}/{n_points}" in out
    assert not (root / "workspace").exists()  # nothing recorded, trained or written


def test_check_rejects_bad_point_3_of_3_naming_point_and_field(root, capsys):
    set_grid(root, {"mixture": [{"libero_spatial_no_noops": 1}], "lora_rank": [4, 8, 0], "model": ["tiny"]})
    assert cli.main(["check", "-f", JOB_YAML]) == 2
    err = capsys.readouterr().err
    assert "lora_rank" in err and "grid point 3/3" in err
    assert "grid point 1/3" not in err and "grid point 2/3" not in err
    assert not (root / "workspace").exists()


def test_check_rejects_a_dataset_missing_from_the_train_index(root, capsys):
    index = root / BENCH / "testenv" / "libero_train_index.txt"
    index.write_text("\n".join(l for l in index.read_text().splitlines() if not l.startswith("libero_object_no_noops")))
    set_grid(root, {"mixture": [{"libero_spatial_no_noops": 1}, {"libero_spatial_no_noops": 1, "libero_object_no_noops": 1}]})
    assert cli.main(["check", "-f", JOB_YAML]) == 2
    err = capsys.readouterr().err
    assert "'mixture'" in err and "libero_object_no_noops not listed" in err and "grid point 2/2" in err


def test_check_rejects_a_metric_file_that_does_not_load(root, capsys):
    (root / BENCH / "testenv" / "vla_action_l1.py").write_text("raise ImportError('broken metric file')\n")
    assert cli.main(["check", "-f", JOB_YAML]) == 2
    assert "vla_action_l1.py" in capsys.readouterr().err


def test_check_rejects_unknown_hyperparameter_naming_it(root, capsys):
    set_grid(root, {"mixture": [{"libero_spatial_no_noops": 1}], "train_step": [10000]})
    assert cli.main(["check", "-f", JOB_YAML]) == 2
    err = capsys.readouterr().err
    assert "'train_step': unknown field" in err and "grid point 1/1" in err


def test_a_hyperparameter_listed_twice_is_an_error_naming_it(root, capsys, monkeypatch):
    # before: accepted; Ianvs's get_full_combinations keeps the later entry, so lora_rank 8 ran as 16, silently
    path = root / ALGO_YAML
    set_grid(root, {"mixture": [{"libero_spatial_no_noops": 1}], "lora_rank": [8]})
    algo = yaml.safe_load(path.read_text())
    algo["algorithm"]["modules"][0]["hyperparameters"].append({"lora_rank": {"values": [16]}})
    path.write_text(yaml.safe_dump(algo))
    assert cli.main(["check", "-f", JOB_YAML]) == 2
    err = capsys.readouterr().err
    assert "'lora_rank' is listed twice" in err and "vla_algorithm.yaml" in err
    from vlamix.bench.spec import JobConfigError

    monkeypatch.setattr(ianvs, "_checked", {})
    with pytest.raises(JobConfigError, match="'lora_rank' is listed twice"):
        ianvs.check_job_once(JOB_YAML)  # what the first basemodel construction runs under ianvs -f


def test_ianvs_job_file_only_inside_an_ianvs_process(root, monkeypatch):
    monkeypatch.delitem(sys.modules, ianvs.IANVS_MAIN_MODULE, raising=False)
    assert ianvs.ianvs_job_file(["-f", JOB_YAML]) is None  # not an Ianvs process
    monkeypatch.setitem(sys.modules, ianvs.IANVS_MAIN_MODULE, object())
    assert ianvs.ianvs_job_file(["-f", JOB_YAML]) == JOB_YAML
    assert ianvs.ianvs_job_file(["--benchmarking_config_file", JOB_YAML]) == JOB_YAML
    assert ianvs.ianvs_job_file(["-f", "no_such.yaml"]) is None
    assert ianvs.ianvs_job_file(["-v"]) is None


def test_check_job_once_checks_once_and_raises_naming_the_point(root, monkeypatch):
    monkeypatch.setattr(ianvs, "_checked", {})
    monkeypatch.setitem(sys.modules, ianvs.IANVS_MAIN_MODULE, object())
    monkeypatch.setattr(sys, "argv", ["ianvs", "-f", JOB_YAML])
    assert ianvs.check_job_once() is True
    assert ianvs.check_job_once() is False  # the second grid point does not check again
    set_grid(root, {"mixture": [{"libero_spatial_no_noops": 1}], "trials_per_task": [1, -1]})
    from vlamix.core.errors import ConfigError

    shutil.copy(root / JOB_YAML, root / "job2.yaml")
    with pytest.raises(ConfigError) as info:
        ianvs.check_job_once("job2.yaml")  # another job file: checked anew
    assert info.value.field == "trials_per_task" and "grid point 2/2" in str(info.value)
    with pytest.raises(ConfigError):
        ianvs.check_job_once("job2.yaml")  # a failed check is not remembered as passed


def test_log_handler_added_only_when_nothing_is_configured(monkeypatch):
    root_logger, vlamix_logger = logging.getLogger(), logging.getLogger("vlamix")
    monkeypatch.setattr(root_logger, "handlers", [])
    monkeypatch.setattr(vlamix_logger, "handlers", [])
    monkeypatch.setattr(vlamix_logger, "level", logging.NOTSET)
    handler = ianvs.ensure_log_handler()
    assert handler is not None and vlamix_logger.handlers == [handler]
    assert vlamix_logger.getEffectiveLevel() == logging.INFO  # INFO lines show although root is at WARNING
    assert ianvs.ensure_log_handler() is None  # not twice
    monkeypatch.setattr(handler, "stream", io.StringIO())
    logging.getLogger("vlamix.bench.test").info("stage one")
    assert handler.stream.getvalue().endswith("stage one\n")
    root_handler = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(root_logger, "handlers", [root_handler])  # a library configures root later
    logging.getLogger("vlamix.bench.test").info("stage two")
    assert "stage two" in root_handler.stream.getvalue() and "stage two" not in handler.stream.getvalue()
    monkeypatch.setattr(vlamix_logger, "handlers", [])
    monkeypatch.setattr(root_logger, "handlers", [logging.NullHandler()])
    assert ianvs.ensure_log_handler() is None  # the user's (or vlamix run's) configuration wins


def test_check_warns_about_numeric_selected_columns_that_ianvs_cannot_deduplicate(root, caplog):
    from vlamix.bench.job import check_job

    set_grid(root, {"mixture": [{"libero_spatial_no_noops": 1}], "lora_rank": [4, 8], "model": ["tiny"]})
    assert check_job(JOB_YAML).points  # shipped selection: mixture and model (text) only
    assert "duplicate rows" not in caplog.text
    job = yaml.safe_load((root / JOB_YAML).read_text())
    job["benchmarkingjob"]["rank"]["selected_dataitem"]["hyperparameters"] = ["all"]
    (root / JOB_YAML).write_text(yaml.safe_dump(job))
    check_job(JOB_YAML)
    assert "'basemodel-lora_rank'" in caplog.text and "duplicate rows" in caplog.text
    assert "'basemodel-model'" not in caplog.text
