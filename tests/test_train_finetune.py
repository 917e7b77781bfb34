"""LoRA fine-tuning loop (vlamix.train.finetune) on the tiny model with an in-memory batch stream.

The stand-in loader replaces MixtureLoader (no RLDS / TensorFlow here); the model, processor, LoRA
and checkpoint code are the real ones.
"""

import json
import os

import numpy as np
import pytest
import torch

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.pipeline.config import BenchConfig
from vlamix.train.finetune import BENCH_CONFIG_NAME, MERGED_DIR, TRAIN_LOG_NAME, FineTuner

STATS = {
    "libero_spatial_no_noops": {
        "action": {
            "mean": [0.0] * 7, "std": [0.5] * 7, "max": [1.0] * 7, "min": [-1.0] * 7,
            "q01": [-0.9, -0.8, -0.7, -0.2, -0.3, -0.4, 0.0], "q99": [0.9, 0.8, 0.7, 0.2, 0.3, 0.4, 1.0],
            "mask": [True] * 6 + [False],
        },
        "proprio": {"mean": [0.0] * 8, "std": [1.0] * 8, "max": [1.0] * 8, "min": [-1.0] * 8,
                    "q01": [-1.0] * 8, "q99": [1.0] * 8},
        "num_transitions": 16, "num_trajectories": 2,
    }
}  # fmt: skip
INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the top drawer"]


def _frames(n: int = 8, seed: int = 1234):
    g = np.random.default_rng(seed)
    return {
        "image": g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8),
        "instruction": [INSTRUCTIONS[i % 2] for i in range(n)],
        "action": g.uniform(-1, 1, (n, 7)).astype(np.float32),
        "dataset_index": np.zeros(n, np.int64),
    }


class InMemoryLoader:
    """Test-only stand-in for MixtureLoader over 8 fixed frames.

    ``order=None``: each batch samples frames with a seeded generator (the position in the stream is
    the generator state); ``order=[idx, ...]``: batches cycle through the given index lists.
    """

    dataset_statistics = STATS

    def __init__(self, batch_size: int = 2, seed: int = 0, order=None):
        self.frames = _frames()
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = order
        self.batches = 0

    def next_batch(self):
        if self.order is None:
            idx = self.rng.integers(0, len(self.frames["action"]), self.batch_size)
        else:
            idx = np.asarray(self.order[self.batches % len(self.order)])
        self.batches += 1
        return {
            "image": self.frames["image"][idx],
            "instruction": [self.frames["instruction"][i] for i in idx],
            "action": self.frames["action"][idx],
            "dataset_index": self.frames["dataset_index"][idx],
        }

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "batches": self.batches}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.batches = state["batches"]


def _cfg(**changes) -> BenchConfig:
    values = {"mixture": {"libero_spatial_no_noops": 1}, "train_steps": 6, "batch_size": 2, "lora_rank": 8,
              "lora_alpha": 16, "learning_rate": 2e-3, "seed": 3}  # fmt: skip
    values.update(changes)
    return checked(values)


def _log(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, TRAIN_LOG_NAME), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """6 LoRA steps on one fixed batch of 2 frames (frames 0 and 1)."""
    out = tmp_path_factory.mktemp("run")
    tuner = FineTuner(_cfg(), str(out), loader=InMemoryLoader(order=[[0, 1]]), device="cpu")
    base = {n: p.detach().clone() for n, p in tuner.model.named_parameters() if not p.requires_grad}
    ckpt = tuner.train()
    return tuner, ckpt, str(out), base


def test_lora_training_lowers_the_loss_on_a_fixed_batch(trained):
    tuner, ckpt, out, base = trained
    log = _log(out)
    assert [r["step"] for r in log] == list(range(1, 7))
    losses = [r["loss"] for r in log]
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(np.isfinite(losses))
    assert log[-1]["lr"] == pytest.approx(2e-3)
    assert log[-1]["frames"] == 12
    assert 0.0 <= log[-1]["action_accuracy"] <= 1.0 and log[-1]["l1_loss"] >= 0.0
    # Only the LoRA parameters moved; the base weights are frozen.
    for name, p in tuner.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base[name]), name
    assert all("lora_" in n for n in _trainable(tuner.model))
    assert ckpt == os.path.join(out, "step_000006")


