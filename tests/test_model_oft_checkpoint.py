"""OpenVLA-OFT checkpoints: the official folder layout (merged backbone + ``module.``-prefixed ``.pt`` head and
projector, head bf16, projector fp32) loaded without remote code and with ``weights_only=True``; our own format
(safetensors) round trip, with and without LoRA; fresh heads on a token-head base."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlamix.model.action_files import OURS, official_recipe
from vlamix.model.checkpoint import build_tiny, load_vla, save_vla
from vlamix.model.configuration import OFT_LIBERO_RECIPE
from vlamix.model.lora import apply_lora, lora_target_modules

STATS = {"libero_spatial_no_noops": {
    "action": {"q01": [-0.5, -1, -0.25, -2, -0.1, -3, 0], "q99": [0.5, 2, 0.75, 1, 0.3, 3, 1],
               "mask": [True] * 6 + [False], "min": [-1] * 7, "max": [1] * 7},
    "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8, "min": [-2.0] * 8, "max": [2.0] * 8},
}}  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(recipe=OFT_LIBERO_RECIPE)


def _inputs(processor, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    wrist = g.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = processor.action_chunk_inputs(
        images, ["put the bowl on the plate", "open the drawer"], num_slots=56, wrist_images=wrist
    )
    out["proprio"] = torch.from_numpy(g.uniform(-1, 1, (2, 8)).astype(np.float32))
    return out


def _actions(model, inputs):
    with torch.no_grad():
        return model.forward_actions(**inputs).actions


def _official_folder(root, model, processor, *, prefix="module.", heads=1):
    """The tiny OFT model packed like moojink/openvla-7b-oft-finetuned-libero-*: official config keys only (no
    action recipe), sharded safetensors + index of the merged backbone, tokenizer, preprocessor config,
    dataset_statistics.json, and torch.save'd DDP state dicts of the head (bf16) and the projector (fp32)."""
    folder = root / "openvla-7b-oft-finetuned-libero-spatial"
    folder.mkdir()
    config = json.loads(model.config.to_json_string(use_diff=False))
    for key in OFT_LIBERO_RECIPE:
        config.pop(key)
    config.update(
        norm_stats=None,
        architectures=["OpenVLAForActionPrediction"],
        auto_map={"AutoConfig": "configuration_prismatic.OpenVLAConfig"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("action_head.", "proprio_projector."))}
    keys = sorted(state)
    halves = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, part in halves.items():
        save_file({k: state[k].to(torch.bfloat16) for k in part}, str(folder / name))
    weight_map = {k: name for name, part in halves.items() for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    processor.save_pretrained(str(folder))
    (folder / "dataset_statistics.json").write_text(json.dumps(STATS))
    for step in [150000, 100000][:heads]:
        torch.save(
            {prefix + k: v.to(torch.bfloat16) for k, v in model.action_head.state_dict().items()},
            str(folder / f"action_head--{step}_checkpoint.pt"),
        )
    torch.save(
        {prefix + k: v.float() for k, v in model.proprio_projector.state_dict().items()},
        str(folder / "proprio_projector--150000_checkpoint.pt"),
    )
    return folder


def _bf16_reference(model):
    """The tiny model with every weight rounded through bfloat16 but the projector (fp32 on disk), as the folder."""
    ref, _ = build_tiny(recipe=OFT_LIBERO_RECIPE)
    with torch.no_grad():
        for key, value in ref.state_dict().items():
            if value.is_floating_point() and not key.startswith("proprio_projector."):
                value.copy_(model.state_dict()[key].to(torch.bfloat16).float())
    return ref


def test_official_folder_loads_with_the_official_recipe_and_reproduces_the_model(tiny, tmp_path):
    model, processor = tiny
    folder = _official_folder(tmp_path, model, processor)
    on_disk = torch.load(str(folder / "action_head--150000_checkpoint.pt"), weights_only=True)
    assert all(k.startswith("module.model.") for k in on_disk) and {v.dtype for v in on_disk.values()} == {
        torch.bfloat16
    }
    assert official_recipe(str(folder)) == OFT_LIBERO_RECIPE  # action_dim, proprio_dim from the tensors' shapes
    loaded, loaded_processor = load_vla(str(folder))
    assert loaded.config.action_recipe() == OFT_LIBERO_RECIPE
    assert loaded.norm_stats == STATS
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    inputs = _inputs(loaded_processor)
    torch.testing.assert_close(_actions(loaded, inputs), _actions(_bf16_reference(model), inputs), rtol=1e-6, atol=1e-6)
    # without the "module." prefix (a head saved unwrapped) the same weights load
    (tmp_path / "plain").mkdir()
    plain = _official_folder(tmp_path / "plain", model, processor, prefix="")
    torch.testing.assert_close(_actions(load_vla(str(plain))[0], inputs), _actions(loaded, inputs), rtol=0, atol=0)


def test_official_pickles_are_read_without_running_code(tiny, tmp_path):
    model, processor = tiny
    folder = _official_folder(tmp_path, model, processor)
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"module.model.fc2.weight": Payload()}, str(folder / "action_head--150000_checkpoint.pt"))
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        load_vla(str(folder))
    assert not marker.exists()


