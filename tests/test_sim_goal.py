"""LIBERO-Goal in the embedded default (issue 13): supported-task table, refusal of unsupported
suites, skill table of the Goal instructions, three-suite recording + mixture, and the expert's
drawer and knob primitives in the real simulator (the ``libero`` test, ~30-60 s).

The full per-task success rates (10 start states per task, seed 1000) are in docs/scripted-expert.md; the
simulator test here uses two tasks, start state 0 of seed 0.
"""

import os

import numpy as np
import pytest

from sim_attempts import expert_attempts, in_spawn_worker
from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.mixing.skills import skill_of
from vlamix.sim import record
from vlamix.sim.expert import SUPPORTED_TASKS, scripted_task_ids, supported_tasks
from vlamix.sim.record import RecordStats, save_episode

SPATIAL, OBJECT, GOAL = "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops"

#: LIBERO-Goal's ten instructions (task order 0..9) and the skill each must map to.
GOAL_SKILLS = {
    "open the middle drawer of the cabinet": "open",
    "put the bowl on the stove": "place",
    "put the wine bottle on top of the cabinet": "place",
    "open the top drawer and put the bowl inside": "open",
    "put the bowl on top of the cabinet": "place",
    "push the plate to the front of the stove": "push",
    "put the cream cheese in the bowl": "place",
    "turn on the stove": "turn",
    "put the bowl on the plate": "place",
    "put the wine bottle on the rack": "place",
}


def test_goal_instructions_map_to_their_skills():
    assert {text: skill_of(text) for text in GOAL_SKILLS} == GOAL_SKILLS
    assert len(set(GOAL_SKILLS.values())) == 4  # four skills to balance in one suite


def test_supported_task_table_and_first_n_supported_tasks():
    assert supported_tasks("libero_object") == frozenset(range(10))
    assert 4 not in supported_tasks("libero_spatial")  # measured 1/5
    assert supported_tasks("libero_90") == frozenset()
    goal = supported_tasks("libero_goal")
    assert goal == SUPPORTED_TASKS["libero_goal"] and goal <= frozenset(range(10))
    assert scripted_task_ids("libero_object", 3) == [0, 1, 2]
    assert scripted_task_ids("libero_goal", len(goal)) == sorted(goal)
    with pytest.raises(ValueError, match="libero_goal"):
        scripted_task_ids("libero_goal", len(goal) + 1)


def test_scripted_demos_refuse_suites_and_task_counts_without_an_expert(tmp_path):
    base = {"data_dir": str(tmp_path), "demos": "scripted"}
    with pytest.raises(ConfigError) as err:
        checked({**base, "mixture": {SPATIAL: 1, "libero_90_no_noops": 1}})
    assert err.value.field == "demos"
    assert "libero_90" in str(err.value) and "libero_goal (tasks 0, 1, 2" in str(err.value)
    n_goal = len(supported_tasks("libero_goal"))
    with pytest.raises(ConfigError) as err:
        checked({**base, "mixture": {GOAL: 1}, "demo_tasks": n_goal + 1})
    assert err.value.field == "demo_tasks" and "libero_goal" in str(err.value)
    # present on disk: nothing to record, so no expert is needed
    path = tmp_path / "libero_90_no_noops" / "1.0.0"
    path.mkdir(parents=True)
    (path / "dataset_info.json").write_text("{}")
    assert checked({**base, "mixture": {"libero_90_no_noops": 1}}).get("demos") == "scripted"
    # real data (demos: none) is not limited by the expert
    assert checked({**base, "mixture": {"libero_90_no_noops": 1}, "demos": "none"}).get("demos") == "none"


