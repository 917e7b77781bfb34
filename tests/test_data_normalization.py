"""LIBERO action transform, dataset statistics (and their cache), BOUNDS_Q99 (un)normalisation."""

import json
import os
import pathlib

import numpy as np
import pytest

from vlamix.data import normalization as norm
from vlamix.data.normalization import (
    compute_stats,
    dataset_stats,
    libero_transform_actions,
    normalize_actions,
    save_dataset_statistics,
    unnormalize_actions,
)
from vlamix.data.rlds_writer import write_rlds
from synthetic_rlds import synthetic_episode

NAME = "libero_object_no_noops"
STATS = {  # the tiny reference model's norm stats (shared/reference/openvla/tiny/config.json)
    "q01": [-0.5, -1.0, -0.25, -2.0, -0.1, -3.0, 0.0],
    "q99": [0.5, 2.0, 0.75, 1.0, 0.3, 3.0, 1.0],
    "mask": [True] * 6 + [False],
}


def test_libero_gripper_transform():
    raw = np.zeros((4, 7), np.float32)
    raw[:, :6] = np.arange(24, dtype=np.float32).reshape(4, 6) - 10
    raw[:, 6] = [-1.0, 1.0, 0.3, -0.2]  # open, close, partial close, partial open
    out = libero_transform_actions(raw)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :6], raw[:, :6])
    np.testing.assert_allclose(out[:, 6], [1.0, 0.0, 0.7, 1.0], atol=1e-7)  # model space: 1 open, 0 close
    with pytest.raises(ValueError, match="last dimension 7"):
        libero_transform_actions(np.zeros((2, 6)))


def test_normalize_known_points_and_gripper_passthrough():
    q01, q99 = np.array(STATS["q01"]), np.array(STATS["q99"])
    a = np.stack([q01, q99, (q01 + q99) / 2, q01 - 5, q99 + 5]).astype(np.float32)
    a[:, 6] = [0.0, 1.0, 0.25, 0.0, 1.0]
    out = normalize_actions(a, STATS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :6], -1, atol=1e-6)
    np.testing.assert_allclose(out[1, :6], 1, atol=1e-6)
    np.testing.assert_allclose(out[2, :6], 0, atol=1e-6)
    np.testing.assert_array_equal(out[3, :6], -1)  # clipped
    np.testing.assert_array_equal(out[4, :6], 1)
    np.testing.assert_array_equal(out[:, 6], a[:, 6])  # gripper not normalised (mask false)


def test_round_trip_and_stats_entry_form():
    rng = np.random.default_rng(0)
    q01, q99 = np.array(STATS["q01"]), np.array(STATS["q99"])
    a = (q01 + rng.random((50, 7)) * (q99 - q01)).astype(np.float64)
    entry = {"action": STATS, "proprio": {}, "num_transitions": 50, "num_trajectories": 2}
    normed = normalize_actions(a, entry)  # per-dataset entry and action stats both accepted
    assert normed.dtype == np.float64 and np.all(np.abs(normed) <= 1)
    back = unnormalize_actions(normed, entry)
    np.testing.assert_allclose(back, a, atol=1e-7)
    np.testing.assert_allclose(normalize_actions(back, STATS), normed, atol=1e-7)


def test_unnormalize_matches_official_openvla_outputs(reference_dir):
    """The official predict_action un-normalised these bin centres with the tiny norm stats."""
    expected = np.load(os.path.join(reference_dir, "tiny", "expected.npz"))
    with open(os.path.join(reference_dir, "tiny", "config.json")) as fh:
        stats = json.load(fh)["norm_stats"]["tiny"]
    out = unnormalize_actions(expected["normalized_actions"], stats)
    np.testing.assert_allclose(out, expected["actions"], rtol=0, atol=1e-9)


def test_constant_dims_normalise_to_zero_masked_or_not_as_openvla():
    """OpenVLA's BOUNDS_Q99 (``normalize_action_and_proprio``): clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    where the mask is true, x where it is false, then 0 wherever min == max, whatever the mask says."""
    stats = dict(STATS, min=[-0.5, -0.9, -0.25, -2.0, -0.1, -3.0, 1.0], max=[0.5, 0.2, 0.75, 1.0, 0.3, 3.0, 1.0])
    stats["q01"] = list(stats["q01"])
    stats["q01"][1] = stats["q99"][1] = 0.2  # q01 == q99 but min != max: no special case
    a = np.array([[0.1, 0.3, 0.3, 0.0, 0.0, 0.0, 0.7]], np.float32)
    out = normalize_actions(a, stats)
    assert out[0, 6] == 0.0  # the unmasked gripper is constant in the data (min == max == 1): 0, as OpenVLA
    q01, q99 = np.asarray(stats["q01"], np.float32), np.asarray(stats["q99"], np.float32)
    expected_1 = np.clip(2 * (np.float32(0.3) - q01[1]) / (q99[1] - q01[1] + np.float32(1e-8)) - 1, -1, 1)
    assert out[0, 1] == expected_1 == 1.0  # clipped, not zeroed
    assert unnormalize_actions(np.zeros((1, 7), np.float32), stats)[0, 6] == 0.0  # no min == max case at evaluation


