"""``vlamix run --backend ray``: grid points as Ray Tune trials on a local Ray (``num_cpus=2``).

The runner, Ray and Tune are real. The fast tests use a test-only basemodel (a plugin, as Ianvs
users write) in a copy of the example; it logs its calls to ``calls.jsonl`` in the Ianvs root and
reads its controls (points to fail, points to hang) from files there, because Ray workers do not
share the test's environment. ``test_real_two_point_job_matches_sequential`` runs the product
basemodel (scripted demos, tiny OpenVLA, LIBERO rollouts) at the budgets of ``test_e2e_job.py``.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

ray = pytest.importorskip("ray") if os.environ.get("CI") != "true" else __import__("ray")

from bench_constants import TINY_GRID
from vlamix.bench import job as bench_job
from vlamix.bench import ray_backend
from vlamix.core.errors import ConfigError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE_ROOT = os.path.join(REPO, "examples", "cloud_VLA_finetune")
EXAMPLE_REL = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")

FAKE_BASEMODEL = '''
import json
import os
import time

try:
    from sedna.common.class_factory import ClassFactory, ClassType
except ImportError:
    from vlamix.bench.registry import ClassFactory, ClassType


def _log(**record):
    with open(os.path.join(os.getcwd(), "calls.jsonl"), "a") as fh:
        fh.write(json.dumps(record) + "\\n")


def _listed(name, w):
    path = os.path.join(os.getcwd(), name)
    return os.path.isfile(path) and "%.3f" % w in open(path).read().split()


@ClassFactory.register(ClassType.GENERAL, alias="FakeVLA")
class FakeVLA:
    def __init__(self, **hps):
        mixture = hps["mixture"]
        self.w = mixture["libero_spatial_no_noops"] / sum(mixture.values())

    def train(self, train_data, valid_data=None, **kwargs):
        _log(call="train", w=round(self.w, 3), pid=os.getpid())
        if _listed("fail.txt", self.w):
            raise RuntimeError("injected training failure")
        deadline = time.time() + 120
        while _listed("hang.txt", self.w) and time.time() < deadline:
            time.sleep(0.2)

    def save(self, model_path):
        os.makedirs(model_path, exist_ok=True)
        return model_path

    def load(self, model_url):
        pass

    def predict(self, data, **kwargs):
        k = round(4 * self.w)
        episodes = [{"suite": "libero_spatial", "task_id": i // 2, "episode_index": i % 2, "success": i < k}
                    for i in range(4)]
        return {"episodes": episodes, "offline": {"action_token_accuracy": self.w, "action_l1": 1 - self.w}}
'''

FAKE_ALGORITHM = {
    "algorithm": {
        "paradigm_type": "singletasklearning",
        "initial_model_url": "",
        "modules": [{
            "type": "basemodel",
            "name": "FakeVLA",
            "url": f"./{EXAMPLE_REL}/testalgorithms/fake/fake_basemodel.py",
            "hyperparameters": [
                {"mixture": {"values": [{"libero_spatial_no_noops": 1, "libero_object_no_noops": 3},
                                        {"libero_spatial_no_noops": 3, "libero_object_no_noops": 1}]}},
                {"model": {"values": ["tiny"]}},
            ],
        }],
    }
}


def fake_job(ray_block=None):
    job = {
        "benchmarkingjob": {
            "name": "fake_job",
            "workspace": "./workspace",
            "testenv": f"./{EXAMPLE_REL}/testenv/testenv.yaml",
            "test_object": {"type": "algorithms", "algorithms": [
                {"name": "fake_algo", "url": f"./{EXAMPLE_REL}/testalgorithms/fake/fake_algorithm.yaml"}]},
            "rank": {
                "sort_by": [{"success_rate": "descend"}, {"action_l1": "ascend"}],
                "visualization": {"mode": "selected_only", "method": "print_table"},
                "selected_dataitem": {"paradigms": ["all"], "modules": ["all"], "hyperparameters": ["basemodel-mixture"],
                                      "metrics": ["success_rate", "num_episodes"]},
                "save_mode": "selected_and_all",
            },
        }
    }
    if ray_block is not None:
        job["benchmarkingjob"]["ray"] = ray_block
    return job


def make_root(root, ray_block=None):
    """A copy of the example with the fake algorithm at ``root`` (the Ianvs root)."""
    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), root / EXAMPLE_REL)
    fake_dir = root / EXAMPLE_REL / "testalgorithms" / "fake"
    fake_dir.mkdir()
    (fake_dir / "fake_basemodel.py").write_text(FAKE_BASEMODEL)
    (fake_dir / "fake_algorithm.yaml").write_text(yaml.safe_dump(FAKE_ALGORITHM, sort_keys=False))
    (root / "fake_job.yaml").write_text(yaml.safe_dump(fake_job(ray_block if ray_block is not None else {"cpus_per_trial": 1})))
    return root


def calls(root):
    path = root / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rank_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the module, started the way the runner starts one."""
    assert ray_backend.connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_two_points_on_ray_give_the_sequential_rank_files(tmp_path, monkeypatch, local_ray):
    seq = make_root(tmp_path / "seq")
    monkeypatch.chdir(seq)
    expected = bench_job.run_job("fake_job.yaml", print_leaderboard=False)

    par = make_root(tmp_path / "ray")
    monkeypatch.chdir(par)
    result = ray_backend.run_job_ray("fake_job.yaml", print_leaderboard=False)

    assert [p.status for p in result.points] == ["completed", "completed"]
    assert [p.point.point_id for p in result.points] == [p.point.point_id for p in expected.points]
    for name in ("all", "selected"):
        want = rank_rows(os.path.join(seq, expected.rank_files[name]))
        got = rank_rows(os.path.join(par, result.rank_files[name]))
        for row in want + got:
            row.pop("time")
        assert got == want
    got = rank_rows(os.path.join(par, result.rank_files["all"]))
    assert [r["success_rate"] for r in got] == ["0.75", "0.25"]
    # each point trained once, in a Ray worker (not in this process)
    train_pids = [c["pid"] for c in calls(par) if c["call"] == "train"]
    assert len(train_pids) == 2 and os.getpid() not in train_pids


