"""End-to-end tests of ``vlamix.bench.job`` with a test-only basemodel in a copy of the example.

The copy plays the Ianvs root (every URL is relative to the current directory). The fake basemodel
logs every call Ianvs's single-task paradigm makes and returns rollout rows whose success count
depends on the mixture, so the rank values and order are known in advance. The real metric files
and dataset indexes of the example are used unchanged.
"""

import csv
import json
import math
import os
import re
import shutil
import sys

import pytest

from vlamix.bench import command as bench_command
from vlamix.bench import job as bench_job
from vlamix.core.errors import ConfigError
from bench_constants import METRICS

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE_REL = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")
SEDNA_STUB = os.path.join(os.path.dirname(__file__), "sedna_stub")
Z = 1.959963984540054

FAKE_BASEMODEL = '''
import json
import os

try:
    from sedna.common.class_factory import ClassFactory, ClassType
except ImportError:
    from vlamix.bench.registry import ClassFactory, ClassType


def _log(**record):
    with open(os.environ["FAKE_BENCH_LOG"], "a") as fh:
        fh.write(json.dumps(record) + "\\n")


@ClassFactory.register(ClassType.GENERAL, alias="FakeVLA")
class FakeVLA:
    def __init__(self, **hps):
        self.hps = hps
        mixture = hps["mixture"]
        self.w = mixture["libero_spatial_no_noops"] / sum(mixture.values())
        _log(call="init", w=round(self.w, 3), hps=sorted(hps))

    def train(self, train_data, valid_data=None, **kwargs):
        if "%.3f" % self.w in os.environ.get("FAKE_BENCH_FAIL_W", "").split(","):
            raise RuntimeError("injected training failure")
        _log(call="train", w=round(self.w, 3), x=[os.path.basename(p) for p in train_data.x],
             y=[os.path.basename(str(p)) for p in train_data.y], data_type=train_data.data_type,
             base_model_url=os.environ.get("BASE_MODEL_URL"))

    def save(self, model_path):
        os.makedirs(model_path, exist_ok=True)
        with open(os.path.join(model_path, "weights.txt"), "w") as fh:
            fh.write(repr(self.w))
        _log(call="save", w=round(self.w, 3), path=model_path)
        return model_path

    def load(self, model_url):
        with open(os.path.join(model_url, "weights.txt")) as fh:
            self.loaded = float(fh.read())
        _log(call="load", w=round(self.w, 3), path=model_url)

    def predict(self, data, **kwargs):
        _log(call="predict", w=round(self.w, 3), x=[os.path.basename(p) for p in data],
             result_saved_url=os.environ.get("RESULT_SAVED_URL"))
        k = round(4 * self.loaded)
        episodes = [{"suite": "libero_spatial", "task_id": i // 2, "episode_index": i % 2, "success": i < k}
                    for i in range(4)]
        offline = {"action_token_accuracy": self.w, "action_l1": 1 - self.w} if self.w > 0.5 else {}
        return {"episodes": episodes, "offline": offline, "config": self.hps}
'''

FAKE_ALGORITHM = """
algorithm:
  paradigm_type: "singletasklearning"
  initial_model_url: "init-model"
  modules:
    - type: "basemodel"
      name: "FakeVLA"
      url: "./examples/cloud_VLA_finetune/singletask_learning_bench/testalgorithms/fake/fake_basemodel.py"
      hyperparameters:
        - mixture:
            values:
              - {libero_spatial_no_noops: 1, libero_object_no_noops: 2}
              - {libero_spatial_no_noops: 2, libero_object_no_noops: 1}
        - model:
            values: ["tiny"]
        - trials_per_task:
            values: [TRIALS]
"""

FAKE_JOB = """
benchmarkingjob:
  name: "fake_job"
  workspace: "./workspace"
  testenv: "./examples/cloud_VLA_finetune/singletask_learning_bench/testenv/testenv.yaml"
  test_object:
    type: "algorithms"
    algorithms:
      - name: "fake_algo"
        url: "./examples/cloud_VLA_finetune/singletask_learning_bench/testalgorithms/fake/fake_algorithm.yaml"
  rank:
    sort_by: [{"success_rate": "descend"}, {"action_l1": "ascend"}]
    visualization: {mode: "selected_only", method: "print_table"}
    selected_dataitem:
      paradigms: ["all"]
      modules: ["all"]
      hyperparameters: ["basemodel-mixture"]
      metrics: ["success_rate", "num_episodes"]
    save_mode: "selected_and_all"
"""


