"""OpenVLA's training image augmentation (image_aug): recipe, per-frame seeds, resume; evaluation follows it."""

import json
import os

import numpy as np
import pytest

from synthetic_rlds import synthetic_episode
from configs import checked
from vlamix.data.augment import OPENVLA_IMAGE_AUG, augment_image
from vlamix.data.mixture import MixtureLoader
from vlamix.data.rlds_writer import write_rlds
from vlamix.eval.settings import RolloutConfig

SPATIAL = "libero_spatial_no_noops"


@pytest.fixture(scope="module")
def tf():
    from vlamix.data._tf import import_tf

    return import_tf()[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug_rlds")
    rng = np.random.default_rng(0)
    write_rlds((synthetic_episode(rng, n, f"pick up the bowl {i}", f"/demos/{i}.hdf5") for i, n in enumerate([5, 6, 7, 5])),
               root, SPATIAL)
    return str(root)


def _cfg(data_dir, **kw):
    values = dict(mixture={SPATIAL: 1}, data_dir=data_dir, demos="none", batch_size=4, shuffle_buffer_size=8, seed=3,
                  heldout_fraction=0.25)
    values.update(kw)
    return checked(values)


def _run(tf, image, seed, **recipe):
    return augment_image(tf, tf.constant(image), tf.constant(seed, tf.int64), {**OPENVLA_IMAGE_AUG, **recipe}).numpy()


def test_a_grey_image_only_changes_brightness_within_the_recipes_bound(tf):
    grey = np.full((224, 224, 3), 128, np.uint8)
    outs = [_run(tf, grey, [7, k]) for k in range(20)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
        assert out.min() == out.max()  # crop, contrast, saturation and hue leave a uniform grey image uniform
        assert abs(int(out[0, 0, 0]) - 128) <= 0.2 * 255 + 1  # brightness delta in [-0.2, 0.2]
    deltas = {int(o[0, 0, 0]) for o in outs}
    assert len(deltas) >= 10  # different frames (ordinals) get different augmentations
    np.testing.assert_array_equal(_run(tf, grey, [7, 3]), outs[3])  # the same seed gives the same image


def test_the_crop_keeps_90_percent_of_the_area_at_the_same_offset_fraction_on_both_axes(tf):
    # pixel values encode the row (channel 0) and the column (channel 1) in steps of 1 (224 px < 256)
    yy, xx = np.mgrid[:224, :224]
    coords = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    side = np.sqrt(0.9)
    for k in range(8):
        out = _run(tf, coords, [11, k], augment_order=("random_resized_crop",)).astype(np.float64)
        y0, x0 = out[0, 0, 0], out[0, 0, 1]
        y1, x1 = out[-1, -1, 0], out[-1, -1, 1]
        assert y1 - y0 == pytest.approx(side * 223, abs=1.5) and x1 - x0 == pytest.approx(side * 223, abs=1.5)
        free = (1 - side) * 223
        assert 0 <= y0 <= free + 1 and y0 == pytest.approx(x0, abs=1.0)  # one seed for every draw, as dlimp


def test_unknown_op_is_refused(tf):
    with pytest.raises(ValueError, match="augment_order"):
        _run(tf, np.zeros((8, 8, 3), np.uint8), [0, 0], augment_order=("random_rot90",))


def test_the_loader_augments_training_images_only_and_resumes_exactly(data_dir):
    plain = MixtureLoader.for_point(_cfg(data_dir))
    aug = MixtureLoader.for_point(_cfg(data_dir, image_aug=True))
    a, b = [plain.next_batch() for _ in range(3)], [aug.next_batch() for _ in range(3)]
    for x, y in zip(a, b):  # the same frames ...
        assert x["instruction"] == y["instruction"] and np.array_equal(x["action"], y["action"])
        assert np.array_equal(x["step_index"], y["step_index"])
    assert all(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))  # ... with augmented images
    state = aug.state_dict()
    rest = [aug.next_batch() for _ in range(3)]
    resumed = MixtureLoader.for_point(_cfg(data_dir, image_aug=True)).load_state_dict(state)
    assert all(np.array_equal(x["image"], resumed.next_batch()["image"]) for x in rest)
    again = MixtureLoader.for_point(_cfg(data_dir, image_aug=True))
    assert all(np.array_equal(x["image"], again.next_batch()["image"]) for x in b)  # deterministic per seed
    held_plain = next(iter(MixtureLoader.for_point(_cfg(data_dir), "heldout")))["image"]
    held_aug = next(iter(MixtureLoader.for_point(_cfg(data_dir, image_aug=True), "heldout")))["image"]
    np.testing.assert_array_equal(held_plain, held_aug)  # offline metrics see the images unchanged


def test_image_aug_is_in_the_train_key_and_center_crop_follows_it(data_dir, tmp_path):
    from vlamix.model.checkpoint import CHECKPOINT_META_NAME, build_tiny, checkpoint_image_aug, save_vla
    from vlamix.pipeline.config import eval_key, train_key

    base = _cfg(data_dir)
    aug = _cfg(data_dir, image_aug=True)
    assert train_key(base) != train_key(aug)
    assert train_key(base) == train_key(_cfg(data_dir, image_aug=False))  # off: the key of earlier runs
    assert (base.resolved_center_crop(), aug.resolved_center_crop()) == (False, True)
    assert eval_key(base) == eval_key(_cfg(data_dir, center_crop=False))  # null = off here: same episodes
    assert eval_key(aug) == eval_key(_cfg(data_dir, image_aug=True, center_crop=True)) != eval_key(base)
    assert _cfg(data_dir, image_aug=True, center_crop=False).resolved_center_crop() is False  # explicit wins
    assert _cfg(data_dir, center_crop="auto").get("center_crop") is None
    # checkpoints record image_aug; folders without our record (official OpenVLA LIBERO checkpoints) crop
    model, processor = build_tiny()
    ours = save_vla(model, processor, str(tmp_path / "ours"), training={"image_aug": True})
    old = save_vla(model, processor, str(tmp_path / "old"))
    assert checkpoint_image_aug(ours) is True and checkpoint_image_aug(old) is False
    os.remove(os.path.join(old, CHECKPOINT_META_NAME))  # now laid out like an official HF folder
    assert checkpoint_image_aug(old) is True and checkpoint_image_aug("tiny") is False
    with open(os.path.join(ours, CHECKPOINT_META_NAME)) as fh:
        assert json.load(fh)["training"] == {"image_aug": True}


def test_rollouts_record_the_crop_the_checkpoint_asks_for(tmp_path, monkeypatch):
    from vlamix.eval.rollout import EpisodeSpec, evaluate
    from vlamix.model.checkpoint import build_tiny, save_vla

    model, processor = build_tiny(norm_stats={SPATIAL: {"action": {"q01": [-1] * 6 + [0], "q99": [1] * 6 + [1],
                                                                   "mask": [True] * 6 + [False]}}})
    folder = save_vla(model, processor, str(tmp_path / "ckpt"), training={"image_aug": True})
    built = []

    class Stop(Exception):
        pass

    def fake_policy(path, **kwargs):
        built.append(kwargs["center_crop"])
        raise Stop

    monkeypatch.setattr("vlamix.eval.rollout.VLAPolicy", fake_policy)
    spec = EpisodeSpec("libero_spatial", 0, 0, 0, "x")
    for crop, expected in ((None, True), (False, False)):
        with pytest.raises(RuntimeError, match="could not build"):
            evaluate(folder, [spec], RolloutConfig(eval_device="cpu"), center_crop=crop, progress=False)
        assert built[-1] is expected