def test_constant_masked_dim_normalises_to_zero_and_back():
    stats = dict(STATS, min=[-0.5, 0.2, -0.25, -2.0, -0.1, -3.0, 0.0], max=[0.5, 0.2, 0.75, 1.0, 0.3, 3.0, 1.0])
    stats["q01"] = list(stats["q01"])
    stats["q01"][1] = stats["q99"][1] = 0.2
    a = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0]], np.float32)
    out = normalize_actions(a, stats)
    assert out[0, 1] == 0.0  # OpenVLA maps unused (min == max) dims to 0
    assert unnormalize_actions(out, stats)[0, 1] == pytest.approx(0.2)


def test_compute_stats_layout_and_values():
    actions = np.zeros((101, 7), np.float32)
    actions[:, 0] = np.arange(101)  # quantiles of 0..100 are exactly 1 and 99
    actions[:, 6] = np.arange(101) % 2
    proprio = np.ones((101, 8), np.float32)
    stats = compute_stats(actions, proprio, num_trajectories=3)
    assert set(stats) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(stats["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}
    assert set(stats["proprio"]) == {"mean", "std", "max", "min", "q01", "q99"}
    assert stats["action"]["q01"][0] == pytest.approx(1.0) and stats["action"]["q99"][0] == pytest.approx(99.0)
    assert stats["action"]["mean"][0] == pytest.approx(50.0) and stats["action"]["max"][0] == 100.0
    assert stats["action"]["std"][0] == pytest.approx(np.arange(101).std())
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert len(stats["proprio"]["mean"]) == 8
    assert stats["num_transitions"] == 101 and stats["num_trajectories"] == 3
    json.dumps(stats)  # plain JSON types


# ------------------------------------------------------------------------------ cached statistics
def _episodes(lengths, seed):
    rng = np.random.default_rng(seed)
    for i, steps in enumerate(lengths):
        yield synthetic_episode(rng, steps, f"pick object {i}", f"/demos/object_{seed}_{i}.hdf5")


def _expected_stats(episodes):
    actions = libero_transform_actions(np.concatenate([e["action"] for e in episodes]))
    proprio = np.concatenate([e["state"] for e in episodes])
    return compute_stats(actions, proprio, num_trajectories=len(episodes))


def test_stats_computed_once_cached_beside_data_and_invalidated(tmp_path):
    episodes = list(_episodes([4, 6, 5], seed=1))
    path = write_rlds(episodes, tmp_path, NAME)
    first = dataset_stats(path)
    assert first.computed and first.name == NAME
    assert os.path.dirname(first.stats_file) == path
    assert os.path.basename(first.stats_file).startswith("dataset_statistics_")
    np.testing.assert_array_equal(first.episode_lengths.sum(), 15)
    expected = _expected_stats(episodes)
    for key in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(first.stats["action"][key], expected["action"][key], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(first.stats["proprio"][key], expected["proprio"][key], rtol=1e-6, atol=1e-6)
    assert first.stats["action"]["min"][6] == 0.0 and first.stats["action"]["max"][6] == 1.0  # model-space gripper
    assert first.stats["num_transitions"] == 15 and first.stats["num_trajectories"] == 3
    with open(first.stats_file) as fh:
        assert list(json.load(fh)) == [NAME]  # OpenVLA dataset_statistics.json layout

    # the second call reads the file: a marker written into it comes back
    with open(first.stats_file) as fh:
        cached = json.load(fh)
    cached[NAME]["action"]["mean"][0] = 12345.0
    with open(first.stats_file, "w") as fh:
        json.dump(cached, fh)
    second = dataset_stats(path)
    assert not second.computed and second.stats["action"]["mean"][0] == 12345.0

    # a re-recorded dataset is not served the old statistics, even with the old cache files beside it
    cache_files = [f for f in os.listdir(path) if f.startswith(("dataset_statistics_", "episodes_"))]
    old = {f: pathlib.Path(path, f).read_bytes() for f in cache_files}
    assert len(old) == 2
    new_episodes = list(_episodes([4, 6, 5], seed=2))
    write_rlds(new_episodes, tmp_path, NAME, overwrite=True)
    for name, text in old.items():
        pathlib.Path(path, name).write_bytes(text)
    third = dataset_stats(path)
    assert third.computed and third.stats_file != first.stats_file
    expected = _expected_stats(new_episodes)["action"]["mean"]
    np.testing.assert_allclose(third.stats["action"]["mean"], expected, rtol=1e-6, atol=1e-6)
    assert not dataset_stats(path).computed


def test_read_only_data_folder_falls_back_to_cache_dir(tmp_path, monkeypatch):
    path = write_rlds(list(_episodes([3, 3], seed=3)), tmp_path / "data", NAME)
    real = norm._dir_writable
    monkeypatch.setattr(norm, "_dir_writable", lambda folder: False if folder == path else real(folder))
    cache = tmp_path / "cache"
    first = dataset_stats(path, cache_dir=str(cache))
    assert first.computed and first.stats_file.startswith(str(cache))
    assert not [f for f in os.listdir(path) if f.startswith("dataset_statistics_")]
    second = dataset_stats(path, cache_dir=str(cache))
    assert not second.computed and second.stats_file == first.stats_file


def test_save_dataset_statistics_layout(tmp_path):
    stats = compute_stats(np.zeros((2, 7)), np.zeros((2, 8)), 1)
    out = save_dataset_statistics({NAME: stats}, tmp_path / "ckpt" / "dataset_statistics.json")
    with open(out) as fh:
        data = json.load(fh)
    assert list(data) == [NAME] and data[NAME]["action"]["mask"] == [True] * 6 + [False]
