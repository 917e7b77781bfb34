"""Per-group loss weighting (``loss_weighting``): the weight maths, the weighted loss and its gradient,
the trainer (accumulation, renormalisation at weight changes, checkpoint summary) and the config."""

import json
import math
import os

import numpy as np
import pytest
import torch

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.mixing.loss_weights import LOSS_WEIGHTINGS, expected_weight, loss_weights, named_loss_weights
from vlamix.mixing.trajectory import SUMMARY_FILE
from vlamix.mixing.weights import Source, temperature_weights
from vlamix.pipeline.config import train_key
from vlamix.train.finetune import TRAIN_LOG_NAME, FineTuner
from vlamix.train.loss_weighting import per_frame_loss, weighted_action_loss
from test_train_finetune import STATS, _frames

COUNTS = [50000.0, 30000.0, 2000.0, 500.0]
GROUPS = ("libero_spatial_no_noops", "libero_object_no_noops")
#: kept training frames per group the stand-in loader reports (group 1 is the rare one)
GROUP_FRAMES = (300, 20)


# ------------------------------------------------------------------------------ weight maths
@pytest.mark.parametrize("temperature", [1.0, 2.0, math.inf])
def test_inverse_frequency_weights_match_the_closed_form_and_average_one(temperature):
    n = np.array(COUNTS)
    p = temperature_weights(n, temperature)
    w = loss_weights(n, p, "inverse_frequency")
    np.testing.assert_allclose(w, (1 / n) / np.sum(p / n), rtol=1e-12)
    assert expected_weight(w, p) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(w * n, w[0] * n[0], rtol=1e-12)  # w ~ 1/n
    if temperature == 1.0:  # natural sampling: w = N / (G n), every group contributes 1/G of the loss
        np.testing.assert_allclose(w, n.sum() / (4 * n), rtol=1e-12)
        np.testing.assert_allclose(p * w, 0.25, rtol=1e-12)


def test_inverse_sqrt_weights_and_none():
    n = np.array(COUNTS)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    w = loss_weights(n, p * 7.0, "inverse_sqrt_frequency")  # sampling weights are normalised
    np.testing.assert_allclose(w, (1 / np.sqrt(n)) / np.sum(p / np.sqrt(n)), rtol=1e-12)
    assert np.sum(p * w) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_array_equal(loss_weights(n, p, "none"), np.ones(4))
    # a group without frames gets weight 0 and stays out of the normalisation
    w0 = loss_weights([100.0, 0.0, 25.0], [0.5, 0.0, 0.5], "inverse_frequency")
    np.testing.assert_allclose(w0, [0.01 / 0.025, 0.0, 0.04 / 0.025])
    assert named_loss_weights({"a": 100, "b": 25}, {"b": 1, "a": 1}, "inverse_frequency") == pytest.approx({"a": 0.4, "b": 1.6})


def test_bad_weighting_counts_and_sampling_raise():
    with pytest.raises(ValueError, match="inverse_frequency"):
        loss_weights(COUNTS, [1, 1, 1, 1], "inverse")
    with pytest.raises(ValueError, match="counts"):
        loss_weights([-1.0, 2.0], [1, 1], "inverse_frequency")
    with pytest.raises(ValueError, match="sampling"):
        loss_weights([1.0, 2.0], [1, 1, 1], "inverse_frequency")
    with pytest.raises(ValueError, match="without frames"):
        loss_weights([0.0, 2.0], [1.0, 0.0], "inverse_frequency")


# ------------------------------------------------------------------------------ weighted loss
def _logits(per_frame_targets, vocab=11, tokens=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(per_frame_targets)
    logits = torch.randn(b * tokens, vocab, generator=g) * 3.0
    targets = torch.tensor([t for t in per_frame_targets for _ in range(tokens)]) % vocab
    return logits, targets


def test_weighted_loss_is_the_weighted_mean_of_per_frame_losses():
    logits, targets = _logits([1, 4, 2])
    weights = [0.5, 3.0]
    groups = [0, 1, 0]
    loss, per_frame = weighted_action_loss(logits, targets, groups, weights)
    # by hand: per-token -log softmax, mean over each frame's 7 tokens, weighted mean over frames
    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = -logp[torch.arange(targets.numel()), targets].view(3, 7).mean(dim=1)
    expected = (0.5 * nll[0] + 3.0 * nll[1] + 0.5 * nll[2]) / 3
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_allclose(per_frame.numpy(), nll.numpy(), rtol=1e-5)
    # all weights 1: the model's own loss (mean over the label tokens)
    ones, _ = weighted_action_loss(logits, targets, groups, [1.0, 1.0])
    assert float(ones) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-6)
    with pytest.raises(ValueError, match="outside"):
        weighted_action_loss(logits, targets, [0, 2, 0], weights)
    with pytest.raises(ValueError, match="frames"):
        per_frame_loss(logits, targets, 4)


