"""Fault injection: kill a stage at a chosen point, rerun, and get the results of an uninterrupted run.

Every stage that writes something a later run trusts is killed with SIGKILL (no cleanup, no
``finally``) at a fault point (:func:`vlamix.core.io.fault_point`, armed by ``VLAMIX_FAULT_AT`` in a
subprocess) or, where the code has no hook, by the test itself. After each kill the test checks that
nothing half-written reads as finished, then reruns and compares with an uninterrupted run.

Stages: the atomic writer itself (file and folder), training (mid-checkpoint after the step was
logged, before the TRAINING_COMPLETE marker, a torn ``train_log.jsonl`` line), checkpoint weights
(a crash between new shards), recording (the RLDS dataset before its rename), metrics and rank
files (a grid point's ``result.json``, ``all_rank.csv``), rollout (a torn episode row; a point whose
episodes all errored). The rollout runtime itself is not killed here (it needs LIBERO and minutes).
"""

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import checked
from vlamix.core.io import FAULT_ENV, atomic_write_json, read_jsonl

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
PKG = os.path.join(REPO, "examples", "cloud_VLA_finetune")
KILLED = -signal.SIGKILL


def _run(script: str, *args: str, fault: str | None = None, cwd: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PKG, TESTS, os.environ.get("PYTHONPATH", "")])}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == KILLED, f"expected a SIGKILL, got {proc.returncode}: {proc.stderr[-3000:]}"


# ----------------------------------------------------------------------------------- atomic writer
WRITE = """
import os, sys
from vlamix.core.io import atomic_write_json, atomic_dir
path = sys.argv[1]
if sys.argv[2] == "file":
    atomic_write_json(path, {"version": "new"})
else:
    with atomic_dir(path) as tmp:
        for name in ("a.json", "b.json"):
            with open(os.path.join(tmp, name), "w") as fh:
                fh.write('{"version": "new"}')
"""


def test_a_kill_between_write_and_rename_leaves_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"version": "old"})
    _killed(_run(WRITE, str(path), "file", fault="atomic:result.json"))
    assert json.loads(path.read_text()) == {"version": "old"}
    leftovers = [n for n in os.listdir(tmp_path) if n != "result.json"]
    assert leftovers and all(n.startswith(".result.json.tmp-") for n in leftovers)  # hidden, never read
    assert json.loads(open(tmp_path / leftovers[0]).read()) == {"version": "new"}  # it was complete, not renamed
    _ok(_run(WRITE, str(path), "file"))
    assert json.loads(path.read_text()) == {"version": "new"}


def test_a_kill_before_a_folder_rename_leaves_the_old_folder(tmp_path):
    folder = tmp_path / "step_000002"
    folder.mkdir()
    (folder / "a.json").write_text('{"version": "old"}')
    _killed(_run(WRITE, str(folder), "dir", fault="atomic_dir:step_000002"))
    assert sorted(os.listdir(folder)) == ["a.json"] and "old" in (folder / "a.json").read_text()
    assert [n for n in os.listdir(tmp_path) if n != "step_000002"][0].startswith(".step_000002.partial-")
    _ok(_run(WRITE, str(folder), "dir"))
    assert sorted(os.listdir(folder)) == ["a.json", "b.json"] and "new" in (folder / "a.json").read_text()
    assert os.listdir(tmp_path) == ["step_000002"]  # the killed call's partial folder is cleaned up


# ----------------------------------------------------------------------------------- training
HPS = dict(mixture={"libero_spatial_no_noops": 1}, train_steps=3, batch_size=2, lora_rank=8, lora_alpha=16,
           learning_rate=2e-3, seed=3, lora_dropout=0.1)
TRAIN = f"""
import sys
from test_train_finetune import InMemoryLoader
import vlamix.pipeline.point
from vlamix.pipeline.point import VLADataSelect
from vlamix.train.finetune import FineTuner
# test stand-ins for the RLDS data (the training, checkpoint and marker code are the real ones)
vlamix.pipeline.point.ensure_demo_datasets = lambda data: {{}}
FineTuner._build_loader = lambda self: InMemoryLoader(seed=5)
print(VLADataSelect(**{HPS!r}, runs_dir=sys.argv[1]).train())
"""


def _adapter(ckpt: str) -> dict:
    from safetensors.numpy import load_file

    return load_file(os.path.join(ckpt, "lora_adapter", "adapter_model.safetensors"))