def test_official_folder_errors_name_the_file(tiny, tmp_path):
    model, processor = tiny
    two = _official_folder(tmp_path, model, processor, heads=2)
    with pytest.raises(ValueError, match="several action_head"):
        load_vla(str(two))
    (tmp_path / "bad").mkdir()
    bad = _official_folder(tmp_path / "bad", model, processor)
    state = torch.load(str(bad / "proprio_projector--150000_checkpoint.pt"), weights_only=True)
    state["module.fc3.weight"] = state.pop("module.fc2.weight")
    torch.save(state, str(bad / "proprio_projector--150000_checkpoint.pt"))
    with pytest.raises(ValueError, match="proprio_projector.*fc2.weight"):
        load_vla(str(bad))


def test_our_format_round_trip_keeps_the_head_apart(tiny, tmp_path):
    model, processor = tiny
    out = save_vla(model, processor, str(tmp_path / "ckpt"), norm_stats=STATS)
    files = set(os.listdir(out))
    assert {OURS["action_head"], OURS["proprio_projector"], "model.safetensors", "config.json"} <= files
    assert not any(
        k.startswith(("action_head.", "proprio_projector.")) for k in load_file(os.path.join(out, "model.safetensors"))
    )
    loaded, loaded_processor = load_vla(out)
    inputs = _inputs(loaded_processor)
    torch.testing.assert_close(_actions(loaded, inputs), _actions(model, inputs), rtol=0, atol=0)
    assert loaded.config.action_recipe() == OFT_LIBERO_RECIPE


def test_fresh_head_on_a_token_base_then_lora_checkpoint_with_a_base_reference(tmp_path):
    token_model, processor = build_tiny()
    base = save_vla(token_model, processor, str(tmp_path / "base"))
    a, _ = load_vla(base, recipe=OFT_LIBERO_RECIPE, init_seed=5)
    b, _ = load_vla(base, recipe=OFT_LIBERO_RECIPE, init_seed=5)
    c, _ = load_vla(base, recipe=OFT_LIBERO_RECIPE, init_seed=6)
    head = a.action_head.model
    assert torch.equal(head.fc1.weight, b.action_head.model.fc1.weight)  # seeded
    assert not torch.equal(head.fc1.weight, c.action_head.model.fc1.weight)
    assert torch.equal(head.layer_norm1.weight, torch.ones_like(head.layer_norm1.weight))  # PyTorch defaults
    bound = 1 / np.sqrt(head.fc1.in_features)  # kaiming-uniform(a=sqrt(5)) of nn.Linear: U(-1/sqrt(in), 1/sqrt(in))
    assert head.fc1.weight.abs().max() <= bound and head.fc1.weight.abs().max() > 0.9 * bound
    # LoRA: every backbone linear adapted, the head and projector trained in full
    assert not any(n.startswith(("action_head", "proprio_projector")) for n in lora_target_modules(a))
    peft = apply_lora(a, rank=4, alpha=8)
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert any("action_head.model.fc1.weight" in n for n in trainable)
    assert any("proprio_projector.fc2.bias" in n for n in trainable)
    assert all("lora_" in n or "action_head" in n or "proprio_projector" in n for n in trainable)
    with torch.no_grad():  # "training" moved the head and an adapter
        a.action_head.model.fc2.bias.add_(0.5)
        next(p for n, p in peft.named_parameters() if "lora_B" in n).add_(0.1)
    out = save_vla(peft, processor, str(tmp_path / "lora"), base_model=base)
    assert not os.path.exists(os.path.join(out, "model.safetensors"))  # the base is referenced, the head stored
    assert os.path.isfile(os.path.join(out, OURS["action_head"]))
    loaded, _ = load_vla(out)
    inputs = _inputs(processor)
    torch.testing.assert_close(_actions(loaded, inputs), _actions(peft, inputs), rtol=1e-5, atol=1e-5)
    merged, _ = load_vla(out, merge_adapter=True)
    torch.testing.assert_close(_actions(merged, inputs), _actions(peft, inputs), rtol=1e-4, atol=1e-4)