def test_checkpoint_folder_contents_and_load_vla_round_trip(trained):
    from vlamix.model.checkpoint import load_vla

    tuner, ckpt, _, _ = trained
    for name in ("config.json", "dataset_statistics.json", "tokenizer.json", BENCH_CONFIG_NAME, "training_state.pt",
                 "lora_adapter/adapter_config.json", "lora_adapter/adapter_model.safetensors"):
        assert os.path.isfile(os.path.join(ckpt, name)), name
    with open(os.path.join(ckpt, "dataset_statistics.json"), encoding="utf-8") as f:
        assert json.load(f) == STATS
    with open(os.path.join(ckpt, BENCH_CONFIG_NAME), encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(_cfg().to_dict()))
    with open(os.path.join(ckpt, "lora_adapter", "adapter_config.json"), encoding="utf-8") as f:
        assert json.load(f)["r"] == 8
    state = torch.load(os.path.join(ckpt, "training_state.pt"), weights_only=True)
    assert state["step"] == 6 and state["data"] == [tuner.loader.state_dict()]

    batch = InMemoryLoader(order=[[2, 3]]).next_batch()
    inputs = tuner.processor.training_batch(batch["image"], batch["instruction"], batch["action"])
    tuner.model.eval()
    with torch.no_grad():
        trained_logits = tuner.model(**inputs).logits
        loaded, processor = load_vla(ckpt)
        assert loaded.norm_stats == STATS
        loaded_inputs = processor.training_batch(batch["image"], batch["instruction"], batch["action"])
        assert all(torch.equal(inputs[k], loaded_inputs[k]) for k in inputs)
        loaded_logits = loaded(**loaded_inputs).logits
        base_logits = load_vla("tiny")[0](**inputs).logits
    torch.testing.assert_close(loaded_logits, trained_logits, rtol=0, atol=0)
    assert (loaded_logits - base_logits).abs().max() > 1e-3  # the adapter is not a no-op

    # save_merged: a plain model with LoRA folded in, same outputs up to float rounding.
    tuner.save_merged = True
    tuner.save_checkpoint(final=True)
    merged, _ = load_vla(os.path.join(ckpt, MERGED_DIR))
    assert not any("lora_" in k for k in merged.state_dict())
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
    torch.testing.assert_close(merged_logits, trained_logits, rtol=1e-4, atol=1e-4)


def test_resume_continues_with_identical_losses(tmp_path):
    # LoRA dropout and a sampled batch stream: the continuation needs the RNG, data and optimizer state.
    cfg = _cfg(train_steps=4, lora_dropout=0.1)
    full = FineTuner(cfg, str(tmp_path / "full"), loader=InMemoryLoader(seed=5), save_every=2, device="cpu")
    full.train()
    resumed = FineTuner(cfg, str(tmp_path / "resumed"), loader=InMemoryLoader(seed=5), device="cpu",
                        resume_from=str(tmp_path / "full" / "step_000002"))  # fmt: skip
    assert resumed.step == 2 and resumed.loader.batches == 2
    resumed.train()
    full_log, resumed_log = _log(tmp_path / "full"), _log(tmp_path / "resumed")
    assert [r["step"] for r in resumed_log] == [3, 4]
    for a, b in zip(full_log[2:], resumed_log):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
        assert b["action_accuracy"] == a["action_accuracy"]
    assert full_log[3]["loss"] != full_log[2]["loss"]
    w_full, w_resumed = _trainable(full.model), _trainable(resumed.model)
    for name, w in w_full.items():
        torch.testing.assert_close(w_resumed[name], w, rtol=1e-6, atol=1e-7)


def test_resume_rejects_a_changed_training_field(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / BENCH_CONFIG_NAME).write_text(json.dumps(_cfg().to_dict()))
    with pytest.raises(ConfigError, match="lora_rank"):
        FineTuner(_cfg(lora_rank=4), str(tmp_path / "out"), loader=InMemoryLoader(), resume_from=str(ckpt), device="cpu")


