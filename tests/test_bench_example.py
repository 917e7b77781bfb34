"""The example folder ``examples/cloud_VLA_finetune/singletask_learning_bench`` as Ianvs would load it.

Run from the repository root, which plays the Ianvs root (all URLs in the YAML files are relative
to it).
"""

import glob
import os

import pytest

from vlamix.bench.dataset import IndexData, load_index
from vlamix.bench.job import expand_grid, load_module_file, resolve_registered, validate_grid
from vlamix.bench.registry import get_class_factory
from vlamix.bench.spec import load_job
from vlamix.core.errors import ConfigError
from vlamix.core.constants import DATASET_TO_SUITE, LIBERO_SUITES
from vlamix.pipeline.config import eval_key, train_key
from bench_constants import METRICS

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")
JOB = os.path.join(EXAMPLE, "benchmarkingjob.yaml")
JOB_7B = os.path.join(EXAMPLE, "benchmarkingjob_openvla7b.yaml")
JOB_7B_OFT = os.path.join(EXAMPLE, "benchmarkingjob_openvla7b_oft.yaml")
COMPARE = os.path.join(EXAMPLE, "benchmarkingjob_compare.yaml")
COMPARE_7B = os.path.join(EXAMPLE, "benchmarkingjob_compare_openvla7b.yaml")
SPATIAL, OBJECT, GOAL = "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops"


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


def test_job_files_parse_and_every_metric_has_a_file_registering_its_name():
    for path in (JOB, JOB_7B, COMPARE, COMPARE_7B):
        job = load_job(path)
        assert job.testenv.metric_names == METRICS
        assert job.workspace == "./workspace"
        for metric in job.testenv.metrics:
            assert metric.url.startswith("./" + EXAMPLE.replace(os.sep, "/"))
            func = resolve_registered(metric.url, metric.name)
            # the object registered under the name is the one defined in that file
            assert func.__module__.endswith(os.path.splitext(os.path.basename(metric.url))[0])
        sort_keys = [next(iter(e)) for e in job.rank.sort_by]
        assert sort_keys[0] == "success_rate" and job.rank.sort_by[0]["success_rate"] == "descend"
        assert set(sort_keys) <= set(METRICS)
        assert set(job.rank.selected_dataitem["metrics"]) <= set(METRICS)


#: What Ianvs's single-task paradigm calls on a basemodel (core/.../singletask_learning.py: preprocess()
#: unconditionally, then train, save, load, predict).
IANVS_BASEMODEL_CALLS = ("preprocess", "train", "save", "load", "predict")


def test_every_basemodel_of_every_shipped_job_has_what_ianvs_calls():
    paths = sorted(glob.glob(os.path.join(EXAMPLE, "benchmarkingjob*.yaml")))
    assert JOB in paths and len(paths) >= 6
    seen = set()
    for path in paths:
        job = load_job(path)
        for point in expand_grid(job):
            module = point.basemodel
            if (module.url, module.name) in seen:
                continue
            seen.add((module.url, module.name))
            cls = resolve_registered(module.url, module.name)
            missing = [m for m in IANVS_BASEMODEL_CALLS if not callable(getattr(cls, m, None))]
            assert not missing, f"{path}: {module.name} ({module.url}) lacks {missing}"
    assert {name for _, name in seen} >= {"VLADataSelect", "ScriptedExpertReference"}


def test_python_file_stems_are_unique_in_the_example():
    # Ianvs imports every file by its stem with the file's folder on sys.path
    stems = [os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(EXAMPLE, "**", "*.py"), recursive=True)]
    assert len(stems) == len(set(stems))
    assert "basemodel" in stems and all(s == "basemodel" or s.startswith("vla_") for s in stems)