def test_training_killed_mid_checkpoint_and_before_the_marker_finishes_as_uninterrupted(tmp_path):
    from test_train_finetune import InMemoryLoader

    from vlamix.pipeline.point import COMPLETE_MARKER, finished_checkpoint, latest_resumable_checkpoint
    from vlamix.train.finetune import FineTuner

    runs = tmp_path / "killed"
    # 1. killed inside the step-2 checkpoint save (step 2 already logged): no step_000002 appears
    _killed(_run(TRAIN, str(runs), fault="checkpoint:weights_written@2"))
    (run_dir,) = [os.path.join(runs, d) for d in os.listdir(runs) if os.path.isdir(os.path.join(runs, d))]  # besides <key>.lock
    assert not os.path.exists(os.path.join(run_dir, "step_000002"))
    assert os.path.basename(latest_resumable_checkpoint(run_dir)) == "step_000001" and finished_checkpoint(run_dir) is None
    with open(os.path.join(run_dir, "train_log.jsonl"), "a") as fh:
        fh.write('{"step": 3, "lo')  # and an append torn by a kill
    # 2. the rerun resumes from step 1; killed with the final checkpoint written, the marker not yet in place
    _killed(_run(TRAIN, str(runs), fault=f"atomic:{COMPLETE_MARKER}"))
    assert not os.path.exists(os.path.join(run_dir, COMPLETE_MARKER)) and finished_checkpoint(run_dir) is None
    # 3. the last rerun finishes (nothing left to train: it re-saves step 3 and writes the marker)
    done = _ok(_run(TRAIN, str(runs))).stdout.split()[-1]
    assert finished_checkpoint(run_dir) == done and os.path.basename(done) == "step_000003"

    full = FineTuner(checked(HPS), str(tmp_path / "full"), loader=InMemoryLoader(seed=5), device="cpu").train()
    log, full_log = read_jsonl(os.path.join(run_dir, "train_log.jsonl")), read_jsonl(tmp_path / "full" / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3]  # each step once: no duplicate rows from the resumes
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in full_log], rel=1e-6, abs=1e-7)
    a, b = _adapter(done), _adapter(full)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7)
    assert not [n for n in os.listdir(run_dir) if ".partial-" in n or ".old-" in n]  # no partial checkpoint left


def test_an_empty_marker_is_not_a_finished_run(tmp_path):
    from vlamix.pipeline.point import COMPLETE_MARKER, finished_checkpoint

    (tmp_path / COMPLETE_MARKER).write_text("")  # what a kill during an in-place write leaves
    assert finished_checkpoint(str(tmp_path)) is None  # before: the run folder itself counted as the checkpoint
    (tmp_path / COMPLETE_MARKER).write_text("step_000004\n")
    assert finished_checkpoint(str(tmp_path)) is None  # named, but that checkpoint does not exist
    (tmp_path / "step_000004").mkdir()
    (tmp_path / "step_000004" / "training_state.pt").write_bytes(b"x")
    assert finished_checkpoint(str(tmp_path)) == str(tmp_path / "step_000004")


def test_a_crash_while_writing_new_shards_keeps_the_old_weights_loadable(tmp_path, monkeypatch):
    # before: the old weights were deleted first; a crash left one new shard and no index (unloadable)
    import torch

    from vlamix.model import checkpoint

    old_model, processor = checkpoint.build_tiny(seed=0)
    checkpoint.save_vla(old_model, processor, str(tmp_path))  # one model.safetensors
    new_model = copy.deepcopy(old_model)
    with torch.no_grad():
        for p in new_model.parameters():
            p.add_(1.0)
    real, written = checkpoint.save_file, []

    def disk_full_at_the_second_shard(tensors, path, metadata=None):
        written.append(path)
        if len(written) == 2:
            raise OSError("No space left on device")
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_at_the_second_shard)
    with pytest.raises(OSError):
        checkpoint.save_vla(new_model, processor, str(tmp_path), max_shard_bytes=8 * 1024**2)
    name, weight = next((n, p) for n, p in old_model.named_parameters() if p.ndim == 2)
    loaded, _ = checkpoint.load_vla(str(tmp_path))
    torch.testing.assert_close(dict(loaded.named_parameters())[name], weight)  # still the old weights
    assert not torch.equal(dict(new_model.named_parameters())[name], weight)

    monkeypatch.setattr(checkpoint, "save_file", real)
    checkpoint.save_vla(new_model, processor, str(tmp_path), max_shard_bytes=8 * 1024**2)
    assert checkpoint.WEIGHTS_NAME not in os.listdir(tmp_path)  # the old single file went after the new shards
    loaded, _ = checkpoint.load_vla(str(tmp_path))
    torch.testing.assert_close(dict(loaded.named_parameters())[name], dict(new_model.named_parameters())[name])


# ----------------------------------------------------------------------------------- recording
RECORD = """
import sys
import numpy as np
from synthetic_rlds import synthetic_episode
from vlamix.data.rlds_writer import write_rlds
rng = np.random.default_rng(0)
episodes = [synthetic_episode(rng, 4 + i, "pick up the bowl", f"ep{i}") for i in range(3)]
path = write_rlds(episodes, sys.argv[1], "libero_spatial_no_noops", overwrite=True, extra_json={"recording.json": {"episodes": 3}})
from vlamix.data.reader import open_rlds
print(sorted(int(n) for n in open_rlds(path).episode_lengths()))
"""


