"""The tiny preset (embedded CPU default): determinism, batched decoding, checkpoints, LoRA."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlamix.core.constants import IGNORE_INDEX
from vlamix.model.checkpoint import load_vla, save_vla
from vlamix.model.lora import apply_lora, lora_target_modules, merge_lora

NORM_STATS = {
    "libero_spatial_no_noops": {"action": {"q01": [-0.5] * 6 + [0.0], "q99": [0.5] * 6 + [1.0], "mask": [True] * 6 + [False]}},
    "libero_goal_no_noops": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "mask": [True] * 6 + [False]}},
}
INSTRUCTIONS = ["pick up the black bowl between the plate and the ramekin and place it on the plate", "open the microwave"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, processor = load_vla("tiny")
    return model, processor


def _two_images():
    dark = np.zeros((224, 224, 3), np.uint8)
    dark[40:120, 40:160] = [220, 20, 20]  # red rectangle on black
    light = np.full((224, 224, 3), 235, np.uint8)
    yy, xx = np.mgrid[:224, :224]
    light[(yy - 150) ** 2 + (xx - 100) ** 2 < 40**2] = [20, 20, 220]  # blue disk on white
    return np.stack([dark, light])


def _batch(processor, seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (2, 7)).astype(np.float32)
    return processor.training_batch(_two_images(), INSTRUCTIONS, actions)


def test_tiny_is_deterministic_and_sized(tiny):
    model, _ = tiny
    again, _ = load_vla("tiny")
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert model.config.text_config.vocab_size == 32064 and model.config.action_vocab_size == 32000
    assert model.vision_backbone.featurizer.embed_dim == 64 and len(model.vision_backbone.featurizer.blocks) == 3
    assert 4_000_000 < sum(p.numel() for p in model.parameters()) < 6_000_000


def test_different_images_give_different_action_tokens(tiny):
    model, processor = tiny
    inputs = processor.inference_inputs(_two_images(), [INSTRUCTIONS[1]] * 2)
    ids = model.predict_action_ids(**inputs)
    assert ids.shape == (2, 7) and ids.dtype == torch.int64
    assert ((ids >= 31744) & (ids <= 31999)).all()  # the untrained tiny model already emits action tokens
    assert (ids[0] != ids[1]).sum() >= 4


def test_batched_left_padded_predict_equals_per_sample(tiny):
    model, processor = tiny
    images = _two_images()
    batch = processor.inference_inputs(images, INSTRUCTIONS)
    assert (batch["attention_mask"][1] == 0).any()  # the shorter prompt is left-padded
    ids, logits = model.predict_action_ids(**batch, return_logits=True)
    for i in range(2):
        single = processor.inference_inputs(images[i : i + 1], INSTRUCTIONS[i : i + 1])
        ids_i, logits_i = model.predict_action_ids(**single, return_logits=True)
        assert torch.equal(ids[i], ids_i[0])
        torch.testing.assert_close(logits[i], logits_i[0], atol=1e-4, rtol=1e-4)
    # Step 1 of decoding equals the teacher-forced forward at the last prompt position.
    with torch.no_grad():
        last = model(**processor.inference_inputs(images[:1], INSTRUCTIONS[:1]), logits="last").logits[0, -1]
    torch.testing.assert_close(logits[0, 0], last, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="LEFT-padded"):
        right = processor.training_batch(images, INSTRUCTIONS, np.zeros((2, 7), np.float32))
        model.predict_action_ids(right["pixel_values"], right["input_ids"], right["attention_mask"])


def test_loss_only_on_labels_and_labeled_logits_mode(tiny):
    model, processor = tiny
    batch = _batch(processor)
    with torch.no_grad():
        full = model(**batch)
        labeled = model(**batch, logits="labeled")
        none = model(**batch, logits="none")
    assert full.logits.shape == (2, 1 + 256 + batch["input_ids"].shape[1] - 1, 32064)
    # Reference loss from the full logits, shifted, with the 256 patch positions inserted after BOS.
    labels = torch.cat([batch["labels"][:, :1], torch.full((2, 256), IGNORE_INDEX), batch["labels"][:, 1:]], dim=1)
    reference = F.cross_entropy(full.logits[:, :-1].reshape(-1, 32064), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(full.loss, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(labeled.loss, full.loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(none.loss, full.loss, atol=1e-6, rtol=1e-6)
    assert none.logits is None
    assert labeled.logits.shape == (14, 32064) and labeled.targets.tolist() == batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()
    assert (batch["labels"] != IGNORE_INDEX).sum() == 14


def test_predict_action_unnormalises_and_checks_key(tiny):
    model, processor = tiny
    inputs = processor.inference_inputs(_two_images(), INSTRUCTIONS)
    model.norm_stats = NORM_STATS
    try:
        ids = model.predict_action_ids(**inputs)
        normalized = model.action_tokenizer.decode(ids.numpy())
        actions = model.predict_action(**inputs, unnorm_key="libero_spatial_no_noops")
        np.testing.assert_allclose(actions[:, :6], 0.5 * normalized[:, :6])  # q01 = -0.5, q99 = 0.5
        np.testing.assert_allclose(actions[:, 6], normalized[:, 6])
        with pytest.raises(KeyError, match="available: libero_goal_no_noops, libero_spatial_no_noops"):
            model.predict_action(**inputs, unnorm_key="libero_10_no_noops")
        with pytest.raises(KeyError, match="several datasets.*libero_goal_no_noops, libero_spatial_no_noops"):
            model.predict_action(**inputs)
    finally:
        model.norm_stats = None
    with pytest.raises(KeyError, match="no norm stats"):
        model.predict_action(**inputs)


def test_save_load_identical_outputs(tiny, tmp_path):
    model, processor = tiny
    batch = _batch(processor)
    out_dir = save_vla(model, processor, str(tmp_path / "ckpt"), norm_stats=NORM_STATS, max_shard_bytes=4_000_000)
    model.norm_stats = None
    files = sorted(os.listdir(out_dir))
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert sum(f.startswith("model-0000") for f in files) == 3  # two 8.2 MB vocabulary matrices + the rest
    assert {"config.json", "dataset_statistics.json", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    with open(os.path.join(out_dir, "dataset_statistics.json")) as f:
        assert json.load(f) == NORM_STATS
    loaded, loaded_processor = load_vla(out_dir)
    assert loaded.norm_stats == NORM_STATS
    with torch.no_grad():
        expected = model(**batch).logits
        got = loaded(**batch).logits
    assert torch.equal(got, expected)
    assert loaded_processor.prompt_ids(INSTRUCTIONS[0]) == processor.prompt_ids(INSTRUCTIONS[0])
    reloaded_batch = loaded_processor.training_batch(_two_images(), INSTRUCTIONS, np.zeros((2, 7), np.float32))
    assert torch.equal(reloaded_batch["pixel_values"], batch["pixel_values"])


def test_lora_targets_all_linear_but_lm_head(tiny):
    model, _ = tiny
    targets = lora_target_modules(model)
    assert "language_model.lm_head" not in targets
    for name in ("projector.fc1", "projector.fc3", "language_model.model.layers.0.self_attn.q_proj",
                 "language_model.model.layers.1.mlp.down_proj", "vision_backbone.featurizer.blocks.0.attn.qkv",
                 "vision_backbone.fused_featurizer.attn_pool.kv"):
        assert name in targets
    assert not any("patch_embed" in t for t in targets)  # a Conv2d, not linear


def test_lora_training_merge_and_adapter_checkpoints(tmp_path):
    torch.manual_seed(0)
    model, processor = load_vla("tiny")
    batch = _batch(processor, seed=1)
    with torch.no_grad():
        base_loss = model(**batch, logits="none").loss.item()
    peft_model = apply_lora(model, rank=8, alpha=16)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # gaussian A, zero B: the adapter starts as a no-op
        assert peft_model(**batch, logits="none").loss.item() == pytest.approx(base_loss, abs=1e-6)

    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    losses = []
    for _ in range(6):
        loss = peft_model(**batch, logits="none").loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    peft_model.eval()

    # Perturb every LoRA B so that the adapter is far from a no-op, then compare merged vs unmerged
    # (logits at the 14 positions that predict the action tokens, and the loss).
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
        unmerged = peft_model(**batch, logits="labeled")
        with peft_model.disable_adapter():
            base_only = peft_model(**batch, logits="labeled")
    assert (unmerged.logits - base_only.logits).abs().max() > 1e-2

    # Adapter checkpoints: with the base weights, and with only a reference to the "tiny" base.
    full_dir = save_vla(peft_model, processor, str(tmp_path / "full"))
    ref_dir = save_vla(peft_model, processor, str(tmp_path / "ref"), base_model="tiny")
    assert os.path.isdir(os.path.join(full_dir, "lora_adapter")) and not os.path.exists(
        os.path.join(ref_dir, "model.safetensors")
    )
    for folder in (full_dir, ref_dir):
        loaded, _ = load_vla(folder)
        with torch.no_grad():
            assert torch.equal(loaded(**batch, logits="labeled").logits, unmerged.logits)
    merged_loaded, _ = load_vla(full_dir, merge_adapter=True)
    merged = merge_lora(peft_model)
    assert type(merged).__name__ == "OpenVLAForActionPrediction"
    assert not any("lora_" in k for k in merged.state_dict())
    with torch.no_grad():
        for candidate in (merged, merged_loaded):
            out = candidate(**batch, logits="labeled")
            torch.testing.assert_close(out.logits, unmerged.logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out.loss, unmerged.loss, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_same_loss_and_grads():
    torch.manual_seed(0)
    model, processor = load_vla("tiny")
    batch = _batch(processor, seed=2)
    peft_model = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.train()
    grads = []
    for enabled in (False, True):
        if enabled:
            model.gradient_checkpointing_enable()
        loss = peft_model(**batch, logits="none").loss
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.grad is not None}))
        peft_model.zero_grad()
    assert model.is_gradient_checkpointing
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    assert grads[0][1].keys() == grads[1][1].keys() and len(grads[0][1]) > 0
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, atol=1e-5, rtol=1e-4)


def test_bf16_model_runs():
    model, processor = load_vla("tiny", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    batch = _batch(processor)
    with torch.no_grad():
        loss = model(**batch, logits="none").loss
        ids = model.predict_action_ids(**processor.inference_inputs(_two_images(), INSTRUCTIONS))
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert ids.shape == (2, 7)


def test_tiny_p28_preset_has_64_vision_tokens_and_round_trips(tmp_path):
    """``tiny-p28``: the tiny preset with 28 px patches (docs/LEARNABILITY.md), saved and reloaded by name."""
    model, processor = load_vla("tiny-p28")
    assert model.num_patches == 64 and model.vision_backbone.featurizer.embed_dim == 64
    inputs = processor.inference_inputs(_two_images(), [INSTRUCTIONS[1]] * 2)
    ids = model.predict_action_ids(**inputs)
    assert ids.shape == (2, 7) and ((ids >= 31744) & (ids <= 31999)).all()
    save_vla(model, processor, str(tmp_path / "p28"))
    again, _ = load_vla(str(tmp_path / "p28"))
    assert again.num_patches == 64
    assert torch.equal(again.predict_action_ids(**inputs), ids)