def test_dataset_indexes_list_the_rlds_datasets_and_task_suites():
    job = load_job(JOB)
    train = load_index(job.testenv.train_index, "train")
    pairs = [(os.path.basename(x), os.path.basename(y)) for x, y in zip(train.x, train.y)]
    assert pairs == list(DATASET_TO_SUITE.items())
    test = load_index(job.testenv.test_index, "inference")
    assert [os.path.basename(x) for x in test.x] == list(LIBERO_SUITES)


def test_default_grid_mixes_three_suites_with_a_skill_row_and_the_expert_reference():
    points = expand_grid(load_job(JOB))
    configs = validate_grid(points)  # no unknown field, every value valid
    # the scripted-expert reference row (evaluation kit) is the last point and has no BenchConfig
    assert [p.basemodel.name for p in points] == ["VLADataSelect"] * 3 + ["ScriptedExpertReference"]
    assert [p.algorithm.name for p in points] == ["vla_dataselect", "vla_dataselect", "vla_skill", "scripted_expert"]
    # two static three-way mixtures (goal 20% and 33%) and the skill-level strategy row
    assert [(dict(c.get("mixture")), c.get("strategy"), c.resolved_mixing_level()) for c in configs] == [
        ({SPATIAL: 2, OBJECT: 2, GOAL: 1}, "static", "dataset"),
        ({SPATIAL: 1, OBJECT: 1, GOAL: 1}, "static", "dataset"),
        ({SPATIAL: 1, OBJECT: 1, GOAL: 1}, "task_balanced", "skill"),
    ]
    for point, cfg in zip(points, configs):
        assert cfg.get("model") == "tiny" and cfg.get("demos") == "scripted"
        assert cfg.resolved_eval_suites() == ("libero_spatial", "libero_object", "libero_goal")
        assert (cfg.get("demo_tasks"), cfg.get("demo_episodes_per_task"), cfg.get("eval_tasks"), cfg.get("eval_max_steps")) == (1, 3, 1, 180)
        assert (cfg.get("eval_workers"), cfg.get("envs_per_worker")) == (3, 1)
        # budgets stay at the BenchConfig defaults
        assert "train_steps" not in point.basemodel.hyperparameters
        assert "trials_per_task" not in point.basemodel.hyperparameters
    # the expert reference runs the same evaluation fields
    expert = dict(points[-1].basemodel.hyperparameters)
    assert (expert["eval_suites"], expert["eval_tasks"], expert["eval_max_steps"]) == \
        (["libero_spatial", "libero_object", "libero_goal"], 1, 180)


def test_learnable_job_varies_the_object_share_at_the_budget_that_learned_the_task():
    job = os.path.join(EXAMPLE, "benchmarkingjob_learnable.yaml")
    configs = validate_grid(expand_grid(load_job(job)))
    assert [c.mixture_weights() for c in configs] == [{OBJECT: 1.0}, {OBJECT: 0.5, SPATIAL: 0.5}, {OBJECT: 0.25, SPATIAL: 0.75}]
    for c in configs:  # the LEARNABILITY.md cell: tiny-p28, full fine-tuning, lr 5e-4, 3,000 steps, 10 demos
        assert (c.get("model"), c.get("finetune_mode"), c.get("learning_rate"), c.get("train_steps"), c.get("batch_size")) == ("tiny-p28", "full", 5e-4, 3000, 8)
        assert (c.get("demo_tasks"), c.get("demo_episodes_per_task")) == (1, 10)
        assert (c.resolved_eval_suites(), c.get("eval_tasks"), c.get("trials_per_task")) == (("libero_object",), 1, 20)


