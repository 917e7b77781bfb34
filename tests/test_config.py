"""BenchConfig validation: each bad value fails with one error naming the field."""

import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.pipeline.config import train_key
from vlamix.pipeline.point import VLADataSelect

GOOD = {"mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1}}


def _field_of(values):
    with pytest.raises(ConfigError) as info:
        checked(values)
    return info.value.field, str(info.value)


@pytest.mark.parametrize(
    "values, field, words",
    [
        ({"mixture": {"libero_kitchen_no_noops": 1}}, "mixture", ["libero_kitchen_no_noops", "libero_spatial_no_noops"]),
        ({"mixture": {"libero_spatial_no_noops": -1, "libero_object_no_noops": 1}}, "mixture", ["negative"]),
        ({"mixture": {"libero_spatial_no_noops": 0, "libero_object_no_noops": 0}}, "mixture", ["zero"]),
        ({"mixture": {}}, "mixture", ["non-empty"]),
        ({"mixture": {"libero_spatial_no_noops": "2"}}, "mixture", ["finite number"]),
        ({**GOOD, "eval_suites": ["libero_spatial", "libero_kitchen"]}, "eval_suites", ["libero_kitchen", "libero_object"]),
        ({**GOOD, "demos": "human"}, "demos", ["scripted", "none"]),
        ({**GOOD, "precision": "fp8"}, "precision", ["fp32", "bf16"]),
        ({**GOOD, "batch_size": 0}, "batch_size", [">= 1"]),
        ({**GOOD, "learning_rate": -1e-4}, "learning_rate", ["> 0"]),
        ({**GOOD, "heldout_fraction": 0.9}, "heldout_fraction", ["[0.0, 0.5]"]),
        ({**GOOD, "model": "no/such/folder"}, "model", ["tiny"]),
        ({**GOOD, "lora_rank": 2.5}, "lora_rank", ["integer"]),
        ({**GOOD, "mixtrue": {}}, "mixtrue", ["unknown field", "mixture"]),
    ],
)
def test_bad_values_name_the_field(values, field, words):
    got_field, message = _field_of(values)
    assert got_field == field
    for word in words:
        assert word in message


def test_missing_data_dir_names_data_dir(tmp_path):
    values = {**GOOD, "demos": "none", "data_dir": str(tmp_path / "nowhere")}
    got_field, message = _field_of(values)
    assert got_field == "data_dir"
    assert "libero_spatial_no_noops" in message


def test_existing_real_data_passes_with_demos_none(tmp_path):
    for name in GOOD["mixture"]:
        (tmp_path / name / "1.0.0").mkdir(parents=True)
    cfg = checked({**GOOD, "demos": "none", "data_dir": str(tmp_path)})
    assert cfg.data.dataset_path("libero_object_no_noops") == str(tmp_path / "libero_object_no_noops" / "1.0.0")


def test_weights_normalise_without_size_balancing():
    cfg = checked({"mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1, "libero_goal_no_noops": 0}})
    assert cfg.mixture_weights() == pytest.approx({"libero_spatial_no_noops": 2 / 3, "libero_object_no_noops": 1 / 3})
    # datasets with weight 0 are not evaluated by default; the others' suites are, in config order
    assert cfg.resolved_eval_suites() == ("libero_spatial", "libero_object")
    assert cfg.mixture_label() == "spatial:object:goal=2:1:0"


def test_train_key_ignores_evaluation_fields():
    a = checked(GOOD)
    assert train_key(a) == train_key(a.replace(trials_per_task=7, eval_workers=1))
    assert train_key(a) != train_key(a.replace(mixture={"libero_spatial_no_noops": 1, "libero_object_no_noops": 1}))
    assert train_key(a) != train_key(a.replace(lora_rank=8))


def test_pipeline_rejects_bad_hyperparameters_before_any_work():
    with pytest.raises(ConfigError) as info:
        VLADataSelect(mixture={"libero_spatial_no_noops": 1}, trials_per_task=0)
    assert info.value.field == "trials_per_task"
    # Ianvs passes exactly the YAML keys: an unknown one is a typo (train_step for train_steps), never ignored
    with pytest.raises(ConfigError) as info:
        VLADataSelect(**GOOD, train_step=10000)
    assert info.value.field == "train_step"
    assert VLADataSelect(**GOOD, runs_dir="elsewhere").runs_dir == "elsewhere"
