"""Field roles decide the keys (issue 21): no hand-kept list can miss a field.

Every field of :class:`vlamix.pipeline.config.BenchConfig` carries a role (``vlamix.core.settings.ROLES``). A
train-role field that did not change the train key would let a run be reused for another model, silently; a
runtime field that did would retrain for nothing. These tests change each field, one at a time, from a valid
point to another valid value and watch the keys. ``CHANGES`` must name every train and episodes field, so a
new field fails here until someone says what a change of it should do.
"""

import pytest

from vlamix.core.settings import ROLES, role
from vlamix.mixing.strategies import STRATEGIES
from vlamix.pipeline.config import EPISODE_FIELDS, FIELDS, RESUME_FIELDS, BenchConfig, eval_key, fields_with_role, train_key

SPATIAL, OBJECT, GOAL = "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops"
BASE = {"mixture": {SPATIAL: 2, OBJECT: 1}}

#: field -> (another valid value, fields the point needs for the field to matter)
CHANGES = {
    # data
    "mixture": ({SPATIAL: 1, OBJECT: 1}, {}),
    "balance_by_size": (True, {}),
    "data_dir": ("workspace/data/elsewhere", {}),
    "heldout_fraction": (0.2, {}),
    "demos": ("none", {}),
    "demo_tasks": (3, {}),
    "demo_episodes_per_task": (5, {}),
    "filter_nonfinite": (False, {}),
    "filter_action_limit": (1.0, {}),
    "filter_min_motion": (1e-3, {}),
    "filter_motion_window": (2, {}),
    "dataset_whitelist": ([SPATIAL], {}),
    "dataset_blacklist": ([OBJECT], {}),
    "heldout_tasks": ({SPATIAL: [1]}, {}),
    "shuffle_buffer_size": (500, {}),
    "image_aug": (True, {}),
    # mixing: each strategy's parameters matter under that strategy
    "strategy": ("temperature", {}),
    "mixing_level": ("task", {"strategy": "temperature"}),
    "temperature": (4.0, {"strategy": "temperature"}),
    "skill_map": ({"pick": "grasp"}, {"strategy": "task_balanced", "mixing_level": "skill"}),
    "mixing_update_every": (5, {"strategy": "doremi"}),
    "dro_eta": (2.0, {"strategy": "doremi"}),
    "dro_smoothing": (0.1, {"strategy": "doremi"}),
    "dro_reference": ("auto", {"strategy": "doremi"}),
    "dro_reference_batches": (8, {"strategy": "doremi"}),
    "exp3_smoothing": (0.5, {"strategy": "exp3"}),
    "curriculum": ([{"step": 0, "weights": {SPATIAL: 1}}, {"step": 5, "weights": {OBJECT: 1}}],
                   {"strategy": "curriculum", "curriculum": [{"step": 0, "weights": {SPATIAL: 1}}]}),
    "loss_weighting": ("inverse_frequency", {}),
    # model, train
    "model": ("tiny-p28", {}),
    "lora_rank": (16, {}),
    "lora_alpha": (32, {}),
    "lora_dropout": (0.1, {}),
    "finetune_mode": ("full", {}),
    "action_head": ("l1_regression", {}),
    "action_chunk": (8, {"action_head": "l1_regression"}),
    "use_wrist_image": (True, {"action_head": "l1_regression"}),
    "use_proprio": (True, {"action_head": "l1_regression"}),
    "train_steps": (50, {}),
    "batch_size": (4, {}),
    "grad_accumulation_steps": (2, {}),
    "learning_rate": (1e-4, {}),
    "precision": ("bf16", {}),
    "gradient_checkpointing": (True, {}),
    "seed": (8, {}),
    # episodes
    "eval_suites": (["libero_spatial"], {}),
    "eval_tasks": (3, {}),
    "trials_per_task": (2, {}),
    "eval_max_steps": (50, {}),
    "num_steps_wait": (5, {}),
    "eval_seed": (8, {}),
    "center_crop": (True, {}),  # null (auto) resolves to false for the tiny model trained without image_aug
    "open_loop_steps": (4, {"action_head": "l1_regression", "action_chunk": 8}),  # null = the whole chunk of 8
    # eval and runtime: in no key
    "eval_instruction": (["original", "empty"], {}),
    "eval_instruction_suites": (["libero_spatial"], {}),
    "offline_max_frames": (100, {}),
    "eval_workers": (3, {}),
    "envs_per_worker": (2, {}),
    "eval_device": ("cpu", {}),
    "eval_dtype": ("fp32", {}),
    "eval_episode_timeout_s": (60.0, {}),
    "eval_max_attempts": (3, {}),
    "eval_max_error_fraction": (0.2, {}),
    "eval_videos": ("failures", {}),
    "eval_videos_per_task": (1, {}),
    "racing": (True, {"trials_per_task": 4, "racing_round_trials": 2}),
    "racing_round_trials": (3, {"trials_per_task": 4, "racing_round_trials": 2}),
    "racing_alpha": (0.01, {"trials_per_task": 4, "racing_round_trials": 2}),
}