def test_equal_exposure_job_reuses_the_learnable_points_and_adds_1_1_at_twice_the_steps():
    """The fourth point gives the object task the 1:0 point's frames (6,000 steps x 1/2 = 3,000 x 1); the
    first three are the learnable job's points exactly, so their train and eval keys (the cache) match."""
    learnable = validate_grid(expand_grid(load_job(os.path.join(EXAMPLE, "benchmarkingjob_learnable.yaml"))))
    configs = validate_grid(expand_grid(load_job(os.path.join(EXAMPLE, "benchmarkingjob_learnable_exposure.yaml"))))
    assert [train_key(c) for c in configs[:3]] == [train_key(c) for c in learnable]
    assert [eval_key(c) for c in configs] == [eval_key(learnable[0])] * 4
    extra = configs[3]
    assert extra.mixture_weights() == {OBJECT: 0.5, SPATIAL: 0.5} and extra.get("train_steps") == 6000
    assert extra.get("train_steps") * extra.mixture_weights()[OBJECT] == learnable[0].get("train_steps") * learnable[0].mixture_weights()[OBJECT]
    assert train_key(extra) not in {train_key(c) for c in learnable}


def test_seeds_job_repeats_the_1_0_and_1_1_points_with_three_seeds_reusing_the_seed_7_runs():
    """Issue 28: seed 7 (the default) keeps the learnable job's train and eval keys, so only seeds 8 and 9 train (4
    new runs); the grid runs seed by seed; the six points form two arms."""
    from vlamix.pipeline.arms import arm_key

    learnable = validate_grid(expand_grid(load_job(os.path.join(EXAMPLE, "benchmarkingjob_learnable.yaml"))))
    job = load_job(os.path.join(EXAMPLE, "benchmarkingjob_learnable_seeds.yaml"))
    configs = validate_grid(expand_grid(job))
    grid = [(c.get("seed"), c.mixture_weights()[OBJECT]) for c in configs]
    assert grid == [(s, w) for s in (7, 8, 9) for w in (1.0, 0.5)]
    assert [train_key(c) for c in configs[:2]] == [train_key(c) for c in learnable[:2]]
    assert {eval_key(c) for c in configs} == {eval_key(learnable[0])}
    new = {train_key(c) for c in configs} - {train_key(c) for c in learnable}
    assert len(new) == 4
    arms = [arm_key(c) for c in configs]
    assert arms[2:] == arms[:2] * 2 and arms[0] != arms[1]
    # selected_rank.csv: the arm's columns only, so the seeds of one mixture collapse into one row
    selected = job.rank.selected_dataitem
    assert selected["hyperparameters"] == ["basemodel-mixture"]
    assert {"pooled_success_rate", "seed_success_rates", "between_seed_sd", "pooled_ci_low", "pooled_ci_high",
            "prob_best", "group"} <= set(selected["metrics"])
    # per-seed columns would keep the six rows
    assert not {"success_rate", "train_wall_s", "rollout_wall_s"} & set(selected["metrics"])


def test_openvla7b_grid_is_the_seven_seed_ratios_on_real_data(tmp_path, monkeypatch):
    # "{}" is OpenVLA-7B's shape; its memory check has its own tests (test_model_memory.py): any machine fits here
    monkeypatch.setattr("vlamix.pipeline.checks.available_bytes", lambda device: 1024**5)
    points = expand_grid(load_job(JOB_7B))
    hps = [dict(p.basemodel.hyperparameters) for p in points]
    ratios = [(h["mixture"][SPATIAL], h["mixture"][OBJECT]) for h in hps]
    from vlamix.eval.server import policy_batch_size

    assert {policy_batch_size(h["eval_workers"], h["envs_per_worker"]) for h in hps} == {16}
    assert ratios == [(1, 0), (3, 1), (2, 1), (1, 1), (1, 2), (1, 3), (0, 1)]
    for h in hps:
        assert h["model"] == "./models/openvla-7b" and h["data_dir"] == "./data/modified_libero_rlds"
        assert h["demos"] == "none" and h["precision"] == "bf16"
        assert h["trials_per_task"] == 50 and h["eval_tasks"] is None
        # one batched policy on the GPU (bf16 by default there) for 8 env workers x 4 LIBERO envs: batch 16 per call
        assert (h["eval_workers"], h["envs_per_worker"], h["eval_device"], h["eval_dtype"]) == (8, 4, "auto", "auto")
        assert h["eval_suites"] == ["libero_spatial", "libero_object"]
    # without the checkpoint and the RLDS data the job fails before any point runs
    if not os.path.isdir("./data/modified_libero_rlds"):
        with pytest.raises(ConfigError) as info:
            validate_grid(points)
        assert info.value.field == "data_dir" and "grid point 1/7" in str(info.value)
    # with both in place every point is valid
    for name in (SPATIAL, OBJECT):
        os.makedirs(tmp_path / "data" / name / "1.0.0")
    os.makedirs(tmp_path / "model")
    for name in ("config.json", "tokenizer_config.json"):  # a checkpoint folder needs its config and tokenizer
        (tmp_path / "model" / name).write_text("{}")
    configs = validate_grid(_moved(points, str(tmp_path / "data"), str(tmp_path / "model")))
    assert [c.mixture_weights() for c in configs][0] == {SPATIAL: 1.0}
    assert {c.get("train_steps") for c in configs} == {10000} and {(c.get("batch_size"), c.get("grad_accumulation_steps")) for c in configs} == {(8, 2)}


