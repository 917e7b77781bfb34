"""Rollout runtime (vlamix.eval.server / envs): one batched policy here, env slots in spawned workers.

Fast tests use the fake env of ``eval_fakes`` (no simulator): each fake episode succeeds only if
every action it gets is the one computed from its own image, so a row's success proves that the
batched policy's actions went back to the right environment. Faults are injected by the fake env
(a worker SIGKILLs itself mid-episode, an env step hangs, an env step raises). The LIBERO test
compares the vectorised evaluator with the batch-1 loop on the tiny model in fp32 and checks a
failure video.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from eval_fakes import ImagePolicy, episode_length, make_fake_slot
from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.eval import policy as policy_mod
from vlamix.eval.rollout import EpisodeSpec, evaluate
from vlamix.eval.stats import summarize
from vlamix.pipeline.point import flag_errors
from vlamix.eval.settings import RolloutConfig

SPATIAL = "libero_spatial_no_noops"
#: Step limit of the expert equality test: the scripted expert (init state 0, seed 7, 10 wait steps) wins
#: LIBERO-Spatial task 0 at step 88 and LIBERO-Goal task 0 at step 95 (measured with
#: tests/sim_attempts.py::expert_rollouts).
EXPERT_MAX_STEPS = 100


def _specs(tasks=2, trials=4, suite="libero_spatial"):
    return [EpisodeSpec(suite, t, k, k, f"task {t}") for t in range(tasks) for k in range(trials)]


def _fake(tmp_path, **faults):
    return functools.partial(make_fake_slot, faults=faults, marker_dir=str(tmp_path))


def _lines(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


# ------------------------------------------------------------------------------ scheduling
def test_slot_refill_runs_every_planned_episode_once_and_keeps_the_batch_full(tmp_path):
    specs = _specs(tasks=3, trials=3)  # 9 episodes of 2..6 steps on 2 workers x 2 slots
    stats = {}
    out = str(tmp_path / "episodes.jsonl")
    rows = evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=2, envs_per_worker=2, eval_videos="all", eval_videos_per_task=2), out_jsonl=out, max_steps=8,
                    slot_factory=_fake(tmp_path), stats=stats, progress=False)
    # every fake episode succeeds at its own length only if it got the actions for its own images
    assert [(r["success"], r["steps"]) for r in rows] == [(True, episode_length(s.task_id, s.episode_index)) for s in specs]
    assert all(r["attempts"] == 1 and r["error"] is None and (r["policy_batch"], r["env_slots"]) == (2, 4)
               for r in rows)
    # batch_size is the batch each episode was really served in: 2 while both slots of its group ran
    assert [r["batch_size"] for r in rows[:4]] == [2] * 4 and all(r["batch_size"] in (1, 2) for r in rows)
    # slots take episodes in plan order, each exactly once
    assert [key for _, key, _ in stats["assign_log"]] == [s.key for s in specs]
    # two env slots per worker: double buffering between the slot groups {0, 2} and {1, 3}, which the
    # rounds alternate between (group A's round fills A's slots first, then B's round fills B's)
    assert stats["groups"] == [[0, 2], [1, 3]]
    assert [slot for slot, _, _ in stats["assign_log"][:4]] == [0, 2, 1, 3]
    # while episodes wait, every slot is busy: a round's policy batch is the other group (2 slots)
    # minus the episodes that ended when that group last stepped (the round before)
    log = stats["batch_log"]
    pairs = [(log[r][0], log[r - 1][1]) for r in range(1, len(log)) if log[r - 1][2] > 0]
    assert pairs and all(b + e == 2 for b, e in pairs)
    assert max(b for b, _, _ in log) == 2  # never the whole 4: the policy never waits for the stepping group
    assert sum(b for b, _, _ in log) == sum(r["steps"] for r in rows)  # one action per step
    assert sorted(tuple(r["episode_key"]) for r in _lines(out)) == sorted(tuple(s.key) for s in specs)
    # videos: at most 2 per task, one frame per observation, no temporary file left
    import imageio.v2 as imageio

    videos = [r for r in rows if r["video"]]
    assert sorted(r["task_id"] for r in videos) == [0, 0, 1, 1, 2, 2]
    for r in videos:
        assert r["video"].endswith(f"task{r['task_id']:02d}__trial{r['episode_index']:03d}__success.mp4")
        assert len(imageio.mimread(os.path.join(tmp_path, r["video"]), memtest=False)) == r["steps"] + 1
    assert sorted(os.listdir(tmp_path / "videos")) == sorted(os.path.basename(r["video"]) for r in videos)


def test_the_policy_batch_is_the_slot_group_and_odd_env_counts_are_refused(tmp_path):
    from vlamix.eval.server import policy_batch_size

    # 8 workers x 4 envs: 32 slots in two groups of 16, so every policy call can get 16 images
    assert policy_batch_size(8, 4) == 16 and policy_batch_size(8, 2) == 8 and policy_batch_size(3, 1) == 3
    specs = _specs(tasks=2, trials=8)  # 16 episodes on 2 workers x 4 slots: groups of 4
    stats = {}
    rows = evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=2, envs_per_worker=4), max_steps=8, slot_factory=_fake(tmp_path),
                    stats=stats, progress=False)
    assert [len(g) for g in stats["groups"]] == [4, 4]
    assert max(b for b, _, _ in stats["batch_log"]) == 4 == rows[0]["policy_batch"] == rows[0]["batch_size"]
    assert all(r["success"] for r in rows)
    with pytest.raises(ValueError, match="envs_per_worker.*must be 1 .* or an even number"):
        evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=2, envs_per_worker=3), slot_factory=_fake(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="envs_per_worker"):
        checked({"mixture": {SPATIAL: 1}, "envs_per_worker": 3, "demos": "scripted"})
    assert checked({"mixture": {SPATIAL: 1}, "eval_workers": 8, "envs_per_worker": 4,
                                  "demos": "scripted"}).policy_batch_size() == 16


def test_episodes_of_different_suites_share_one_policy_call(tmp_path):
    specs = [EpisodeSpec(suite, 0, 0, 0, "task 0") for suite in ("libero_spatial", "libero_object", "libero_goal")]
    stats, policy = {}, ImagePolicy()
    rows = evaluate(lambda: policy, specs, RolloutConfig(eval_workers=3, envs_per_worker=1), max_steps=8, slot_factory=_fake(tmp_path),
                    stats=stats, progress=False)
    assert all(r["success"] and r["batch_size"] == 3 for r in rows)
    assert max(policy.batches) == 3 and len(policy.batches) == stats["rounds"] - 1  # one call per round, not per suite
    assert policy.suites[0] == ["libero_spatial", "libero_object", "libero_goal"]


def _state_slot_expert():
    """ExpertPolicy paired with the fake state slots (as ExpertPolicy is with make_expert_slot)."""
    from eval_fakes import make_state_slot
    from vlamix.eval.expert_policy import ExpertPolicy

    policy = ExpertPolicy()
    policy.slot_factory = make_state_slot
    return policy


def test_slot_states_reach_a_state_policy_in_both_loops_and_the_env_gets_the_proposed_actions(tmp_path):
    from eval_fakes import StateSlot, env_action_of, make_state_slot
    from vlamix.eval.expert_policy import ExpertPolicy
    from vlamix.eval.rollout import run_episode

    # 6 episodes of two suites on 2 workers x 2 slots: each row of a batch must get its own slot's state
    specs = _specs(tasks=2, trials=2) + _specs(tasks=1, trials=2, suite="libero_object")
    stats = {}
    # no slot_factory: evaluate takes the policy's own (here the fake state slots)
    rows = evaluate(_state_slot_expert, specs, RolloutConfig(eval_workers=2, envs_per_worker=2), max_steps=8,
                    stats=stats, progress=False)
    lengths = [episode_length(s.task_id, s.episode_index) for s in specs]
    assert [(r["success"], r["steps"], r["error"]) for r in rows] == [(True, n, None) for n in lengths]
    assert max(b for b, _, _ in stats["batch_log"]) == 2 and all(r["policy_batch"] == 2 for r in rows)
    # the batch-1 loop: same outcomes and the same digests of the model-space actions
    slot = StateSlot({}, None)
    ref = [run_episode(slot, ExpertPolicy(), spec, 8) for spec in specs]
    assert [(r["success"], r["steps"], r["action_digest"]) for r in rows] == \
        [(r["success"], r["steps"], r["action_digest"]) for r in ref]
    # what the env executed is the proposal (gripper -1 / +1 included), through model space and back
    last = specs[-1]
    expected = [env_action_of(last.task_id, last.episode_index, t) for t in range(lengths[-1])]
    np.testing.assert_array_equal(np.array(slot.executed), np.array(expected, dtype=np.float64))
    assert sorted({a[6] for a in slot.executed}) == [-1.0, 1.0]
    # an exception of the expert in its slot is the policy's: an error row at once (not retried, not a
    # failure), while the episode beside it in the same policy call runs on
    rows = evaluate(ExpertPolicy, specs[:2], RolloutConfig(eval_workers=2), max_steps=8, progress=False,
                    slot_factory=functools.partial(make_state_slot, fail=[((0, 1), 1)]))
    assert (rows[0]["success"], rows[0]["error"]) == (True, None)
    assert (rows[1]["success"], rows[1]["steps"], rows[1]["attempts"], rows[1]["error"]) == \
        (False, 1, 1, "RuntimeError: scripted expert: UnsupportedTaskError: no primitive for this goal")
    # slots without a state (image-only): the expert policy cannot act; error rows, not failures
    rows = evaluate(ExpertPolicy, specs[:2], RolloutConfig(eval_workers=1), max_steps=8, slot_factory=_fake(tmp_path),
                    progress=False)
    assert all(not r["success"] and "has no 'expert_action'" in r["error"] and "make_expert_slot" in r["error"]
               for r in rows)


def test_one_env_per_worker_steps_every_slot_each_round_in_lock_step(tmp_path):
    specs = _specs(tasks=2, trials=3)  # 6 episodes on 3 workers x 1 slot
    stats = {}
    rows = evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=3, envs_per_worker=1), max_steps=8, slot_factory=_fake(tmp_path),
                    stats=stats, progress=False)
    assert [(r["success"], r["steps"]) for r in rows] == [(True, episode_length(s.task_id, s.episode_index)) for s in specs]
    assert stats["groups"] == [[0, 1, 2]] and all((r["policy_batch"], r["env_slots"]) == (3, 3) for r in rows)
    assert [r["batch_size"] for r in rows[:3]] == [3] * 3
    # lock-step: the policy acts on every slot that did not just end, in the same round
    waiting_rounds = [(b, e) for b, e, pending in stats["batch_log"] if pending > 0]
    assert waiting_rounds and all(b + e == 3 for b, e in waiting_rounds)
    assert sum(b for b, _, _ in stats["batch_log"]) == sum(r["steps"] for r in rows)


def test_env_workers_get_their_share_of_the_cpus_for_mesa_rendering_threads(tmp_path, monkeypatch):
    from eval_fakes import make_env_recording_slot

    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    factory = functools.partial(make_env_recording_slot, marker_dir=str(tmp_path))
    evaluate(ImagePolicy, _specs(tasks=1, trials=4), RolloutConfig(eval_workers=4), max_steps=8, slot_factory=factory, progress=False)
    values = [open(p).read() for p in sorted(tmp_path.glob("lp_*"))]
    assert values == ["2"] * 4  # 8 CPUs / 4 workers, not Mesa's default of one thread per CPU
    for p in tmp_path.glob("lp_*"):
        p.unlink()
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # the user's setting wins
    evaluate(ImagePolicy, _specs(tasks=1, trials=2), RolloutConfig(eval_workers=2), max_steps=8, slot_factory=factory, progress=False)
    assert [open(p).read() for p in sorted(tmp_path.glob("lp_*"))] == ["3", "3"]


def test_a_policy_cache_loads_the_checkpoint_once_across_calls(tmp_path, monkeypatch):
    built = []

    class CountingPolicy(ImagePolicy):
        def __init__(self, path, **kwargs):
            built.append((path, kwargs["device"], kwargs["dtype"]))
            super().__init__()

    monkeypatch.setattr("vlamix.eval.rollout.VLAPolicy", CountingPolicy)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    specs = _specs(tasks=1, trials=4)
    cache = {}
    for part in (specs[:2], specs[2:]):  # two racing rounds
        rows = evaluate(str(ckpt), part, RolloutConfig(eval_workers=1, eval_device="cpu"), max_steps=8, slot_factory=_fake(tmp_path),
                        progress=False, policy_cache=cache)
        assert all(r["success"] for r in rows)
    assert built == [(str(ckpt), "cpu", "fp32")]  # loaded once, not once per round
    evaluate(str(ckpt), specs[:1], RolloutConfig(eval_workers=1, eval_device="cpu"), max_steps=8, slot_factory=_fake(tmp_path), progress=False)
    assert len(built) == 2  # without a cache every call loads it


# ------------------------------------------------------------------------------ faults
def test_killed_worker_is_replaced_and_its_episode_rerun_without_lost_or_duplicated_rows(tmp_path):
    specs = _specs(tasks=2, trials=3)
    out = str(tmp_path / "episodes.jsonl")
    stats = {}
    # episode task 0 / trial 1: its worker SIGKILLs itself at step 2 of the first attempt
    rows = evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=2, envs_per_worker=2), out_jsonl=out, max_steps=8,
                    slot_factory=_fake(tmp_path, **{"0/1": "kill@2"}), stats=stats, progress=False)
    assert stats["restarts"] == 1
    assert all(r["success"] and r["error"] is None for r in rows)
    attempts = {(r["task_id"], r["episode_index"]): r["attempts"] for r in rows}
    assert attempts.pop((0, 1)) == 2 and set(attempts.values()) == {1}  # only the killed episode used an attempt
    lines = _lines(out)
    assert len(lines) == len(specs) and len({tuple(r["episode_key"]) for r in lines}) == len(specs)
    reruns = [key for _, key, _ in stats["assign_log"]]
    assert reruns.count(("libero_spatial", 0, 1)) == 2


def test_hung_episode_hits_the_wall_clock_limit_and_errors_are_not_failures(tmp_path):
    specs = _specs(tasks=1, trials=4)
    out = str(tmp_path / "episodes.jsonl")
    faults = {"0/0": "hang@1", "0/2": "hang@2:always", "0/3": "raise@1:always"}
    rows = evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=2, envs_per_worker=1, eval_episode_timeout_s=2.0, eval_max_attempts=2), out_jsonl=out, max_steps=8,
                    slot_factory=_fake(tmp_path, **faults), progress=False)
    r0, r1, r2, r3 = rows
    assert (r0["success"], r0["attempts"], r0["error"]) == (True, 2, None)  # hung once, rerun, succeeded
    assert (r1["success"], r1["attempts"], r1["error"]) == (True, 1, None)
    assert r2["success"] is False and r2["attempts"] == 2 and r2["error"].startswith("EpisodeTimeout")
    assert r3["attempts"] == 2 and r3["error"].startswith("EnvError: RuntimeError: fake physics exploded")
    summary = flag_errors(summarize(rows), max_error_fraction=0.25)
    assert (summary["n_episodes"], summary["n_successes"], summary["n_errors"]) == (2, 2, 2)
    assert summary["success_rate"] == 1.0  # not 0.5: errors are not policy failures
    assert summary["error_fraction"] == 0.5 and summary["too_many_errors"] is True
    assert flag_errors(summarize(rows[:3]), 0.5)["too_many_errors"] is False
    from vlamix.bench.metrics import num_errors, success_rate

    assert num_errors(None, {"episodes": rows}) == 2 and success_rate(None, {"episodes": rows}) == 1.0
    assert len(_lines(out)) == 4


_SIGNAL_SCRIPT = textwrap.dedent("""
    import functools, logging, sys
    logging.basicConfig(level=logging.INFO)
    from eval_fakes import ImagePolicy, make_fake_slot
    from vlamix.eval.rollout import EpisodeSpec, evaluate
    from vlamix.eval.settings import RolloutConfig
    if __name__ == "__main__":
        out, marker = sys.argv[1], sys.argv[2]
        specs = [EpisodeSpec("libero_spatial", 0, k, k, "x") for k in range(4)]
        # trial 3 hangs for ever (no timeout): the run can only end by a signal
        evaluate(ImagePolicy, specs, RolloutConfig(eval_workers=2, eval_episode_timeout_s=None), out_jsonl=out, max_steps=8, progress=False,
                 slot_factory=functools.partial(make_fake_slot, faults={"0/3": "hang@1:always"}, marker_dir=marker))
