"""Every bad value is rejected by configuration validation, before any recording, training or rollout.

One row per case; ``before`` says what happened before validation knew the case (each was confirmed
with this table against the previous code). Every row asserts the field named by the error, words
of the message (the value, the allowed values, the fix) and that nothing was started: no data
folder, no training run folder.
"""


import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.core.io import DuplicateKeyError, load_yaml
from vlamix.pipeline.config import BenchConfig, train_key
from vlamix.pipeline.point import VLADataSelect

SPATIAL = {"libero_spatial_no_noops": 1}


def _model_folder(root, *files):
    folder = root / "model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    return str(folder)


# (id, values, field, words in the message, behaviour before)
CASES = [
    ("eval_tasks_over_suite", {"eval_tasks": 11}, "eval_tasks", ["11", "has 10"], "accepted; ValueError in plan_episodes at predict, after training"),
    ("trials_over_init_states", {"trials_per_task": 51}, "trials_per_task", ["51", "50 init states"], "accepted; ValueError at predict, after training"),
    ("duplicate_eval_suites", {"eval_suites": ["libero_spatial", "libero_spatial"]}, "eval_suites", ["twice"], "accepted; ValueError at predict, after training"),
    ("lora_dropout_one", {"lora_dropout": 1.0}, "lora_dropout", ["[0, 1)", "1.0"], "accepted; ValueError in lora.apply_lora after recording"),
    ("seed_2_32", {"seed": 2**32}, "seed", ["2**32", "4294967296"], "accepted; ValueError in train/state.py after recording"),
    ("eval_seed_2_32", {"eval_seed": 2**32}, "eval_seed", ["2**32"], "accepted; np.random.seed fails in every rollout, after training"),
    ("curriculum_malformed_static", {"curriculum": [{"step": 0}]}, "curriculum", ["phase 0", "{step, weights}"], "accepted; KeyError 'weights' in train_key"),
    ("demos_scripted_libero_90", {"mixture": {"libero_90_no_noops": 1}}, "demos", ["libero_90_no_noops", "libero_spatial", "data_dir"], "accepted; UnsupportedTaskError traceback after the simulator started"),
    ("demos_scripted_unsupported_goal_tasks", {"mixture": {"libero_goal_no_noops": 1}, "demo_tasks": 9}, "demo_tasks", ["libero_goal", "supports 8"], "accepted; UnsupportedTaskError after the simulator started"),
    ("demo_tasks_over_suite", {"demo_tasks": 11}, "demo_tasks", ["11", "supports 9", "libero_spatial"], "accepted; LIBERO IndexError in the recording worker"),
    ("learning_rate_yaml_string", {"learning_rate": "5e-4"}, "learning_rate", ["YAML 1.1", "5.0e-4", "0.0005"], "rejected without saying why ('got '5e-4'')"),
    ("mixture_weight_yaml_string", {"mixture": {"libero_spatial_no_noops": "1e0"}}, "mixture", ["1.0e0"], "rejected without saying why"),
    ("eval_suites_string", {"eval_suites": "libero_spatial"}, "eval_suites", ["[libero_spatial]", "list"], "rejected as \"got 'l'\""),
    ("whitelist_string", {"dataset_whitelist": "libero_spatial_no_noops"}, "dataset_whitelist", ["[libero_spatial_no_noops]"], "rejected, no fix named"),
    ("eval_suite_without_norm_stats", {"mixture": {"libero_spatial_no_noops": 1, "libero_object_no_noops": 1, "libero_goal_no_noops": 0},
                                       "eval_suites": ["libero_spatial", "libero_goal"]}, "eval_suites",
     ["libero_goal", "libero_goal_no_noops", "weight > 0"], "accepted; UnnormKeyError at the first rollout, after training"),
    # racing (issue 12): new fields, validated like the others
    ("racing_not_bool", {"racing": "yes"}, "racing", ["'yes'", "true or false"], "new field"),
    ("racing_round_trials_zero", {"racing_round_trials": 0}, "racing_round_trials", ["integer >= 1"], "new field"),
    ("racing_single_round", {"racing": True, "trials_per_task": 3, "racing_round_trials": 3}, "racing_round_trials",
     ["single round", "1..2"], "new field"),
]