def wilson(k, n, z=Z):
    """Closed-form Wilson score interval, written independently of vlamix.eval.stats."""
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@pytest.fixture
def ianvs_root(tmp_path, monkeypatch):
    """A tmp Ianvs root holding a copy of the example plus the fake algorithm; cwd is set to it."""
    example = tmp_path / EXAMPLE_REL
    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), example)
    fake_dir = example / "testalgorithms" / "fake"
    fake_dir.mkdir()
    (fake_dir / "fake_basemodel.py").write_text(FAKE_BASEMODEL)
    (fake_dir / "fake_algorithm.yaml").write_text(FAKE_ALGORITHM.replace("TRIALS", "2"))
    (tmp_path / "fake_job.yaml").write_text(FAKE_JOB)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_BENCH_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_BENCH_FAIL_W", raising=False)
    monkeypatch.delenv("BASE_MODEL_URL", raising=False)
    monkeypatch.delenv("RESULT_SAVED_URL", raising=False)
    return tmp_path


def calls(root):
    path = root / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_two_point_grid_writes_ianvs_rank_files_sorted_by_success_rate(ianvs_root):
    result = bench_job.run_job("fake_job.yaml", print_leaderboard=False)

    assert [p.status for p in result.points] == ["completed", "completed"]
    job_dir = os.path.join("./workspace", "fake_job")
    header, rows = read_csv(os.path.join(job_dir, "rank", "all_rank.csv"))
    assert header == [
        "rank", "algorithm", *METRICS, "paradigm", "basemodel",
        "basemodel-mixture", "basemodel-model", "basemodel-trials_per_task", "time", "url",
    ]
    table = [dict(zip(header, r)) for r in rows]
    # grid order is 1:2 then 2:1; the rank puts 2:1 (3 of 4 episodes succeed) first
    assert [r["rank"] for r in table] == ["1", "2"]
    assert [r["basemodel-mixture"] for r in table] == [
        "{'libero_spatial_no_noops': 2, 'libero_object_no_noops': 1}",
        "{'libero_spatial_no_noops': 1, 'libero_object_no_noops': 2}",
    ]
    best, worst = table
    assert float(best["success_rate"]) == 0.75 and float(worst["success_rate"]) == 0.25
    assert float(best["success_rate_ci_low"]) == pytest.approx(wilson(3, 4)[0], abs=5e-7)
    assert float(best["success_rate_ci_high"]) == pytest.approx(wilson(3, 4)[1], abs=5e-7)
    assert float(worst["success_rate_ci_low"]) == pytest.approx(wilson(1, 4)[0], abs=5e-7)
    assert best["num_episodes"] == "4" and worst["num_episodes"] == "4"
    assert float(best["worst_task_success_rate"]) == 0.5 and float(worst["worst_task_success_rate"]) == 0.0
    assert float(best["action_token_accuracy"]) == pytest.approx(2 / 3)
    assert float(best["action_l1"]) == pytest.approx(1 / 3)
    assert worst["action_token_accuracy"] == "" and worst["action_l1"] == ""  # not computed -> empty cell
    # evaluation kit: 3/4 vs 1/4 on the same 4 episodes is not a significant difference (exact
    # McNemar p = 0.5), so both points tie with the best; columns the job does not measure are empty
    assert [r["tied_with_best"] for r in table] == ["True", "True"]
    for name in ("seen_success_rate", "unseen_success_rate", "perturbed_success_rate", "robustness_drop", "language_reliance"):
        assert best[name] == "" and worst[name] == "", name
    for r in table:
        assert r["algorithm"] == "fake_algo"
        assert r["paradigm"] == "singletasklearning"
        assert r["basemodel"] == "FakeVLA"
        assert r["basemodel-model"] == "tiny" and r["basemodel-trials_per_task"] == "2"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["time"])
        assert os.path.dirname(r["url"]) == os.path.join(job_dir, "fake_algo")
        assert os.path.isfile(os.path.join(r["url"], "result.json"))
        assert os.path.isfile(os.path.join(r["url"], "output", "train", "weights.txt"))

    sel_header, sel_rows = read_csv(os.path.join(job_dir, "rank", "selected_rank.csv"))
    assert sel_header == ["rank", "algorithm", "success_rate", "num_episodes", "paradigm", "basemodel",
                          "basemodel-mixture", "time", "url"]
    assert [r[2] for r in sel_rows] == ["0.75", "0.25"]
    assert result.rank_files == {
        "all": os.path.join(job_dir, "rank", "all_rank.csv"),
        "selected": os.path.join(job_dir, "rank", "selected_rank.csv"),
    }


