"""Strategies and filters inside the real MixtureLoader, on tiny synthetic RLDS datasets (TensorFlow)."""

import numpy as np
import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.data.mixture import MixtureLoader, heldout_count
from vlamix.data.reader import open_rlds
from vlamix.data.rlds_writer import write_rlds
from synthetic_rlds import synthetic_episode

SPATIAL, OBJECT, GOAL = "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops"
PICK = "pick up the bowl and place it on the plate"
PUT = "put the bowl on the stove"
TURN = "turn on the stove"

# SPATIAL: one instruction per episode; planted steps in write order (stored order is tfds' hashed one)
SPATIAL_LENGTHS = [10, 9, 8, 10]
OUT_OF_RANGE = {0: [(3, 1, 5.0), (7, 4, -5.0)], 2: [(0, 0, 5.0)]}  # episode -> (step, dim, value)
STILL = {1: range(2, 6), 2: range(3, 7)}  # episode -> near-zero stretch (gripper constant)
# with filter_motion_window 3 a stretch of 4 loses its 2 inner steps (the outer ones see a moving neighbour)
DROPPED_STILL = {1: [3, 4], 2: [4, 5]}
TASKS = {OBJECT: ([PICK, PUT, PICK, PUT], [5, 6, 5, 6]), GOAL: ([PUT, TURN, TURN], [5, 5, 6])}


def _spatial_episodes():
    rng = np.random.default_rng(11)
    for e, steps in enumerate(SPATIAL_LENGTHS):
        ep = synthetic_episode(rng, steps, f"spatial task {e}", f"/demos/spatial/{e}.hdf5")
        a = ep["action"]
        for t, d, v in OUT_OF_RANGE.get(e, []):
            a[t, d] = v
        if e in STILL:
            a[:, 6] = -1.0  # no gripper change anywhere: the near-zero rule applies
            for t in STILL[e]:
                a[t, :6] = np.float32(1e-5) * np.array([1, -1, 1, -1, 1, -1], np.float32)
        yield ep


def _task_episodes(name):
    rng = np.random.default_rng(len(name))
    for e, (text, steps) in enumerate(zip(*TASKS[name])):
        yield synthetic_episode(rng, steps, text.capitalize(), f"/demos/{name}/{e}.hdf5")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixing_rlds")
    write_rlds(_spatial_episodes(), root, SPATIAL)
    for name in TASKS:
        write_rlds(_task_episodes(name), root, name)
    return str(root)


def _cfg(data_dir, mixture, **kw):
    values = dict(mixture=mixture, data_dir=data_dir, demos="none", batch_size=8, shuffle_buffer_size=16, seed=3,
                  heldout_fraction=0.0)
    values.update(kw)
    return checked(values)


def _stored(data_dir, name):
    """[(instruction, raw actions [T, 7])] in stored order (= the loader's episode_index)."""
    return [(e["language_instruction"].lower(), e["action"]) for e in open_rlds(f"{data_dir}/{name}/1.0.0").episodes()]


def test_loader_drops_planted_steps(data_dir):
    stored = _stored(data_dir, SPATIAL)
    index = {text: i for i, (text, _) in enumerate(stored)}  # write-order episode e -> stored index
    dropped = set()
    for e, planted in OUT_OF_RANGE.items():
        k = index[f"spatial task {e}"]
        for t, d, v in planted:
            assert stored[k][1][t, d] == v  # the planted value is on disk where we think it is
            dropped.add((k, t))
    for e, steps in DROPPED_STILL.items():
        dropped |= {(index[f"spatial task {e}"], t) for t in steps}
    every = {(k, t) for k, (_, a) in enumerate(stored) for t in range(a.shape[0])}
    kept = every - dropped
    # the planted out-of-range steps are the only ones beyond 2.0
    assert {(k, t) for k, (_, a) in enumerate(stored) for t in np.flatnonzero(np.abs(a).max(axis=1) > 2.0)} == {
        (index[f"spatial task {e}"], t) for e, p in OUT_OF_RANGE.items() for t, _, _ in p
    }

    cfg = _cfg(data_dir, {SPATIAL: 1}, filter_action_limit=2.0, filter_min_motion=1e-3, filter_motion_window=3)
    loader = MixtureLoader.for_point(cfg)
    total = sum(SPATIAL_LENGTHS)
    assert loader.filter_counts == {
        SPATIAL: {"total": total, "kept": total - 7, "nonfinite": 0, "out_of_range": 3, "near_zero_motion": 4, "dataset_list": 0}
    }
    assert len(kept) == total - 7 and loader.sources[0].frames == total - 7
    seen, batches = set(), 0
    while seen != kept and batches < 12:  # 30 kept frames: every one is seen within 4 batches of 8
        batch = loader.next_batch()
        batches += 1
        frames = set(zip(batch["episode_index"].tolist(), batch["step_index"].tolist()))
        assert not frames & dropped, f"dropped steps in batch {batches}: {frames & dropped}"
        for i, (k, t) in enumerate(zip(batch["episode_index"], batch["step_index"])):
            assert batch["instruction"][i] == stored[k][0]
        seen |= frames
    assert seen == kept and batches <= 5

    # without the filters every step is a training frame
    plain = MixtureLoader.for_point(_cfg(data_dir, {SPATIAL: 1}))
    assert plain.filter_counts[SPATIAL]["kept"] == total and plain.sources[0].frames == total


