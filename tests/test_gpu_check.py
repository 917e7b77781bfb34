"""The one-call GPU check runs on the CPU with --smoke, so it cannot rot before a GPU is lent."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_smoke_writes_its_json_and_every_check_passes(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record == json.loads(proc.stdout.strip().splitlines()[-1])  # the file and the printed line agree
    stages = record["stages"]
    assert list(stages) == ["environment", "sdpa", "policy", "oft", "rollouts", "lora", "trainer_path"]
    assert record["ok"] and all(s.get("ok", True) and "error" not in s for s in stages.values())
    # our mask never yields NaN, on any backend that ran
    assert all(b["vlamix_mask"].get("pad_rows_nan") is False for b in stages["sdpa"]["backends"].values()
               if "error" not in b["vlamix_mask"])
    policy = stages["policy"]
    assert policy["padded_rows"] >= 10 and policy["ids_equal_one_at_a_time"] == 1.0
    assert policy["kv_vs_teacher_forced_max_abs"] < 1e-3 and set(policy["act"]) == {"1", "8", "16"}
    oft = stages["oft"]  # OpenVLA-OFT's LIBERO recipe: chunks of 8, 2 images + proprio, bidirectional attention
    assert oft["chunk_shape"] == [16, 8, 7] and oft["padded_rows"] >= 10 and oft["vision_tokens"] == 2 * 256 + 1
    assert oft["chunks_finite"] and oft["hidden_finite"] and oft["agreement_tol"] == 1e-4  # fp32 on the CPU
    assert oft["batched_vs_single_max_abs"] <= 1e-4 < oft["rows_differ_max_abs"]
    assert oft["bidirectional_vs_causal_max_abs"] > 1e-2 and oft["eos_change_bidirectional_max_abs"] > 1e-3
    assert oft["eos_change_causal_max_abs"] < 1e-6  # a causal mask never sees the token after the slots
    assert {b: v["shape"] for b, v in oft["predict_action_chunk"].items()} == {"1": [1, 8, 7], "16": [16, 8, 7]}
    assert oft["actions_per_s_16_vs_1"] > 0
    runs = stages["rollouts"]["runs"]
    assert (runs["32_envs"]["policy_batch"], runs["32_envs"]["max_served_batch"]) == (16, 16)  # 8 workers x 4 envs
    assert (runs["16_envs"]["policy_batch"], runs["1_envs"]["policy_batch"]) == (16, 1)
    trainer = stages["trainer_path"]
    assert (trainer["resumed_at_step"], trainer["final"], trainer["loaded_dtype"]) == (2, "step_000003", "torch.bfloat16")
    assert trainer["center_crop"] is True  # the checkpoint was trained with image_aug


def test_oft_stage_flags_a_silent_fallback_to_causal_attention(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import gpu_check  # a script, not a package: importable from benchmarks/ only

    from vlamix.model.modeling import OpenVLAForActionPrediction

    original = OpenVLAForActionPrediction.forward_actions

    def always_causal(self, *args, attention="bidirectional", **kwargs):  # what stock transformers did to OFT
        return original(self, *args, attention="causal", **kwargs)

    monkeypatch.setattr(OpenVLAForActionPrediction, "forward_actions", always_causal)
    result = gpu_check.stage_oft(gpu_check.Check(smoke=True, budget_s=60))
    assert result["ok"] is False
    assert result["bidirectional_vs_causal_max_abs"] == 0.0 and result["eos_change_bidirectional_max_abs"] == 0.0
    assert result["chunk_shape"] == [16, 8, 7] and result["batched_vs_single_max_abs"] <= 1e-4  # the rest still holds