def test_grad_accumulation_of_two_micro_batches_equals_one_double_batch(tmp_path):
    frames = [0, 1, 2, 3]  # mixed instruction lengths: the padding differs between the two layouts
    one = FineTuner(_cfg(batch_size=4), str(tmp_path / "a"), loader=InMemoryLoader(4, order=[frames]), device="cpu")
    two = FineTuner(_cfg(batch_size=2, grad_accumulation_steps=2), str(tmp_path / "b"),
                    loader=InMemoryLoader(2, order=[frames[:2], frames[2:]]), device="cpu")  # fmt: skip
    w_one, w_two = _trainable(one.model), _trainable(two.model)
    assert all(torch.equal(w_one[n], w_two[n]) for n in w_one)  # same seed -> same LoRA init
    m_one, m_two = one.forward_backward(), two.forward_backward()
    assert m_two["loss"] == pytest.approx(m_one["loss"], rel=1e-5)
    # LoRA layers of unused modules (the towers' last block, SigLIP's attention pool) get no gradient.
    grads_one = {n: p.grad for n, p in one.model.named_parameters() if p.requires_grad and p.grad is not None}
    grads_two = {n: p.grad for n, p in two.model.named_parameters() if p.requires_grad and p.grad is not None}
    assert grads_one.keys() == grads_two.keys() and len(grads_one) > 0
    scale = max(float(g.abs().max()) for g in grads_one.values())
    assert scale > 0
    for name, g in grads_one.items():  # float32 sums in another order: tolerance relative to the largest gradient
        torch.testing.assert_close(grads_two[name], g, rtol=1e-4, atol=1e-5 * scale)


def test_load_config_file_reads_yaml_with_overrides(tmp_path):
    path = tmp_path / "point.yaml"
    path.write_text("mixture: {libero_spatial_no_noops: 2, libero_object_no_noops: 1}\ntrain_steps: 5\n")
    cfg = BenchConfig.from_file(str(path), {"lora_rank": 4})
    assert cfg.data.mixture == {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1}
    assert (cfg.train.train_steps, cfg.model.lora_rank) == (5, 4)
    path.write_text("mixture: {libero_spatial_no_noops: 1}\nlora_rnak: 4\n")
    with pytest.raises(ConfigError, match="lora_rnak"):
        BenchConfig.from_file(str(path))


def test_gradient_checkpointing_keeps_gradients_and_bf16_autocast_keeps_the_loss(tmp_path):
    def run(**changes):
        name = "_".join(f"{k}-{v}" for k, v in changes.items()) or "reference"
        tuner = FineTuner(_cfg(batch_size=2, **changes), str(tmp_path / name),
                          loader=InMemoryLoader(2, order=[[0, 1]]), device="cpu")  # fmt: skip
        metrics = tuner.forward_backward()
        grads = {n: p.grad.clone() for n, p in tuner.model.named_parameters() if p.grad is not None}
        return tuner, metrics, grads

    _, ref_metrics, ref_grads = run()
    gc_tuner, gc_metrics, gc_grads = run(gradient_checkpointing=True)
    assert gc_tuner.model.get_base_model().is_gradient_checkpointing
    assert gc_metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=1e-6)
    assert gc_grads.keys() == ref_grads.keys()
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    for name, g in ref_grads.items():
        torch.testing.assert_close(gc_grads[name], g, rtol=1e-4, atol=1e-5 * scale)

    bf16_tuner, bf16_metrics, _ = run(precision="bf16")
    frozen = {p.dtype for p in bf16_tuner.model.parameters() if not p.requires_grad}
    lora = {p.dtype for p in bf16_tuner.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and lora == {torch.float32}
    assert bf16_metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=0.03)


def test_action_token_metrics_on_hand_made_logits():
    from vlamix.model.action_tokenizer import ActionTokenizer
    from vlamix.train.metrics import action_token_metrics

    tok = ActionTokenizer()
    targets = torch.tensor([31744, 31999, 31800, 100])  # the last is no action token: not counted
    preds = torch.tensor([31744, 31998, 31700, 100])  # right, one bin off, a text id (decodes to the top bin)
    logits = torch.full((4, 32064), -5.0)
    logits[torch.arange(4), preds] = 5.0
    m = action_token_metrics(logits, targets, tok)
    assert m.n_tokens == 3
    assert m.accuracy == pytest.approx(1 / 3)
    # bin width 2/255: 0 bins, 1 bin, and 31800 (bin 199) vs the clipped top bin 254: 55 bins
    assert m.l1 == pytest.approx((0 + 1 + 55) * (2 / 255) / 3)


def test_labeled_rows_of_full_logits_match_the_labeled_logits(trained):
    from vlamix.train.metrics import labeled_rows

    tuner = trained[0]
    batch = InMemoryLoader(order=[[4, 5]]).next_batch()
    inputs = tuner.processor.training_batch(batch["image"], batch["instruction"], batch["action"])
    with torch.no_grad():
        full = tuner.model(**inputs, logits="all")
        labeled = tuner.model(**inputs, logits="labeled")
    rows, targets = labeled_rows(full.logits, inputs["labels"])
    assert targets.shape == (14,) and torch.equal(targets, labeled.targets)
    torch.testing.assert_close(rows, labeled.logits, rtol=1e-5, atol=1e-5)
