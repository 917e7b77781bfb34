"""A LoRA checkpoint that refers to a base-model folder instead of copying its weights."""

import json
import os

import pytest
import torch

from vlamix.model.checkpoint import load_vla, save_vla
from vlamix.model.lora import apply_lora


def _perturbed_lora(model):
    model = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    return model


def test_base_model_reference_is_relative_with_absolute_fallback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base, processor = load_vla("tiny")
    save_vla(base, processor, "models/base")  # a plain (non-LoRA) folder, like an OpenVLA download
    model, processor = load_vla("models/base")
    model = _perturbed_lora(model)
    save_vla(model, processor, "ckpt", base_model="models/base")

    meta = json.loads((tmp_path / "ckpt" / "vlamix_checkpoint.json").read_text())
    assert meta["base_model"] == "models/base"  # as configured, not this machine's absolute path
    assert not any(f.endswith(".safetensors") for f in os.listdir(tmp_path / "ckpt"))

    images = torch.zeros(1, 224, 224, 3, dtype=torch.uint8).numpy()
    inputs = processor.inference_inputs(images, ["pick up the bowl"])
    expected = model.predict_action_ids(**inputs)
    with torch.no_grad():
        lora_logits = model(**inputs, logits="last").logits
        base_logits = base(**inputs, logits="last").logits
    assert (lora_logits - base_logits).abs().max() > 1e-3  # the adapter matters

    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the relative path no longer resolves: the recorded absolute path does
    loaded, _ = load_vla(str(tmp_path / "ckpt"))
    assert torch.equal(loaded.predict_action_ids(**inputs), expected)
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs, logits="last").logits, lora_logits, atol=1e-5)

    (tmp_path / "models" / "base").rename(tmp_path / "models" / "moved")
    with pytest.raises(FileNotFoundError, match="base model of LoRA checkpoint"):
        load_vla(str(tmp_path / "ckpt"))