def test_failed_trial_is_recorded_and_the_other_point_finishes(tmp_path, monkeypatch, local_ray):
    root = make_root(tmp_path)
    monkeypatch.chdir(root)
    (root / "fail.txt").write_text("0.250\n")
    result = ray_backend.run_job_ray("fake_job.yaml", print_leaderboard=False)

    assert [p.status for p in result.points] == ["failed", "completed"]
    failed = result.points[0]
    assert "injected training failure" in failed.error
    assert "injected training failure" in open(os.path.join(failed.output_dir, "error.txt")).read()
    assert json.load(open(os.path.join(failed.output_dir, "result.json")))["status"] == "failed"
    rows = rank_rows(result.rank_files["all"])
    assert [r["basemodel-mixture"] for r in rows] == ["{'libero_spatial_no_noops': 3, 'libero_object_no_noops': 1}"]

    # the next run retries only the failed point
    (root / "fail.txt").unlink()
    again = ray_backend.run_job_ray("fake_job.yaml", print_leaderboard=False)
    assert [p.status for p in again.points] == ["completed", "resumed"]
    assert [c["w"] for c in calls(root) if c["call"] == "train"] == [0.25, 0.75, 0.25] or \
        sorted(c["w"] for c in calls(root) if c["call"] == "train") == [0.25, 0.25, 0.75]
    assert len(rank_rows(again.rank_files["all"])) == 2


def test_killed_driver_resumes_without_rerunning_the_finished_point(tmp_path, monkeypatch, local_ray):
    root = make_root(tmp_path, ray_block={"cpus_per_trial": 1, "max_concurrent_trials": 2})
    monkeypatch.chdir(root)
    (root / "hang.txt").write_text("0.750\n")  # the 3:1 point hangs in train until the file goes
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    driver = subprocess.Popen(
        [sys.executable, "-m", "vlamix.cli", "run", "-f", "fake_job.yaml", "--backend", "ray", "--address", local_ray],
        cwd=root, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=open(root / "driver.log", "w"),
    )
    job_dir = root / "workspace" / "fake_job" / "fake_algo"
    deadline = time.time() + 300  # a liveness bound, not a timing: the loop leaves as soon as the point is done
    try:
        while time.time() < deadline:
            done = [json.load(open(p)) for p in job_dir.glob("*/result.json")] if job_dir.exists() else []
            hanging = any(c["w"] == 0.75 for c in calls(root) if c["call"] == "train")
            if any(d["status"] == "completed" for d in done) and hanging:
                break
            assert driver.poll() is None, (root / "driver.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the first point did not finish in 300 s: " + (root / "driver.log").read_text()[-3000:])
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and nothing else: its own session
        driver.wait()
    (root / "hang.txt").unlink()

    result = ray_backend.run_job_ray("fake_job.yaml", print_leaderboard=False)
    assert [p.status for p in result.points] == ["resumed", "completed"]
    trains = [c["w"] for c in calls(root) if c["call"] == "train"]
    assert trains.count(0.25) == 1 and trains.count(0.75) == 2
    assert [r["success_rate"] for r in rank_rows(result.rank_files["all"])] == ["0.75", "0.25"]


