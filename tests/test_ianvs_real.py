"""The example under real KubeEdge-Ianvs (``ianvs -f``), the route its users take (issue 8).

Ianvs and Sedna are installed from ``../shared/ianvs`` by ``scripts/setup.sh --with-ianvs`` (``.ci/run``
does it). Without them these tests skip, except under CI (``CI=true``), where they fail.

Each "Ianvs root" is a temporary folder holding a copy of the example under ``examples/``, as
docs/ianvs.md tells users to do, and a reduced job: the shipped YAML files with two grid points of the tiny
model and the smallest budgets of ``tests/test_e2e_job.py``. ``ianvs -f`` runs first, from scratch:
it records the scripted demos into a ``data_dir`` beside the roots, trains and rolls out. Then
``vlamix run -f`` runs the same job in its own root on the same data. To fit the CI budget, both
roots also share ``runs_dir`` by default, so ``vlamix run`` reuses Ianvs's training runs and rollout
episodes and recomputes the offline metrics and the rank files: the comparison then covers the
grid, the calls, the metric files and the rank format of the two engines on the same artefacts.
``VLAMIX_IANVS_TEST_INDEPENDENT=1`` gives each root its own ``runs_dir`` (both engines train and roll
out; about twice the time), which also compares training and rollouts across the two processes.
Nothing is faked in the ``ianvs -f`` runs; only the stock-contract test replaces the pipeline's
training and rollouts with canned results.
"""

import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from bench_constants import TINY_GRID
from vlamix.bench import job as bench_job
from vlamix.bench.metrics import ARM_METRICS

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE = os.path.join("examples", "cloud_VLA_finetune")
BENCH = os.path.join(EXAMPLE, "singletask_learning_bench")
JOB_YAML = os.path.join(BENCH, "benchmarkingjob.yaml")
ALGO_YAML = os.path.join(BENCH, "testalgorithms", "vla_dataselect", "vla_algorithm.yaml")
JOB_DIR = os.path.join("workspace", "vla_mixture_bench")

GRID = dict(TINY_GRID, data_dir=["../data/libero_rlds"])  # relative to the root: shared by both roots, recorded once
#: See the module docstring: one runs_dir beside the roots, or one per root.
INDEPENDENT = os.environ.get("VLAMIX_IANVS_TEST_INDEPENDENT") == "1"
RUNS_DIR = os.path.join("workspace", "vlamix_runs") if INDEPENDENT else os.path.join("..", "runs")
#: Rank columns of measured wall times: equal across the engines only when they share the runs (the default).
TIMING = ("train_wall_s", "rollout_wall_s", "episodes_per_hour")


