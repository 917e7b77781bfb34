"""OpenVLA-OFT parallel decoding (vlamix.model, action_head: l1_regression) on the tiny model: sequence layout,
bidirectional attention on every attention path, which hidden states feed the head, shapes, padding, and the
official module definitions (7B manifest in tests/fixtures/oft, written from moojink/openvla-oft's code)."""

import json
import os

import numpy as np
import pytest
import torch

from vlamix.model.action_head import L1RegressionActionHead, ProprioProjector, strip_ddp_prefix
from vlamix.model.checkpoint import build_tiny
from vlamix.model.configuration import OFT_LIBERO_RECIPE, VLAConfig
from vlamix.model.modeling import OpenVLAForActionPrediction, attention_mask_4d

MANIFEST = os.path.join(os.path.dirname(__file__), "fixtures", "oft", "openvla7b_oft_action_modules_manifest.json")
INSTRUCTIONS = ["pick up the black bowl between the plate and the ramekin and place it on the plate", "open the drawer"]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny(recipe=OFT_LIBERO_RECIPE)
    return model, processor


def _inputs(processor, n=2, seed=0, side="left", instructions=INSTRUCTIONS):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    wrist = g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    out = processor.action_chunk_inputs(images, list(instructions[:n]), num_slots=56, wrist_images=wrist, side=side)
    out["proprio"] = torch.from_numpy(g.uniform(-1, 1, (n, 8)).astype(np.float32))
    return out


# ------------------------------------------------------------------------------------------ official definitions
def test_7b_action_modules_match_the_official_manifest():
    with open(MANIFEST) as f:
        manifest = json.load(f)
    with torch.device("meta"):
        head = L1RegressionActionHead(manifest["llm_dim"], manifest["action_dim"], manifest["action_chunk"])
        projector = ProprioProjector(manifest["llm_dim"], manifest["proprio_dim"])
    for module, name in ((head, "action_head"), (projector, "proprio_projector")):
        spec = manifest["files"][name]
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == {e["key"]: e["shape"] for e in spec["entries"]}, name
        assert sum(v.numel() for v in module.state_dict().values()) == spec["parameter_count"]
    assert manifest["files"]["action_head"]["parameter_count"] == 151_117_831
    assert manifest["files"]["proprio_projector"]["parameter_count"] == 16_818_176
    # the official files carry DDP's "module." prefix, which the loader strips
    prefixed = {"module." + e["key"]: torch.zeros(1) for e in manifest["files"]["action_head"]["entries"]}
    assert set(strip_ddp_prefix(prefixed)) == set(head.state_dict())


def test_7b_oft_backbone_is_openvla_7b_and_adds_only_the_two_modules(reference_dir):
    with open(os.path.join(reference_dir, "openvla7b_state_dict_manifest.json")) as f:
        official = {e["key"]: tuple(e["shape"]) for e in json.load(f)["entries"]}
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(VLAConfig.openvla_7b_oft())
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    backbone = {k: v for k, v in state.items() if not k.startswith(("action_head.", "proprio_projector."))}
    assert backbone == official
    assert len(state) - len(backbone) == 16 + 4
    assert model.num_vision_tokens == 2 * 256 + 1  # OFT's NUM_PATCHES on LIBERO


