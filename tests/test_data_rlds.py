"""RLDS spec, writer and reader (vlamix.data.rlds_spec / rlds_writer / reader).

The expected spec below is written out independently of ``rlds_spec.py`` from
``moojink/rlds_dataset_builder`` ``LIBERO_Spatial_dataset_builder.py`` (the builder of
``openvla/modified_libero_rlds``).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vlamix.data.reader import open_rlds
from vlamix.data.rlds_writer import write_rlds
from synthetic_rlds import block_images, synthetic_episode

NAME = "libero_spatial_no_noops"

# feature path -> (python class name suffix, dtype, shape)
REFERENCE_STEP_FEATURES = {
    "observation/image": ("Image", "uint8", (256, 256, 3)),
    "observation/wrist_image": ("Image", "uint8", (256, 256, 3)),
    "observation/state": ("Tensor", "float32", (8,)),
    "observation/joint_state": ("Tensor", "float32", (7,)),
    "action": ("Tensor", "float32", (7,)),
    "discount": ("Scalar", "float32", ()),
    "reward": ("Scalar", "float32", ()),
    "is_first": ("Scalar", "bool", ()),
    "is_last": ("Scalar", "bool", ()),
    "is_terminal": ("Scalar", "bool", ()),
    "language_instruction": ("Text", "string", ()),
}


def _episodes(lengths, seed=0, prefix="Put The Bowl"):
    rng = np.random.default_rng(seed)
    out = []
    for i, steps in enumerate(lengths):
        episode = synthetic_episode(rng, steps, f"{prefix} {i}", f"/demos/{prefix.replace(' ', '_')}_{i}_demo.hdf5", blocks=8)
        episode["wrist_image"] = block_images(rng, steps, blocks=8)  # a different camera image
        episode["joint_state"] = rng.normal(size=(steps, 7)).astype(np.float32)
        out.append(episode)
    return out


def _flatten(features, prefix=""):
    """tfds FeaturesDict -> {path: feature} over the steps of an RLDS episode."""
    out = {}
    for key, feature in features.items():
        path = f"{prefix}{key}"
        inner = getattr(feature, "feature", None)  # tfds.features.Dataset wraps a FeaturesDict
        if hasattr(feature, "items"):
            out.update(_flatten(feature, path + "/"))
        elif inner is not None and hasattr(inner, "items"):
            out.update(_flatten(inner, path + "/"))
        else:
            out[path] = feature
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds")
    episodes = _episodes([3, 5, 4])
    path = write_rlds(iter(episodes), root, NAME)
    return root, path, episodes


def test_layout_and_feature_spec_match_modified_libero_rlds(written):
    import tensorflow_datasets as tfds

    root, path, _ = written
    assert path == os.path.join(str(root), NAME, "1.0.0")
    files = sorted(os.listdir(path))
    assert "dataset_info.json" in files and "features.json" in files
    shards = [f for f in files if ".tfrecord-" in f]
    assert shards and all(f.startswith(f"{NAME}-train.tfrecord-") for f in shards)
    assert not [f for f in os.listdir(os.path.join(str(root), NAME)) if f != "1.0.0"], "temporary folders left behind"

    builder = tfds.builder_from_directory(path)
    assert builder.info.name == NAME and str(builder.info.version) == "1.0.0"
    assert builder.info.splits["train"].num_examples == 3
    top = builder.info.features
    assert sorted(top.keys()) == ["episode_metadata", "steps"]
    assert type(top["steps"]).__name__ == "Dataset"
    steps = _flatten(top["steps"].feature)
    assert set(steps) == set(REFERENCE_STEP_FEATURES)
    for key, (cls, dtype, shape) in REFERENCE_STEP_FEATURES.items():
        feature = steps[key]
        assert type(feature).__name__ == cls, key
        assert feature.tf_dtype.name == dtype, key
        assert tuple(feature.shape) == shape, key
    assert steps["observation/image"].encoding_format == "jpeg"
    assert steps["observation/wrist_image"].encoding_format == "jpeg"
    assert type(top["episode_metadata"]["file_path"]).__name__ == "Text"
    with open(os.path.join(path, "features.json")) as fh:
        stored = json.load(fh)["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    image = stored["observation"]["featuresDict"]["features"]["image"]["image"]
    assert image["encodingFormat"] == "jpeg" and image["dtype"] == "uint8"


def test_tfds_reads_back_every_field(written):
    """Read with plain tfds (not our reader): values, flags, JPEG images, instruction, file_path."""
    import tensorflow_datasets as tfds

    _, path, episodes = written
    by_file = {e["file_path"]: e for e in episodes}
    builder = tfds.builder_from_directory(path)
    seen = set()
    for episode in tfds.as_numpy(builder.as_dataset(split="train")):  # RLDS: steps is a nested dataset
        file_path = episode["episode_metadata"]["file_path"].decode()
        src = by_file[file_path]
        seen.add(file_path)
        steps = list(episode["steps"])
        n = len(steps)
        assert n == src["action"].shape[0]
        for t, step in enumerate(steps):
            obs = step["observation"]
            assert obs["image"].dtype == np.uint8 and obs["image"].shape == (256, 256, 3)
            # JPEG is lossy: close to the source, but not bit-identical
            err = np.abs(obs["image"].astype(int) - src["image"][t].astype(int)).mean()
            assert err < 3.0
            assert np.abs(obs["wrist_image"].astype(int) - src["wrist_image"][t].astype(int)).mean() < 3.0
            np.testing.assert_array_equal(obs["state"], src["state"][t])
            np.testing.assert_array_equal(obs["joint_state"], src["joint_state"][t])
            np.testing.assert_array_equal(step["action"], src["action"][t])
            assert step["language_instruction"].decode() == src["language_instruction"]
            assert step["discount"] == 1.0
            assert step["reward"] == (1.0 if t == n - 1 else 0.0)
            assert bool(step["is_first"]) == (t == 0)
            assert bool(step["is_last"]) == (t == n - 1)
            assert bool(step["is_terminal"]) == (t == n - 1)
    assert seen == set(by_file)


def test_reader_counts_and_numpy_episodes(written):
    root, path, episodes = written
    ds = open_rlds(os.path.join(str(root), NAME))  # the dataset folder resolves to its 1.0.0 version
    assert ds.path == path and ds.name == NAME
    assert ds.num_episodes == 3
    assert ds.num_frames == 12
    stored = list(ds.episodes())
    assert [e["episode_index"] for e in stored] == [0, 1, 2]
    np.testing.assert_array_equal(ds.episode_lengths(), [e["action"].shape[0] for e in stored])
    by_file = {e["file_path"]: e for e in episodes}
    for e in stored:
        src = by_file[e["file_path"]]
        assert e["language_instruction"] == src["language_instruction"]
        assert e["image"].shape == src["image"].shape and e["image"].dtype == np.uint8
        np.testing.assert_array_equal(e["action"], src["action"])
        np.testing.assert_array_equal(e["reward"], np.eye(1, len(e["reward"]), len(e["reward"]) - 1)[0])
    # a slice of the stored order
    tail = list(ds.episodes(start=1))
    assert [e["file_path"] for e in tail] == [e["file_path"] for e in stored[1:]]


def test_writer_refuses_overwrite_and_replaces_with_flag(written, tmp_path):
    root, path, _ = written
    with pytest.raises(FileExistsError):
        write_rlds(_episodes([2]), root, NAME)
    other = tmp_path / "copy"
    write_rlds(_episodes([2, 2]), other, NAME)
    new_path = write_rlds(_episodes([2, 3, 2, 2], seed=5), other, NAME, overwrite=True)
    assert open_rlds(new_path).num_episodes == 4
    assert sorted(os.listdir(other / NAME)) == ["1.0.0"]


def test_failed_write_leaves_no_dataset(tmp_path):
    bad = _episodes([3, 3])
    bad[1]["state"] = np.zeros((3, 7), np.float32)  # wrong state dim
    with pytest.raises(ValueError, match="episode 1.*'state'"):
        write_rlds(iter(bad), tmp_path, NAME)
    assert not os.path.exists(tmp_path / NAME / "1.0.0")
    assert os.listdir(tmp_path / NAME) == []
    with pytest.raises(ValueError, match="no episodes"):
        write_rlds([], tmp_path, NAME)
    assert not os.path.exists(tmp_path / NAME / "1.0.0")
    with pytest.raises(ValueError, match="dataset name"):
        write_rlds(_episodes([2]), tmp_path, "Libero Spatial")


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        open_rlds(tmp_path / "missing")
    (tmp_path / "empty" / "1.0.0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        open_rlds(tmp_path / "empty")


def test_importing_vlamix_data_does_not_import_tensorflow():
    code = (
        "import sys, vlamix.data, vlamix.data.normalization as n, numpy as np\n"
        "n.unnormalize_actions(np.zeros(7), {'q01': [0]*7, 'q99': [1]*7, 'mask': [True]*6 + [False]})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_episode_index_is_stored_position_across_shuffled_shards(tmp_path):
    path = write_rlds(_episodes([2, 3, 2, 4, 3, 2, 3]), tmp_path, NAME, num_shards=3)
    ds = open_rlds(path)
    assert ds.info()["num_shards"] == 3
    stored = [e["file_path"] for e in ds.episodes()]
    read = [
        (int(e["episode_index"]), e["episode_metadata"]["file_path"].decode())
        for e in ds.trajectories(shuffle_files=True, seed=1, with_episode_index=True).as_numpy_iterator()
    ]
    assert sorted(i for i, _ in read) == list(range(7))
    assert all(stored[i] == f for i, f in read)
    assert [i for i, _ in read] != list(range(7))  # shards really were read out of order
    sliced = ds.trajectories(2, 6, shuffle_files=True, seed=2, with_episode_index=True).as_numpy_iterator()
    assert sorted(int(e["episode_index"]) for e in sliced) == [2, 3, 4, 5]