""")


def _start_script(tmp_path):
    script = tmp_path / "run_eval.py"
    script.write_text(_SIGNAL_SCRIPT)
    out = tmp_path / "episodes.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(tmp_path)], stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.2)
    return proc, out


def _worker_pids(stderr_text):
    import re

    return [int(p) for p in re.findall(r"started env worker \d+ \(pid (\d+)", stderr_text)]


def _gone(pid, wait_s=10.0):
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_keeps_finished_rows_and_workers_exit_with_their_parent(tmp_path):
    proc, out = _start_script(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "rollouts interrupted" in err
    rows = _lines(out)  # every line is a complete row
    assert sorted(r["episode_index"] for r in rows) == [0, 1, 2] and all(r["success"] for r in rows)
    assert all(_gone(pid) for pid in _worker_pids(err))

    # a parent killed without any chance to clean up: its workers exit by themselves
    out.unlink()
    proc, out = _start_script(tmp_path)
    proc.kill()
    _, err = proc.communicate(timeout=60)
    pids = _worker_pids(err)
    assert len(pids) == 2 and all(_gone(pid) for pid in pids)


# ------------------------------------------------------------------------------ device and dtype
@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend one CUDA device exists (threading checks only; nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


class _Stop(Exception):
    pass


def test_auto_device_is_cuda_in_bf16_and_reaches_the_model_loader_with_merged_lora(fake_cuda, monkeypatch):
    assert policy_mod.resolve_device("auto") == "cuda:0" and policy_mod.dtype_name("auto", "cuda:0") == "bf16"
    seen = {}

    def fake_load_vla(path, device, dtype, merge_adapter):
        seen.update(path=path, device=device, dtype=dtype, merge_adapter=merge_adapter)
        raise _Stop

    monkeypatch.setattr("vlamix.model.checkpoint.load_vla", fake_load_vla)
    with pytest.raises(_Stop):
        policy_mod.VLAPolicy("tiny", device="auto")
    assert seen == {"path": "tiny", "device": "cuda:0", "dtype": torch.bfloat16, "merge_adapter": True}
    with pytest.raises(_Stop):
        policy_mod.VLAPolicy("tiny", device="cuda", dtype="fp16")
    assert seen["dtype"] == torch.float16
    with pytest.raises(ValueError, match="cuda:3"):
        policy_mod.resolve_device("cuda:3")


def test_cuda_without_cuda_and_bad_dtype_fail_before_anything_loads(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert policy_mod.resolve_device("auto") == "cpu" and policy_mod.dtype_name("auto", "cpu") == "fp32"
    spec = EpisodeSpec("libero_spatial", 0, 0, 0, "x")
    with pytest.raises(ValueError, match="CUDA is not available"):
        evaluate("tiny", [spec], RolloutConfig(eval_device="cuda"))
    with pytest.raises(ValueError, match="eval_dtype.*allowed: auto, fp32, bf16, fp16"):
        evaluate("tiny", [spec], RolloutConfig(eval_device="cpu", eval_dtype="fp64"))
    with pytest.raises(ValueError, match="fp16 needs a CUDA eval_device"):
        evaluate("tiny", [spec], RolloutConfig(eval_device="cpu", eval_dtype="fp16"))


def _stored_row(device, dtype):
    return {"suite": "libero_spatial", "task_id": 0, "instruction": "x", "episode_index": 0, "init_state_index": 0,
            "episode_key": ["libero_spatial", 0, 0], "success": True, "steps": 3, "seed": 7, "max_steps": 3,
            "num_steps_wait": 10, "policy_options": {"center_crop": False, "unnorm_key": None},
            "device": device, "dtype": dtype, "error": None}


def test_rows_are_reused_only_for_the_same_device_type_and_dtype(fake_cuda, tmp_path, monkeypatch):
    out = str(tmp_path / "episodes.jsonl")
    with open(out, "w") as fh:
        fh.write(json.dumps(_stored_row("cuda:1", "bf16")) + "\n")
    spec = EpisodeSpec("libero_spatial", 0, 0, 0, "x")
    # same device type and dtype: reused, nothing is built ("tiny" would fail: it has no norm stats)
    rows = evaluate("tiny", [spec], RolloutConfig(eval_device="auto"), out_jsonl=out, max_steps=3)
    assert rows[0]["device"] == "cuda:1" and rows[0]["success"] is True

    built = []

    class Recorder:
        def __init__(self, path, **kwargs):
            built.append(kwargs)
            raise _Stop

    monkeypatch.setattr("vlamix.eval.rollout.VLAPolicy", Recorder)
    for device, dtype in (("cuda", "fp32"), ("cpu", "auto")):  # another dtype / another device: run again
        with pytest.raises(RuntimeError, match="could not build"):
            evaluate("tiny", [spec], RolloutConfig(eval_device=device, eval_dtype=dtype), out_jsonl=out, max_steps=3)
    assert [(b["device"], b["dtype"]) for b in built] == [("cuda:0", "fp32"), ("cpu", "fp32")]


def test_predict_and_cli_thread_the_rollout_runtime_fields(tmp_path, monkeypatch):
    from vlamix import cli
    from vlamix.pipeline.point import VLADataSelect

    calls = []

    def fake_evaluate(policy, specs, rollout=None, **kwargs):
        calls.append(rollout)
        # one error among two episodes: 0.5 > eval_max_error_fraction (an all-errored point fails instead)
        return [dict(_stored_row("cpu", "bf16"), error="WorkerDied: x"),
                dict(_stored_row("cpu", "bf16"), episode_index=1, init_state_index=1, episode_key=["libero_spatial", 0, 1])]

    monkeypatch.setattr("vlamix.pipeline.point.evaluate", fake_evaluate)
    monkeypatch.setattr("vlamix.cli.evaluate", fake_evaluate)
    two = [EpisodeSpec("libero_spatial", 0, k, k, "x") for k in (0, 1)]
    monkeypatch.setattr("vlamix.pipeline.point.plan_episodes", lambda *a, **k: two)
    monkeypatch.setattr("vlamix.pipeline.point.ensure_demo_datasets", lambda data: None)  # the offline held-out set
    monkeypatch.setattr("vlamix.pipeline.point.offline_metrics", lambda *a, **k: {})
    algo = VLADataSelect(mixture={SPATIAL: 1}, eval_device="cpu", eval_dtype="bf16", envs_per_worker=4,
                         eval_episode_timeout_s=60, eval_max_attempts=4, eval_videos="failures",
                         eval_videos_per_task=1, runs_dir=str(tmp_path))
    os.makedirs(tmp_path / "ckpt" / "eval")
    (tmp_path / "ckpt" / "config.json").write_text("{}")  # what `vlamix evaluate` checks a checkpoint folder by
    algo.load(str(tmp_path / "ckpt"))
    result = algo.predict()
    ro = calls[0]
    assert (ro.eval_device, ro.eval_dtype, ro.envs_per_worker, ro.eval_episode_timeout_s, ro.eval_max_attempts,
            ro.eval_videos, ro.eval_videos_per_task) == ("cpu", "bf16", 4, 60, 4, "failures", 1)
    assert result["summary"]["n_errors"] == 1 and result["summary"]["too_many_errors"] is True

    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--device", "cpu", "--dtype", "bf16",
                     "--envs-per-worker", "2", "--videos", "all"]) == 0
    ro = calls[1]
    assert (ro.eval_device, ro.eval_dtype, ro.envs_per_worker, ro.eval_videos) == ("cpu", "bf16", 2, "all")


@pytest.mark.parametrize("field,value,allowed", [
    ("eval_dtype", "fp64", "auto, fp32, bf16, fp16"),
    ("envs_per_worker", 0, ">= 1"),
    ("eval_videos", "some", "none, failures, all"),
    ("eval_device", "tpu", "auto, cpu, cuda, cuda:N"),
    ("eval_max_error_fraction", 1.5, "[0.0, 1.0]"),
    ("eval_max_attempts", 0, ">= 1"),
    ("eval_episode_timeout_s", 0, "> 0"),
])
def test_bad_rollout_runtime_values_fail_naming_the_field(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        checked({"mixture": {SPATIAL: 1}, field: value})
    assert err.value.field == field and allowed in str(err.value)


def test_cuda_device_without_cuda_fails_naming_the_field(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        checked({"mixture": {SPATIAL: 1}, "eval_device": "cuda"})
    assert err.value.field == "eval_device" and "CUDA is not available" in str(err.value)
    with pytest.raises(ConfigError) as err:
        checked({"mixture": {SPATIAL: 1}, "eval_device": "cpu", "eval_dtype": "fp16"})
    assert err.value.field == "eval_dtype"


def test_variants_reach_the_processor_only_when_not_original():
    class Proc:
        def __init__(self):
            self.kwargs = []

        def inference_inputs(self, images, instructions, **kwargs):
            self.kwargs.append(kwargs)
            n = len(instructions)
            return {"pixel_values": torch.zeros(n, 3, 2, 2), "input_ids": torch.ones(n, 2, dtype=torch.long)}

    from vlamix.model.action_tokenizer import ActionTokenizer

    class Model(torch.nn.Module):
        norm_stats = {"libero_spatial_no_noops": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}
        action_tokenizer = ActionTokenizer()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def predict_action_ids(self, pixel_values, input_ids, action_dim):
            return torch.full((len(input_ids), action_dim), self.action_tokenizer.first_action_id)

        def get_action_stats(self, key):
            return self.norm_stats[key]["action"]

    proc = Proc()
    pol = policy_mod.VLAPolicy.from_model(Model(), proc)
    images = np.zeros((2, 8, 8, 3), np.uint8)
    pol.act(images, ["a", "b"], "libero_spatial")
    pol.act(images, ["a", "b"], "libero_spatial", variants=["original", "original"])
    pol.act(images, ["a", "b"], "libero_spatial", variants=["original", "paraphrase"])
    assert proc.kwargs == [{}, {}, {"variants": ["original", "paraphrase"]}]
    assert pol.dtype == "fp32"


# ------------------------------------------------------------------------------ real LIBERO
@pytest.mark.libero
def test_vectorised_evaluator_equals_the_batch1_loop_and_writes_failure_videos(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import imageio.v2 as imageio

    from eval_fakes import batch1_rows
    from vlamix.eval.rollout import plan_episodes
    from vlamix.model.checkpoint import build_tiny, save_vla

    stats = {"libero_spatial_no_noops": {"action": {"q01": [-0.9] * 6 + [0.0], "q99": [0.9] * 6 + [1.0],
                                                    "mask": [True] * 6 + [False]}}}
    # seed 7: a tiny model whose actions depend on the LIBERO image and instruction (seed 0's do not)
    folder = save_vla(*build_tiny(seed=7, norm_stats=stats), str(tmp_path / "ckpt"))
    specs = plan_episodes("libero_spatial", [0, 1], 1)  # two instructions: different actions
    out = str(tmp_path / "eval" / "episodes.jsonl")
    # one worker with two LIBERO envs: double-buffered rounds (the policy acts for one env while the other steps)
    stats = {}
    rows = evaluate(folder, specs, RolloutConfig(eval_workers=1, envs_per_worker=2, eval_device="cpu", eval_videos="failures", eval_videos_per_task=1), max_steps=3, out_jsonl=out,
                    progress=False, stats=stats)
    assert stats["groups"] == [[0], [1]]
    # the batch-1 loop, in a spawned process (this one may have TensorFlow loaded: no rendering here)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ref = pool.submit(batch1_rows, folder, specs, 3).result()
    assert [r["error"] for r in ref] == [None] * 2 and [r["error"] for r in rows] == [None] * 2
    assert [(r["success"], r["steps"], r["action_digest"]) for r in rows] == \
        [(r["success"], r["steps"], r["action_digest"]) for r in ref]
    assert len({r["action_digest"] for r in rows}) == 2  # the digests tell the episodes apart
    assert all((r["device"], r["dtype"], r["batch_size"], r["policy_batch"], r["env_slots"], r["unnorm_key"]) ==
               ("cpu", "fp32", 1, 1, 2, "libero_spatial_no_noops")
               for r in rows)
    assert all(r["render_s"] > 0 and r["physics_s"] > 0 for r in rows)
    # failure videos of the policy camera, one frame per observation
    videos = [r for r in rows if r["video"]]
    assert [r["video"] for r in videos] == [os.path.join("videos", f"libero_spatial__task0{t}__trial000__failure.mp4")
                                            for t in (0, 1)]
    for r in videos:
        frames = imageio.mimread(os.path.join(os.path.dirname(out), r["video"]), memtest=False)
        assert len(frames) == r["steps"] + 1 and frames[0].shape == (256, 256, 3)
    assert sorted(os.listdir(os.path.dirname(out) + "/videos")) == sorted(os.path.basename(r["video"]) for r in videos)


@pytest.mark.libero
def test_expert_through_the_evaluator_equals_the_batch1_loop_and_its_own_loop_with_successes(tmp_path):
    import hashlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from eval_fakes import batch1_expert_rows
    from sim_attempts import expert_rollouts
    from vlamix.eval.expert_policy import ExpertPolicy
    from vlamix.eval.rollout import plan_episodes

    # the scripted expert wins both episodes, at different steps: in lock-step rounds the first success ends
    # one episode while the other runs on (episodes of two suites in one policy call until then)
    specs = [plan_episodes(suite, [0], 1)[0] for suite in ("libero_spatial", "libero_goal")]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        batch1 = pool.submit(batch1_expert_rows, specs, EXPERT_MAX_STEPS)  # the batch-1 loop, one LIBERO env
        own = pool.submit(expert_rollouts, specs, 7, 10, EXPERT_MAX_STEPS)  # the expert's own loop (old reference)
        stats = {}
        rows = evaluate(ExpertPolicy, specs, RolloutConfig(eval_workers=2), max_steps=EXPERT_MAX_STEPS, seed=7,
                        progress=False, stats=stats)
        ref, oracle = batch1.result(), own.result()
    assert [r["error"] for r in rows] == [None] * 2 and [r["error"] for r in ref] == [None] * 2
    # vectorised evaluator == batch-1 loop, episode by episode: success flag, step of detection, executed actions
    assert [(r["success"], r["steps"], r["action_digest"]) for r in rows] == \
        [(r["success"], r["steps"], r["action_digest"]) for r in ref]
    assert [r["success"] for r in rows] == [True, True] and rows[0]["steps"] < rows[1]["steps"] < EXPERT_MAX_STEPS
    assert [hashlib.sha1(r["actions"].tobytes()).hexdigest()[:16] for r in ref] == [r["action_digest"] for r in ref]
    assert max(b for b, _, _ in stats["batch_log"]) == 2 and [r["batch_size"] for r in rows] == [2, 2]
    # the expert's own loop (the reference row's loop before; its env is built for recording, without the
    # camera) wins at the same steps with the same actions, up to float noise of the two simulators
    assert [(o["success"], o["steps"]) for o in oracle] == [(r["success"], r["steps"]) for r in rows]
    for o, r in zip(oracle, ref):
        np.testing.assert_allclose(r["actions"], o["actions"], rtol=0, atol=1e-4)

def test_report_lists_error_counts_and_links_videos(tmp_path):
    from vlamix.report.markdown import write_report

    ckpt = tmp_path / "run" / "ckpt"
    rows = [dict(_stored_row("cpu", "fp32"), success=False, video="videos/libero_spatial__task00__trial000__failure.mp4"),
            dict(_stored_row("cpu", "fp32"), episode_index=1, episode_key=["libero_spatial", 0, 1], error="WorkerDied: x")]
    os.makedirs(ckpt / "eval")
    with open(ckpt / "eval" / "episodes.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    summary = flag_errors(summarize(rows), 0.1)
    result = {"summary": summary, "checkpoint": str(ckpt), "config": {"mixture": {SPATIAL: 1}}, "offline": {}}
    text = open(write_report([result], str(tmp_path / "report"))).read()
    assert "1 error episode(s) **(too many errors" in text
    assert "(../run/ckpt/eval/videos/libero_spatial__task00__trial000__failure.mp4)" in text
    lines = text.split("```")[1].strip().splitlines()
    header, row = [c.strip() for c in lines[1].split("|")], [c.strip() for c in lines[3].split("|")]
    assert (row[header.index("N")], row[header.index("errors")]) == ("1", "1")


def test_training_releases_its_model_and_gpu_cache_before_rollouts(fake_cuda, monkeypatch):
    import types
    import weakref

    import importlib

    ft = importlib.import_module("vlamix.train.finetune")

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    released = []

    class Tuner(ft.FineTuner):
        def __init__(self, cfg, out_dir, **kwargs):
            self.ctx = types.SimpleNamespace(device=torch.device("cuda", 0))
            self.model = torch.nn.Linear(4, 4)
            self.optimizer = torch.optim.AdamW(self.model.parameters())
            released.append(weakref.ref(self.model))

        def train(self):
            return "ckpt"

    monkeypatch.setattr(ft, "FineTuner", Tuner)
    assert ft.finetune(None, "out") == "ckpt"
    assert released[0]() is None and emptied == [True]  # the model is gone and the CUDA cache emptied
