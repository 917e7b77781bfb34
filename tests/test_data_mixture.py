"""Mixture loader: proportions, held-out split, determinism, resume, normalisation, errors."""

import json
import shutil

import numpy as np
import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.data.mixture import MixtureLoader, MixtureSampler, heldout_count, mixture_weights
from vlamix.data.normalization import libero_transform_actions, load_or_compute_stats, normalize_actions
from vlamix.data.reader import open_rlds
from synthetic_rlds import synthetic_episode, write_datasets

SPATIAL, OBJECT, GOAL = "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops"
# episodes per dataset and their lengths (stored order is tfds' hashed order, not this one)
LENGTHS = {SPATIAL: [4, 5, 6, 5, 4, 6], OBJECT: [7, 8, 6, 7, 8], GOAL: [3, 3, 4, 3]}


def _episodes(name, lengths):
    rng = np.random.default_rng(len(name))
    for i, steps in enumerate(lengths):
        episode = synthetic_episode(rng, steps, f"{name.split('_')[1].upper()} Task Episode {i}", f"/demos/{name}/{i}.hdf5",
                                    action_scale=i + 1)
        episode["wrist_image"] = episode["image"][:, ::-1]
        yield episode


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_datasets(tmp_path_factory.mktemp("libero_rlds"), LENGTHS, _episodes)


def _cfg(data_dir, mixture, **kw):
    values = dict(mixture=mixture, data_dir=data_dir, demos="none", batch_size=8, shuffle_buffer_size=16, seed=3)
    values.update(kw)
    return checked(values)


def _stored_instructions(data_dir, name):
    return [e["language_instruction"].lower() for e in open_rlds(f"{data_dir}/{name}/1.0.0").episodes()]


# ------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("weights", [(2, 1), (3, 2, 1)])
def test_sampler_proportions_within_1_percent_over_10k(weights):
    sampler = MixtureSampler(weights, seed=0)
    draws = np.concatenate([sampler.draw(8) for _ in range(1250)])
    target = np.asarray(weights, float) / sum(weights)
    realised = np.bincount(draws, minlength=len(weights)) / draws.size
    np.testing.assert_allclose(realised, target, atol=0.01)
    np.testing.assert_allclose(sampler.realised_proportions(), realised)
    # low discrepancy: every prefix is within 2 frames of the target counts
    counts = np.cumsum(np.eye(len(weights), dtype=int)[draws], axis=0)
    ideal = np.arange(1, draws.size + 1)[:, None] * target
    assert np.abs(counts - ideal).max() <= 8  # <= 1 frame + the in-batch shuffle (batch of 8)


def test_sampler_weight_change_and_state():
    sampler = MixtureSampler([2, 1], seed=1)
    sampler.draw(64)
    state = sampler.state_dict()
    sampler.set_weights([1, 3])
    after = np.concatenate([sampler.draw(8) for _ in range(500)])
    assert np.bincount(after, minlength=2)[1] / after.size == pytest.approx(0.75, abs=0.01)
    again = MixtureSampler([5, 5], seed=99)
    again.load_state_dict(state)
    again.set_weights([1, 3])
    np.testing.assert_array_equal(np.concatenate([again.draw(8) for _ in range(500)]), after)
    with pytest.raises(ConfigError, match="mixture"):
        sampler.set_weights([0, 0])


def test_heldout_count_rule():
    assert heldout_count(432, 0.1) == 43
    assert heldout_count(5, 0.1) == 1  # at least one
    assert heldout_count(1, 0.5) == 0  # a single episode stays in training
    assert heldout_count(10, 0.0) == 0
    assert heldout_count(2, 0.5) == 1


