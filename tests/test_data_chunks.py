"""OpenVLA-OFT data: action chunks from RLDS trajectories (chunk_act_obs with a future window of chunk - 1: only
steps from which a whole chunk fits are frames), wrist images and normalised proprio in the batches."""

import numpy as np
import pytest

from configs import checked
from vlamix.data.mixture import MixtureLoader
from vlamix.data.normalization import libero_transform_actions, normalize_actions, normalize_proprio
from vlamix.data.reader import open_rlds
from synthetic_rlds import synthetic_episode, write_datasets

SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"
LENGTHS = {SPATIAL: [3, 8, 12, 9, 5], OBJECT: [10, 9]}
CHUNK = 8


def _episodes(name, lengths):
    rng = np.random.default_rng(len(name) + 1)
    for i, steps in enumerate(lengths):
        episode = synthetic_episode(rng, steps, f"{name.split('_')[1]} task {i}", f"/demos/{name}/{i}.hdf5")
        episode["wrist_image"] = (255 - episode["image"]).astype(np.uint8)  # another picture, known exactly
        episode["state"][:, 7] = 0.04  # a constant proprio dim (min == max): zeroed in training
        yield episode


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_datasets(tmp_path_factory.mktemp("libero_rlds"), LENGTHS, _episodes)


def _loader(data_dir, mixture, **kw):
    cfg = checked(
        dict(
            mixture=mixture,
            data_dir=data_dir,
            demos="none",
            heldout_fraction=0.0,
            batch_size=1,
            shuffle_buffer_size=4,
            seed=3,
        )
    )
    return MixtureLoader(cfg.data, cfg.mixing, "train", batch_size=1, seed=3, action_chunk=CHUNK, **kw)


def _stored(data_dir, name):
    return list(open_rlds(f"{data_dir}/{name}/1.0.0").episodes())


def test_chunks_start_only_where_a_whole_chunk_fits_and_hold_the_next_actions(data_dir):
    loader = _loader(data_dir, {SPATIAL: 1}, wrist_image=True, proprio=True)
    stored = _stored(data_dir, SPATIAL)
    stats = loader.dataset_statistics[SPATIAL]
    anchors = {(e, t) for e, ep in enumerate(stored) for t in range(len(ep["action"]) - CHUNK + 1)}
    # lengths 3, 8, 12, 9, 5 -> 0 + 1 + 5 + 2 + 0 anchors; the last CHUNK - 1 steps of an episode never are one
    assert len(anchors) == 8 and sum(loader.num_frames.values()) == sum(LENGTHS[SPATIAL])
    assert sum(s.frames for s in loader.sources) == 8
    seen = []
    for _ in range(len(anchors)):  # one epoch of the only source: every anchor exactly once
        batch = loader.next_batch()
        e, t = int(batch["episode_index"][0]), int(batch["step_index"][0])
        seen.append((e, t))
        raw = stored[e]["action"][t : t + CHUNK]
        expected = normalize_actions(libero_transform_actions(raw), stats)
        assert batch["action"].shape == (1, CHUNK, 7) and batch["action"].dtype == np.float32
        np.testing.assert_allclose(batch["action"][0], expected, rtol=0, atol=1e-6)
        proprio = normalize_proprio(stored[e]["state"][t], stats, zero_constant=True)
        np.testing.assert_allclose(batch["proprio"][0], proprio, rtol=0, atol=1e-6)
        assert batch["proprio"][0, 7] == 0.0  # constant dim
        assert batch["wrist_image"].shape == batch["image"].shape == (1, 224, 224, 3)
        inverse = 255.0 - batch["image"][0].astype(np.float64)
        assert np.abs(batch["wrist_image"][0] - inverse).mean() < 6  # the wrist camera, decoded like the image
    assert sorted(seen) == sorted(anchors)


def test_a_mixture_of_chunked_datasets_and_the_heldout_split(data_dir):
    cfg = checked(
        dict(
            mixture={SPATIAL: 1, OBJECT: 1},
            data_dir=data_dir,
            demos="none",
            heldout_fraction=0.4,
            batch_size=4,
            shuffle_buffer_size=4,
            seed=3,
        )
    )
    train = MixtureLoader(cfg.data, cfg.mixing, "train", batch_size=4, seed=3, action_chunk=CHUNK)
    batch = train.next_batch()
    assert batch["action"].shape == (4, CHUNK, 7) and "wrist_image" not in batch and "proprio" not in batch
    lengths = {name: [len(ep["action"]) for ep in _stored(data_dir, name)] for name in (SPATIAL, OBJECT)}
    for i in range(4):
        name = train.dataset_names[int(batch["dataset_index"][i])]
        assert int(batch["step_index"][i]) <= lengths[name][int(batch["episode_index"][i])] - CHUNK
    held = MixtureLoader(cfg.data, cfg.mixing, "heldout", batch_size=16, seed=3, action_chunk=CHUNK, proprio=True)
    rows = [
        (held.dataset_names[int(d)], int(e), int(t))
        for b in held
        for d, e, t in zip(b["dataset_index"], b["episode_index"], b["step_index"])
    ]
    expected = [
        (d.name, e, t)
        for d in held.datasets
        for e in range(d.train_episodes, d.num_episodes)
        for t in range(lengths[d.name][e] - CHUNK + 1)
    ]
    assert rows == expected  # held-out frames are chunk anchors too, in stored order


def test_token_recipe_batches_are_unchanged(data_dir):
    cfg = checked(
        dict(
            mixture={SPATIAL: 1},
            data_dir=data_dir,
            demos="none",
            heldout_fraction=0.0,
            batch_size=2,
            shuffle_buffer_size=4,
            seed=3,
        )
    )
    plain = MixtureLoader(cfg.data, cfg.mixing, "train", batch_size=2, seed=3)
    assert plain.next_batch()["action"].shape == (2, 7)
    assert sum(s.frames for s in plain.sources) == sum(LENGTHS[SPATIAL])


def test_proprio_normalisation_train_and_eval_rules():
    s = {"proprio": {"q01": [0.0, -1.0, 2.0], "q99": [1.0, 1.0, 2.0], "min": [-0.5, -2.0, 2.0], "max": [1.5, 2.0, 2.0]}}
    x = np.array([[0.25, 3.0, 2.0], [-1.0, -0.5, 2.0]], np.float64)
    eps = 1e-8
    expected = np.clip(2 * (x - [0.0, -1.0, 2.0]) / (np.array([1.0, 2.0, 0.0]) + eps) - 1, -1, 1)
    np.testing.assert_allclose(normalize_proprio(x, s, zero_constant=False), expected, rtol=0, atol=1e-12)
    train = normalize_proprio(x, s, zero_constant=True)
    np.testing.assert_allclose(train[:, :2], expected[:, :2], rtol=0, atol=1e-12)
    assert (train[:, 2] == 0).all() and (expected[:, 2] == -1).all()  # OFT: zeroed in training only
    with pytest.raises(ValueError, match="last dimension 3"):
        normalize_proprio(np.zeros((2, 8)), s, zero_constant=False)
    with pytest.raises(ValueError, match="proprio"):
        normalize_proprio(x, {"action": {}}, zero_constant=False)