def test_task_level_groups_and_set_weights(data_dir):
    cfg = _cfg(data_dir, {OBJECT: 1, GOAL: 1}, strategy="task_balanced")
    loader = MixtureLoader.for_point(cfg)
    stored = {name: _stored(data_dir, name) for name in (OBJECT, GOAL)}
    first_seen = list(dict.fromkeys(text for name in (OBJECT, GOAL) for text, _ in stored[name]))
    assert loader.mixing_level == "task"
    assert list(loader.group_names) == first_seen and set(first_seen) == {PICK, PUT, TURN}
    assert loader.initial_weights == pytest.approx({PICK: 1 / 3, PUT: 1 / 3, TURN: 1 / 3})
    # PUT is one group with a source in each dataset, split by frames (6 + 6 in OBJECT, 5 in GOAL)
    put_sources = {s.dataset: s.frames for s in loader.sources if s.group == PUT}
    assert put_sources == {OBJECT: 12, GOAL: 5}
    drawn = []
    for _ in range(6):
        batch = loader.next_batch()
        for i in range(len(batch["instruction"])):
            group = loader.group_names[batch["group_index"][i]]
            name = loader.dataset_names[batch["dataset_index"][i]]
            assert group == batch["instruction"][i] == stored[name][batch["episode_index"][i]][0]
        drawn.append(batch["group_index"])
    drawn = np.concatenate(drawn)
    realised = np.bincount(drawn, minlength=3) / drawn.size
    assert loader.realised_proportions() == pytest.approx(dict(zip(loader.group_names, realised.tolist())))
    np.testing.assert_allclose(realised, [1 / 3] * 3, atol=0.05)

    loader.set_weights({TURN: 1})
    assert loader.weights == pytest.approx({PICK: 0.0, PUT: 0.0, TURN: 1.0})
    turn = loader.group_names.index(TURN)
    for _ in range(3):
        batch = loader.next_batch()
        assert (batch["group_index"] == turn).all()
        assert set(batch["instruction"]) == {TURN}
        assert set(loader.dataset_names[i] for i in batch["dataset_index"]) == {GOAL}


def test_whitelist_removes_a_dataset_and_counts_its_steps(data_dir):
    cfg = _cfg(data_dir, {SPATIAL: 1, OBJECT: 1, GOAL: 1}, dataset_whitelist=[SPATIAL, OBJECT], heldout_fraction=0.25)
    loader = MixtureLoader.for_point(cfg)
    assert loader.dataset_names == (SPATIAL, OBJECT)
    assert set(loader.weights) == {SPATIAL, OBJECT}
    lengths = open_rlds(f"{data_dir}/{GOAL}/1.0.0").episode_lengths()
    train = int(lengths[: len(lengths) - heldout_count(len(lengths), 0.25)].sum())
    assert 0 < train < int(lengths.sum())
    assert loader.filter_counts[GOAL] == {
        "total": train, "kept": 0, "nonfinite": 0, "out_of_range": 0, "near_zero_motion": 0, "dataset_list": train
    }
    assert loader.filter_counts[OBJECT]["kept"] == loader.datasets[1].train_frames
    assert set(loader.next_batch()["dataset_index"].tolist()) <= {0, 1}
    assert MixtureLoader.for_point(cfg.replace(dataset_whitelist=None, dataset_blacklist=[GOAL])).dataset_names == (SPATIAL, OBJECT)


def test_curriculum_phase_naming_no_task_of_the_mixture_fails_before_training(data_dir):
    phases = [{"step": 0, "weights": {PICK: 1}}, {"step": 5, "weights": {PICK: 1, "open the microwave": 1}}]
    cfg = _cfg(data_dir, {OBJECT: 1, GOAL: 1}, strategy="curriculum", mixing_level="task", curriculum=phases)
    with pytest.raises(ConfigError) as err:
        MixtureLoader.for_point(cfg)
    assert err.value.field == "curriculum" and "open the microwave" in str(err.value)
    ok = _cfg(data_dir, {OBJECT: 1, GOAL: 1}, strategy="curriculum", mixing_level="task",
              curriculum=[phases[0], {"step": 5, "weights": {PICK: 1, TURN: 3}}])
    assert MixtureLoader.for_point(ok).initial_weights == {PICK: 1.0, PUT: 0.0, TURN: 0.0}