@pytest.mark.parametrize("job_file", [JOB_7B, JOB_7B_OFT, COMPARE_7B, "benchmarkingjob_temperature_sweep_openvla7b.yaml"])
def test_every_openvla7b_job_trains_with_image_aug_and_evaluates_with_the_centre_crop(job_file):
    # issue 26: OpenVLA's fine-tuning recipe (vla-scripts/finetune.py image_aug=True, the official LIBERO checkpoints)
    # augments images, and its LIBERO eval then centre-crops; a job without the augmentation, or one that trains
    # with it and evaluates uncropped, reports a lower success rate with no error
    from vlamix.pipeline.config import BenchConfig

    path = job_file if os.path.dirname(job_file) else os.path.join(EXAMPLE, job_file)
    for point in expand_grid(load_job(path)):
        hps = dict(point.basemodel.hyperparameters)
        assert hps.get("image_aug") is True, (path, point.number)
        assert hps.get("center_crop", None) in (None, True), (path, point.number)
        config = BenchConfig.from_dict({"mixture": hps["mixture"], "image_aug": hps["image_aug"], "center_crop": hps.get("center_crop")})
        assert config.resolved_center_crop() is True


def _moved(points, data_dir, model_dir):
    """The grid points with ``data_dir`` and ``model`` pointed at folders of this test."""
    return [
        p.__class__(
            algorithm=p.algorithm,
            modules=tuple(
                m.__class__(m.type, m.name, m.url, {**m.hyperparameters, "data_dir": data_dir, "model": model_dir})
                for m in p.modules
            ),
            number=p.number,
            total=p.total,
        )
        for p in points
    ]


