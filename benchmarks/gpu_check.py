"""First contact with a GPU: what only a GPU can show about the OpenVLA-7B route, in one call, in one JSON file.

Run on a fresh one-GPU machine (no network; this repository plus wheels a session can carry), from the
repository root::

    python benchmarks/gpu_check.py --out workspace/gpu_check.json          # OpenVLA-7B, random weights, bf16, < 9 min
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json       # tiny model on the CPU, < 3 min (tests run it)

With the device tool of this workplace (wheels of the pinned transformers / peft / timm / tokenizers in a
git-ignored ``.whl/``; the image's torch is used and recorded)::

    run(command="python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
                "PYTHONPATH=/tmp/site:examples/cloud_VLA_finetune python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json",
        carry=[".whl"], timeout_s=600)

Stages (each in its own try block; a stage that fails records its error and the next one runs; stages
that would start after ``--budget-s`` are recorded as skipped):

1. ``environment``: versions, GPU, SDPA backends enabled.
2. ``sdpa``: one left-padded batch through ``F.scaled_dot_product_attention`` per backend (default, flash,
   efficient, cudnn, math) with the mask transformers builds (pad query rows fully masked) and with ours
   (:func:`vlamix.model.modeling.attention_mask_4d`): NaN in the masked rows, NaN leaking into real rows.
3. ``policy``: random-weight OpenVLA-7B (official shapes, bf16; the tiny preset with ``--smoke``): a left-padded
   batch of 16 different LIBERO instructions vs one at a time (action ids), every logit finite, the KV-cache
   decoding steps vs the teacher-forced forward (max |logit difference| over the 7 steps), ``act`` latency at
   batch 1 / 8 / 16 and the actions/s ratio of 16 vs 1; memory estimate vs measured peak.
4. ``oft``: random-weight OpenVLA-7B with OpenVLA-OFT's LIBERO recipe (L1 head + proprio projector, chunks of
   8 x 7, third-person + wrist image, 8-D proprio; bf16; the tiny preset with ``--smoke``), beside the token model:
   ``predict_action_chunk`` on a left-padded batch of 16 different instructions ([16, 8, 7], finite) vs one at a
   time (max |difference| within 1e-4 in fp32, 5% of the action scale in bf16), bidirectional vs causal hidden
   states and the token after the slots seen only bidirectionally (a silent fallback to causal on the GPU's SDPA
   kernels fails), latency at batch 1 / 16 and the actions/s ratio, peak memory (about a minute and ~16 GiB on
   an H100, estimated from the model size in :func:`stage_oft`).
5. ``rollouts``: the batched server (:func:`vlamix.eval.rollout.evaluate`) with stand-in environments (LIBERO's
   assets do not travel) at 1 env (1 x 1), 16 envs (16 x 1, lock-step) and 32 envs (8 x 4, double-buffered):
   env-steps/s and the policy batch the rows record (16 in both large runs).
6. ``lora``: LoRA rank 32 on the same model: step time and peak memory at batch 1 / 8 / 16 with and without
   gradient checkpointing (an out-of-memory result is recorded, not raised), beside the memory estimate
   (:mod:`vlamix.model.memory`).
7. ``trainer_path``: the real :class:`vlamix.train.finetune.FineTuner` on this device in bf16 (tiny model, an
   in-memory loader): 2 steps -> checkpoint -> resume for a third -> :class:`vlamix.eval.policy.VLAPolicy`
   with the LoRA merged (float32 merge) vs the unmerged adapter; parameter devices and dtypes as configured.

Writes ``--out`` (one JSON object: ``stages`` with one record per stage, ``ok`` = every check passed) and prints
the same object as one line. Exit status 0 when every check passed, 1 otherwise, 2 without CUDA (unless --smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_openvla7b_gpu, bench_rollout

#: LIBERO instructions of different lengths (spatial, object, goal, LIBERO-10): every batch is left-padded.
INSTRUCTIONS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "pick up the alphabet soup and place it in the basket", "open the middle drawer of the cabinet",
    "put the bowl on the plate", "turn on the stove", "push the plate to the front of the stove",
    "put the wine bottle on top of the cabinet", "open the top drawer and put the bowl inside",
    "put the cream cheese in the bowl", "pick up the ketchup and place it in the basket",
    "put both the alphabet soup and the tomato sauce in the basket", "put the bowl on the stove",
    "pick up the black bowl on the wooden cabinet and place it on the plate", "put the wine bottle on the rack",
    "pick up the milk and place it in the basket", "put the bowl on top of the cabinet",
]
NORM_STATS = {"libero_spatial_no_noops": {"action": {
    "q01": [-0.9] * 6 + [0.0], "q99": [0.9] * 6 + [1.0], "mask": [True] * 6 + [False],
    "min": [-1.0] * 6 + [0.0], "max": [1.0] * 6 + [1.0], "mean": [0.0] * 7, "std": [0.5] * 7},
    "proprio": {k: [0.0] * 8 for k in ("mean", "std", "min", "max", "q01", "q99")},
    "num_transitions": 64, "num_trajectories": 4}}


class Check:
    """Shared state of one run: device, smoke flag, the built model, the budget."""

    def __init__(self, smoke: bool, budget_s: float):
        import torch

        self.torch = torch
        self.smoke = smoke
        self.device = torch.device("cpu" if smoke else "cuda:0")
        self.dtype = torch.float32 if smoke else torch.bfloat16
        self.deadline = time.monotonic() + budget_s
        self.model = self.processor = self.policy = None

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def peak_gib(self):
        return round(self.torch.cuda.max_memory_allocated(self.device) / 2**30, 2) if self.device.type == "cuda" else None

    def reset_peak(self):
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def free(self):
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def inputs(self, images, instructions):
        return self.to_device(self.processor.inference_inputs(images, instructions))

    def to_device(self, batch: dict) -> dict:
        """Tensors of ``batch`` on the device; floating ones in the check's dtype."""
        return {k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}


