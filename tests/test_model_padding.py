"""Left-padded policy batches give the per-sample actions, whatever the attention kernel does with padding.

A batched rollout pads the prompts of different instructions on the left. In the prefill the pad
positions' query rows would attend to nothing; transformers 5.x no longer un-masks such rows and
some CUDA SDPA kernels return NaN for them, which reaches the real tokens in the next layer (0 * NaN)
and turns the logits into NaN: a finite but arbitrary action, silently. The CPU kernel returns 0 for
those rows, so the stand-in below reproduces the CUDA behaviour: it returns NaN for every fully
masked query row.
"""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlamix.core.suites import suite_info
from vlamix.eval.policy import VLAPolicy
from vlamix.eval.rollout import EpisodeSpec, evaluate
from vlamix.model.checkpoint import build_tiny
from vlamix.model.modeling import NonFiniteLogitsError, attention_mask_4d
from vlamix.eval.settings import RolloutConfig

NORM_STATS = {
    name: {"action": {"q01": [-0.9] * 6 + [0.0], "q99": [0.9] * 6 + [1.0], "mask": [True] * 6 + [False],
                      "min": [-1.0] * 6 + [0.0], "max": [1.0] * 6 + [1.0]}}
    for name in ("libero_spatial_no_noops", "libero_goal_no_noops")
}


def _instructions() -> list[str]:
    """LIBERO's own instructions, two suites, of different lengths (so the batch is left-padded)."""
    spatial, goal = suite_info("libero_spatial"), suite_info("libero_goal")
    return [spatial.get_task(0).language, goal.get_task(0).language, spatial.get_task(3).language,
            goal.get_task(8).language]


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def _nan_for_fully_masked_rows(original):
    """An SDPA stand-in that behaves like the CUDA kernels that return NaN for a query row with no key."""

    @functools.wraps(original)
    def sdpa(query, key, value, attn_mask=None, **kwargs):
        out = original(query, key, value, attn_mask=attn_mask, **kwargs)
        if attn_mask is not None:
            allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > torch.finfo(attn_mask.dtype).min / 2
            empty = ~allowed.any(dim=-1)  # [B, 1 or H, Q]
            out = out.masked_fill(empty.unsqueeze(-1).expand_as(out), float("nan"))
        return out

    return sdpa


def _batched_and_single(model, processor, images, instructions, dtype):
    model = model.to(dtype)

    def inputs(imgs, instr):
        out = processor.inference_inputs(imgs, instr)
        out["pixel_values"] = out["pixel_values"].to(dtype)
        return out

    batch = inputs(images, instructions)
    assert (batch["attention_mask"] == 0).any(dim=1).sum() >= 2  # several rows are left-padded
    ids = model.predict_action_ids(**batch)
    actions = model.predict_action(**batch, unnorm_key="libero_spatial_no_noops")
    single_ids = torch.cat([model.predict_action_ids(**inputs(images[i : i + 1], instructions[i : i + 1]))
                            for i in range(len(instructions))])
    single_actions = np.concatenate([model.predict_action(**inputs(images[i : i + 1], instructions[i : i + 1]),
                                                          unnorm_key="libero_spatial_no_noops")
                                     for i in range(len(instructions))])
    return ids, actions, single_ids, single_actions


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_left_padded_batch_of_libero_instructions_equals_one_at_a_time(dtype, implementation):
    model, processor = build_tiny(seed=7, norm_stats=NORM_STATS)  # seed 7: actions depend on image and instruction
    model.set_attn_implementation(implementation)
    instructions = _instructions()
    assert len({len(processor.prompt_ids(s)) for s in instructions}) >= 3
    ids, actions, single_ids, single_actions = _batched_and_single(model, processor, _images(4), instructions, dtype)
    assert torch.equal(ids, single_ids)
    np.testing.assert_array_equal(actions, single_actions)
    assert len({tuple(r) for r in ids.tolist()}) >= 3  # different actions per row: the test can tell rows apart


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_kernel_returning_nan_for_fully_masked_rows_changes_nothing(dtype, monkeypatch):
    model, processor = build_tiny(seed=7, norm_stats=NORM_STATS)
    instructions = _instructions()
    images = _images(4)
    _, _, single_ids, single_actions = _batched_and_single(model, processor, images, instructions, dtype)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        _nan_for_fully_masked_rows(F.scaled_dot_product_attention))
    ids, actions, _, _ = _batched_and_single(model, processor, images, instructions, dtype)
    assert torch.equal(ids, single_ids)
    np.testing.assert_array_equal(actions, single_actions)
    # teacher-forced forward of the padded batch: no NaN anywhere, pad positions included
    batch = processor.inference_inputs(images, instructions)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    with torch.no_grad():
        out = model.to(dtype)(**batch, logits="last", output_hidden_states=True)
    assert all(bool(torch.isfinite(h).all()) for h in out.hidden_states)