def test_recipe_fields_are_checked():
    with pytest.raises(ValueError, match="action_head"):
        VLAConfig.tiny().with_action_recipe(action_head="diffusion")
    with pytest.raises(ValueError, match="l1_regression"):
        VLAConfig.tiny().with_action_recipe(action_chunk=8)
    with pytest.raises(ValueError, match="action_chunk"):
        VLAConfig.tiny().with_action_recipe(action_head="l1_regression", action_chunk=0)
    config = VLAConfig.tiny_oft()
    again = VLAConfig.from_config_dict(config.to_dict())
    assert again.action_recipe() == config.action_recipe() == {**OFT_LIBERO_RECIPE}


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_bidirectional_mask_attends_every_token_key_never_a_pad_and_no_row_is_empty(side, implementation):
    tokens = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]] if side == "left" else [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = attention_mask_4d(tokens, 5, torch.float32, causal=False, implementation=implementation)
    allowed = mask if implementation == "sdpa" else mask == 0
    if implementation == "eager":
        assert set(mask.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}
    for b in range(2):
        for q in range(5):
            row = allowed[b, 0, q]
            assert row.any()  # never a fully masked query row
            if tokens[b, q]:  # a token attends to every token, before and after it, and to no pad
                assert row.tolist() == tokens[b].bool().tolist()
            else:  # a pad query attends to itself only
                assert row.tolist() == [k == q for k in range(5)]
    causal = attention_mask_4d(tokens, 5, torch.float32, causal=True, implementation=implementation)
    assert not torch.equal(causal, mask)


# ------------------------------------------------------------------------------------------ forward
def test_chunk_output_shape_and_head_input(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    with torch.no_grad():
        out = model.forward_actions(**inputs)
    assert out.actions.shape == (2, 8, 7) and out.actions.dtype == torch.float32
    assert out.action_hidden_states.shape == (2, 56, 64)
    assert torch.isfinite(out.actions).all()


def test_the_head_reads_the_state_one_position_before_each_slot(tiny):
    model, processor = tiny
    inputs = _inputs(processor, n=1)
    captured = {}
    hook = model.language_model.model.register_forward_hook(lambda m, a, out: captured.update(h=out.last_hidden_state))
    try:
        with torch.no_grad():
            out = model.forward_actions(**inputs)
    finally:
        hook.remove()
    prompt_len = len(processor.prompt_ids(INSTRUCTIONS[0]))  # BOS .. action prefix
    P = model.num_vision_tokens  # 2 x 256 patches + proprio
    first = P + prompt_len - 1  # the first slot is text position prompt_len, i.e. multimodal P + prompt_len
    expected = captured["h"][:, first : first + 56]
    assert torch.equal(out.action_hidden_states, expected)
    assert not torch.equal(out.action_hidden_states, captured["h"][:, first + 1 : first + 57])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_is_bidirectional_and_a_causal_mask_would_change_the_head_input(tiny, implementation):
    model, processor = tiny
    model.set_attn_implementation(implementation)
    try:
        inputs = _inputs(processor, n=1)
        changed = {k: v.clone() for k, v in inputs.items()}
        changed["input_ids"][0, -1] = 42  # the token AFTER every action slot (EOS)
        with torch.no_grad():
            bi = model.forward_actions(**inputs)
            bi_changed = model.forward_actions(**changed)
            causal = model.forward_actions(**inputs, attention="causal")
            causal_changed = model.forward_actions(**changed, attention="causal")
        # bidirectional: the slots see the token after them; causal: they cannot
        assert (bi.action_hidden_states - bi_changed.action_hidden_states).abs().max() > 1e-3
        torch.testing.assert_close(causal.action_hidden_states, causal_changed.action_hidden_states, rtol=0, atol=1e-6)
        # what stock transformers did to OFT checkpoints: another head input, other actions
        assert (bi.action_hidden_states - causal.action_hidden_states).abs().max() > 1e-2
        assert (bi.actions - causal.actions).abs().max() > 1e-3
        # the model's own mask is the bidirectional one (also the default for llm_attention_mask)
        assert not model.causal
        assert all(
            getattr(m, "is_causal", False) is False for m in model.language_model.modules() if hasattr(m, "is_causal")
        )
    finally:
        model.set_attn_implementation("sdpa")


def test_sdpa_and_eager_agree(tiny):
    model, processor = tiny
    inputs = _inputs(processor, side="right")
    with torch.no_grad():
        sdpa = model.forward_actions(**inputs).actions
        model.set_attn_implementation("eager")
        try:
            eager = model.forward_actions(**inputs).actions
        finally:
            model.set_attn_implementation("sdpa")
    torch.testing.assert_close(sdpa, eager, rtol=1e-4, atol=1e-4)


def test_batched_left_and_right_padding_equal_one_at_a_time(tiny):
    model, processor = tiny
    left = _inputs(processor, side="left")
    right = _inputs(processor, side="right")
    assert left["attention_mask"][1, 0] == 0 and right["attention_mask"][1, -1] == 0  # different lengths: padded
    with torch.no_grad():
        batched = model.forward_actions(**left).actions
        batched_right = model.forward_actions(**right).actions
        single = []
        for i in range(2):
            one = processor.action_chunk_inputs(
                _raw_images(0)[0][i : i + 1], [INSTRUCTIONS[i]], num_slots=56, wrist_images=_raw_images(0)[1][i : i + 1]
            )
            one["proprio"] = left["proprio"][i : i + 1]
            single.append(model.forward_actions(**one).actions)
    torch.testing.assert_close(batched, torch.cat(single), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched_right, torch.cat(single), rtol=1e-5, atol=1e-5)
    assert (batched[0] - batched[1]).abs().max() > 1e-3  # the rows are different observations


def _raw_images(seed):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8), g.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_pad_keys_and_slot_ids_are_never_read(tiny, implementation):
    model, processor = tiny
    model.set_attn_implementation(implementation)
    try:
        inputs = _inputs(processor, side="right")
        other = {k: v.clone() for k, v in inputs.items()}
        pads = inputs["attention_mask"] == 0
        assert pads.any()
        other["input_ids"][pads] = 777  # pad positions hold another token
        other["input_ids"][inputs["action_mask"]] = 31999  # the slots hold other ids (embeddings are zeroed)
        with torch.no_grad():
            a = model.forward_actions(**inputs).actions
            b = model.forward_actions(**other).actions
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    finally:
        model.set_attn_implementation("sdpa")


def test_every_input_reaches_the_actions(tiny):
    model, processor = tiny
    inputs = _inputs(processor, n=1)
    with torch.no_grad():
        base = model.forward_actions(**inputs).actions
        for change in ("proprio", "wrist", "primary"):
            other = {k: v.clone() for k, v in inputs.items()}
            if change == "proprio":
                other["proprio"] = -other["proprio"]
            else:
                sl = slice(6, 12) if change == "wrist" else slice(0, 6)
                other["pixel_values"][:, sl] = torch.flip(other["pixel_values"][:, sl], dims=[2])
            assert (model.forward_actions(**other).actions - base).abs().max() > 1e-4, change


def test_l1_loss_is_the_mean_absolute_error_of_the_chunk(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    target = torch.linspace(-1, 1, 2 * 8 * 7).reshape(2, 8, 7)
    with torch.no_grad():
        out = model.forward_actions(**inputs, target_actions=target)
    assert out.loss.item() == pytest.approx((out.actions - target).abs().mean().item(), rel=1e-6)


def test_wrong_inputs_are_refused(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    bad = dict(inputs, action_mask=inputs["action_mask"].clone())
    bad["action_mask"][0, bad["action_mask"][0].nonzero()[0]] = False  # 55 slots in row 0
    with pytest.raises(ValueError, match="56 slots"):
        model.forward_actions(**bad)
    with pytest.raises(ValueError, match="proprio"):
        model.forward_actions(**{k: v for k, v in inputs.items() if k != "proprio"})
    with pytest.raises(ValueError, match="channels"):
        model.forward_actions(**dict(inputs, pixel_values=inputs["pixel_values"][:, :6]))
    with pytest.raises(ValueError, match="predict_action_ids is for action_head 'tokens'"):
        model.predict_action_ids(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    with pytest.raises(ValueError, match="attention"):
        model.forward_actions(**inputs, attention="sliding")
    token_model, _ = build_tiny()
    with pytest.raises(ValueError, match="forward_actions is for action_head 'l1_regression'"):
        token_model.forward_actions(**inputs)


def test_predict_action_chunk_unnormalises_like_oft(tiny):
    model, processor = tiny
    q01, q99 = [-0.5, -1, -0.25, -2, -0.1, -3, 0], [0.5, 2, 0.75, 1, 0.3, 3, 1]
    model.norm_stats = {"d": {"action": {"q01": q01, "q99": q99, "mask": [True] * 6 + [False]}}}
    try:
        inputs = _inputs(processor)
        with torch.no_grad():
            normalized = model.forward_actions(**inputs).actions.double().numpy()
        actions = model.predict_action_chunk(**inputs)
    finally:
        model.norm_stats = None
    lo, hi = np.asarray(q01), np.asarray(q99)
    expected = 0.5 * (normalized + 1) * (hi - lo + 1e-8) + lo  # OFT _unnormalize_actions
    np.testing.assert_allclose(actions[..., :6], expected[..., :6], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(actions[..., 6], normalized[..., 6])  # gripper passes through
    assert actions.shape == (2, 8, 7) and actions.dtype == np.float64


def test_tiny_oft_backbone_equals_the_tiny_token_model():
    oft, _ = build_tiny(recipe=OFT_LIBERO_RECIPE)
    tokens, _ = build_tiny()
    oft_state, token_state = oft.state_dict(), tokens.state_dict()
    assert set(token_state) < set(oft_state)
    for key, value in token_state.items():
        assert torch.equal(oft_state[key], value), key
    assert oft.action_head.model.fc1.weight.std() > 0