# ------------------------------------------------------------------------------------------ stages
def stage_environment(c: Check) -> dict:
    import importlib.metadata as md

    torch = c.torch
    versions = {}
    for name in ("torch", "transformers", "peft", "timm", "tokenizers", "safetensors", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    out = {"versions": versions, "device": str(c.device), "smoke": c.smoke}
    if c.device.type == "cuda":
        props = torch.cuda.get_device_properties(c.device)
        out.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                         "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                         "cudnn": torch.backends.cuda.cudnn_sdp_enabled(), "math": torch.backends.cuda.math_sdp_enabled()})
    return out


def stage_sdpa(c: Check) -> dict:
    """NaN of fully masked query rows per SDPA backend, with transformers' mask and with ours."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vlamix.model.modeling import attention_mask_4d

    torch = c.torch
    B, H, T, D, pad = 2, 32 if not c.smoke else 4, 300 if not c.smoke else 40, 128 if not c.smoke else 16, 20
    gen = torch.Generator(device=c.device).manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device=c.device, dtype=c.dtype, generator=gen) for _ in range(3))
    tokens = torch.ones(B, T, dtype=torch.long, device=c.device)
    tokens[1, :pad] = 0  # sample 1 is left-padded
    causal = torch.ones(T, T, dtype=torch.bool, device=c.device).tril()
    theirs = causal[None, None] & tokens.bool()[:, None, None, :]  # pad queries attend to nothing
    ours = attention_mask_4d(tokens, T, c.dtype)
    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    out, ok = {}, True
    for name, backend in backends.items():
        row = {}
        for label, mask in (("transformers_mask", theirs), ("vlamix_mask", ours)):
            try:
                with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
                    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                row[label] = {"pad_rows_nan": bool(o[1, :, :pad].isnan().any()),
                              "real_rows_nan": bool(o[1, :, pad:].isnan().any() | o[0].isnan().any())}
            except RuntimeError as err:  # this backend does not take this input (e.g. flash with a mask)
                row[label] = {"error": str(err).splitlines()[0][:160]}
        mine = row["vlamix_mask"]
        ok &= "error" in mine or not (mine["pad_rows_nan"] or mine["real_rows_nan"])
        out[name] = row
    return {"ok": ok, "backends": out}


def _build(c: Check):
    from bench_openvla7b_gpu import _build_model

    from vlamix.eval.policy import VLAPolicy
    from vlamix.model.processor import VLAProcessor
    from vlamix.model.tokenizer import build_tiny_tokenizer

    t0 = time.perf_counter()
    model, config = _build_model("tiny" if c.smoke else "openvla_7b", c.device, c.dtype, seed=0)
    model.norm_stats = NORM_STATS
    model.eval()
    c.model, c.processor = model, VLAProcessor.from_config(config, build_tiny_tokenizer())
    c.policy = VLAPolicy.from_model(model, c.processor, device=str(c.device))
    assert next(model.parameters()).dtype == c.dtype and next(model.parameters()).device.type == c.device.type
    return {"build_s": round(time.perf_counter() - t0, 1), "parameters": sum(p.numel() for p in model.parameters()),
            "weights_gib": c.peak_gib(), "tokenizer": "tiny preset (the Llama tokenizer is not carried)"}


def stage_policy(c: Check) -> dict:
    from vlamix.model.memory import estimate_policy

    torch = c.torch
    out = _build(c)
    model = c.model
    images = np.random.default_rng(1).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    batch = c.inputs(images, INSTRUCTIONS)
    with torch.inference_mode():
        ids, logits = model.predict_action_ids(**batch, return_logits=True)  # raises NonFiniteLogitsError on NaN
        singles = [model.predict_action_ids(**c.inputs(images[i : i + 1], INSTRUCTIONS[i : i + 1])) for i in range(16)]
        # KV-cache steps vs teacher-forced forward over the prompt + the tokens generated so far
        kv_diff = 0.0
        for step in range(ids.shape[1]):
            tf_batch = dict(batch, input_ids=torch.cat([batch["input_ids"], ids[:, :step]], dim=1),
                            attention_mask=torch.cat([batch["attention_mask"], torch.ones_like(ids[:, :step])], dim=1))
            last = model(**tf_batch, logits="last").logits[:, -1].float()
            kv_diff = max(kv_diff, float((last - logits[:, step].float()).abs().max()))
    single = torch.cat(singles)
    out.update(padded_rows=int((batch["attention_mask"] == 0).any(dim=1).sum()),
               ids_equal_one_at_a_time=float((ids == single).float().mean()), logits_finite=bool(torch.isfinite(logits).all()),
               kv_vs_teacher_forced_max_abs=round(kv_diff, 4), logit_std=round(float(logits.float().std()), 3))
    latency = {}
    c.reset_peak()
    for b in (1, 8, 16):
        for _ in range(2):
            c.policy.act(images[:b], INSTRUCTIONS[:b], "libero_spatial")
        times = []
        for _ in range(3 if c.smoke else 5):
            c.sync()
            t0 = time.perf_counter()
            actions = c.policy.act(images[:b], INSTRUCTIONS[:b], "libero_spatial")
            c.sync()
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        latency[str(b)] = {"act_ms": round(1000 * med, 1), "actions_per_s": round(b / med, 1),
                           "finite": bool(np.isfinite(actions).all())}
    out["act"] = latency
    out["actions_per_s_16_vs_1"] = round(latency["16"]["actions_per_s"] / latency["1"]["actions_per_s"], 2)
    out["peak_gib_batch16"] = c.peak_gib()
    if not c.smoke:
        from vlamix.model.configuration import VLAConfig

        shape = _shape(VLAConfig.openvla_7b())
        out["estimate_gib_batch16"] = round(estimate_policy(shape, dtype="bf16", batch=16, device="cuda").total / 2**30, 2)
    # bf16 reorders sums across batch shapes, so near-tied argmaxes may flip; NaN must never appear
    out["ok"] = out["logits_finite"] and out["ids_equal_one_at_a_time"] >= (1.0 if c.smoke else 0.9) and \
        all(v["finite"] for v in latency.values())
    return out


def _shape(config):
    import tempfile

    from vlamix.model.memory import model_shape

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as fh:
            fh.write(config.to_json_string(use_diff=False))
        return model_shape(tmp)


def stage_oft(c: Check) -> dict:
    """OpenVLA-OFT's LIBERO recipe (``OFT_LIBERO_RECIPE``: L1-regression head, chunks of 8 x 7, third-person +
    wrist image, 8-D proprio; moojink/openvla-oft ``vla-scripts/finetune.py`` / ``LIBERO.md``) on random-weight
    OpenVLA-7B (official shapes + the 151 M head and 17 M proprio projector, bf16; the tiny preset with
    ``--smoke``), built beside the token model of ``policy`` and freed at the end.

    Checks on a left-padded batch of 16 different instructions (different images, wrist images and proprio per row):
    ``predict_action_chunk`` gives [16, 8, 7], every value finite; batched vs one at a time (max |difference|,
    within ``agreement_tol``: 1e-4 in fp32, 5% of the chunks' largest |action| in bf16, whose unit roundoff 2^-9
    compounds over 32 layers whose GEMM tiling changes with the batch shape; a padding or mask bug moves actions
    by their whole scale); the rows differ from each other by more than that tolerance (so agreement is not that
    of a constant output); the bidirectional hidden states read by the head differ from a causal mask's, and
    changing the token after the action slots (EOS) changes them under the bidirectional mask but not (< 1/10 of
    that) under the causal one, on the GPU's own SDPA kernels: a silent fallback to causal attention fails here.
    Measures ``predict_action_chunk`` latency on device tensors (preprocessing excluded) at batch 1 and 16, the
    actions/s ratio of 16 vs 1 (each chunk = 8 actions), and the peak memory above what was allocated before.

    Cost on an H100 (estimate, not yet measured): building ~7.7 B parameters in bf16 on the GPU takes about as
    long as ``policy``'s build (seconds); one sample is ~600 tokens (2 x 256 patches + proprio + prompt + 56 slots),
    ~2 x 7.5e9 x 600 = 9 TFLOP, and the stage runs ~215 samples (5 passes of 16 + 16 singles + 7 x 1 + 7 x 16
    with warm-up), ~2 PFLOP: well under a minute; 7.71e9 x 2 bytes = 14.4 GiB of weights plus < 2 GiB of activations.
    """
    from bench_openvla7b_gpu import _build_model

    from vlamix.model.configuration import OFT_LIBERO_RECIPE
    from vlamix.model.processor import VLAProcessor
    from vlamix.model.tokenizer import build_tiny_tokenizer

    torch = c.torch
    before = torch.cuda.memory_allocated(c.device) if c.device.type == "cuda" else 0
    c.reset_peak()
    t0 = time.perf_counter()
    model, config = _build_model("tiny" if c.smoke else "openvla_7b", c.device, c.dtype, seed=0,
                                 recipe=OFT_LIBERO_RECIPE)
    model.norm_stats = NORM_STATS
    model.eval()
    processor = VLAProcessor.from_config(config, build_tiny_tokenizer())
    chunk, slots = config.action_chunk, model.action_head.num_slots
    out = {"build_s": round(time.perf_counter() - t0, 1), "parameters": sum(p.numel() for p in model.parameters()),
           "head_parameters": sum(p.numel() for p in model.action_head.parameters()),
           "proprio_parameters": sum(p.numel() for p in model.proprio_projector.parameters()),
           "action_chunk": chunk, "vision_tokens": model.num_vision_tokens, "attention": model.attn_implementation}
    rng = np.random.default_rng(2)
    images, wrist = (rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8) for _ in range(2))
    proprio = rng.uniform(-1, 1, (16, config.proprio_dim)).astype(np.float32)

    def inputs(lo: int, hi: int) -> dict:
        raw = processor.action_chunk_inputs(images[lo:hi], INSTRUCTIONS[lo:hi], num_slots=slots,
                                            wrist_images=wrist[lo:hi])
        return c.to_device(dict(raw, proprio=torch.from_numpy(proprio[lo:hi])))

    batch = inputs(0, 16)

    def max_abs(a, b) -> float:
        return float((a.float() - b.float()).abs().max())

    with torch.inference_mode():
        chunks = model.predict_action_chunk(**batch)
        singles = np.concatenate([model.predict_action_chunk(**inputs(i, i + 1)) for i in range(16)])
        changed = dict(batch, input_ids=batch["input_ids"].clone())
        changed["input_ids"][:, -1] = 42  # the token after every row's slots (EOS; left padding keeps it last)
        hidden = {(attention, name): model.forward_actions(**inputs_, attention=attention).action_hidden_states
                  for attention in ("bidirectional", "causal") for name, inputs_ in (("eos", batch), ("42", changed))}
    scale = float(np.abs(singles).max())
    tol = 1e-4 if c.dtype == torch.float32 else 0.05 * scale
    out.update(padded_rows=int((batch["attention_mask"] == 0).any(dim=1).sum()), chunk_shape=list(chunks.shape),
               chunks_finite=bool(np.isfinite(chunks).all() and np.isfinite(singles).all()),
               batched_vs_single_max_abs=round(float(np.abs(chunks - singles).max()), 6), agreement_tol=round(tol, 6),
               action_scale=round(scale, 4),
               rows_differ_max_abs=round(float(np.abs(singles[1:] - singles[0]).max()), 4),
               hidden_finite=all(bool(torch.isfinite(h).all()) for h in hidden.values()),
               bidirectional_vs_causal_max_abs=round(max_abs(hidden["bidirectional", "eos"],
                                                             hidden["causal", "eos"]), 4),
               eos_change_bidirectional_max_abs=round(max_abs(hidden["bidirectional", "eos"],
                                                              hidden["bidirectional", "42"]), 6),
               eos_change_causal_max_abs=round(max_abs(hidden["causal", "eos"], hidden["causal", "42"]), 6))
    latency = {}
    for b in (1, 16):
        x = inputs(0, b)
        for _ in range(1 if c.smoke else 2):
            model.predict_action_chunk(**x)
        times = []
        for _ in range(3 if c.smoke else 5):
            c.sync()
            t = time.perf_counter()
            a = model.predict_action_chunk(**x)
            c.sync()
            times.append(time.perf_counter() - t)
        med = float(np.median(times))
        latency[str(b)] = {"chunk_ms": round(1000 * med, 1), "actions_per_s": round(b * chunk / med, 1),
                           "finite": bool(np.isfinite(a).all()), "shape": list(a.shape)}
    out["predict_action_chunk"] = latency
    out["actions_per_s_16_vs_1"] = round(latency["16"]["actions_per_s"] / latency["1"]["actions_per_s"], 2)
    if c.device.type == "cuda":
        out["peak_gib"] = round((torch.cuda.max_memory_allocated(c.device) - before) / 2**30, 2)
    del model, hidden, batch, changed
    c.free()
    out["ok"] = (out["chunk_shape"] == [16, chunk, 7] and out["chunks_finite"] and out["hidden_finite"]
                 and out["batched_vs_single_max_abs"] <= tol < out["rows_differ_max_abs"]
                 and out["bidirectional_vs_causal_max_abs"] > 1e-2 and out["eos_change_bidirectional_max_abs"] > 1e-3
                 and out["eos_change_causal_max_abs"] < 0.1 * out["eos_change_bidirectional_max_abs"]
                 and all(v["finite"] and v["shape"][1:] == [chunk, 7] for v in latency.values()))
    return out


def stage_rollouts(c: Check) -> dict:
    from bench_rollout import _synthetic_slot_env

    from vlamix.eval.rollout import EpisodeSpec, evaluate
    from vlamix.eval.settings import RolloutConfig

    env_ms = 0.0 if c.smoke else 25.0
    steps = 6 if c.smoke else 20
    out, ok = {}, True
    for workers, epw in ((1, 1), (16, 1), (8, 4)):
        n = workers * epw
        specs = [EpisodeSpec("libero_spatial", 0, k, k, INSTRUCTIONS[k % 16]) for k in range(n)]
        stats: dict = {}
        t0 = time.perf_counter()
        rows = evaluate(lambda: c.policy, specs, RolloutConfig(eval_workers=workers, envs_per_worker=epw), max_steps=steps, num_steps_wait=0,
                        progress=False, stats=stats, slot_factory=functools.partial(_synthetic_slot_env, env_ms=env_ms))
        wall = time.perf_counter() - t0
        env_steps = sum(r["steps"] for r in rows)
        expected = 1 if n == 1 else 16
        run = {"workers": workers, "envs_per_worker": epw, "policy_batch": rows[0]["policy_batch"],
               "max_served_batch": max(r["batch_size"] for r in rows), "env_steps_per_s": round(env_steps / wall, 1),
               "policy_share": round(stats["policy_s"] / wall, 3), "errors": sum(1 for r in rows if r["error"])}
        ok &= run["policy_batch"] == run["max_served_batch"] == expected and run["errors"] == 0
        out[f"{n}_envs"] = run
    out["env_steps_per_s_32_vs_1"] = round(out["32_envs"]["env_steps_per_s"] / out["1_envs"]["env_steps_per_s"], 2)
    return {"ok": ok, "env_ms": env_ms, "runs": out}


def stage_lora(c: Check) -> dict:
    from bench_openvla7b_gpu import _is_oom, bench_train

    from vlamix.model.lora import apply_lora
    from vlamix.model.memory import estimate_training

    torch = c.torch
    c.policy = None
    base = c.model
    model = apply_lora(base, rank=32, alpha=16, dropout=0.0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-4)
    gen = torch.Generator().manual_seed(0)
    plan = ((1, False), (2, True)) if c.smoke else ((1, False), (8, False), (16, False), (8, True), (16, True))
    shape = None
    if not c.smoke:
        from vlamix.model.configuration import VLAConfig

        shape = _shape(VLAConfig.openvla_7b())
    runs, ok = {}, True
    for batch, ckpt in plan:
        key = f"batch{batch}_{'ckpt' if ckpt else 'nockpt'}"
        try:
            r = bench_train(model, base, optimizer, batch, 2 if c.smoke else 3, 1, c.device, c.dtype, gen, ckpt)
            ok &= all(np.isfinite(r["loss_first_last"]))
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            r = {"error": "out of memory", "peak_mem_gib": c.peak_gib()}
            optimizer.zero_grad(set_to_none=True)
        if shape is not None:
            r["estimate_gib"] = round(estimate_training(shape, precision="bf16", finetune_mode="lora", lora_rank=32,
                                                        batch_size=batch, gradient_checkpointing=ckpt,
                                                        device="cuda").total / 2**30, 2)
        runs[key] = r
        c.free()
    c.model = None
    return {"ok": ok, "trainable": sum(p.numel() for p in trainable),
            "trainable_dtypes": sorted({str(p.dtype) for p in trainable}), "runs": runs}


class _ArrayLoader:
    """An in-memory batch source for the trainer (the BatchSource protocol of vlamix.train.finetune)."""

    dataset_statistics = NORM_STATS

    def __init__(self, batch_size: int):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
        self.actions = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
        self.batch_size, self.batches = batch_size, 0

    def next_batch(self):
        idx = (np.arange(self.batch_size) + self.batches * self.batch_size) % 8
        self.batches += 1
        return {"image": self.images[idx], "instruction": [INSTRUCTIONS[i] for i in idx], "action": self.actions[idx],
                "dataset_index": np.zeros(self.batch_size, np.int64)}

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state):
        self.batches = int(state["batches"])


def stage_trainer_path(c: Check, work: str) -> dict:
    from vlamix.pipeline.config import BenchConfig
    from vlamix.eval.policy import VLAPolicy
    from vlamix.model.checkpoint import load_vla
    from vlamix.train.finetune import FineTuner

    torch = c.torch
    cfg = BenchConfig.from_dict({"mixture": {"libero_spatial_no_noops": 1}, "train_steps": 2, "batch_size": 2,
                                 "precision": "bf16", "lora_rank": 8, "learning_rate": 1e-2, "demos": "scripted",
                                 "image_aug": True})
    device = c.device.type
    tuner = FineTuner(cfg, os.path.join(work, "run"), loader=_ArrayLoader(2), device=device)
    dtypes = sorted({str(p.dtype) for n, p in tuner.model.named_parameters() if "lora_" not in n})
    devices = sorted({p.device.type for p in tuner.model.parameters()})
    first = tuner.train()
    tuner.release_memory()
    tuner = FineTuner(cfg.replace(train_steps=3), os.path.join(work, "run"), resume_from=first, loader=_ArrayLoader(2),
                      device=device)
    resumed_from = tuner.step
    final = tuner.train()
    tuner.release_memory()
    images = np.random.default_rng(5).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    merged = VLAPolicy(final, device=str(c.device) if device == "cuda" else "cpu", dtype="bf16")
    a_merged = merged.act(images, INSTRUCTIONS[:4], "libero_spatial")
    unmerged = VLAPolicy(final, device=str(c.device) if device == "cuda" else "cpu", dtype="bf16", merge_adapter=False)
    a_unmerged = unmerged.act(images, INSTRUCTIONS[:4], "libero_spatial")
    model, _ = load_vla(final, device=c.device, dtype=torch.bfloat16)
    out = {"base_dtypes": dtypes, "devices": devices, "resumed_at_step": resumed_from,
           "final": os.path.basename(final), "center_crop": merged.center_crop,
           "merged_vs_unmerged_max_abs": round(float(np.abs(a_merged - a_unmerged).max()), 4),
           "loaded_dtype": str(next(model.parameters()).dtype), "loaded_device": next(model.parameters()).device.type}
    out["ok"] = (dtypes == ["torch.bfloat16"] and devices == [device] and resumed_from == 2 and out["final"] == "step_000003"
                 and merged.center_crop is True and np.isfinite(a_merged).all() and out["loaded_dtype"] == "torch.bfloat16")
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU (the test suite runs this)")
    parser.add_argument("--out", default=os.path.join("workspace", "gpu_check.json"), help="JSON file written")
    parser.add_argument("--budget-s", type=float, default=480.0, help="no stage starts after this many seconds")
    args = parser.parse_args(argv)
    import tempfile

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --smoke on a CPU", file=sys.stderr)
        return 2
    c = Check(args.smoke, args.budget_s)
    started = time.perf_counter()
    record: dict = {"check": "vlamix gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}}
    with tempfile.TemporaryDirectory() as work:
        stages = [("environment", stage_environment), ("sdpa", stage_sdpa), ("policy", stage_policy),
                  ("oft", stage_oft), ("rollouts", stage_rollouts), ("lora", stage_lora),
                  ("trainer_path", functools.partial(stage_trainer_path, work=work))]
        for name, fn in stages:
            if time.monotonic() > c.deadline:
                record["stages"][name] = {"ok": False, "skipped": f"budget of {args.budget_s:.0f} s used up"}
                continue
            t0 = time.perf_counter()
            try:
                result = fn(c)
            except Exception as err:  # noqa: BLE001 - a failed stage is a result; the next stage still runs
                result = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            record["stages"][name] = result
            print(f"gpu_check: {name} {'ok' if result.get('ok', True) else 'FAILED'} ({result['seconds']} s)", file=sys.stderr)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    record["ok"] = all(s.get("ok", True) for s in record["stages"].values())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, default=str)
    print(json.dumps(record, default=str), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