def test_gradient_of_a_rare_frame_is_scaled_by_its_weight():
    base, targets = _logits([3, 5])
    grads = {}
    for name, weights in (("plain", [1.0, 1.0]), ("weighted", [0.25, 6.0])):
        logits = base.clone().requires_grad_(True)
        weighted_action_loss(logits, targets, [0, 1], weights)[0].backward()
        grads[name] = logits.grad.view(2, 7, -1)
    torch.testing.assert_close(grads["weighted"][1], 6.0 * grads["plain"][1])  # rare group: x 6
    torch.testing.assert_close(grads["weighted"][0], 0.25 * grads["plain"][0])


# ------------------------------------------------------------------------------ trainer
class OrderedGroupLoader:
    """8 fixed frames (0-3 group 0, 4-7 group 1), batches in a fixed order; reports ``sources`` with
    :data:`GROUP_FRAMES` kept frames and takes weights from the trainer (recorded in ``set_calls``)."""

    dataset_statistics = STATS
    group_names = GROUPS

    def __init__(self, batch_size, order):
        self.frames = _frames()
        self.batch_size = batch_size
        self.order = [list(o) for o in order]
        self.i = 0
        self.initial_weights = {GROUPS[0]: 0.5, GROUPS[1]: 0.5}
        self.sources = [Source(g, g, None, g, n) for g, n in zip(GROUPS, GROUP_FRAMES)]
        self.set_calls = []

    def set_weights(self, weights):
        self.set_calls.append(dict(weights))

    def next_batch(self):
        idx = np.array(self.order[self.i % len(self.order)])
        self.i += 1
        groups = (idx >= 4).astype(np.int64)
        return {
            "image": self.frames["image"][idx],
            "instruction": [self.frames["instruction"][i] for i in idx],
            "action": self.frames["action"][idx],
            "group_index": groups,
        }

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = int(state["i"])


def _cfg(**changes):
    values = {"mixture": {GROUPS[0]: 1, GROUPS[1]: 1}, "train_steps": 2, "batch_size": 2, "lora_rank": 4,
              "lora_alpha": 8, "learning_rate": 2e-3, "seed": 3}  # fmt: skip
    values.update(changes)
    return checked(values)


def _grads(tuner):
    return {n: p.grad.clone() for n, p in tuner.model.named_parameters() if p.requires_grad and p.grad is not None}


JOINT = [0, 5, 6, 2]  # frames of both groups
WEIGHTED = dict(strategy="full_dataset", loss_weighting="inverse_frequency")


@pytest.fixture(scope="module")
def joint_batch(tmp_path_factory):
    """Metrics and LoRA gradients of one weighted batch of the 4 :data:`JOINT` frames."""
    one = FineTuner(_cfg(batch_size=4, **WEIGHTED), str(tmp_path_factory.mktemp("one")),
                    loader=OrderedGroupLoader(4, [JOINT]), device="cpu")  # fmt: skip
    metrics = one.forward_backward()
    return metrics, _grads(one)


def _assert_same_grads(grads, ref):
    assert grads.keys() == ref.keys() and ref
    scale = max(float(g.abs().max()) for g in ref.values())
    for name, g in ref.items():  # float32 sums in another order: tolerance relative to the largest gradient
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5 * scale)


def test_trainer_scales_a_rare_frames_gradient_and_accumulates_like_one_batch(tmp_path, joint_batch):
    rare = [[5]]  # one frame of the rare group 1
    plain = FineTuner(_cfg(batch_size=1), str(tmp_path / "p"), loader=OrderedGroupLoader(1, rare), device="cpu")
    weighted = FineTuner(_cfg(batch_size=1, strategy="full_dataset", loss_weighting="inverse_frequency"),
                         str(tmp_path / "w"), loader=OrderedGroupLoader(1, rare), device="cpu")  # fmt: skip
    # sampling p = (0.5, 0.5) from the loader; w ~ 1/n normalised to sum p w = 1
    r = 1 / np.array(GROUP_FRAMES, dtype=float)
    expected_w = r / np.sum(0.5 * r)
    np.testing.assert_allclose(weighted.loss_weights, expected_w, rtol=1e-12)
    plain.forward_backward()
    m = weighted.forward_backward()
    assert m["weighted_loss"] == pytest.approx(expected_w[1] * m["loss"], rel=1e-5)
    g_plain, g_weighted = _grads(plain), _grads(weighted)
    assert g_plain.keys() == g_weighted.keys() and g_plain
    scale = max(float(g.abs().max()) for g in g_plain.values())
    for name, g in g_plain.items():
        torch.testing.assert_close(g_weighted[name], expected_w[1] * g, rtol=1e-4, atol=1e-6 * scale * expected_w[1])

    # two micro-batches of 2 frames == one batch of 4 frames, with weights (mixed groups per batch)
    m_one, g_one = joint_batch
    two = FineTuner(_cfg(batch_size=2, grad_accumulation_steps=2, **WEIGHTED), str(tmp_path / "b"),
                    loader=OrderedGroupLoader(2, [JOINT[:2], JOINT[2:]]), device="cpu")  # fmt: skip
    m_two = two.forward_backward()
    assert m_two["weighted_loss"] == pytest.approx(m_one["weighted_loss"], rel=1e-5)
    assert m_one["weighted_loss"] != pytest.approx(m_one["loss"], rel=1e-3)
    _assert_same_grads(_grads(two), g_one)


