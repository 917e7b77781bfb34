"""Rollout evaluation: image path vs TensorFlow, gripper post-processing, un-normalisation key choice,
episode planning, and a short real LIBERO rollout (env worker + policy here: JSONL rows, resume, error rows).

The policies below are test-only stand-ins; they live at module level because the spawn workers
import them by name. This module must not import TensorFlow at import time (workers import it);
the image tests import it inside the test functions (the test process renders nothing).
"""

import functools
import json
import os

import numpy as np
import pytest
import torch

from vlamix.eval.image import jpeg_roundtrip, lanczos_resize, preprocess_image
from vlamix.eval.policy import UnnormKeyError, VLAPolicy, resolve_unnorm_key
from vlamix.eval.rollout import (
    EpisodeSpec,
    evaluate,
    meta_path,
    model_to_env_action,
    plan_episodes,
    read_rows,
)
from vlamix.eval.settings import RolloutConfig


# ------------------------------------------------------------------------------ test-only policies
class OpenGripperPolicy:
    """No motion, gripper open (model space: gripper 1). Raises on unexpected inputs, and from call ``fail_at`` on."""

    def __init__(self, fail_at=None):
        self.fail_at = fail_at
        self.calls = 0

    def act(self, images, instructions, suite):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("test policy failure")
        if images.dtype != np.uint8 or images.shape != (1, 224, 224, 3):
            raise ValueError(f"unexpected images {images.dtype} {images.shape}")
        if suite != "libero_spatial" or len(instructions) != 1 or "black bowl" not in instructions[0]:
            raise ValueError(f"unexpected instruction {instructions!r} / suite {suite!r}")
        return np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])


def _must_not_build():
    raise AssertionError("policy must not be built: nothing should run")