def test_basemodel_receives_what_ianvs_passes(ianvs_root):
    bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    log = calls(ianvs_root)
    assert [c["call"] for c in log] == ["init", "train", "save", "load", "predict"] * 2
    assert [c["w"] for c in log if c["call"] == "init"] == [0.333, 0.667]
    assert log[0]["hps"] == ["mixture", "model", "trials_per_task"]
    train = log[1]
    assert train["x"] == ["libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops",
                          "libero_10_no_noops", "libero_90_no_noops"]
    assert train["y"][:2] == ["libero_spatial", "libero_object"]
    assert train["data_type"] == "train"
    assert train["base_model_url"] == "init-model"
    save, load, predict = log[2], log[3], log[4]
    point_dir = os.path.join("./workspace", "fake_job", "fake_algo", bench_job.expand_grid(
        bench_job.load_job("fake_job.yaml"))[0].point_id)
    assert save["path"] == os.path.join(point_dir, "output/train/")
    assert load["path"] == save["path"]
    assert predict["x"] == ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]
    assert predict["result_saved_url"] == os.path.join(point_dir, "output/inference/")
    assert "BASE_MODEL_URL" not in os.environ and "RESULT_SAVED_URL" not in os.environ


def test_existing_results_are_not_rerun(ianvs_root):
    first = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    n_calls = len(calls(ianvs_root))
    rank_before = read_csv(os.path.join("workspace", "fake_job", "rank", "all_rank.csv"))

    second = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert [p.status for p in second.points] == ["resumed", "resumed"]
    assert len(calls(ianvs_root)) == n_calls
    assert json.dumps([p.metrics for p in second.points]) == json.dumps([p.metrics for p in first.points])
    assert read_csv(os.path.join("workspace", "fake_job", "rank", "all_rank.csv")) == rank_before


def test_failing_point_is_reported_and_the_others_are_kept(ianvs_root, monkeypatch):
    monkeypatch.setenv("FAKE_BENCH_FAIL_W", "0.333")
    result = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert [p.status for p in result.points] == ["failed", "completed"]
    failed = result.failed[0]
    assert "injected training failure" in failed.error
    assert "RuntimeError" in open(os.path.join(failed.output_dir, "error.txt")).read()
    _, rows = read_csv(result.rank_files["all"])
    assert len(rows) == 1 and float(rows[0][2]) == 0.75

    monkeypatch.delenv("FAKE_BENCH_FAIL_W")
    before = len(calls(ianvs_root))
    retry = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert [p.status for p in retry.points] == ["completed", "resumed"]
    assert {c["w"] for c in calls(ianvs_root)[before:]} == {0.333}  # only the failed point ran again
    assert not os.path.exists(os.path.join(failed.output_dir, "error.txt"))
    _, rows = read_csv(retry.rank_files["all"])
    assert [float(r[2]) for r in rows] == [0.75, 0.25]


def test_all_points_failing_leaves_header_only_rank_files_and_exit_status_1(ianvs_root, monkeypatch):
    monkeypatch.setenv("FAKE_BENCH_FAIL_W", "0.333,0.667")
    result = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert len(result.failed) == 2
    header, rows = read_csv(result.rank_files["all"])
    assert rows == [] and header[:3] == ["rank", "algorithm", "success_rate"]
    assert bench_command.main(["-f", "fake_job.yaml"]) == 1


def test_metric_added_later_is_computed_from_the_saved_prediction(ianvs_root):
    bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    n_calls = len(calls(ianvs_root))
    point_dir = bench_job.run_job("fake_job.yaml", print_leaderboard=False, dry_run=True).points[1].output_dir
    record_path = os.path.join(point_dir, "result.json")
    record = json.load(open(record_path))
    del record["metrics"]["worst_task_success_rate"]
    record["metrics"]["success_rate"] = 0.123  # as if computed by an older metric file
    json.dump(record, open(record_path, "w"))

    result = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert len(calls(ianvs_root)) == n_calls
    assert result.points[1].status == "resumed"
    assert result.points[1].metrics["worst_task_success_rate"] == 0.5
    assert result.points[1].metrics["success_rate"] == 0.123  # stored values are reused...

    result = bench_job.run_job("fake_job.yaml", print_leaderboard=False, recompute_metrics=True)
    assert result.points[1].metrics["success_rate"] == 0.75  # ...unless asked to recompute
    assert json.load(open(record_path))["metrics"]["success_rate"] == 0.75
    assert len(calls(ianvs_root)) == n_calls