# ------------------------------------------------------------------------------------ weights
def test_weights_are_proportions_unless_balance_by_size(data_dir):
    cfg = _cfg(data_dir, {SPATIAL: 2, OBJECT: 1, GOAL: 0})
    assert mixture_weights(cfg.data) == pytest.approx({SPATIAL: 2 / 3, OBJECT: 1 / 3})
    balanced = _cfg(data_dir, {SPATIAL: 1, OBJECT: 1}, balance_by_size=True, heldout_fraction=0.0)
    frames = {SPATIAL: sum(LENGTHS[SPATIAL]), OBJECT: sum(LENGTHS[OBJECT])}
    total = sum(frames.values())
    expected = {k: v / total for k, v in frames.items()}
    assert mixture_weights(balanced.data) == pytest.approx(expected)
    loader = MixtureLoader.for_point(balanced)
    assert loader.weights == pytest.approx(expected)
    assert loader.num_frames == frames


# ------------------------------------------------------------------------------------ loader
def test_batches_follow_weights_and_hold_normalised_model_space_actions(data_dir):
    loader = MixtureLoader.for_point(_cfg(data_dir, {SPATIAL: 3, OBJECT: 2, GOAL: 1}))
    assert loader.dataset_names == (SPATIAL, OBJECT, GOAL)
    batches = [loader.next_batch() for _ in range(25)]
    b = batches[0]
    assert b["image"].dtype == np.uint8 and b["image"].shape == (8, 224, 224, 3)
    assert b["action"].dtype == np.float32 and b["action"].shape == (8, 7)
    assert b["dataset_index"].dtype == np.int64 and b["dataset_index"].shape == (8,)
    assert len(b["instruction"]) == 8 and all(s == s.lower() for s in b["instruction"])
    sources = np.concatenate([x["dataset_index"] for x in batches])
    realised = np.bincount(sources, minlength=3) / sources.size
    np.testing.assert_allclose(realised, [3 / 6, 2 / 6, 1 / 6], atol=0.01)
    assert loader.realised_proportions() == pytest.approx(dict(zip(loader.dataset_names, realised)))
    # every action equals normalize(libero_transform(raw action)) with its own dataset's stats
    raw = {}
    for name in loader.dataset_names:
        for e in open_rlds(f"{data_dir}/{name}/1.0.0").episodes():
            raw[name, e["episode_index"]] = e["action"]
    for x in batches[:5]:
        for i in range(8):
            name = loader.dataset_names[x["dataset_index"][i]]
            source = raw[name, x["episode_index"][i]][x["step_index"][i]]
            stats = load_or_compute_stats(f"{data_dir}/{name}/1.0.0")
            expected = normalize_actions(libero_transform_actions(source), stats)
            np.testing.assert_allclose(x["action"][i], expected, atol=1e-6)
            assert x["action"][i, 6] in (0.0, 1.0)  # gripper: model space, not normalised
    assert np.abs(np.concatenate([x["action"] for x in batches])).max() <= 1.0
    # images are the stored frames resized 256 -> 224: compare the colour of each 4x4 block's centre
    x = batches[0]
    i = int(np.flatnonzero(x["dataset_index"] == 0)[0])
    k = int(x["episode_index"][i])
    episode = next(open_rlds(f"{data_dir}/{SPATIAL}/1.0.0").episodes(start=k, stop=k + 1))
    source = episode["image"][x["step_index"][i]].astype(float)
    resized = x["image"][i].astype(float)
    for r in range(4):
        for c in range(4):
            src = source[64 * r + 16 : 64 * r + 48, 64 * c + 16 : 64 * c + 48].mean(axis=(0, 1))
            out = resized[56 * r + 14 : 56 * r + 42, 56 * c + 14 : 56 * c + 42].mean(axis=(0, 1))
            np.testing.assert_allclose(out, src, atol=4)


