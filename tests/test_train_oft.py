"""OpenVLA-OFT fine-tuning (vlamix.train.finetune with action_head: l1_regression) on the tiny model: L1 loss over the
chunk, LoRA + head + projector trained, checkpoint round trip, exact resume. An in-memory stand-in replaces
MixtureLoader (the chunked RLDS loader has its own tests in test_data_chunks.py)."""

import json
import os

import numpy as np
import pytest
import torch

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.model.action_files import OURS
from vlamix.train.finetune import TRAIN_LOG_NAME, FineTuner
from vlamix.train.loss_weighting import weighted_frame_loss

SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"
_ACTION = {
    "mean": [0.0] * 7,
    "std": [0.5] * 7,
    "max": [1.0] * 7,
    "min": [-1.0] * 7,
    "mask": [True] * 6 + [False],
    "q01": [-0.9, -0.8, -0.7, -0.2, -0.3, -0.4, 0.0],
    "q99": [0.9, 0.8, 0.7, 0.2, 0.3, 0.4, 1.0],
}
_PROPRIO = {
    "mean": [0.0] * 8,
    "std": [1.0] * 8,
    "max": [1.0] * 8,
    "min": [-1.0] * 8,
    "q01": [-1.0] * 8,
    "q99": [1.0] * 8,
}
STATS = {name: {"action": _ACTION, "proprio": _PROPRIO, "num_transitions": 16, "num_trajectories": 2}
         for name in (SPATIAL, OBJECT)}  # fmt: skip
INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer"]
CHUNK = 8


class ChunkLoader:
    """Test-only stand-in for MixtureLoader(action_chunk=8, wrist_image=True, proprio=True): 8 fixed frames of a
    two-dataset mixture. ``order=None`` samples with a seeded generator, else cycles through the index lists."""

    dataset_statistics = STATS

    def __init__(self, batch_size=2, seed=0, order=None):
        g = np.random.default_rng(1234)
        n = 8
        self.frames = {
            "image": g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8),
            "wrist_image": g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8),
            "instruction": [INSTRUCTIONS[i % 2] for i in range(n)],
            "action": g.uniform(-1, 1, (n, CHUNK, 7)).astype(np.float32),
            "proprio": g.uniform(-1, 1, (n, 8)).astype(np.float32),
            "dataset_index": np.arange(n, dtype=np.int64) % 2,
        }
        self.batch_size, self.order, self.batches = batch_size, order, 0
        self.rng = np.random.default_rng(seed)

    def next_batch(self):
        if self.order is None:
            idx = self.rng.integers(0, 8, self.batch_size)
        else:
            idx = np.asarray(self.order[self.batches % len(self.order)])
        self.batches += 1
        return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in self.frames.items()}

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "batches": self.batches}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.batches = state["batches"]


def _cfg(**changes):
    values = {"mixture": {SPATIAL: 1, OBJECT: 1}, "model": "tiny-p28", "action_head": "l1_regression",
              "action_chunk": CHUNK, "use_wrist_image": True, "use_proprio": True, "train_steps": 6, "batch_size": 2,
              "lora_rank": 8, "lora_alpha": 16, "learning_rate": 2e-3, "seed": 3}  # fmt: skip
    values.update(changes)
    return checked(values)