def _episode(steps, seed, instruction):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (steps, 8, 8, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(small, 32, axis=1), 32, axis=2)
    action = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
    action[:, 6] = np.where(np.arange(steps) < steps // 2, -1.0, 1.0)
    return {"image": image, "wrist_image": image[:, ::-1].copy(), "state": rng.normal(size=(steps, 8)).astype(np.float32),
            "joint_state": rng.normal(size=(steps, 7)).astype(np.float32), "action": action,
            "language_instruction": instruction, "file_path": f"test/{seed}"}


def test_three_suites_recorded_and_loaded_in_one_mixture(tmp_path, monkeypatch):
    """ensure_demo_datasets records spatial, object and goal (goal: its first supported tasks); the
    mixture loader reads all three. The spawn workers are replaced by a fake that stages episodes."""
    calls = []
    instructions = {"libero_spatial": "pick up the black bowl and place it on the plate",
                    "libero_object": "pick up the ketchup and place it in the basket",
                    "libero_goal": "turn on the stove"}

    def fake(suites, task_ids, episodes_per_task, staging_dir, seed=0, workers=2, max_attempts_factor=3):
        calls.append((tuple(suites), tuple(task_ids)))
        out = {}
        for i, suite in enumerate(suites):
            folder = os.path.join(staging_dir, suite)
            os.makedirs(folder)
            files = []
            for k in range(2):
                files.append(os.path.join(folder, f"ep{k}.npz"))
                save_episode(files[-1], _episode(4 + k, 10 * i + k, instructions[suite]))
            out[suite] = RecordStats(suite=suite, seed=seed, attempts=2, successes=2, files=files, steps_kept=9)
        return out

    monkeypatch.setattr(record, "record_suites", fake)
    cfg = checked({"mixture": {SPATIAL: 1, OBJECT: 1, GOAL: 2}, "data_dir": str(tmp_path),
                                 "demo_tasks": 5, "demo_episodes_per_task": 2, "heldout_fraction": 0.0})
    paths = record.ensure_demo_datasets(cfg.data)
    assert list(paths) == [SPATIAL, OBJECT, GOAL]
    recorded = {suite: ids for suites, ids in calls for suite in suites}
    assert recorded["libero_object"] == (0, 1, 2, 3, 4)
    assert recorded["libero_spatial"] == (0, 1, 2, 3, 5)  # task 4 is not supported
    assert recorded["libero_goal"] == tuple(scripted_task_ids("libero_goal", 5))

    from vlamix.data.mixture import MixtureLoader

    loader = MixtureLoader.for_point(cfg, "train")
    assert [d.name for d in loader.datasets] == [SPATIAL, OBJECT, GOAL]
    assert loader.group_names == (SPATIAL, OBJECT, GOAL)
    counts = np.zeros(3)
    for _ in range(40):
        counts += np.bincount(loader.next_batch()["group_index"], minlength=3)
    shares = counts / counts.sum()
    assert shares[2] == pytest.approx(0.5, abs=0.12) and shares[0] == pytest.approx(0.25, abs=0.12)


@pytest.mark.libero
def test_expert_opens_the_drawer_and_turns_on_the_stove():
    out = in_spawn_worker(expert_attempts, "libero_goal", (0, 7))
    assert out[0]["first"] == "drawer" and out[7]["first"] == "knob"
    for task_id in (0, 7):
        assert out[task_id]["failure"] is None
        assert out[task_id]["done"] is True and out[task_id]["check_success"] is True  # the env's own verdict
        assert 20 < out[task_id]["steps"] < 300
        gripper = out[task_id]["gripper"]
        assert gripper[0] == -1.0 and 1.0 in gripper  # reaches open, then grasps the handle / knob


def test_default_job_has_a_three_way_mixture_and_a_skill_row(tmp_path, monkeypatch):
    from vlamix.bench.job import expand_grid, validate_grid
    from vlamix.bench.spec import load_job

    job = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench", "benchmarkingjob.yaml")
    configs = validate_grid(expand_grid(load_job(job)))
    three_way = [c for c in configs if len(c.mixture_weights()) == 3]
    assert len(three_way) == 3  # the static 2:2:1 and 1:1:1 points and the skill row
    assert any(c.get("strategy") == "task_balanced" and c.resolved_mixing_level() == "skill" for c in configs)
    for c in configs:
        assert c.resolved_eval_suites() == ("libero_spatial", "libero_object", "libero_goal")
        # the Goal tasks recorded are the ones evaluated (first supported tasks = first task ids)
        assert scripted_task_ids("libero_goal", c.get("demo_tasks")) == list(range(c.get("demo_tasks")))
        assert c.get("eval_tasks") <= c.get("demo_tasks")
