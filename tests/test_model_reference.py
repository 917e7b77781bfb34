"""vlamix.model against the official OpenVLA code's outputs (``reference_dir``: ../shared/reference/openvla).

The fixture was produced by openvla/openvla's HF modelling code (commit c8f03f4, timm 0.9.10, transformers 4.40.1);
our implementation uses timm 1.x and transformers 5.x, so these tests also pin the library upgrades.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlamix.model.checkpoint import load_vla
from vlamix.model.configuration import OPENVLA_KEYS, VLAConfig
from vlamix.model.modeling import OpenVLAForActionPrediction

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def fixture(reference_dir):
    tiny = os.path.join(reference_dir, "tiny")
    inputs = dict(np.load(os.path.join(tiny, "inputs.npz")))
    expected = dict(np.load(os.path.join(tiny, "expected.npz")))
    model, processor = load_vla(tiny)
    return tiny, model, processor, inputs, expected


def _tensors(inputs):
    return (
        torch.from_numpy(inputs["pixel_values"]),
        torch.from_numpy(inputs["input_ids"]),
        torch.from_numpy(inputs["attention_mask"]),
    )


def test_7b_skeleton_matches_official_manifest(reference_dir):
    with open(os.path.join(reference_dir, "openvla7b_state_dict_manifest.json")) as f:
        manifest = json.load(f)
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(VLAConfig.openvla_7b())
    state = model.state_dict()
    expected = {e["key"]: tuple(e["shape"]) for e in manifest["entries"]}
    assert len(state) == manifest["num_entries"] == 982
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == manifest["total_parameter_count"] == 7_541_237_184
    for group, count in manifest["parameter_count_by_group"].items():
        assert sum(v.numel() for k, v in state.items() if k.startswith(group + ".")) == count, group
    assert all(p.is_meta for p in model.parameters())
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in state  # timm's gamma renamed as official


def test_7b_config_has_official_keys_and_values(reference_dir):
    with open(os.path.join(reference_dir, "openvla7b_config.json")) as f:
        official = json.load(f)
    ours = VLAConfig.openvla_7b().to_dict()
    for key in OPENVLA_KEYS:
        if key == "text_config":
            continue
        assert ours[key] == official[key], key
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "pad_token_id", "hidden_act", "max_position_embeddings",
                "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias"):
        assert ours["text_config"][key] == official["text_config"][key], key
    assert ours["text_config"]["rope_parameters"]["rope_theta"] == official["text_config"]["rope_theta"]
    # The official dict itself loads and gives the same configuration.
    again = VLAConfig.from_config_dict(official)
    assert again.timm_model_ids == official["timm_model_ids"]
    assert again.text_config.vocab_size == 32064 and again.action_vocab_size == 32000


def test_config_rejects_unknown_backbone():
    with pytest.raises(ValueError, match="vision_backbone_id"):
        VLAConfig(vision_backbone_id="resnet-50")
    with pytest.raises(ValueError, match="vision_tower_overrides"):
        VLAConfig(vision_tower_overrides=[{"img_size": 112}, {}])


def test_fixture_config_tower_sizes(fixture):
    _, model, _, _, _ = fixture
    vb = model.vision_backbone
    assert vb.featurizer.embed_dim == 32 and vb.fused_featurizer.embed_dim == 48
    assert vb.featurizer.num_prefix_tokens == 5 and vb.fused_featurizer.num_prefix_tokens == 0
    assert vb.fused_featurizer.blocks[0].mlp.fc1.out_features == 179
    assert model.num_patches == 256


def test_forward_reproduces_official_outputs(fixture):
    _, model, _, inputs, expected = fixture
    pixel_values, input_ids, attention_mask = _tensors(inputs)
    with torch.no_grad():
        vision = model.vision_backbone(pixel_values)
        out = model(pixel_values, input_ids, attention_mask, output_hidden_states=True)
    logits = out.logits.numpy()
    assert logits.shape == (2, 1 + 256 + 18, 32064)
    np.testing.assert_allclose(vision.numpy(), expected["vision_features"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(out.projector_features.numpy(), expected["projector_features"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(logits[:, -1], expected["logits_last"], atol=ATOL, rtol=RTOL)
    cols = expected["logits_selected_vocab_ids"]
    np.testing.assert_allclose(logits[:, :, cols], expected["logits_selected"], atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(logits.argmax(-1), expected["logits_argmax"])
    np.testing.assert_allclose(logits.max(-1), expected["logits_max"], atol=ATOL, rtol=RTOL)
    hidden = np.stack([h.numpy() for h in out.hidden_states])
    np.testing.assert_allclose(hidden, expected["llm_hidden_states"], atol=ATOL, rtol=RTOL)


def test_predict_action_matches_official(fixture):
    _, model, _, inputs, expected = fixture
    pixel_values, input_ids, attention_mask = _tensors(inputs)
    ids, step_logits = model.predict_action_ids(pixel_values, input_ids, attention_mask, return_logits=True)
    np.testing.assert_array_equal(ids.numpy(), expected["action_token_ids"])
    np.testing.assert_allclose(
        step_logits[:, :, 31744:32000].numpy(), expected["generation_logits_action_tokens"], atol=ATOL, rtol=RTOL
    )
    np.testing.assert_array_equal(model.action_tokenizer.bin_indices(ids.numpy()), expected["action_bin_indices"])
    actions = model.predict_action(pixel_values, input_ids, attention_mask, unnorm_key="tiny")
    np.testing.assert_allclose(actions, expected["actions"], rtol=0, atol=1e-12)
    # The two images give different actions in every dimension.
    assert (ids[0] != ids[1]).all()
    # unnorm_key=None is fine with a single dataset in the norm stats.
    np.testing.assert_array_equal(model.predict_action(pixel_values, input_ids, attention_mask), actions)


def test_processor_pixel_values_match_official(fixture):
    _, _, processor, inputs, _ = fixture
    pixel_values = processor.image_transform(inputs["images_uint8"])
    assert pixel_values.dtype == torch.float32 and pixel_values.shape == (2, 6, 224, 224)
    np.testing.assert_array_equal(pixel_values.numpy(), inputs["pixel_values"])
    assert processor.tokenizer is None  # the fixture folder has no tokenizer files
    with pytest.raises(RuntimeError, match="no tokenizer"):
        processor.inference_inputs(inputs["images_uint8"], ["pick up the bowl"] * 2)


def _official_style_folder(tiny, tmp_path, dtype):
    """The fixture re-packed like the released HF folder: sharded safetensors + index, official config keys,
    dataset_statistics.json and a preprocessor_config.json of the official processor."""
    folder = tmp_path / "openvla-like"
    folder.mkdir()
    with open(os.path.join(tiny, "config.json")) as f:
        config = json.load(f)
    config["architectures"] = ["OpenVLAForActionPrediction"]
    config["auto_map"] = {
        "AutoConfig": "configuration_prismatic.OpenVLAConfig",
        "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = load_file(os.path.join(tiny, "model.safetensors"))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: state[k].to(dtype) for k in shard_keys}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard_keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    stats = {"libero_spatial_no_noops": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}},
             "libero_object_no_noops": {"action": {"q01": [0.0] * 7, "q99": [2.0] * 7, "mask": [True] * 6 + [False]}}}
    (folder / "dataset_statistics.json").write_text(json.dumps(stats))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]], "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "use_fused_vision_backbone": True,
    }))
    return folder, stats


def test_load_official_style_sharded_folder(fixture, tmp_path):
    tiny, _, _, inputs, expected = fixture
    folder, stats = _official_style_folder(tiny, tmp_path, torch.float32)
    model, processor = load_vla(str(folder))
    assert model.norm_stats == stats  # dataset_statistics.json replaces the config's norm stats
    pixel_values = processor.image_transform(inputs["images_uint8"])
    np.testing.assert_array_equal(pixel_values.numpy(), inputs["pixel_values"])
    input_ids, attention_mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])
    with torch.no_grad():
        logits = model(pixel_values, input_ids, attention_mask, logits="last").logits[:, -1]
    np.testing.assert_allclose(logits.numpy(), expected["logits_last"], atol=ATOL, rtol=RTOL)
    with pytest.raises(KeyError, match="libero_object_no_noops, libero_spatial_no_noops"):
        model.predict_action(pixel_values, input_ids, attention_mask)  # ambiguous: two datasets
    with pytest.raises(KeyError, match="available: libero_object_no_noops, libero_spatial_no_noops"):
        model.predict_action(pixel_values, input_ids, attention_mask, unnorm_key="libero_goal_no_noops")
    actions = model.predict_action(pixel_values, input_ids, attention_mask, unnorm_key="libero_object_no_noops")
    normalized = model.action_tokenizer.decode(expected["action_token_ids"])
    np.testing.assert_allclose(actions[:, :6], normalized[:, :6] + 1.0)  # q01 = 0, q99 = 2
    np.testing.assert_allclose(actions[:, 6], normalized[:, 6])  # gripper: mask false, kept normalised


def test_load_bf16_checkpoint_and_mismatched_weights(fixture, tmp_path):
    tiny, _, _, inputs, expected = fixture
    folder, _ = _official_style_folder(tiny, tmp_path, torch.bfloat16)
    model, _ = load_vla(str(folder), dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    pixel_values, input_ids, attention_mask = _tensors(inputs)
    with torch.no_grad():
        logits = model(pixel_values, input_ids, attention_mask, logits="last").logits[:, -1].float().numpy()
    assert np.isfinite(logits).all()
    assert np.corrcoef(logits[0], expected["logits_last"][0])[0, 1] > 0.95
    # A weight file that does not match the config is refused with the offending keys named.
    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop("projector.fc3.bias")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match="projector.fc3.bias"):
        load_vla(str(bad))