def _log(out_dir):
    with open(os.path.join(out_dir, TRAIN_LOG_NAME), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _chunk_inputs(processor, batch):
    return processor.chunk_training_batch(
        batch["image"],
        batch["instruction"],
        batch["action"],
        wrist_images=batch["wrist_image"],
        proprio=batch["proprio"],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """6 steps on one fixed batch of 2 frames (one of each dataset)."""
    out = tmp_path_factory.mktemp("oft_run")
    tuner = FineTuner(_cfg(), str(out), loader=ChunkLoader(order=[[0, 1]]), device="cpu")
    frozen = {n: p.detach().clone() for n, p in tuner.model.named_parameters() if not p.requires_grad}
    start = _trainable(tuner.model)
    ckpt = tuner.train()
    return tuner, ckpt, str(out), frozen, start


def test_l1_training_lowers_the_chunk_loss_and_trains_lora_head_and_projector(trained):
    tuner, ckpt, out, frozen, start = trained
    log = _log(out)
    losses = [r["loss"] for r in log]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert losses[-1] < 0.7 * losses[0], losses
    first = log[0]
    assert first["action_accuracy"] is None and first["l1_loss"] == first["loss"]
    # the logged split of the loss: step 0 (1 of 8 actions) and steps 1..7
    assert first["loss"] == pytest.approx(
        (first["curr_action_l1_loss"] + 7 * first["next_actions_l1_loss"]) / 8, rel=1e-5
    )
    for name, p in tuner.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[name]), name
    moved = {n for n, w in _trainable(tuner.model).items() if not torch.equal(w, start[n])}
    assert any("action_head.model.fc1" in n for n in moved) and any("proprio_projector.fc1" in n for n in moved)
    assert any("lora_" in n for n in moved)
    assert all("lora_" in n or "action_head" in n or "proprio_projector" in n for n in start)


def test_checkpoint_round_trip_gives_the_trained_actions(trained):
    from vlamix.model.checkpoint import load_vla

    tuner, ckpt, _, _, _ = trained
    for name in (
        OURS["action_head"],
        OURS["proprio_projector"],
        "lora_adapter/adapter_model.safetensors",
        "config.json",
    ):
        assert os.path.isfile(os.path.join(ckpt, name)), name
    batch = ChunkLoader(order=[[2, 3]]).next_batch()
    inputs = _chunk_inputs(tuner.processor, batch)
    inputs.pop("target_actions")
    tuner.model.eval()
    loaded, processor = load_vla(ckpt)
    assert loaded.config.action_recipe()["action_chunk"] == CHUNK and loaded.norm_stats == STATS
    loaded_inputs = _chunk_inputs(processor, batch)
    loaded_inputs.pop("target_actions")
    with torch.no_grad():
        trained_actions = tuner.model(**inputs).actions
        loaded_actions = loaded(**loaded_inputs).actions
        base_actions = load_vla("tiny-p28", recipe=loaded.config.action_recipe())[0](**inputs).actions
    torch.testing.assert_close(loaded_actions, trained_actions, rtol=0, atol=0)
    assert loaded_actions.shape == (2, CHUNK, 7)
    assert (loaded_actions - base_actions).abs().max() > 1e-3  # training changed the policy


def test_resume_continues_with_identical_losses_and_head(tmp_path):
    cfg = _cfg(train_steps=4, lora_dropout=0.1)
    full = FineTuner(cfg, str(tmp_path / "full"), loader=ChunkLoader(seed=5), save_every=2, device="cpu")
    full.train()
    resumed = FineTuner(cfg, str(tmp_path / "resumed"), loader=ChunkLoader(seed=5), device="cpu",
                        resume_from=str(tmp_path / "full" / "step_000002"))  # fmt: skip
    assert resumed.step == 2
    resumed.train()
    full_log, resumed_log = _log(tmp_path / "full"), _log(tmp_path / "resumed")
    assert [r["step"] for r in resumed_log] == [3, 4]
    for a, b in zip(full_log[2:], resumed_log):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
    w_full, w_resumed = _trainable(full.model), _trainable(resumed.model)
    assert any("action_head" in n for n in w_full)
    for name, w in w_full.items():
        torch.testing.assert_close(w_resumed[name], w, rtol=1e-6, atol=1e-7)


def test_the_recipe_fields_are_checked_before_work():
    with pytest.raises(ConfigError) as info:
        checked({"mixture": {SPATIAL: 1}, "action_chunk": 8})
    assert info.value.field == "action_chunk" and "l1_regression" in str(info.value)
    with pytest.raises(ConfigError) as info:
        checked({"mixture": {SPATIAL: 1}, "use_proprio": True})
    assert info.value.field == "use_proprio"
    with pytest.raises(ConfigError) as info:
        checked({"mixture": {SPATIAL: 1}, "action_head": "diffusion"})
    assert info.value.field == "action_head" and "tokens, l1_regression" in str(info.value)
    with pytest.raises(ConfigError) as info:
        _cfg(open_loop_steps=9)
    assert info.value.field == "open_loop_steps" and "1..8" in str(info.value)
    assert _cfg().resolved_open_loop_steps() == 8 and _cfg(open_loop_steps=4).resolved_open_loop_steps() == 4


def test_a_loader_without_the_inputs_the_model_reads_is_refused(tmp_path):
    class NoWrist(ChunkLoader):
        def next_batch(self):
            batch = super().next_batch()
            batch.pop("wrist_image")
            return batch

    tuner = FineTuner(_cfg(train_steps=1), str(tmp_path), loader=NoWrist(), device="cpu")
    assert tuner.loader_options() == {"action_chunk": CHUNK, "wrist_image": True, "proprio": True}
    with pytest.raises(ValueError, match="wrist_image"):
        tuner.forward_backward()


def test_weighted_frame_loss_weights_each_frame_by_its_group():
    per_frame = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    group = [0, 1, 1, 0]
    assert weighted_frame_loss(per_frame, group, [1.0, 1.0]).item() == pytest.approx(0.25)
    loss = weighted_frame_loss(per_frame, group, [2.0, 0.0])
    assert loss.item() == pytest.approx((2 * 0.1 + 2 * 0.4) / 4)
    loss.backward()
    assert per_frame.grad.tolist() == pytest.approx([0.5, 0.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="outside"):
        weighted_frame_loss(per_frame, [0, 1, 2, 0], [1.0, 1.0])


def test_offline_metrics_of_an_oft_checkpoint_are_the_unnormalised_l1_over_whole_chunks(trained):
    from vlamix.eval.offline import offline_metrics
    from vlamix.model.checkpoint import load_vla

    _, ckpt, _, _, _ = trained
    source = ChunkLoader(order=[[2, 3], [4, 6]])
    batches = [source.next_batch() for _ in range(2)]  # frames 2, 3 (one per dataset), then 4, 6 (SPATIAL)
    got = offline_metrics(ckpt, precision="fp32", loader=batches, dataset_names=[SPATIAL, OBJECT],
                          dataset_statistics=STATS, device="cpu")
    model, processor = load_vla(ckpt)
    q01, q99 = np.array(_ACTION["q01"]), np.array(_ACTION["q99"])
    mask = np.array(_ACTION["mask"])

    def unnorm(a):  # OFT's _unnormalize_actions, the gripper passed through
        return np.where(mask, 0.5 * (a + 1) * (q99 - q01 + 1e-8) + q01, a)

    errors = {SPATIAL: [], OBJECT: []}
    for batch in batches:
        with torch.no_grad():
            pred = model(**_chunk_inputs(processor, batch)).actions.numpy().astype(np.float64)
        for row, d in enumerate(batch["dataset_index"]):
            errors[[SPATIAL, OBJECT][d]].append(np.abs(unnorm(pred[row]) - unnorm(batch["action"][row])))
    assert got["n_frames"] == 4 and np.isnan(got["action_token_accuracy"])
    assert got["action_l1"] == pytest.approx(np.mean(errors[SPATIAL] + errors[OBJECT]), rel=1e-5)
    assert got["per_dataset"][SPATIAL]["n_frames"] == 3
    assert got["per_dataset"][OBJECT]["action_l1"] == pytest.approx(np.mean(errors[OBJECT]), rel=1e-5)
