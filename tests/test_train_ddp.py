"""Data-parallel fine-tuning: two CPU processes (gloo) end with identical LoRA weights.

Each rank reads a different in-memory batch stream, so the weights can only agree if DDP averages
the gradients; only rank 0 writes the log and the checkpoint.
"""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from configs import checked

STATS = {
    "libero_spatial_no_noops": {
        "action": {
            "mean": [0.0] * 7, "std": [1.0] * 7, "max": [1.0] * 7, "min": [-1.0] * 7,
            "q01": [-0.9] * 6 + [0.0], "q99": [0.9] * 6 + [1.0], "mask": [True] * 6 + [False],
        },
        "num_transitions": 8, "num_trajectories": 2,
    }
}  # fmt: skip


class RankLoader:
    """Test-only stand-in for MixtureLoader: random frames from a seeded generator (seed = rank)."""

    dataset_statistics = STATS

    def __init__(self, batch_size: int, seed: int):
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.seen = []

    def next_batch(self):
        b = self.batch_size
        actions = self.rng.uniform(-1, 1, (b, 7)).astype(np.float32)
        self.seen.append(actions)
        return {
            "image": self.rng.integers(0, 256, (b, 224, 224, 3), dtype=np.uint8),
            "instruction": ["pick up the black bowl", "open the top drawer"][:b],
            "action": actions,
            "dataset_index": np.zeros(b, np.int64),
        }

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


def _worker(rank: int, world_size: int, port: int, out_dir: str, cfg_dict: dict) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    from vlamix.train.finetune import FineTuner

    loader = RankLoader(2, seed=100 + rank)
    tuner = FineTuner(checked(cfg_dict), out_dir, loader=loader, device="cpu")
    assert tuner.ctx.world_size == world_size and tuner.ctx.rank == rank
    ckpt = tuner.train()
    weights = {n: p.detach().clone() for n, p in tuner.model.named_parameters() if p.requires_grad}
    torch.save(
        {"weights": weights, "actions": np.concatenate(loader.seen).tolist(), "ckpt": ckpt},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ranks_end_with_equal_weights(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    cfg = {"mixture": {"libero_spatial_no_noops": 1}, "train_steps": 2, "batch_size": 2, "lora_rank": 4,
           "learning_rate": 2e-3}  # fmt: skip
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), cfg), nprocs=2, join=True)

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    # The ranks trained on different frames ...
    assert not np.allclose(r0["actions"], r1["actions"])
    # ... yet hold identical LoRA weights, and training moved them (LoRA B starts at zero).
    assert r0["weights"].keys() == r1["weights"].keys()
    for name, w0 in r0["weights"].items():
        assert torch.equal(w0, r1["weights"][name]), name
    lora_b = [w for n, w in r0["weights"].items() if "lora_B" in n]
    assert lora_b and max(float(w.abs().max()) for w in lora_b) > 0

    # Only rank 0 wrote: one log line per step, one checkpoint.
    lines = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [1, 2]
    assert lines[-1]["frames"] == 2 * 2 * 2  # steps x batch x ranks
    assert r0["ckpt"] == r1["ckpt"] == str(tmp_path / "step_000002")
    assert os.path.isfile(tmp_path / "step_000002" / "training_state.pt")
    state = torch.load(tmp_path / "step_000002" / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["data"]) == 2 and state["data"][0] != state["data"][1]