# ------------------------------------------------------------------------------ image path
def _scene(seed, size=256):
    """A rendered-looking test image: shaded table, blurred coloured objects, mild sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([150 + 60 * yy, 120 + 50 * yy, 90 + 40 * xx], -1)
    for _ in range(8):
        cy, cx, ry, rx = rng.uniform(0.1, 0.9, 2).tolist() + rng.uniform(0.03, 0.15, 2).tolist()
        img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.uniform(20, 235, 3)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        img = np.apply_along_axis(lambda v: np.convolve(np.pad(v, 4, mode="edge"), kernel, mode="valid"), axis, img)
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _tf_resize(tf, img, size):
    out = tf.image.resize(img, size, method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8).numpy()


def test_lanczos_resize_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    img = _scene(0)
    for src, size in [(img, (224, 224)), (img[:200, :150].copy(), (224, 100))]:  # down, and up + down
        ours = lanczos_resize(src, size)
        ref = _tf_resize(tf, src, size)
        diff = np.abs(ours.astype(int) - ref)
        assert ours.shape == ref.shape and ours.dtype == np.uint8
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float round-off at .5 boundaries only


def test_preprocess_image_matches_tensorflow_eval_path():
    tf = pytest.importorskip("tensorflow")
    img = _scene(1)
    # experiments/robot/libero/libero_utils.py resize_image
    decoded = tf.io.decode_image(tf.image.encode_jpeg(img), expand_animations=False, dtype=tf.uint8)
    ref = _tf_resize(tf, decoded, (224, 224))
    ours = preprocess_image(img)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    diff = ours.astype(float) - ref
    assert np.abs(diff).mean() < 0.5  # measured 0.26-0.36 on such scenes, 0.11-0.17 on LIBERO frames
    assert abs(diff.mean()) < 0.1  # no brightness bias (the accurate IDCT is +0.8 here)
    # the JPEG round trip really happens: skipping it is much farther from the reference
    assert np.abs(lanczos_resize(img).astype(float) - ref).mean() > 2 * np.abs(diff).mean()
    batch = preprocess_image(np.stack([img, img]))
    assert batch.shape == (2, 224, 224, 3) and np.array_equal(batch[1], ours)


def test_image_input_validation():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image(np.zeros((256, 256, 3), np.float32))
    with pytest.raises(ValueError, match="dct"):
        jpeg_roundtrip(np.zeros((8, 8, 3), np.uint8), dct="slow")


# ------------------------------------------------------------------------------ gripper, policy, planning
def test_model_to_env_action_gripper_binarised_and_inverted():
    model = np.array([[0.1, -0.2, 0.3, -0.4, 0.5, -0.6, g] for g in (1.0, 0.7, 0.5, 0.3, 0.0)])
    before = model.copy()
    env = model_to_env_action(model)
    assert env[:, -1].tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]  # env: -1 open, +1 close
    assert np.array_equal(env[:, :6], model[:, :6])
    assert np.array_equal(model, before)  # input untouched
    with pytest.raises(ValueError, match="7"):
        model_to_env_action(np.zeros(6))


def test_env_to_model_action_is_the_inverse_of_the_post_processing_for_a_binary_gripper():
    from vlamix.eval.envs import env_to_model_action

    env = np.array([[0.1, -0.2, 0.3, -0.4, 0.5, -0.6, g] for g in (-1.0, 1.0)], dtype=np.float32)
    model = env_to_model_action(env)
    assert model[:, -1].tolist() == [1.0, 0.0]  # model: 1 open, 0 close
    assert np.array_equal(model_to_env_action(model), env.astype(np.float64))  # exact round trip
    with pytest.raises(ValueError, match=r"-1 \(open\) or \+1 \(close\), got \[0.5\]"):
        env_to_model_action([0.0] * 6 + [0.5])
    with pytest.raises(ValueError, match="7"):
        env_to_model_action(np.zeros(6))


def test_resolve_unnorm_key_order_and_errors():
    both = {"libero_spatial": {}, "libero_spatial_no_noops": {}, "libero_goal": {}}
    assert resolve_unnorm_key(both, "libero_spatial") == "libero_spatial_no_noops"
    assert resolve_unnorm_key(both, "libero_goal") == "libero_goal"
    assert resolve_unnorm_key({"tiny": {}}, "libero_10") == "tiny"
    assert resolve_unnorm_key(both, "libero_spatial", unnorm_key="libero_goal") == "libero_goal"
    with pytest.raises(UnnormKeyError) as err:
        resolve_unnorm_key(both, "libero_object")
    assert "libero_object_no_noops" in str(err.value) and "libero_goal" in str(err.value)
    assert not str(err.value).startswith("'")
    with pytest.raises(KeyError, match="libero_90_no_noops"):
        resolve_unnorm_key(both, "libero_spatial", unnorm_key="libero_90_no_noops")


class _FakeProcessor:
    def __init__(self):
        self.cropped = 0

    def center_crop(self, images):
        self.cropped += 1
        return images[:, ::-1].copy()

    def inference_inputs(self, images, instructions):
        pix = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float64) / 255.0
        return {"pixel_values": pix, "input_ids": torch.ones(len(instructions), 3, dtype=torch.long),
                "attention_mask": torch.ones(len(instructions), 3, dtype=torch.long)}


class _FakeTokenizer:
    """Action ids / 100 as normalised actions."""

    def decode(self, ids):
        return np.asarray(ids, dtype=np.float64) / 100.0


class _FakeModel(torch.nn.Module):
    norm_stats = {"libero_spatial": {}, "libero_spatial_no_noops": {}}
    action_tokenizer = _FakeTokenizer()

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def predict_action_ids(self, pixel_values, input_ids, attention_mask, action_dim):
        self.seen.append(("ids", pixel_values.dtype))
        first = (pixel_values[:, 0, 0, 0] * 100).round().long().reshape(-1, 1)  # depends on the (cropped) image
        return torch.cat([first.repeat(1, action_dim - 1), torch.full_like(first, 25)], dim=1)

    def get_action_stats(self, key):
        self.seen.append(("stats", key))  # identity un-normalisation: q01 -1, q99 1; the gripper passes through
        return {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}


def test_vla_policy_act_batches_crops_and_picks_key():
    model, proc = _FakeModel(), _FakeProcessor()
    policy = VLAPolicy.from_model(model, proc, center_crop=True)
    images = np.zeros((2, 224, 224, 3), np.uint8)
    images[0, -1, 0, 0] = 255  # after the test crop (row flip) this is pixel (0, 0) of image 0
    out = policy.act(images, ["Pick up the bowl", "open the drawer"], "libero_spatial")
    assert out.shape == (2, 7) and out.dtype == np.float64
    assert out[0, 0] == pytest.approx(1.0) and out[1, 0] == 0.0 and np.all(out[:, 6] == 0.25)
    assert proc.cropped == 1
    assert model.seen == [("ids", torch.float32), ("stats", "libero_spatial_no_noops")]  # inputs cast to the model dtype
    assert not model.training
    with pytest.raises(ValueError, match="one instruction per image"):
        policy.act(images, ["only one"], "libero_spatial")
    with pytest.raises(UnnormKeyError, match="libero_goal"):
        policy.act(images, ["a", "b"], "libero_goal")


def test_plan_episodes_and_rejections():
    pytest.importorskip("libero.libero.benchmark")
    specs = plan_episodes(["libero_spatial", "libero_goal"], tasks=2, trials_per_task=3)
    assert len(specs) == 12
    assert [(s.suite, s.task_id, s.episode_index) for s in specs[:4]] == [
        ("libero_spatial", 0, 0), ("libero_spatial", 0, 1), ("libero_spatial", 0, 2), ("libero_spatial", 1, 0)]
    assert all(s.init_state_index == s.episode_index for s in specs)
    assert specs[0].instruction == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    assert [s.task_id for s in plan_episodes("libero_object", [4, 7], 1)] == [4, 7]
    with pytest.raises(ValueError, match="libero_spacial.*allowed: libero_spatial, libero_object"):
        plan_episodes(["libero_spacial"], 1, 1)
    with pytest.raises(ValueError, match="has 10"):
        plan_episodes("libero_spatial", 11, 1)
    with pytest.raises(ValueError, match=r"\[10\] outside \[0, 10\)"):
        plan_episodes("libero_goal", [10], 1)
    with pytest.raises(ValueError, match="50 init states"):
        plan_episodes("libero_10", 1, 51)


def test_evaluate_rejects_bad_arguments_before_starting_workers(tmp_path):
    spec = EpisodeSpec("libero_spatial", 0, 0, 0, "x")
    with pytest.raises(ValueError, match="workers"):
        evaluate(_must_not_build, [spec], RolloutConfig(eval_workers=0))
    with pytest.raises(ValueError, match="more than once"):
        evaluate(_must_not_build, [spec, spec])
    with pytest.raises(ValueError, match="checkpoint paths only"):
        evaluate(_must_not_build, [spec], center_crop=True)
    with pytest.raises(TypeError, match="factory"):
        evaluate(OpenGripperPolicy(), [spec])
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        evaluate(str(tmp_path / "no_such_checkpoint"), [spec])
    with pytest.raises(ValueError, match="envs_per_worker"):
        evaluate(_must_not_build, [spec], RolloutConfig(envs_per_worker=0))
    with pytest.raises(ValueError, match="eval_videos.*allowed: none, failures, all"):
        evaluate(_must_not_build, [spec], RolloutConfig(eval_videos="some"))


# ------------------------------------------------------------------------------ real rollout
@pytest.mark.libero
def test_rollout_rows_resume_and_error_rows(tmp_path):
    out = str(tmp_path / "eval" / "episodes.jsonl")
    specs = plan_episodes("libero_spatial", [0], 2)
    # episode 0: 5 policy steps; episode 1: the policy raises on its first call (call 6)
    rows = evaluate(functools.partial(OpenGripperPolicy, fail_at=6), specs, RolloutConfig(eval_workers=1), out_jsonl=out,
                    max_steps=5, seed=3)
    assert len(rows) == 2
    r0, r1 = rows
    types = {"suite": str, "task_id": int, "instruction": str, "episode_index": int, "init_state_index": int,
             "success": bool, "steps": int, "seed": int, "max_steps": int, "num_steps_wait": int,
             "wall_s": float, "policy_s": float, "sim_s": float, "versions": dict}
    for name, typ in types.items():
        assert type(r0[name]) is typ, (name, r0[name])
    assert (r0["suite"], r0["task_id"], r0["episode_index"], r0["init_state_index"]) == ("libero_spatial", 0, 0, 0)
    assert r0["success"] is False and r0["steps"] == 5 and r0["error"] is None
    assert (r0["seed"], r0["max_steps"], r0["num_steps_wait"]) == (3, 5, 10)
    assert r0["sim_s"] > 0 and r0["wall_s"] >= r0["sim_s"] + r0["policy_s"]
    assert r0["versions"]["mujoco"] == "2.3.7"
    assert (r1["episode_index"], r1["init_state_index"]) == (1, 1)
    assert r1["error"] == "RuntimeError: test policy failure" and r1["success"] is False and r1["steps"] == 0

    with open(out) as fh:
        lines = [json.loads(line) for line in fh]
    assert lines == rows
    meta = json.load(open(meta_path(out)))
    assert meta["runs"][-1]["n_run"] == 2 and meta["runs"][-1]["versions"]["robosuite"] == "1.4.0"

    # resume: both rows exist with the same settings, so nothing runs (building a policy would raise)
    again = evaluate(_must_not_build, specs, RolloutConfig(eval_workers=1), out_jsonl=out, max_steps=5, seed=3)
    assert again == rows and len(read_rows(out)) == 2
    # rows of other settings are not reused: this would have to run, and the worker fails to build
    with pytest.raises(RuntimeError, match="must not be built"):
        evaluate(_must_not_build, specs[:1], RolloutConfig(eval_workers=1), out_jsonl=out, max_steps=6, seed=3)
    assert os.path.getsize(out) == sum(len(json.dumps(r)) + 1 for r in rows)  # nothing lost or added


def test_vla_policy_on_a_saved_tiny_checkpoint(tmp_path):
    checkpoint = pytest.importorskip("vlamix.model.checkpoint")
    stats = {"libero_spatial_no_noops": {"action": {"q01": [-0.9] * 6 + [0.0], "q99": [0.9] * 6 + [1.0],
                                                    "mask": [True] * 6 + [False]}}}
    model, processor = checkpoint.build_tiny(norm_stats=stats)
    folder = checkpoint.save_vla(model, processor, str(tmp_path / "ckpt"))
    policy = VLAPolicy(folder)
    images = np.stack([_scene(2)[:224, :224], _scene(3)[:224, :224]])
    out = policy.act(images, ["Pick up the bowl", "open the drawer"], "libero_spatial")
    assert policy.unnorm_key_for("libero_spatial") == "libero_spatial_no_noops"
    inputs = processor.inference_inputs(images, ["pick up the bowl", "open the drawer"])
    expected = model.predict_action(**inputs, unnorm_key="libero_spatial_no_noops")
    assert out.shape == (2, 7) and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.all(np.abs(out[:, :6]) <= 0.9 + 1e-6)  # un-normalised into [q01, q99]; the gripper is not
    with pytest.raises(UnnormKeyError, match="libero_goal_no_noops.*no dataset_statistics"):
        VLAPolicy("tiny").act(images, ["a", "b"], "libero_goal")  # the built-in tiny model has no norm stats