@pytest.mark.parametrize(
    "block, field",
    [
        ({"gpus_per_trial": -1}, "ray.gpus_per_trial"),
        ({"cpus_per_trial": 0}, "ray.cpus_per_trial"),
        ({"gpus_per_trial": 1.5}, "ray.gpus_per_trial"),
        ({"max_concurrent_trials": 0}, "ray.max_concurrent_trials"),
        ({"gpu_per_trial": 1}, "ray.gpu_per_trial"),
    ],
)
def test_bad_ray_settings_fail_before_any_work(tmp_path, monkeypatch, block, field):
    root = make_root(tmp_path, ray_block=block)
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError) as err:
        ray_backend.run_job_ray("fake_job.yaml", print_leaderboard=False)
    assert err.value.field == field
    assert not (root / "workspace").exists() and not calls(root)


def test_trial_larger_than_the_cluster_fails_before_any_trial(tmp_path, monkeypatch, local_ray):
    root = make_root(tmp_path, ray_block={"gpus_per_trial": 1})
    monkeypatch.chdir(root)
    with pytest.raises(ConfigError, match="GPUs per trial, but the Ray cluster has 0"):
        ray_backend.run_job_ray("fake_job.yaml", print_leaderboard=False)
    assert not calls(root)


def test_search_on_ray_runs_optuna_trials_as_rank_rows_and_resumes(tmp_path, monkeypatch, local_ray):
    from vlamix.search.job import run_search

    root = make_root(tmp_path, ray_block={"cpus_per_trial": 1})
    job = yaml.safe_load((root / "fake_job.yaml").read_text())
    job["benchmarkingjob"]["search"] = {"datasets": ["libero_spatial_no_noops", "libero_object_no_noops"], "objective": "action_token_accuracy",
                                        "direction": "maximize", "budget": 3, "sampler": "tpe", "seed": 0}
    (root / "fake_job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    monkeypatch.chdir(root)
    result, trace, _ = run_search("fake_job.yaml", backend="ray", print_leaderboard=False)

    assert len(trace.records) == 3 and all(r.value is not None for r in trace.records)
    for rec in trace.records:  # the objective Tune reported is the trial's own metric (accuracy = spatial weight)
        assert rec.value == pytest.approx(rec.weights["libero_spatial_no_noops"], abs=1e-4)
    rows = rank_rows(result.rank_files["all"])
    assert sorted(r["url"].split(os.sep)[-1] for r in rows) == sorted(r.point_id for r in trace.records)
    train_pids = {c["pid"] for c in calls(root) if c["call"] == "train"}
    assert len(calls(root)) == 3 and os.getpid() not in train_pids

    _, again, _ = run_search("fake_job.yaml", backend="ray", print_leaderboard=False)  # budget spent: nothing runs
    assert len(again.records) == 3 and len(calls(root)) == 3


# ------------------------------------------------------------------------------ the product path
E2E_GRID = {k: v for k, v in TINY_GRID.items() if not k.startswith("demo_")}  # the budgets of test_e2e_job.py


def _product_root(root, shared):
    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), root / EXAMPLE_REL)
    algo_yaml = root / EXAMPLE_REL / "testalgorithms" / "vla_dataselect" / "vla_algorithm.yaml"
    algo = yaml.safe_load(algo_yaml.read_text())
    grid = dict(E2E_GRID, data_dir=[str(shared / "data")], runs_dir=[str(shared / "runs")], demos=["none"])
    algo["algorithm"]["modules"][0]["hyperparameters"] = [{k: {"values": v}} for k, v in grid.items()]
    algo_yaml.write_text(yaml.safe_dump(algo, sort_keys=False))
    job_yaml = root / EXAMPLE_REL / "benchmarkingjob.yaml"
    job = yaml.safe_load(job_yaml.read_text())
    job["benchmarkingjob"]["ray"] = {"cpus_per_trial": 1}  # both trials at once on the 2-CPU Ray
    test_object = job["benchmarkingjob"]["test_object"]  # the mixture algorithm only (no expert reference row)
    test_object["algorithms"] = [a for a in test_object["algorithms"] if a["name"] == "vla_dataselect"]
    job_yaml.write_text(yaml.safe_dump(job, sort_keys=False))
    return os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml")