@pytest.mark.parametrize("values, field, words", [c[1:4] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_fails_before_any_work(tmp_path, values, field, words):
    data_dir, runs_dir = tmp_path / "data", tmp_path / "runs"
    with pytest.raises(ConfigError) as info:
        VLADataSelect(**{"mixture": SPATIAL, "data_dir": str(data_dir), **values}, runs_dir=str(runs_dir))
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)
    assert not data_dir.exists() and not runs_dir.exists()  # no recording, no training folder


def test_an_unseen_suite_is_allowed_when_one_dataset_gives_the_norm_stats(tmp_path):
    # one trained dataset: its statistics un-normalise every suite (OpenVLA's single-key rule)
    cfg = checked({"mixture": SPATIAL, "data_dir": str(tmp_path), "eval_suites": ["libero_spatial", "libero_object"]})
    assert cfg.resolved_eval_suites() == ("libero_spatial", "libero_object")
    # the default suites are those trained on: a dataset the whitelist removes is not evaluated
    two = {"libero_spatial_no_noops": 1, "libero_object_no_noops": 1, "libero_goal_no_noops": 1}
    cfg = checked({"mixture": two, "data_dir": str(tmp_path),
                                 "dataset_whitelist": ["libero_spatial_no_noops", "libero_object_no_noops"]})
    assert cfg.resolved_eval_suites() == ("libero_spatial", "libero_object")
    # a perturbed suite uses the statistics of its base suite's dataset
    two = {"libero_spatial_no_noops": 1, "libero_object_no_noops": 1}
    cfg = checked({"mixture": two, "data_dir": str(tmp_path), "eval_suites": ["libero_object_swap"]})
    assert cfg.resolved_eval_suites() == ("libero_object_swap",)


@pytest.mark.parametrize("files, words", [((), ["config.json"]), (("config.json",), ["tokenizer", "openvla"])], ids=["no_config", "no_tokenizer"])
def test_model_folder_without_config_or_tokenizer_is_rejected(tmp_path, files, words):
    # before: accepted; a warning at load, then RuntimeError "no tokenizer" at the first training batch
    with pytest.raises(ConfigError) as info:
        checked({"mixture": SPATIAL, "model": _model_folder(tmp_path, *files)})
    assert info.value.field == "model"
    for word in words:
        assert word in str(info.value)


def test_complete_model_folder_and_recorded_dataset_pass(tmp_path, monkeypatch):
    # "{}" is OpenVLA-7B's shape; the memory check has its own tests (test_model_memory.py), so any machine fits here
    monkeypatch.setattr("vlamix.pipeline.checks.available_bytes", lambda device: 1024**5)
    model = _model_folder(tmp_path, "config.json", "tokenizer_config.json")
    cfg = checked({"mixture": SPATIAL, "model": model, "eval_tasks": 10, "trials_per_task": 50})
    assert cfg.get("model") == model
    # a present dataset needs no expert: libero_90 with its data in place is valid with demos: scripted
    info = tmp_path / "data" / "libero_90_no_noops" / "1.0.0" / "dataset_info.json"
    info.parent.mkdir(parents=True)
    info.write_text("{}")
    cfg = checked({"mixture": {"libero_90_no_noops": 1}, "data_dir": str(tmp_path / "data")})
    assert cfg.selected_datasets() == ["libero_90_no_noops"]


def test_curriculum_ignored_by_the_strategy_still_gives_a_train_key():
    phases = [{"step": 0, "weights": {"libero_spatial_no_noops": 1}}]
    cfg = checked({"mixture": SPATIAL, "curriculum": phases})
    assert train_key(cfg) == train_key(checked({"mixture": SPATIAL}))


def test_duplicate_yaml_keys_are_rejected_with_both_lines(tmp_path):
    text = "mixture:\n  libero_spatial_no_noops: 1\n  libero_object_no_noops: 1\n  libero_spatial_no_noops: 2\n"
    with pytest.raises(DuplicateKeyError) as info:
        load_yaml(text, "point.yaml")
    assert "'libero_spatial_no_noops'" in str(info.value) and "line 4" in str(info.value) and "line 2" in str(info.value)
    assert load_yaml("a: 1\nb: {a: 2}\n") == {"a": 1, "b": {"a": 2}}  # the same key in two mappings is fine

    path = tmp_path / "point.yaml"
    path.write_text(text)
    with pytest.raises(DuplicateKeyError, match="point.yaml"):
        BenchConfig.from_file(str(path))


def test_duplicate_key_in_a_job_yaml_is_a_job_error(tmp_path):
    from vlamix.bench.spec import JobConfigError, load_job

    path = tmp_path / "job.yaml"
    path.write_text("benchmarkingjob:\n  name: a\n  name: b\n")
    with pytest.raises(JobConfigError, match=r"duplicate key 'name'.*line 3"):
        load_job(str(path))