def _missing(message):
    if os.environ.get("CI") == "true":  # CI installs Ianvs (.ci/run): never skip there
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def ianvs_exe():
    """Path of the ``ianvs`` console script of this Python's environment (or on PATH)."""
    path = shutil.which("ianvs", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    if path is None:
        _missing("the `ianvs` console script is not installed (bash scripts/setup.sh --with-ianvs)")
    return path


def make_root(root, grid, extra_hyperparameters=()):
    """An Ianvs-root-like folder: ``examples/cloud_VLA_finetune`` copied from this repository, with
    the algorithm file's grid replaced by ``grid`` (one ``values`` list per field)."""
    shutil.copytree(os.path.join(REPO, EXAMPLE), os.path.join(root, EXAMPLE),
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    path = os.path.join(root, ALGO_YAML)
    with open(path) as fh:
        algo = yaml.safe_load(fh)
    hps = [{k: {"values": v}} for k, v in grid.items()] + [{k: {"values": v}} for k, v in extra_hyperparameters]
    algo["algorithm"]["modules"][0]["hyperparameters"] = hps
    with open(path, "w") as fh:
        yaml.safe_dump(algo, fh)
    job_path = os.path.join(root, JOB_YAML)  # one algorithm: the scripted-expert reference row is not under test
    with open(job_path) as fh:
        job = yaml.safe_load(fh)
    test_object = job["benchmarkingjob"]["test_object"]
    test_object["algorithms"] = [a for a in test_object["algorithms"] if a["name"] == "vla_dataselect"]
    with open(job_path, "w") as fh:
        yaml.safe_dump(job, fh)
    return root


def run_cmd(cmd, cwd, log_path):
    """Run ``cmd`` in ``cwd`` with stdout+stderr to ``log_path``; return (exit status, wall s, log text)."""
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    wall = time.time() - start
    with open(log_path) as fh:
        return proc.returncode, wall, fh.read()


def read_job_log(root):
    """The job's log file under ``root`` (``<job dir>/logs/job.log``): under ``ianvs -f`` vlamix's INFO and DEBUG lines
    go there, the console gets only the progress lines (issue 24)."""
    with open(os.path.join(root, JOB_DIR, "logs", "job.log"), encoding="utf-8", errors="replace") as fh:
        return fh.read()


def read_rank(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ianvs_exe):
    """``ianvs -f`` in one root (records the demos, trains, rolls out), then ``vlamix run -f`` of the
    same job in another root (see the module docstring for what the two share)."""
    base = tmp_path_factory.mktemp("ianvs_real")
    grid = dict(GRID, runs_dir=[RUNS_DIR])
    vroot = make_root(str(base / "vlamix_root"), grid)
    iroot = make_root(str(base / "ianvs_root"), grid)
    rc, i_wall, i_log = run_cmd([ianvs_exe, "-f", JOB_YAML], iroot, base / "ianvs_run.log")
    assert rc == 0, i_log[-6000:]
    cwd, start = os.getcwd(), time.time()
    os.chdir(vroot)  # `vlamix run -f` in process (saves a second interpreter start-up)
    try:
        result = bench_job.run_job(JOB_YAML, print_leaderboard=False)
    finally:
        os.chdir(cwd)
    v_wall = time.time() - start
    assert [p.status for p in result.points] == ["completed", "completed"], [p.error for p in result.points]
    print(f"\n[timing] reduced 2-point job: ianvs -f {i_wall:.1f} s (records the demos), then vlamix run -f "
          f"{v_wall:.1f} s ({'own runs_dir' if INDEPENDENT else 'reusing the runs of ianvs'})")
    return {
        "base": base, "vroot": vroot, "iroot": iroot, "ianvs_log": i_log, "ianvs_wall": i_wall,
        "ianvs_job_log": read_job_log(iroot),
        "runs_dir": os.path.normpath(os.path.join(iroot, RUNS_DIR)),
        "vlamix_all": read_rank(os.path.join(vroot, JOB_DIR, "rank", "all_rank.csv")),
        "ianvs_all": read_rank(os.path.join(iroot, JOB_DIR, "rank", "all_rank.csv")),
    }


@pytest.mark.ianvs
@pytest.mark.libero
def test_ianvs_rank_equals_vlamix_run(runs):
    ianvs_rows, vlamix_rows = runs["ianvs_all"], runs["vlamix_all"]
    assert len(ianvs_rows) == len(vlamix_rows) == 2
    # the same columns (Ianvs orders metric columns by a set, so compare as sets)
    assert set(ianvs_rows[0]) == set(vlamix_rows[0])
    hp_columns = {c for c in ianvs_rows[0] if c.startswith("basemodel-")}
    assert hp_columns == {f"basemodel-{k}" for k in [*GRID, "runs_dir"]}
    by_rank = lambda rows: {r["basemodel-lora_rank"]: r for r in rows}
    ianvs, vlamix = by_rank(ianvs_rows), by_rank(vlamix_rows)
    assert set(ianvs) == {"4", "8"}
    # columns that need the other points (Ianvs computes them as each point finishes) and, with separate runs
    # dirs, the measured wall times: compared below
    apart = {"time", "url", *ARM_METRICS, *(TIMING if INDEPENDENT else ())}
    for lora_rank in ("4", "8"):
        i, v = ianvs[lora_rank], vlamix[lora_rank]
        # every cell but time and url (the uuid folder under Ianvs, the hash folder under vlamix run)
        assert {k: x for k, x in i.items() if k not in apart} == {k: x for k, x in v.items() if k not in apart}
        assert i["basemodel"] == "VLADataSelect" and i["paradigm"] == "singletasklearning"
        assert i["num_episodes"] == "1" and float(i["success_rate"]) == 0.0  # three steps cannot finish a task
        assert 0.0 < float(i["action_l1"]) and 0.0 <= float(i["action_token_accuracy"]) <= 1.0
        # Ianvs's point folder holds the checkpoint our save() wrote and the episodes of predict()
        point_dir = os.path.join(runs["iroot"], i["url"])  # Ianvs writes it relative to its root
        assert os.path.isdir(os.path.join(point_dir, "output", "train"))
        assert os.path.isfile(os.path.join(point_dir, "output", "train", "eval", "episodes.jsonl"))
    # the two points differ (LoRA rank changes training), so the comparison above compares something
    assert ianvs["4"]["action_l1"] != ianvs["8"]["action_l1"] or ianvs["4"]["action_token_accuracy"] != ianvs["8"]["action_token_accuracy"]


@pytest.mark.ianvs
@pytest.mark.libero
def test_seed_group_and_cost_columns_under_ianvs_and_vlamix_run(runs):
    """Issue 28's columns in both engines' all_rank.csv. The two points (LoRA rank 4 and 8, seed 7) are two arms of
    one seed; each failed its one 3-step episode. Under Ianvs the first point to finish saw only itself (P(best) 1),
    the second saw both (0.5 each, equal evidence); vlamix run recomputes them over both points."""
    ianvs, vlamix = runs["ianvs_all"], runs["vlamix_all"]
    for rows in (ianvs, vlamix):
        for r in rows:
            assert (r["num_seeds"], r["seed_success_rates"], r["pooled_success_rate"]) == ("1", "7:0/1", "0.0")
            assert r["group"] == "a" and r["tied_with_best"] == "True" and r["best_tradeoff"] == "True"
            # Clopper-Pearson of 0 successes in 1 episode
            assert float(r["pooled_ci_low"]) == 0.0 and 0.5 < float(r["pooled_ci_high"]) < 1.0
            assert r["between_seed_sd"] == ""  # one seed: not measured
            assert float(r["train_wall_s"]) > 0 and float(r["rollout_wall_s"]) > 0 and float(r["episodes_per_hour"]) > 0
            assert r["device"] and "mujoco=" in r["sim_versions"] and r["recipe"] == "tokens"
            assert re.fullmatch(r"rlds:[0-9a-f]{12}", r["dataset_fingerprint"])
        assert len({r["dataset_fingerprint"] for r in rows}) == 1  # both points train on the same recorded data
    assert sorted(float(r["prob_best"]) for r in ianvs) == [0.5, 1.0]
    assert [float(r["prob_best"]) for r in vlamix] == [0.5, 0.5]
    assert ianvs[0]["dataset_fingerprint"] == vlamix[0]["dataset_fingerprint"]  # one data_dir beside the roots


@pytest.mark.ianvs
@pytest.mark.libero
def test_ianvs_run_checks_the_job_first_and_logs_every_stage(runs):
    log, console = runs["ianvs_job_log"], runs["ianvs_log"]
    assert "benchmarkingjob runs successfully" in console
    # the console shows progress (one header per point), the stage lines are in the job's log file
    assert console.count("point  ") >= 2 and "checking the whole job" not in console  # "point  <label>" per point
    assert "checking the whole job" in log and "job 'vla_mixture_bench': 2 grid point(s) valid" in log
    assert log.index("checking the whole job") < log.index("fine-tuning on mixture")
    assert log.count("checking the whole job") == 1  # once per process, not per point
    for stage in ("hyperparameters valid", "preprocess", ": train", "saved checkpoint", ": load", ": predict", ": done"):
        assert log.count(stage) >= 2, stage  # one line per grid point


@pytest.mark.ianvs
@pytest.mark.libero
def test_second_ianvs_run_trains_and_rolls_out_nothing(runs, ianvs_exe):
    iroot = runs["iroot"]
    selected = os.path.join(iroot, JOB_DIR, "rank", "selected_rank.csv")
    episodes = sorted(glob.glob(os.path.join(runs["runs_dir"], "*", "eval_*", "episodes.jsonl")))
    train_logs = sorted(glob.glob(os.path.join(runs["runs_dir"], "*", "train_log.jsonl")))
    assert len(episodes) == 2 and len(train_logs) == 2
    before = {p: read_bytes(p) for p in [selected, *episodes, *train_logs]}

    logged_before = len(read_job_log(iroot))
    rc, _, console = run_cmd([ianvs_exe, "-f", JOB_YAML], iroot, runs["base"] / "ianvs_rerun.log")
    assert rc == 0, console[-6000:]
    log = read_job_log(iroot)[logged_before:]  # the log file is appended to: the rerun's lines
    assert log.count("reusing finished training run") == 2
    assert "fine-tuning on mixture" not in log
    # a rollout would append rows; a training run would append to its log
    assert {p: read_bytes(p) for p in before} == before
    # Ianvs appended the rerun's rows to all_rank.csv and deduplicated them out of selected_rank.csv
    assert len(read_rank(os.path.join(iroot, JOB_DIR, "rank", "all_rank.csv"))) == 4


@pytest.mark.ianvs
@pytest.mark.libero
def test_an_oft_point_trains_and_rolls_out_chunks_under_ianvs(runs, ianvs_exe):
    """Issue 29: an OpenVLA-OFT point (L1-regression head, 8-action chunks, wrist image, 8-D proprio) trains, saves,
    loads and rolls out under real ``ianvs -f``; its rank row records the recipe, and its episode queried the
    policy once per chunk. It trains on the demos the module's runs recorded (the shared ``data_dir``, which
    holds the wrist images and states) in a runs_dir of its own."""
    base = runs["base"]
    grid = dict(GRID, lora_rank=[4], eval_max_steps=[10], action_head=["l1_regression"], action_chunk=[8],
                use_wrist_image=[True], use_proprio=[True], runs_dir=[os.path.join("workspace", "vlamix_runs")])
    root = make_root(str(base / "ianvs_oft_root"), grid)
    rc, _, log = run_cmd([ianvs_exe, "-f", JOB_YAML], root, base / "ianvs_oft.log")
    assert rc == 0, log[-6000:]
    (row,) = read_rank(os.path.join(root, JOB_DIR, "rank", "all_rank.csv"))
    assert row["recipe"] == "l1_regression chunk 8 open-loop 8 +wrist +proprio"
    assert float(row["action_l1"]) > 0.0 and row["num_episodes"] == "1"
    (episodes_path,) = glob.glob(os.path.join(root, "workspace", "vlamix_runs", "*", "eval_*", "episodes.jsonl"))
    with open(episodes_path) as fh:
        (episode,) = [json.loads(line) for line in fh if line.strip()]
    assert not episode.get("error"), episode.get("error")
    # 10 env steps at 8 actions per observation: exactly 2 policy queries
    assert (episode["steps"], episode["open_loop_steps"], episode["policy_queries"]) == (10, 8, 2)


@pytest.mark.ianvs
def test_typo_in_hyperparameter_fails_under_ianvs_naming_it(tmp_path, ianvs_exe):
    root = make_root(str(tmp_path / "root"), GRID, extra_hyperparameters=[("train_step", [2])])
    rc, _, log = run_cmd([ianvs_exe, "-f", JOB_YAML], root, tmp_path / "ianvs.log")
    assert rc != 0
    assert "train_step" in log and "unknown field" in log and "grid point 1/2" in log
    # failed at the first construction, before anything was recorded or trained
    assert not os.path.exists(tmp_path / "root" / "workspace" / "vlamix_runs")
    assert not os.path.exists(tmp_path / "data") and not os.path.exists(tmp_path / "runs")


@pytest.mark.ianvs
def test_stock_singletask_paradigm_drives_the_basemodel(tmp_path, monkeypatch, caplog):
    """Ianvs's own TestCase -> SingleTaskLearning -> our basemodel -> our metric files, in process;
    the pipeline's training and rollouts are replaced by canned results (the contract is under test)."""
    try:
        from core.common import utils
        from core.testcasecontroller.testcase import TestCase
        from core.testcasecontroller.testcasecontroller import TestCaseController
        from core.testenvmanager.testenv import TestEnv
    except ImportError as err:
        _missing(f"Ianvs (package `core`) is not importable: {err}")
    from vlamix.pipeline import point as pipeline

    root = make_root(str(tmp_path / "root"), GRID)
    monkeypatch.chdir(root)
    for name in ("CUDA_VISIBLE_DEVICES", "LOCAL_TEST", "BASE_MODEL_URL", "RESULT_SAVED_URL"):
        monkeypatch.delenv(name, raising=False)  # Ianvs sets them; restored afterwards
    modules_before = set(sys.modules)
    calls = []

    def fake_train(self, train_data=None, valid_data=None, **kwargs):
        calls.append(("train", type(train_data).__name__, [os.path.basename(x) for x in train_data.x],
                      os.environ.get("BASE_MODEL_URL")))
        ckpt = tmp_path / f"ckpt_{self.config.get('lora_rank')}"
        ckpt.mkdir(exist_ok=True)
        (ckpt / "adapter.txt").write_text(str(self.config.get("lora_rank")))
        self.checkpoint, self.run_dir = str(ckpt), None
        return str(ckpt)

    def fake_predict(self, data=None, **kwargs):
        calls.append(("predict", [os.path.basename(x) for x in data], (open(os.path.join(self.checkpoint, "adapter.txt")).read()),
                      os.environ.get("RESULT_SAVED_URL"), kwargs.get("ledger")))
        episodes = [{"suite": "libero_spatial", "task_id": 0, "episode_index": i, "success": i == 0} for i in range(4)]
        return {"episodes": episodes, "summary": {"success_rate": 0.25, "n_episodes": 4},
                "offline": {"action_token_accuracy": 1 / 3, "action_l1": 0.5}, "mixing": {"strategy_label": "static"}}

    monkeypatch.setattr(pipeline.VLADataSelect, "train", fake_train)
    monkeypatch.setattr(pipeline.VLADataSelect, "predict", fake_predict)
    caplog.set_level("INFO", logger="vlamix")
    try:
        test_env = TestEnv(utils.yaml2dict(os.path.join(BENCH, "testenv", "testenv.yaml")))
        test_env.prepare()
        algorithms = TestCaseController._parse_algorithms_config([{"name": "vla_dataselect", "url": ALGO_YAML}])
        assert len(algorithms) == 2
        results = []
        for algorithm in algorithms:
            case = TestCase(test_env, algorithm)
            results.append((case.run(os.path.join("workspace", "job")), case.output_dir))
    finally:
        for name in set(sys.modules) - modules_before:
            if name == "basemodel" or name.startswith("vla_"):  # Ianvs's load_module imports by file stem
                del sys.modules[name]

    assert [c[0] for c in calls] == ["train", "predict", "train", "predict"]
    _, data_type, train_x, base_model_url = calls[0]
    assert data_type == "TxtDataParse"  # Sedna's parse of the train index, as Ianvs passes it
    index = lambda name: [line.split(" ")[0] for line in open(os.path.join(BENCH, "testenv", name)).read().splitlines()]
    assert train_x == index("libero_train_index.txt") and "libero_spatial_no_noops" in train_x and base_model_url == ""
    # Ianvs calls preprocess() unconditionally, once per point (twice if it returned something)
    assert sum("preprocess" in r.getMessage() for r in caplog.records) == 2
    _, test_x, loaded, result_url, ledger = calls[1]
    assert test_x == index("libero_test_index.txt") and "libero_spatial" in test_x
    # predict ran on the folder save() wrote under Ianvs's point folder and load() got back
    assert loaded == "4" and result_url == os.path.join("workspace", "job", "vla_dataselect", os.path.basename(results[0][1]), "output/inference/")
    assert calls[3][2] == "8"
    # the adapter hands the pipeline the job ledger, four levels above Ianvs's RESULT_SAVED_URL
    assert ledger == os.path.join("workspace", "job", "vlamix_points") == calls[3][4]
    for metrics, out_dir in results:
        assert metrics["success_rate"] == 0.25 and metrics["num_episodes"] == 4
        assert metrics["success_rate_ci_low"] == round(metrics["success_rate_ci_low"], 6) > 0.0
        assert metrics["action_token_accuracy"] == 0.333333 and metrics["action_l1"] == 0.5
        assert metrics["mixing_strategy"] == "static"
        assert os.path.isfile(os.path.join(out_dir, "output", "train", "adapter.txt"))
