"""Offline (teacher-forced) metrics, and fine-tuning on a real tiny RLDS mixture end to end."""

import json
import os

import numpy as np
import pytest
import torch

from configs import checked
from vlamix.eval.offline import offline_metrics
from synthetic_rlds import synthetic_episode

SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"


def _action_stats(q01, q99, mask):
    return {"mean": [0.0] * 7, "std": [1.0] * 7, "max": [5.0] * 7, "min": [-5.0] * 7, "q01": q01, "q99": q99, "mask": mask}


STATS = {
    SPATIAL: {"action": _action_stats([-0.5, -1, -0.25, -2, -0.1, -3, 0], [0.5, 2, 0.75, 1, 0.3, 3, 1], [True] * 6 + [False])},
    # every dim masked: the gripper is un-normalised too, with a range of 4 (-1 .. 3)
    OBJECT: {"action": _action_stats([-1.0] * 7, [3.0] * 7, [True] * 7)},
}


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory):
    """A tiny model with a (perturbed, so non-trivial) LoRA adapter, saved with two datasets' stats."""
    from vlamix.model import apply_lora, load_vla, save_vla

    torch.manual_seed(0)
    model, processor = load_vla("tiny")
    model = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    path = str(tmp_path_factory.mktemp("ckpt"))
    save_vla(model, processor, path, norm_stats=STATS)
    return path


def test_offline_metrics_teacher_forced_accuracy_and_unnormalised_l1(lora_checkpoint):
    from vlamix.model import load_vla

    model, processor = load_vla(lora_checkpoint)
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    instructions = ["pick up the black bowl", "open the top drawer", "put the bowl on the plate", "turn on the stove"]
    with torch.no_grad():
        ids = model.predict_action_ids(**processor.inference_inputs(images, instructions)).numpy()
    assert processor.action_tokenizer.is_action_token(ids).all()  # precondition: greedy picks action tokens
    # Ground truth = the model's own greedy actions: teacher forcing then predicts every token.
    actions = processor.action_tokenizer.decode(ids).astype(np.float32)
    # Frame 3 (dataset OBJECT) gets another gripper value: only its last token can be wrong, since
    # the 6 tokens before it are unchanged.
    greedy = float(actions[3, 6])
    other = np.float32(-0.9 if greedy > 0 else 0.9)
    actions[3, 6] = other
    index = np.array([0, 1, 0, 1], np.int64)
    batches = [
        {"image": images[s], "instruction": instructions[s], "action": actions[s], "dataset_index": index[s]}
        for s in (slice(0, 2), slice(2, 4))
    ]
    result = offline_metrics(lora_checkpoint, precision="fp32", loader=batches, dataset_names=[SPATIAL, OBJECT],
                             dataset_statistics=STATS, device="cpu")  # fmt: skip
    assert result["n_frames"] == 4
    assert result["action_token_accuracy"] == pytest.approx(27 / 28)
    # OBJECT's gripper is un-normalised with half-range (3 - (-1)) / 2 = 2 (SPATIAL's would keep it as is).
    assert result["action_l1"] == pytest.approx(2.0 * abs(float(other) - greedy) / 28, rel=1e-5)
    # per dataset (evaluation kit): SPATIAL (frames 0, 2) exact, OBJECT (frames 1, 3) holds the wrong token
    per = result["per_dataset"]
    assert per[SPATIAL]["n_frames"] == per[OBJECT]["n_frames"] == 2
    assert per[SPATIAL]["action_token_accuracy"] == 1.0 and per[SPATIAL]["action_l1"] == pytest.approx(0.0, abs=1e-6)
    assert per[OBJECT]["action_token_accuracy"] == pytest.approx(13 / 14)
    assert per[OBJECT]["action_l1"] == pytest.approx(2.0 * abs(float(other) - greedy) / 14, rel=1e-5)

    first = offline_metrics(lora_checkpoint, precision="fp32", loader=batches, dataset_names=[SPATIAL, OBJECT],
                            dataset_statistics=STATS, device="cpu", max_frames=2)  # fmt: skip
    assert first["n_frames"] == 2 and first["action_token_accuracy"] == 1.0
    assert first["action_l1"] == pytest.approx(0.0, abs=1e-6)


def test_offline_metrics_requires_stats_for_every_dataset(lora_checkpoint):
    with pytest.raises(KeyError, match=OBJECT):
        offline_metrics(lora_checkpoint, precision="fp32", loader=[], dataset_names=[SPATIAL, OBJECT],
                        dataset_statistics={SPATIAL: STATS[SPATIAL]}, device="cpu")  # fmt: skip


# ------------------------------------------------------------------ real RLDS mixture, end to end
def _episodes(name, n_episodes, steps):
    rng = np.random.default_rng(len(name))
    for i in range(n_episodes):
        yield synthetic_episode(rng, steps, f"pick up the {name.split('_')[1]} object {i}", f"/demos/{i}.hdf5")


def test_finetune_resume_and_offline_metrics_on_a_tiny_rlds_mixture(tmp_path):
    from vlamix.data.rlds_writer import write_rlds
    from vlamix.train.finetune import TRAIN_LOG_NAME, finetune

    data_dir = tmp_path / "data"
    write_rlds(_episodes(SPATIAL, 3, 4), data_dir, SPATIAL)
    write_rlds(_episodes(OBJECT, 3, 5), data_dir, OBJECT)
    cfg = checked({
        "mixture": {SPATIAL: 2, OBJECT: 1}, "data_dir": str(data_dir), "demos": "none", "heldout_fraction": 0.34,
        "train_steps": 2, "batch_size": 2, "lora_rank": 4, "learning_rate": 2e-3, "shuffle_buffer_size": 8,
    })  # fmt: skip
    ckpt = finetune(cfg, str(tmp_path / "full"), save_every=1)
    assert ckpt == str(tmp_path / "full" / "step_000002")
    with open(os.path.join(ckpt, "dataset_statistics.json"), encoding="utf-8") as f:
        stats = json.load(f)
    assert sorted(stats) == sorted([SPATIAL, OBJECT]) and stats[SPATIAL]["action"]["mask"] == [True] * 6 + [False]

    # The real MixtureLoader's position is restored too: step 2 repeats exactly.
    finetune(cfg, str(tmp_path / "resumed"), resume_from=str(tmp_path / "full" / "step_000001"))
    with open(tmp_path / "full" / TRAIN_LOG_NAME) as f:
        full = [json.loads(line) for line in f]
    with open(tmp_path / "resumed" / TRAIN_LOG_NAME) as f:
        resumed = [json.loads(line) for line in f]
    assert [r["step"] for r in resumed] == [2]
    assert resumed[0]["loss"] == pytest.approx(full[1]["loss"], rel=1e-6)

    result = offline_metrics(ckpt, precision=cfg.resolved_precision(), data=cfg.data, mixing=cfg.mixing, device="cpu")
    assert result["n_frames"] == 4 + 5  # one held-out episode per dataset
    assert 0.0 <= result["action_token_accuracy"] <= 1.0 and result["action_l1"] > 0