def test_the_stand_in_kernel_does_return_nan_for_a_fully_masked_row():
    """The stand-in is only a fair test if it really turns the masks transformers builds itself into NaN."""
    q = k = v = torch.randn(1, 2, 3, 4)
    mask = torch.tensor([[False, False, False], [True, False, False], [True, True, False]])[None, None]
    out = _nan_for_fully_masked_rows(F.scaled_dot_product_attention)(q, k, v, attn_mask=mask)
    assert bool(out[0, :, 0].isnan().all()) and bool(torch.isfinite(out[0, :, 1:]).all())


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("query_length", [1, 5])
def test_no_query_row_is_fully_masked_and_pad_keys_are_never_attended(causal, query_length):
    token_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = attention_mask_4d(token_mask, query_length, torch.float32, causal=causal)
    assert mask.shape == (3, 1, query_length, 5) and mask.dtype == torch.bool
    assert bool(mask.any(dim=-1).all())  # every query row attends to something
    q_pos = range(5 - query_length, 5)
    for b in range(3):
        for qi, p in enumerate(q_pos):
            expected = [bool(token_mask[b, j]) and (not causal or j <= p) for j in range(5)]
            if not token_mask[b, p]:
                expected = [j == p for j in range(5)]  # a pad query sees itself only
            assert mask[b, 0, qi].tolist() == expected
    eager = attention_mask_4d(token_mask, query_length, torch.bfloat16, causal=causal, implementation="eager")
    assert eager.dtype == torch.bfloat16 and torch.equal(eager == 0, mask)


def test_nan_logits_raise_instead_of_decoding_an_action():
    model, processor = build_tiny(seed=7, norm_stats=NORM_STATS)
    inputs = processor.inference_inputs(_images(3), _instructions()[:3])
    inputs["pixel_values"][1] = float("nan")  # row 1's logits become NaN, rows 0 and 2 stay finite
    with pytest.raises(NonFiniteLogitsError) as err:
        model.predict_action_ids(**inputs)
    assert err.value.rows == [1]
    ids = model.predict_action_ids(**inputs, check_finite=False)  # what would have been returned silently
    assert ids.shape == (3, 7)


class _NanForDarkImages:
    """A real tiny-model policy whose pixel values turn NaN for all-dark images (one episode of the batch)."""

    def __init__(self):
        model, processor = build_tiny(seed=7, norm_stats=NORM_STATS)
        self.policy = VLAPolicy.from_model(model, processor)
        transform = processor.image_transform

        def image_transform(images):
            out = transform(images)
            dark = torch.as_tensor(np.asarray(images).reshape(len(out), -1).max(axis=1) < 40)
            out[dark] = float("nan")
            return out

        processor.image_transform = image_transform

    def act(self, images, instructions, suite, variants=None):
        return self.policy.act(images, instructions, suite)


def test_nan_logits_in_one_episode_become_its_error_row_not_an_action(tmp_path):
    import eval_fakes

    specs = [EpisodeSpec("libero_spatial", t, 0, 0, f"task {t}") for t in range(3)]
    # fake env: task 0's images are dark (pixel values < 40), the others are not
    rows = evaluate(_NanForDarkImages, specs, RolloutConfig(eval_workers=3, envs_per_worker=1), max_steps=2, progress=False,
                    slot_factory=functools.partial(eval_fakes.make_bright_slot, dark_tasks=(0,)))
    by_task = {r["task_id"]: r for r in rows}
    assert by_task[0]["error"] is not None and "NonFiniteLogitsError" in by_task[0]["error"]
    assert by_task[0]["success"] is False
    assert by_task[1]["error"] is None and by_task[2]["error"] is None
    assert by_task[1]["steps"] == 2 and by_task[2]["steps"] == 2  # the others kept acting


def test_one_policy_call_serves_rows_of_different_suites_with_their_own_norm_stats():
    """The server sends every waiting episode in one call; each row is un-normalised with its suite's statistics."""
    stats = {"libero_spatial_no_noops": NORM_STATS["libero_spatial_no_noops"],
             "libero_goal_no_noops": {"action": dict(NORM_STATS["libero_goal_no_noops"]["action"], q01=[-2.0] * 6 + [0.0],
                                                     q99=[2.0] * 6 + [1.0])}}
    model, processor = build_tiny(seed=7, norm_stats=stats)
    policy = VLAPolicy.from_model(model, processor)
    images, instructions = _images(4), _instructions()
    suites = ["libero_spatial", "libero_goal", "libero_spatial", "libero_goal"]
    mixed = policy.act(images, instructions, suites)
    for i, suite in enumerate(suites):
        np.testing.assert_array_equal(mixed[i], policy.act(images[i : i + 1], instructions[i : i + 1], suite)[0])
    assert not np.array_equal(mixed[1], policy.act(images[1:2], instructions[1:2], "libero_spatial")[0])