def test_recording_killed_before_the_dataset_rename_is_not_a_dataset(tmp_path):
    from vlamix.sim.record import _dataset_ready

    target = tmp_path / "libero_spatial_no_noops" / "1.0.0"
    _killed(_run(RECORD, str(tmp_path), fault="rlds:built"))
    assert not _dataset_ready(str(target)) and not target.exists()
    assert [n for n in os.listdir(tmp_path / "libero_spatial_no_noops") if n != "1.0.0"]  # only the hidden staging folder
    out = _ok(_run(RECORD, str(tmp_path))).stdout.split("\n")
    assert _dataset_ready(str(target))
    assert json.loads((target / "recording.json").read_text()) == {"episodes": 3}  # in place with the dataset, never after
    assert "[4, 5, 6]" in out  # every episode, read back from the dataset the rerun wrote


# ----------------------------------------------------------------------------------- metrics and rank files
JOB = """
from vlamix.bench import job
result = job.run_job("fake_job.yaml", print_leaderboard=False)
print(" ".join(p.status for p in result.points))
"""


def _fake_root(root):
    import shutil

    from test_bench_job import EXAMPLE_REL, FAKE_ALGORITHM, FAKE_BASEMODEL, FAKE_JOB

    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), root / EXAMPLE_REL)
    fake = root / EXAMPLE_REL / "testalgorithms" / "fake"
    fake.mkdir()
    (fake / "fake_basemodel.py").write_text(FAKE_BASEMODEL)
    (fake / "fake_algorithm.yaml").write_text(FAKE_ALGORITHM.replace("TRIALS", "2"))
    (root / "fake_job.yaml").write_text(FAKE_JOB)
    return root


def _rank(root) -> list[list[str]]:
    with open(root / "workspace" / "fake_job" / "rank" / "all_rank.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    drop = {rows[0].index("time")}
    return [[c for i, c in enumerate(r) if i not in drop] for r in rows]


def test_grid_killed_before_a_result_or_the_rank_file_is_renamed_reruns_to_the_same_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_BENCH_LOG", str(tmp_path / "calls.jsonl"))
    full = _fake_root(tmp_path / "full")
    assert _ok(_run(JOB, cwd=str(full))).stdout.splitlines()[-1].split() == ["completed", "completed"]

    root = _fake_root(tmp_path / "killed")
    # metrics of point 1 computed, its result.json not yet renamed: the point is not finished
    _killed(_run(JOB, cwd=str(root), fault="atomic:result.json@1"))
    assert not list((root / "workspace" / "fake_job").glob("*/*/result.json"))
    # the rerun runs point 1 again (not trusted) and is killed before all_rank.csv is renamed
    _killed(_run(JOB, cwd=str(root), fault="atomic:all_rank.csv"))
    assert len(list((root / "workspace" / "fake_job").glob("*/*/result.json"))) == 2
    assert not (root / "workspace" / "fake_job" / "rank" / "all_rank.csv").exists()
    # the last rerun resumes both points and writes the same rank as the uninterrupted run
    assert _ok(_run(JOB, cwd=str(root))).stdout.splitlines()[-1].split() == ["resumed", "resumed"]
    ranked = _rank(root)
    assert ranked[1:] and [r[:-1] for r in ranked] == [r[:-1] for r in _rank(full)]  # all but the url column


# ----------------------------------------------------------------------------------- rollout rows
def test_a_torn_episode_row_is_run_again_and_earlier_rows_are_kept(tmp_path):
    from vlamix.eval.rollout import read_rows

    path = tmp_path / "episodes.jsonl"
    row = {"suite": "libero_spatial", "task_id": 0, "episode_index": 0, "success": True, "steps": 3}
    path.write_text(json.dumps(row) + "\n" + '{"suite": "libero_spatial", "task_id": 0, "episode_ind')  # killed mid-append
    assert read_rows(str(path)) == [row]  # the torn row is not an episode: the rerun runs episode 1 again
    assert read_jsonl(path) == [row]


def test_a_grid_point_whose_episodes_all_errored_is_failed_not_zero_percent(tmp_path, monkeypatch):
    # before: success_rate 0.0 written to result.json, a crash of the infrastructure ranked as a policy failure
    import vlamix.pipeline.point as point
    from vlamix.pipeline.point import VLADataSelect

    def all_errored(checkpoint, specs, rollout=None, **kwargs):  # stand-in for the rollout runtime: every env worker crashed
        return [{"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index, "success": False,
                 "steps": 0, "error": "EGL context lost"} for s in specs]

    monkeypatch.setattr(point, "evaluate", all_errored)
    algo = VLADataSelect(mixture={"libero_spatial_no_noops": 1}, eval_tasks=1, trials_per_task=2, runs_dir=str(tmp_path / "runs"))
    algo.load(str(tmp_path))
    with pytest.raises(RuntimeError, match="all 2 rollout episodes failed"):
        algo.predict()
    assert not (tmp_path / "eval" / "result.json").exists()