def test_openvla7b_oft_grid_is_the_seed_ratios_with_the_oft_libero_recipe(tmp_path, monkeypatch):
    from vlamix.model.configuration import VLAConfig
    from vlamix.model.memory import GIB
    from vlamix.pipeline.checks import check_memory

    monkeypatch.setattr("vlamix.pipeline.checks.available_bytes", lambda device: 1024**5)
    points = expand_grid(load_job(JOB_7B_OFT))
    hps = [dict(p.basemodel.hyperparameters) for p in points]
    seven = [dict(p.basemodel.hyperparameters) for p in expand_grid(load_job(JOB_7B))]
    assert [h["mixture"] for h in hps] == [h["mixture"] for h in seven]  # the OpenVLA-7B job's grid
    for h in hps:
        recipe = (h["action_head"], h["action_chunk"], h["use_wrist_image"], h["use_proprio"])
        assert recipe == ("l1_regression", 8, True, True)
        assert (h["lora_rank"], h["lora_alpha"], h["lora_dropout"], h["learning_rate"]) == (32, 16, 0.0, 0.0005)
        assert h["batch_size"] * h["grad_accumulation_steps"] == 64  # OFT: 8 per GPU on 8 GPUs
        assert h["image_aug"] is True and h["center_crop"] is None and h["open_loop_steps"] is None
        assert h["model"] == "./models/openvla-7b" and h["demos"] == "none" and h["precision"] == "bf16"
    for name in (SPATIAL, OBJECT):
        os.makedirs(tmp_path / "data" / name / "1.0.0")
    os.makedirs(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(VLAConfig.openvla_7b().to_json_string(use_diff=False))
    (tmp_path / "model" / "tokenizer_config.json").write_text("{}")
    configs = validate_grid(_moved(points, str(tmp_path / "data"), str(tmp_path / "model")))
    assert len(configs) == 7 and {c.resolved_open_loop_steps() for c in configs} == {8}
    assert all(c.resolved_center_crop() for c in configs)  # both images centre-cropped at evaluation (image_aug)
    assert len({train_key(c) for c in configs}) == 7
    seven_keys = {train_key(c) for c in validate_grid(_moved(expand_grid(load_job(JOB_7B)), str(tmp_path / "data"),
                                                                  str(tmp_path / "model")))}
    assert not seven_keys & {train_key(c) for c in configs}
    # memory: the head and projector train in full (bf16 weights + gradient + two AdamW moments)
    training = check_memory(configs[0], available={"cuda": 1024**5, "cpu": 1024**5})[0]
    head = training.parts["action head + gradients + AdamW"]
    assert head == 3 * (151_117_831 + 16_818_176) * 2
    assert training.total > head + 14 * GIB  # 7.7 B bf16 weights and more


def test_basemodel_adapter_registers_and_checks_the_indexes():
    job = load_job(JOB)
    module = expand_grid(job)[0].basemodel
    cls = resolve_registered(module.url, "VLADataSelect")
    for method in ("train", "save", "load", "predict"):
        assert callable(getattr(cls, method))
    model = cls(**module.hyperparameters)
    assert dict(model.config.get("mixture")) == {SPATIAL: 2, OBJECT: 2, GOAL: 1}

    only_object = IndexData(x=load_index(job.testenv.train_index, "train").x[1:2], y=None, data_type="train")
    with pytest.raises(ValueError, match=SPATIAL):
        model.train(only_object)
    with pytest.raises(ValueError, match="libero_object"):
        model.predict(["/somewhere/libero_spatial", "/somewhere/libero_goal"])


def test_loading_a_file_twice_gives_fresh_registrations():
    url = os.path.join(EXAMPLE, "testenv", "vla_success_rate.py")
    first = load_module_file(url)
    second = load_module_file(url)
    factory, class_type = get_class_factory()
    assert first is not second
    assert factory.get_cls(class_type.GENERAL, "success_rate") is second.vla_success_rate


@pytest.mark.parametrize("path", [COMPARE, COMPARE_7B])
def test_comparison_jobs_cover_every_strategy_with_one_budget_and_one_evaluation(path):
    from vlamix.mixing.strategies import STRATEGIES

    points = expand_grid(load_job(path))
    hps = [p.basemodel.hyperparameters for p in points]
    assert sorted({h["strategy"] for h in hps}) == sorted(STRATEGIES)
    assert sum(h["strategy"] == "static" for h in hps) >= 3  # the static ratio grid
    for field in ("model", "train_steps", "batch_size", "eval_suites", "eval_tasks", "trials_per_task", "demos"):
        assert len({repr(h.get(field)) for h in hps}) == 1, field
    if path == COMPARE:  # the CPU job validates as is (the 7B job needs the user's model folder)
        configs = validate_grid(points)
        assert {c.strategy_label() for c in configs} >= {"full_dataset", "task_balanced by task", "temperature T=2"}
        assert len({c.strategy_label() for c in configs}) == len(configs)