def test_heldout_episodes_never_in_training(data_dir):
    cfg = _cfg(data_dir, {SPATIAL: 1, OBJECT: 1, GOAL: 1}, heldout_fraction=0.25)
    train = MixtureLoader.for_point(cfg)
    heldout = MixtureLoader.for_point(cfg, split="heldout")
    expected_heldout, expected_train = set(), set()
    for d in train.datasets:
        names = _stored_instructions(data_dir, d.name)
        assert d.heldout_episodes == heldout_count(len(names), 0.25) >= 1
        expected_heldout |= set(names[d.train_episodes :])
        expected_train |= set(names[: d.train_episodes])
    seen_train = set()
    for _ in range(30):  # 240 frames: several epochs of every training split
        seen_train |= set(train.next_batch()["instruction"])
    assert seen_train == expected_train
    seen_heldout, frames = set(), 0
    for batch in heldout:
        seen_heldout |= set(batch["instruction"])
        frames += len(batch["instruction"])
        assert batch["image"].shape[1:] == (224, 224, 3)
    assert seen_heldout == expected_heldout
    assert frames == sum(heldout.num_frames.values()) > 0
    assert not seen_train & seen_heldout


def test_same_seed_same_sequence_and_resume(data_dir):
    cfg = _cfg(data_dir, {SPATIAL: 2, GOAL: 1})
    a = MixtureLoader.for_point(cfg)
    first = [a.next_batch() for _ in range(6)]
    state = a.state_dict()
    a.set_weights({SPATIAL: 1, GOAL: 3})
    state_after_change = a.state_dict()
    rest = [a.next_batch() for _ in range(6)]

    b = MixtureLoader.for_point(cfg)
    replay = [b.next_batch() for _ in range(6)]
    other = MixtureLoader.for_point(cfg.replace(seed=4))
    different = [other.next_batch() for _ in range(6)]

    def same(x, y):
        return (
            x["instruction"] == y["instruction"]
            and np.array_equal(x["image"], y["image"])
            and np.array_equal(x["action"], y["action"])
            and np.array_equal(x["step_index"], y["step_index"])
        )

    assert all(same(x, y) for x, y in zip(first, replay))
    assert not all(same(x, y) for x, y in zip(first, different))

    resumed = MixtureLoader.for_point(cfg).load_state_dict(state_after_change)
    assert resumed.batches_consumed == 6 and resumed.weights == pytest.approx({SPATIAL: 0.25, GOAL: 0.75})
    assert all(same(x, y) for x, y in zip(rest, [resumed.next_batch() for _ in range(6)]))
    resumed_old = MixtureLoader.for_point(cfg).load_state_dict(state)
    assert resumed_old.weights == pytest.approx({SPATIAL: 2 / 3, GOAL: 1 / 3})
    with pytest.raises(ValueError, match="seed"):
        MixtureLoader.for_point(cfg.replace(seed=5)).load_state_dict(state)


def test_errors_name_the_field(data_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(_cfg(str(tmp_path), {SPATIAL: 1}, demos="scripted"))
    assert err.value.field == "data_dir" and SPATIAL in str(err.value)
    (tmp_path / SPATIAL / "1.0.0").mkdir(parents=True)  # a folder, but not an RLDS dataset
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(_cfg(str(tmp_path), {SPATIAL: 1}, demos="scripted"))
    assert err.value.field == "data_dir"
    # an RLDS dataset with no episodes (tfds cannot write one; make it by emptying a copy)
    empty = tmp_path / "empty" / GOAL / "1.0.0"
    shutil.copytree(f"{data_dir}/{GOAL}/1.0.0", empty)
    info = json.loads((empty / "dataset_info.json").read_text())
    info["splits"][0]["shardLengths"] = []
    (empty / "dataset_info.json").write_text(json.dumps(info))
    for f in empty.iterdir():
        if ".tfrecord-" in f.name or f.name.startswith(("dataset_statistics_", "episodes_")):
            f.unlink()
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(_cfg(str(tmp_path / "empty"), {GOAL: 1}))
    assert err.value.field == "data_dir" and "no episodes" in str(err.value)
    bad = _cfg(data_dir, {SPATIAL: 1}).without_checks(mixture={"libero_kitchen_no_noops": 1.0})
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(bad)
    assert err.value.field == "mixture" and "libero_kitchen_no_noops" in str(err.value)
    loader_cfg = _cfg(data_dir, {SPATIAL: 1})
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(loader_cfg, split="test")
    assert err.value.field == "split"
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(loader_cfg).set_weights({GOAL: 1.0})
    assert err.value.field == "mixture"