def test_curriculum_renormalises_the_loss_weights_at_each_phase_and_saves_them(tmp_path):
    curriculum = [{"step": 0, "weights": {GROUPS[0]: 1, GROUPS[1]: 0}},
                  {"step": 1, "weights": {GROUPS[0]: 1, GROUPS[1]: 3}}]  # fmt: skip
    cfg = _cfg(strategy="curriculum", curriculum=curriculum, loss_weighting="inverse_sqrt_frequency")
    loader = OrderedGroupLoader(2, [[0, 1]])
    loader.initial_weights = {GROUPS[0]: 1.0, GROUPS[1]: 0.0}
    out = str(tmp_path / "run")
    tuner = FineTuner(cfg, out, loader=loader, device="cpu")
    r = 1 / np.sqrt(np.array(GROUP_FRAMES, dtype=float))
    np.testing.assert_allclose(tuner.loss_weights, r / r[0], rtol=1e-12)  # only group 0 sampled: w_0 = 1
    ckpt = tuner.train()
    p = np.array([0.25, 0.75])
    final = r / np.sum(p * r)
    np.testing.assert_allclose(tuner.loss_weights, final, rtol=1e-12)
    with open(os.path.join(out, TRAIN_LOG_NAME)) as fh:
        log = [json.loads(line) for line in fh]
    assert [("loss_weights" in row) for row in log] == [True, False]  # logged at the phase change (step 1)
    assert log[0]["loss_weights"] == pytest.approx(dict(zip(GROUPS, final)))
    with open(os.path.join(ckpt, SUMMARY_FILE)) as fh:
        summary = json.load(fh)
    assert summary["loss_weighting"] == "inverse_sqrt_frequency"
    assert summary["loss_weights"] == pytest.approx(dict(zip(GROUPS, final)))
    assert summary["initial_loss_weights"] == pytest.approx(dict(zip(GROUPS, r / r[0])))
    assert summary["strategy_label"].endswith("+ loss inverse_sqrt_frequency by dataset")


def test_loss_weighting_needs_a_loader_with_groups(tmp_path):
    from test_train_finetune import InMemoryLoader

    with pytest.raises(ConfigError) as err:
        FineTuner(_cfg(loss_weighting="inverse_frequency"), str(tmp_path / "x"), loader=InMemoryLoader(), device="cpu")
    assert err.value.field == "loss_weighting"


# ------------------------------------------------------------------------------ config
def test_config_validates_labels_and_keys_the_loss_weighting():
    with pytest.raises(ConfigError) as err:
        _cfg(loss_weighting="inverse")
    assert err.value.field == "loss_weighting" and all(w in str(err.value) for w in LOSS_WEIGHTINGS)
    base = _cfg(strategy="temperature", mixing_level="task", temperature=1.0)
    weighted = base.replace(loss_weighting="inverse_frequency")
    assert base.strategy_label() == "temperature T=1 by task"
    assert weighted.strategy_label() == "temperature T=1 by task + loss inverse_frequency"
    assert train_key(weighted) != train_key(base)
    assert weighted.training_signature()["loss_weighting"] == "inverse_frequency"
    assert train_key(weighted.replace(loss_weighting="inverse_sqrt_frequency")) != train_key(weighted)


# ------------------------------------------------------------------------------ data parallel
def _ddp_worker(rank, port, out_dir):
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(1)
    # each rank trains on half of the joint batch
    loader = OrderedGroupLoader(2, [JOINT[2 * rank: 2 * rank + 2]])
    tuner = FineTuner(_cfg(batch_size=2, **WEIGHTED), out_dir, loader=loader, device="cpu")
    tuner.forward_backward()  # DDP all-reduces (averages) the gradients
    if rank == 0:
        torch.save(_grads(tuner), os.path.join(out_dir, "ddp_grads.pt"))
    from vlamix.train.distributed import cleanup

    cleanup(tuner.ctx)


def test_two_ranks_give_the_weighted_gradient_of_their_joint_batch(tmp_path, joint_batch):
    import torch.multiprocessing as mp

    from test_train_ddp import _free_port

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    _assert_same_grads(torch.load(tmp_path / "ddp_grads.pt", weights_only=True), joint_batch[1])
