"""finetune_mode "full" (issue 13's learnability study): the base weights train too, through the
same LoRA-wrapped model and checkpoint code; "lora" (the default, OpenVLA's recipe) leaves them.

Two optimiser steps of the built-in tiny model on an in-memory batch (no RLDS, no simulator).
"""

import os

import pytest
import torch
from safetensors.torch import load_file

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.train.finetune import FineTuner

from test_train_finetune import InMemoryLoader


def _cfg(mode):
    return checked({"mixture": {"libero_spatial_no_noops": 1}, "train_steps": 2, "batch_size": 2,
                                  "lora_rank": 4, "learning_rate": 1e-3, "seed": 3, "finetune_mode": mode})


def _base(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_finetune_mode_is_validated():
    with pytest.raises(ConfigError) as err:
        _cfg("qlora")
    assert err.value.field == "finetune_mode" and "full" in str(err.value)
    assert checked({"mixture": {"libero_spatial_no_noops": 1}}).get("finetune_mode") == "lora"
    from vlamix.pipeline.config import train_key

    # a different model is trained, so a different run; the default leaves earlier train keys as they were
    assert train_key(_cfg("full")) != train_key(_cfg("lora"))
    assert "finetune_mode" not in _cfg("lora").training_signature()


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_full_mode_trains_and_saves_the_base_weights(tmp_path, mode):
    tuner = FineTuner(_cfg(mode), str(tmp_path), loader=InMemoryLoader(order=[[0, 1]]), device="cpu")
    before = _base(tuner.model)
    n_lora = sum(p.numel() for n, p in tuner.model.named_parameters() if "lora_" in n)
    n_train = sum(p.numel() for p in tuner.trainable)
    ckpt = tuner.train()
    after = _base(tuner.model)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    if mode == "lora":
        assert n_train == n_lora and changed == []
        return
    assert n_train > 10 * n_lora  # every base weight is trainable too
    assert any("language_model" in n for n in changed) and any("projector" in n for n in changed)
    # the checkpoint holds the trained base weights (plain key names), and resuming restores them
    saved = {}
    for name in os.listdir(ckpt):
        if name.startswith("model") and name.endswith(".safetensors"):
            saved.update(load_file(os.path.join(ckpt, name)))
    key = next(n for n in changed if "language_model" in n and n.endswith("weight"))
    plain = key.replace("base_model.model.", "", 1).replace(".base_layer.", ".")
    assert torch.equal(saved[plain], after[key])
    resumed = FineTuner(_cfg(mode).replace(train_steps=3), str(tmp_path / "r"), resume_from=ckpt,
                        loader=InMemoryLoader(order=[[0, 1]]), device="cpu")
    assert torch.equal(_base(resumed.model)[key], after[key])