#: what each field should do: the specification the roles are checked against (a mis-tagged field fails here)
EXPECTED_ROLES = {
    "episodes": {"eval_suites", "eval_tasks", "trials_per_task", "eval_max_steps", "num_steps_wait", "eval_seed",
                 "center_crop", "open_loop_steps"},
    "eval": {"eval_instruction", "eval_instruction_suites", "offline_max_frames"},
    "runtime": {"eval_workers", "envs_per_worker", "eval_device", "eval_dtype", "eval_episode_timeout_s", "eval_max_attempts",
                "eval_max_error_fraction", "eval_videos", "eval_videos_per_task", "racing", "racing_round_trials",
                "racing_alpha"},
}


def _pair(name):
    value, context = CHANGES[name]
    before = BenchConfig.from_dict({**BASE, **context})
    return before, before.replace(**{name: value})


def test_every_field_has_a_role_and_a_change_to_check():
    assert {role(f) for _, f in FIELDS.values()} <= set(ROLES)
    assert set(CHANGES) == set(FIELDS), f"say what a change does: {sorted(set(FIELDS) ^ set(CHANGES))}"
    for name in FIELDS:
        expected = next((r for r, names in EXPECTED_ROLES.items() if name in names), "train")
        assert role(FIELDS[name][1]) == expected, f"{name}: role {role(FIELDS[name][1])}, expected {expected}"


@pytest.mark.parametrize("name", fields_with_role("train"))
def test_a_train_field_changes_the_train_key(name):
    before, after = _pair(name)
    assert after.get(name) != before.get(name)
    assert train_key(after) != train_key(before), f"{name}: a run trained for one value would be reused for the other"


@pytest.mark.parametrize("name", fields_with_role("episodes", "eval", "runtime"))
def test_other_fields_leave_the_train_key(name):
    before, after = _pair(name)
    assert after.get(name) != before.get(name)
    assert train_key(after) == train_key(before), f"{name}: a change would retrain the model for nothing"


@pytest.mark.parametrize("name", EPISODE_FIELDS)
def test_an_episodes_field_changes_the_eval_key(name):
    before, after = _pair(name)
    assert eval_key(after) != eval_key(before), f"{name}: stored rollouts of other episodes would be reused"


@pytest.mark.parametrize("name", fields_with_role("eval", "runtime"))
def test_eval_and_runtime_fields_leave_the_eval_key(name):
    before, after = _pair(name)
    assert eval_key(after) == eval_key(before), f"{name}: stored rollouts would be run again for nothing"


def test_a_strategy_ignores_the_parameters_of_the_others():
    static = BenchConfig.from_dict(BASE)
    assert train_key(static) == train_key(static.replace(temperature=4.0, dro_eta=3.0, exp3_smoothing=0.2))
    assert set(STRATEGIES.get("temperature").params) >= {"temperature"}


def test_resume_fields_are_the_train_fields_a_run_may_not_change():
    train = set(fields_with_role("train"))
    assert set(RESUME_FIELDS) < train
    assert {"train_steps", "data_dir"} <= train - set(RESUME_FIELDS)  # a longer budget or moved data resumes
    assert {"mixture", "lora_rank", "learning_rate", "strategy", "seed"} <= set(RESUME_FIELDS)