@pytest.mark.libero
def test_real_two_point_job_on_ray(tmp_path, monkeypatch, local_ray):
    """Demonstrations written once (synthetic episodes through the real RLDS writer, so no expert
    recording is needed here), the tiny model trained in the Ray workers, LIBERO rollouts spawned
    inside the trials. (That the rank values equal the sequential runner's is asserted with the
    test basemodel above and was measured on this job by benchmarks/bench_ray_backend.py.)"""
    from vlamix.data.rlds_writer import write_rlds
    from synthetic_rlds import synthetic_episode

    shared = tmp_path / "shared"
    rng = np.random.default_rng(0)
    write_rlds([synthetic_episode(rng, 8, "pick up the black bowl", f"/demos/{i}.hdf5") for i in range(4)],
               str(shared / "data"), "libero_spatial_no_noops")
    job_file = _product_root(tmp_path / "ray", shared)
    monkeypatch.chdir(tmp_path / "ray")
    result = ray_backend.run_job_ray(job_file, print_leaderboard=False)
    assert [p.status for p in result.points] == ["completed", "completed"], [p.error for p in result.points]
    ray_rows = rank_rows(result.rank_files["all"])
    assert {r["basemodel-lora_rank"] for r in ray_rows} == {"4", "8"}
    for r in ray_rows:
        assert r["num_episodes"] == "1" and float(r["success_rate"]) == 0.0
        assert 0.0 <= float(r["action_token_accuracy"]) <= 1.0 and float(r["action_l1"]) > 0.0
    for p in result.points:
        (episode,) = json.load(open(os.path.join(p.output_dir, "prediction.json")))["episodes"]
        assert (episode["suite"], episode["task_id"], episode["steps"], episode["success"]) == ("libero_spatial", 0, 3, False)
    # two training runs (one per LoRA rank), each trained once
    assert len([d for d in os.listdir(shared / "runs") if not d.endswith(".lock")]) == 2
    # each point ran as a Tune trial (its result.json in the experiment folder)
    import glob

    tune_results = [json.loads(line) for f in glob.glob(os.path.join(result.job.job_dir, "ray_tune", "*", "*", "result.json"))
                    for line in open(f) if line.strip()]
    assert sorted((r["point_id"], r["status"]) for r in tune_results) == sorted((p.point.point_id, "completed") for p in result.points)


# ------------------------------------------------------------------------------ devices in a trial
def test_trial_devices_cpu_trial_sees_no_gpu_and_gpu_trial_renders_on_its_first(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID", raising=False)
    ray_backend.prepare_trial_devices(0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and os.environ["MUJOCO_EGL_DEVICE_ID"] == "0"
    # robosuite's EGL context parses an empty CUDA_VISIBLE_DEVICES as a device list unless the ID is set
    code = "from robosuite.renderers.context import egl_context as e; print(bool(e.create_initialized_egl_device_display(-1)))"
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, MUJOCO_GL="egl"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "True", proc.stderr[-2000:]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what Ray sets for a trial given physical GPU 3
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the guard it installs goes with the test
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "3")
    ray_backend.prepare_trial_devices(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and os.environ["MUJOCO_EGL_DEVICE_ID"] == "0"


@pytest.mark.parametrize("guarded", [True, False])
def test_robosuite_accepts_egl_device_0_under_narrowed_cuda_only_with_the_guard(guarded):
    """A spawned rollout worker of a GPU trial (CUDA_VISIBLE_DEVICES=3, MUJOCO_EGL_DEVICE_ID=0):
    robosuite's import-time check rejects it unless vlamix.sim (which installs the guard) comes first."""
    code = ("import vlamix.sim; " if guarded else "") + "import robosuite.utils.binding_utils, os; print(os.environ['MUJOCO_EGL_DEVICE_ID'])"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="3", MUJOCO_EGL_DEVICE_ID="0", MUJOCO_GL="egl",
               PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if guarded:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "0"  # restored after the import
    else:
        assert proc.returncode != 0 and "MUJOCO_EGL_DEVICE_ID needs to be set" in proc.stderr
