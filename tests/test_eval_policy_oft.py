"""The policy's chunk API (VLAPolicy.act_chunk, .inputs, .action_chunk) on the tiny OpenVLA-OFT model: batched
chunks un-normalised per row, proprio normalised with OFT's evaluation rule, both images centre-cropped."""

import numpy as np
import pytest
import torch

from vlamix.data.normalization import normalize_proprio
from vlamix.eval.policy import POLICY_INPUTS, VLAPolicy
from vlamix.model.checkpoint import build_tiny
from vlamix.model.configuration import OFT_LIBERO_RECIPE

SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"


def _stats(shift):
    return {
        "action": {
            "q01": [-0.5 + shift, -1, -0.25, -2, -0.1, -3, 0],
            "q99": [0.5 + shift, 2, 0.75, 1, 0.3, 3, 1],
            "mask": [True] * 6 + [False],
        },
        "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8, "min": [-2.0] * 7 + [0.04], "max": [2.0] * 7 + [0.04]},
    }


@pytest.fixture(scope="module")
def policy():
    model, processor = build_tiny(recipe=OFT_LIBERO_RECIPE, norm_stats={SPATIAL: _stats(0.0), OBJECT: _stats(1.0)})
    return VLAPolicy.from_model(model, processor, center_crop=True)


def _obs(n=2, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    wrist = g.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    state = g.uniform(-1.5, 1.5, (n, 8))
    state[:, 7] = 0.04  # a dim constant in the training data: OFT's eval does not zero it (training did)
    return images, wrist, state


def test_chunk_policy_declares_its_inputs_and_returns_unnormalised_chunks(policy):
    assert policy.inputs == ("wrist_image", "proprio") and set(policy.inputs) <= set(POLICY_INPUTS)
    assert policy.action_chunk == 8
    images, wrist, state = _obs()
    instructions = ["put the bowl on the plate", "open the drawer"]
    chunks = policy.act_chunk(
        images, instructions, ["libero_spatial", "libero_object"], wrist_images=wrist, proprio=state
    )
    assert chunks.shape == (2, 8, 7) and chunks.dtype == np.float64
    # by hand: centre crop both images, OFT's eval proprio rule, one forward pass, each row's own action stats
    p = policy.processor
    inputs = p.action_chunk_inputs(p.center_crop(images), instructions, num_slots=56, wrist_images=p.center_crop(wrist))
    normed = np.stack(
        [
            normalize_proprio(state[i], policy.model.norm_stats[k], zero_constant=False)
            for i, k in enumerate([SPATIAL, OBJECT])
        ]
    )
    assert normed[0, 7] == pytest.approx(0.04)  # 2 (0.04 + 1) / 2 - 1: not zeroed
    with torch.no_grad():
        n = (
            policy.model.forward_actions(**inputs, proprio=torch.from_numpy(normed.astype(np.float32)))
            .actions.double()
            .numpy()
        )
    for row, shift in ((0, 0.0), (1, 1.0)):
        np.testing.assert_allclose(chunks[row, :, 0], 0.5 * (n[row, :, 0] + 1) * (1.0 + 1e-8) - 0.5 + shift, atol=1e-9)
        np.testing.assert_array_equal(chunks[row, :, 6], n[row, :, 6])  # gripper: model space, as act()
    # act(): the first action of the chunk
    np.testing.assert_array_equal(
        policy.act(images, instructions, ["libero_spatial", "libero_object"], wrist_images=wrist, proprio=state),
        chunks[:, 0],
    )
    # one at a time gives the batched rows
    single = policy.act_chunk(images[1:], instructions[1:], "libero_object", wrist_images=wrist[1:], proprio=state[1:])
    np.testing.assert_allclose(single[0], chunks[1], rtol=1e-5, atol=1e-5)


def test_missing_inputs_are_named(policy):
    images, wrist, state = _obs()
    with pytest.raises(ValueError, match="wrist_images"):
        policy.act_chunk(images, ["a", "b"], "libero_spatial", proprio=state)
    with pytest.raises(ValueError, match="proprio"):
        policy.act_chunk(images, ["a", "b"], "libero_spatial", wrist_images=wrist)
    with pytest.raises(ValueError, match="proprio must be"):
        policy.act_chunk(images, ["a", "b"], "libero_spatial", wrist_images=wrist, proprio=state[:1])


def test_token_policy_keeps_act_and_gives_chunks_of_one():
    model, processor = build_tiny(norm_stats={SPATIAL: _stats(0.0)})
    token = VLAPolicy.from_model(model, processor)
    assert token.inputs == () and token.action_chunk == 1
    images, _, _ = _obs()
    actions = token.act(images, ["a", "b"], "libero_spatial")
    np.testing.assert_array_equal(token.act_chunk(images, ["a", "b"], "libero_spatial"), actions[:, None])
