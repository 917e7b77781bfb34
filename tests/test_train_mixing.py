"""Dynamic data-ratio strategies inside the real fine-tuning loop (tiny model, in-memory grouped batches).

The stand-in loader samples frames of two groups with the weights the trainer sets, so the test sees
exactly which weights the controller produced and when; the model, LoRA, trainer, controller and
checkpoint code are the real ones.
"""

import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.mixing.trajectory import PLOT_FILE, SUMMARY_FILE, TRAJECTORY_FILE, read_trajectory
from vlamix.train.finetune import TRAIN_LOG_NAME, FineTuner, _add_frame_losses
from test_train_finetune import STATS, _frames

GROUPS = ("libero_spatial_no_noops", "libero_object_no_noops")


class GroupedInMemoryLoader:
    """8 fixed frames; frames 0-3 are group 0, frames 4-7 group 1. Each batch draws its group per
    frame with the current weights (seeded), then a frame of that group."""

    dataset_statistics = STATS
    group_names = GROUPS

    def __init__(self, batch_size=4, seed=0, initial=(0.5, 0.5)):
        self.frames = _frames()
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.initial_weights = dict(zip(GROUPS, initial))
        self.current = np.asarray(initial, dtype=float)
        self.set_calls = []

    def set_weights(self, weights):
        self.current = np.array([weights[g] for g in GROUPS], dtype=float)
        self.set_calls.append(dict(weights))

    def next_batch(self):
        groups = self.rng.choice(2, size=self.batch_size, p=self.current / self.current.sum())
        idx = groups * 4 + self.rng.integers(0, 4, self.batch_size)
        return {
            "image": self.frames["image"][idx],
            "instruction": [self.frames["instruction"][i] for i in idx],
            "action": self.frames["action"][idx],
            "dataset_index": groups.astype(np.int64),
            "group_index": groups.astype(np.int64),
        }

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "current": self.current.tolist()}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.current = np.asarray(state["current"], dtype=float)


def _cfg(**changes):
    values = {"mixture": {GROUPS[0]: 1, GROUPS[1]: 1}, "train_steps": 6, "batch_size": 4, "lora_rank": 4,
              "lora_alpha": 8, "learning_rate": 2e-3, "seed": 3, "mixing_update_every": 2}  # fmt: skip
    values.update(changes)
    return checked(values)


