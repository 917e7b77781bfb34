"""A point that cannot fit the machine's memory is refused before any work, with the estimate."""

import json

import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.pipeline.checks import check_memory
from vlamix.model.configuration import VLAConfig
from vlamix.model.memory import GIB, estimate_policy, estimate_training, model_shape

SPATIAL = "libero_spatial_no_noops"


@pytest.fixture(scope="module")
def folder_7b(tmp_path_factory):
    """An OpenVLA-7B folder as far as the checks read it: config.json and tokenizer files (no weights)."""
    folder = tmp_path_factory.mktemp("openvla-7b")
    (folder / "config.json").write_text(VLAConfig.openvla_7b().to_json_string(use_diff=False))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    return str(folder)


@pytest.fixture(autouse=True)
def machine_24gb(monkeypatch):
    """Validation sees a 24 GiB machine, whatever runs beside the tests."""
    monkeypatch.setattr("vlamix.pipeline.checks.available_bytes", lambda device: 24 * GIB)


def _cfg(model, **kw):
    return checked({"mixture": {SPATIAL: 1}, "model": model, "demos": "scripted", **kw})


def test_the_shape_of_openvla_7b_is_counted_exactly(folder_7b):
    shape = model_shape(folder_7b)
    assert shape.n_params == 7_541_237_184  # official OpenVLA-7B (the state-dict manifest's total)
    assert 32 * shape.n_lora_per_rank == 109_563_904  # LoRA rank 32 on every linear layer but lm_head
    assert shape.llm == (32, 4096, 32) and shape.vision_tokens == 256
    assert [t[:3] for t in shape.towers] == [(24, 1024, 16), (27, 1152, 16)]  # DINOv2-L/14, SigLIP-So400m/14


def test_the_estimate_matches_the_measured_and_published_figures(folder_7b):
    shape = model_shape(folder_7b)

    def train(batch, ckpt, device, precision="bf16"):
        return estimate_training(shape, precision=precision, finetune_mode="lora", lora_rank=32, batch_size=batch,
                                 gradient_checkpointing=ckpt, device=device).total / GIB

    # openvla README: LoRA at batch 16 without checkpointing needs about 72 GB (67 GiB)
    assert 62 <= train(16, False, "cuda") <= 75
    # measured on this CPU (issue 27): 16.4 GB peak for one LoRA step at batch 1 with checkpointing
    assert 15.3 <= train(1, True, "cpu") <= 19.5
    assert train(1, True, "cpu", "fp32") > train(1, True, "cpu") + 13  # fp32 weights: 30 GB
    assert train(16, True, "cuda") < train(16, False, "cuda") / 2
    policy = estimate_policy(shape, dtype="bf16", batch=16, device="cuda").total / GIB
    assert 15 <= policy <= 22


def test_fp32_7b_is_refused_before_work_naming_precision_and_the_estimate(folder_7b):
    """check_memory of variants of a valid point (dataclasses.replace skips the validation that would refuse them)."""
    small = {"cpu": 24 * GIB}
    ok = _cfg(folder_7b, precision="bf16", gradient_checkpointing=True, batch_size=1, eval_dtype="bf16", eval_workers=2,
              eval_suites=["libero_spatial"])
    training, rollouts = check_memory(ok, available=small)
    assert training.total < 24 * GIB and rollouts.total < 24 * GIB
    with pytest.raises(ConfigError) as err:
        check_memory(_unchecked(ok, precision="fp32"), available=small)
    assert err.value.field == "precision" and "GiB" in str(err.value) and "precision bf16" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_memory(_unchecked(ok, eval_dtype="fp32"), available=small)
    assert err.value.field == "eval_dtype"
    with pytest.raises(ConfigError) as err:
        check_memory(_unchecked(ok, batch_size=64), available=small)
    assert err.value.field == "batch_size"


def test_a_gpu_batch_without_checkpointing_that_does_not_fit_names_gradient_checkpointing(folder_7b, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = _unchecked(_cfg(folder_7b, precision="bf16", gradient_checkpointing=True, eval_dtype="bf16"), batch_size=16,
                     gradient_checkpointing=False)
    with pytest.raises(ConfigError) as err:
        check_memory(cfg, available={"cuda": 48 * GIB, "cpu": 64 * GIB})
    assert err.value.field == "gradient_checkpointing" and "training on cuda" in str(err.value)
    assert check_memory(_unchecked(cfg, gradient_checkpointing=True), available={"cuda": 48 * GIB, "cpu": 64 * GIB})


def test_the_validation_refuses_it_when_the_machine_is_too_small(folder_7b, monkeypatch):
    monkeypatch.setattr("vlamix.pipeline.checks.available_bytes", lambda device: 8 * GIB)
    with pytest.raises(ConfigError, match="does not fit"):
        _cfg(folder_7b, precision="bf16", gradient_checkpointing=True, eval_dtype="bf16")
    assert _cfg("tiny").get("model") == "tiny"  # the tiny presets are never estimated


def _unchecked(cfg, **changes):
    return cfg.without_checks(**changes)


def test_openvla_oft_counts_its_head_sequence_and_second_image(folder_7b):
    from vlamix.model.configuration import OFT_LIBERO_RECIPE

    tokens = model_shape(folder_7b)
    oft = model_shape(folder_7b, dict(OFT_LIBERO_RECIPE))
    assert oft.n_action_params == 151_117_831 + 16_818_176  # tests/fixtures/oft manifest (official modules)
    assert oft.n_params == tokens.n_params + oft.n_action_params and oft.n_lora_per_rank == tokens.n_lora_per_rank
    assert (oft.vision_tokens, oft.extra_tokens, oft.images) == (2 * 256 + 1, 56 - 7, 2)

    def train(shape, batch):
        return estimate_training(shape, precision="bf16", finetune_mode="lora", lora_rank=32, batch_size=batch,
                                 gradient_checkpointing=False, device="cuda")

    est = train(oft, 8)
    assert est.parts["action head + gradients + AdamW"] == 3 * oft.n_action_params * 2
    # moojink/openvla-oft LIBERO.md: batch 8 per GPU needs ~62 GB, batch 1 ~25 GB (no checkpointing). The estimate
    # is within 15% at batch 1 and conservative at batch 8 (it counts SDPA's attention scores, which the
    # memory-efficient kernel does not keep): never below the published figure, at most 45% above it.
    assert 25e9 / 1.15 <= train(oft, 1).total <= 25e9 * 1.15
    assert 62e9 <= est.total <= 62e9 * 1.45
    assert train(oft, 8).parts["activations"] > 1.9 * train(tokens, 8).parts["activations"]  # 2 images, longer sequence