def test_a_metric_file_that_raises_stops_the_job_before_any_point(ianvs_root):
    metric = ianvs_root / EXAMPLE_REL / "testenv" / "vla_num_episodes.py"
    metric.write_text("raise ImportError('no such dependency')\n")
    path_before = list(sys.path)
    with pytest.raises(bench_job.ModuleLoadError, match="no such dependency"):
        bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert sys.path == path_before
    assert calls(ianvs_root) == []
    assert bench_command.main(["-f", "fake_job.yaml"]) == 2


def test_module_loading_leaves_no_trace_on_sys_path_or_stem_modules(ianvs_root):
    path_before = list(sys.path)
    bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert sys.path == path_before
    for stem in ("fake_basemodel", "vla_success_rate", "basemodel"):
        assert stem not in sys.modules


def test_dry_run_runs_nothing_and_writes_nothing(ianvs_root):
    result = bench_job.run_job("fake_job.yaml", dry_run=True)
    assert [p.status for p in result.points] == ["planned", "planned"]
    assert calls(ianvs_root) == []
    assert not os.path.exists("workspace")


def test_bad_value_in_a_later_point_fails_before_any_point_runs(ianvs_root):
    algo = ianvs_root / EXAMPLE_REL / "testalgorithms" / "fake" / "fake_algorithm.yaml"
    algo.write_text(FAKE_ALGORITHM.replace("TRIALS", "2, 0"))
    with pytest.raises(ConfigError) as info:
        bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert info.value.field == "trials_per_task"
    assert "grid point 2/4" in str(info.value)
    assert calls(ianvs_root) == []
    assert not os.path.exists("workspace")


def test_unknown_hyperparameter_is_rejected_unless_allowed(ianvs_root):
    algo = ianvs_root / EXAMPLE_REL / "testalgorithms" / "fake" / "fake_algorithm.yaml"
    algo.write_text(FAKE_ALGORITHM.replace("TRIALS", "2") + "        - trian_steps:\n            values: [3]\n")
    with pytest.raises(ConfigError) as info:
        bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert info.value.field == "trian_steps"
    assert calls(ianvs_root) == []

    result = bench_job.run_job("fake_job.yaml", allow_extra=True, print_leaderboard=False)
    assert [p.status for p in result.points] == ["completed", "completed"]


def test_cli_exit_status_and_leaderboard(ianvs_root, capsys):
    assert bench_command.main(["-f", "fake_job.yaml"]) == 0
    captured = capsys.readouterr()
    console = captured.out + captured.err
    assert "Leaderboard of 'fake_job'" in console and "0.75" in console and "+--" in console  # prettytable, once
    assert sum(line.startswith("+") for line in console.splitlines()) == 3  # one table: Ianvs's wide one is in the log
    assert "point 1/2  fake_algo" in console and "point 2/2  fake_algo" in console and "rank files: " in console
    algo = ianvs_root / EXAMPLE_REL / "testalgorithms" / "fake" / "fake_algorithm.yaml"
    algo.write_text(FAKE_ALGORITHM.replace("TRIALS", "-1"))
    assert bench_command.main(["-f", "fake_job.yaml"]) == 2


def _sedna_modules():
    return [m for m in sys.modules if m == "sedna" or m.startswith("sedna.")]


@pytest.fixture
def sedna_stub(monkeypatch):
    """Make the test-only ``sedna`` package the one ``import sedna`` finds; afterwards forget it and
    give back the modules of a real Sedna that was imported before (CI installs Sedna with Ianvs)."""
    for name in _sedna_modules():
        monkeypatch.delitem(sys.modules, name)  # restored by monkeypatch's teardown, after ours below
    monkeypatch.syspath_prepend(SEDNA_STUB)
    import sedna

    assert os.path.dirname(os.path.dirname(sedna.__file__)) == SEDNA_STUB
    yield
    for name in _sedna_modules():
        del sys.modules[name]


def test_uses_sednas_registry_when_sedna_is_importable(ianvs_root, sedna_stub):
    from sedna.common.class_factory import ClassFactory as StubFactory

    result = bench_job.run_job("fake_job.yaml", print_leaderboard=False)
    assert [p.status for p in result.points] == ["completed", "completed"]
    general = StubFactory.__registry__["general"]
    assert general["FakeVLA"].__name__ == "FakeVLA"
    assert set(METRICS) <= set(general)