def _log(folder):
    with open(os.path.join(folder, TRAIN_LOG_NAME), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_group_losses_are_per_frame_means_added_to_their_group():
    vocab, tokens = 11, 7
    targets = torch.arange(2 * tokens) % vocab
    logits = torch.zeros(2 * tokens, vocab)  # frame 1: uniform -> ln(vocab) per token
    logits[:tokens, :] = -30.0
    logits[torch.arange(tokens), targets[:tokens]] = 30.0  # frame 0: certain and right -> ~0
    sums, counts = np.zeros(3), np.zeros(3)
    tokens_head = SimpleNamespace(parallel=False)  # FineTuner's per-frame loss of the token head
    per_frame = FineTuner._per_frame_loss(tokens_head, SimpleNamespace(logits=logits, targets=targets),
                                          {"input_ids": torch.zeros(2, 20, dtype=torch.long)})
    _add_frame_losses(sums, counts, per_frame, [2, 0])
    assert counts.tolist() == [1.0, 0.0, 1.0]
    assert sums[0] == pytest.approx(math.log(vocab), rel=1e-6)  # frame 1 went to group 0
    assert sums[2] == pytest.approx(0.0, abs=1e-6)
    assert sums[1] == 0.0


def test_group_losses_of_the_l1_head_are_each_frames_mean_absolute_chunk_error():
    actions = torch.zeros(2, 4, 7)
    target = torch.zeros(2, 4, 7)
    target[1] = 0.5  # frame 1: every dim of every chunk step off by 0.5
    target[0, 0, 0] = 2.8  # frame 0: one value off by 2.8 -> mean 2.8 / 28
    per_frame = FineTuner._per_frame_loss(SimpleNamespace(parallel=True), SimpleNamespace(actions=actions),
                                          {"target_actions": target})
    sums, counts = np.zeros(2), np.zeros(2)
    _add_frame_losses(sums, counts, per_frame, [1, 0])
    assert sums.tolist() == pytest.approx([0.5, 0.1]) and counts.tolist() == [1.0, 1.0]


def test_exp3_updates_the_loader_every_k_steps_and_saves_the_trajectory(tmp_path):
    out = str(tmp_path / "run")
    tuner = FineTuner(_cfg(strategy="exp3"), out, loader=GroupedInMemoryLoader(), device="cpu")
    ckpt = tuner.train()
    history = tuner.mixing.history
    assert [r["step"] for r in history] == [0, 2, 4, 6]
    # the loader received exactly the controller's weights, once per update
    assert tuner.loader.set_calls == [r["weights"] for r in history[1:]]
    log = _log(out)
    assert [r["step"] for r in log if "mixture_weights" in r] == [2, 4, 6]
    # the update's per-group loss is the frame-weighted mean of the logged per-step group losses
    assert history[1]["group_loss"][GROUPS[0]] is not None
    for path in (os.path.join(out, TRAJECTORY_FILE), os.path.join(ckpt, TRAJECTORY_FILE)):
        assert read_trajectory(path) == history
    assert os.path.isfile(os.path.join(out, PLOT_FILE)) and os.path.isfile(os.path.join(ckpt, PLOT_FILE))
    with open(os.path.join(ckpt, SUMMARY_FILE)) as fh:
        summary = json.load(fh)
    assert summary["final_weights"] == history[-1]["weights"]
    assert summary["strategy_label"] == "exp3 a=0.9 K=2"


def test_doremi_resume_repeats_losses_and_weight_history(tmp_path):
    cfg = _cfg(strategy="doremi", dro_eta=5.0, lora_dropout=0.1)
    # reference = a saved run's per-group loss (no RLDS needed): a short static run logs group losses
    ref_run = str(tmp_path / "ref")
    FineTuner(_cfg(train_steps=4), ref_run, loader=GroupedInMemoryLoader(seed=9), device="cpu").train()
    ref_log = _log(ref_run)
    cfg = cfg.replace(dro_reference=ref_run)
    full = FineTuner(cfg, str(tmp_path / "full"), loader=GroupedInMemoryLoader(seed=5), save_every=2, device="cpu")
    expected_ref = [np.mean([r["group_loss"][g] for r in ref_log[-1:] if g in r["group_loss"]]) for g in GROUPS]
    np.testing.assert_allclose(full.mixing.reference, expected_ref, rtol=1e-9)  # last quarter of 4 steps = step 4
    full.train()
    resumed = FineTuner(cfg, str(tmp_path / "resumed"), loader=GroupedInMemoryLoader(seed=5), device="cpu",
                        resume_from=str(tmp_path / "full" / "step_000004"))  # fmt: skip
    assert [r["step"] for r in resumed.mixing.history] == [0, 2, 4]
    resumed.train()
    assert resumed.mixing.history == full.mixing.history
    full_log, resumed_log = _log(tmp_path / "full"), _log(tmp_path / "resumed")
    for a, b in zip(full_log[4:], resumed_log):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
        assert b["group_loss"] == pytest.approx(a["group_loss"], rel=1e-6)
    assert any(r["weights"] != full.mixing.history[0]["weights"] for r in full.mixing.history[1:])


def test_a_dynamic_strategy_needs_a_loader_with_groups(tmp_path):
    from test_train_finetune import InMemoryLoader

    with pytest.raises(ConfigError) as err:
        FineTuner(_cfg(strategy="exp3"), str(tmp_path / "x"), loader=InMemoryLoader(), device="cpu")
    assert err.value.field == "strategy"
