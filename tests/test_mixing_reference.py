"""``dro_reference: auto`` and ``strategy: doremi_transfer`` through the real training path.

Two small RLDS datasets are written with the real writer (synthetic episodes of
``synthetic_rlds.py``, so no simulator is needed); :func:`vlamix.pipeline.point.train_run` fine-tunes the
tiny model on them with the real loader, trainer and DoReMi controller.
"""

import json
import os

import numpy as np
import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.data.rlds_writer import write_rlds
from vlamix.pipeline.reference import TRANSFER_FILE, reference_config, time_averaged_weights
from vlamix.mixing.trajectory import SUMMARY_FILE
from vlamix.pipeline.config import train_key
from vlamix.pipeline.point import COMPLETE_MARKER, train_run
from synthetic_rlds import synthetic_episode

SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("libero_rlds")
    for k, name in enumerate((SPATIAL, OBJECT)):
        rng = np.random.default_rng(k)
        # the object actions are 4x larger: its loss differs from spatial's, so the excess losses differ
        episodes = [synthetic_episode(rng, 6, f"{name.split('_')[1]} task {i}", f"/demos/{name}/{i}.hdf5", action_scale=1 + 3 * k)
                    for i in range(4)]
        write_rlds(episodes, root, name)
    return str(root)


def _cfg(data_dir, **changes):
    values = dict(mixture={SPATIAL: 1, OBJECT: 1}, data_dir=data_dir, demos="none", heldout_fraction=0.25,
                  strategy="doremi", dro_reference="auto", mixing_update_every=1, dro_eta=4.0, dro_smoothing=0.05,
                  train_steps=4, batch_size=4, shuffle_buffer_size=8, learning_rate=2e-3, lora_rank=4, seed=3)
    values.update(changes)
    return checked(values)


def _runs(runs_dir):
    return sorted(d for d in os.listdir(runs_dir) if os.path.isfile(os.path.join(runs_dir, d, COMPLETE_MARKER)))


def _summary(ckpt):
    with open(os.path.join(ckpt, SUMMARY_FILE)) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def doremi_runs(data_dir, tmp_path_factory):
    runs_dir = str(tmp_path_factory.mktemp("runs"))
    a, b = _cfg(data_dir, dro_eta=4.0), _cfg(data_dir, dro_eta=8.0)
    return runs_dir, (a, train_run(a, runs_dir)), (b, train_run(b, runs_dir))


def test_auto_reference_is_trained_once_for_two_doremi_points(doremi_runs):
    runs_dir, (a, ckpt_a), (b, ckpt_b) = doremi_runs
    ref_key = train_key(reference_config(a))
    assert ref_key == train_key(reference_config(b)) == train_key(checked({**a.to_dict(), "strategy": "static",
                                                                                         "dro_reference": "initial"}))
    # two DoReMi runs and one reference: nothing else was trained
    assert _runs(runs_dir) == sorted([ref_key, train_key(a), train_key(b)])
    ref_log = os.path.join(runs_dir, ref_key, "train_log.jsonl")
    tail = [json.loads(line)["group_loss"] for line in open(ref_log)][-1:]  # last quarter of 4 steps = step 4
    for ckpt in (ckpt_a, ckpt_b):
        reference = _summary(ckpt)["reference_loss"]
        for g in (SPATIAL, OBJECT):
            assert reference[g] == pytest.approx(tail[0][g], rel=1e-9)


def test_auto_reference_moves_the_weights_away_from_the_initial_ones(doremi_runs):
    _, (a, ckpt_a), (b, ckpt_b) = doremi_runs
    for ckpt in (ckpt_a, ckpt_b):
        summary = _summary(ckpt)
        initial, final = summary["initial_weights"], summary["final_weights"]
        assert initial == pytest.approx({SPATIAL: 0.5, OBJECT: 0.5})
        assert max(abs(final[g] - initial[g]) for g in initial) > 0.02
        assert summary["updates"] == 4
    # a larger step size moves them further (same losses, same reference)
    move = [abs(_summary(c)["final_weights"][OBJECT] - 0.5) for c in (ckpt_a, ckpt_b)]
    assert move[1] > move[0]


def test_doremi_transfer_trains_a_fresh_static_run_on_the_time_averaged_weights(doremi_runs, data_dir):
    runs_dir, (a, ckpt_a), _ = doremi_runs
    before = set(_runs(runs_dir))
    cfg = _cfg(data_dir, strategy="doremi_transfer", dro_eta=4.0)
    ckpt = train_run(cfg, runs_dir)
    # the proxy is point a's DoReMi run (same key): only the final run is new
    assert set(_runs(runs_dir)) - before == {train_key(cfg)}
    averaged = time_averaged_weights(ckpt_a)
    with open(os.path.join(ckpt, "bench_config.json")) as fh:
        trained = json.load(fh)
    assert trained["strategy"] == "static"
    assert trained["mixture"] == pytest.approx(averaged)
    assert averaged != pytest.approx({SPATIAL: 0.5, OBJECT: 0.5}, abs=1e-3)
    with open(os.path.join(ckpt, TRANSFER_FILE)) as fh:
        record = json.load(fh)
    assert record["proxy_run"] == ckpt_a and record["weights"] == pytest.approx(averaged)
    assert _summary(ckpt)["strategy_label"].startswith("doremi_transfer eta=4")


def test_auto_and_transfer_need_dataset_level(data_dir):
    with pytest.raises(ConfigError) as err:
        _cfg(data_dir, mixing_level="task")
    assert err.value.field == "mixing_level"
    with pytest.raises(ConfigError) as err:
        _cfg(data_dir, strategy="doremi_transfer", dro_reference="initial", mixing_level="task")
    assert err.value.field == "mixing_level"
