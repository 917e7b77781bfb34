"""GPU benchmark of the full-size OpenVLA-7B architecture: LoRA training step and action prediction.

Builds ``OpenVLAForActionPrediction(VLAConfig.openvla_7b())`` (official shapes, 7.54 B parameters) with
random weights directly on the GPU in bfloat16 (nothing is downloaded), wraps it with LoRA (rank 32,
alpha 16, all linear layers: the openvla ``vla-scripts/finetune.py`` recipe) and measures

- LoRA training step (forward under bf16 autocast + backward + AdamW step, the loop of
  ``vlamix.train.finetune``) at batch 1, 8 and 16: median wall time and peak GPU memory. Each batch
  size is tried without gradient checkpointing first, then with it if that runs out of memory; an
  out-of-memory result is reported as null with the error message;
- action prediction (``predict_action_ids``: 7 greedy tokens with a KV cache, LoRA merged into the
  weights) at batch 1 and 8: median latency per call and per sample.

Prints exactly ONE JSON line on stdout (progress goes to stderr). Exits with status 2 and a clear
message when no CUDA device is present. Not part of the test suite.

Usage::

    python benchmarks/bench_openvla7b_gpu.py                      # defaults above
    python benchmarks/bench_openvla7b_gpu.py --train-batch-sizes 1 8 16 24 --steps 5
    python benchmarks/bench_openvla7b_gpu.py --preset tiny --device cpu   # smoke test of this script
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import statistics
import sys
import time

import torch

logger = logging.getLogger("bench_openvla7b_gpu")

#: BOS + "In: What action should the robot take to pick up the bowl?\nOut:" + the empty token 29871 (Llama-2 ids:
#: "bowl" is "▁bow" 12580 + "l" 29880, checked with the Llama-2 vocabulary); LIBERO prompts are about this long.
PROMPT_IDS = [1, 512, 29901, 1724, 3158, 881, 278, 19964, 2125, 304, 5839, 701, 278, 12580, 29880, 29973, 13, 3744, 29901,
              29871]
EOS_ID = 2
ACTION_DIM = 7


def _build_model(preset: str, device: torch.device, dtype: torch.dtype, seed: int, recipe: dict | None = None):
    """Random-weight model of ``preset`` on ``device`` in ``dtype``: skeleton on the meta device, storage
    allocated on the target device, then a scaled-normal init there (no full-size CPU copy). ``recipe``:
    action-recipe fields applied to the preset's config (e.g. ``OFT_LIBERO_RECIPE``: L1 head + proprio projector)."""
    from vlamix.model.configuration import VLAConfig
    from vlamix.model.modeling import OpenVLAForActionPrediction

    config = VLAConfig.openvla_7b() if preset == "openvla_7b" else VLAConfig.tiny()
    if recipe:
        config = config.with_action_recipe(**recipe)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = OpenVLAForActionPrediction(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
            elif name.endswith("scale_factor"):
                p.fill_(0.1)
            elif name.endswith("weight"):  # LayerNorm / RMSNorm gains
                p.fill_(1.0)
            else:  # biases
                p.zero_()
    model.reset_rotary_buffers()
    return model.to(dtype=dtype), config


def _training_batch(batch_size: int, vocab_first_action: int, device: torch.device, gen: torch.Generator):
    """Random pixels + prompt ids + 7 random action ids + EOS; labels on the 7 action tokens only."""
    actions = torch.randint(vocab_first_action, vocab_first_action + 256, (batch_size, ACTION_DIM), generator=gen)
    prompt = torch.tensor(PROMPT_IDS).expand(batch_size, -1)
    eos = torch.full((batch_size, 1), EOS_ID)
    input_ids = torch.cat([prompt, actions, eos], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, len(PROMPT_IDS) : len(PROMPT_IDS) + ACTION_DIM] = actions
    return {
        "pixel_values": torch.randn(batch_size, 6, 224, 224, generator=gen).to(device),
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def bench_train(model, base, optimizer, batch_size: int, steps: int, warmup: int, device, dtype, gen, checkpointing: bool):
    """Median step time (ms) and peak memory (GiB) of ``steps`` LoRA training steps after ``warmup``."""
    if checkpointing:
        base.gradient_checkpointing_enable()
    else:
        base.gradient_checkpointing_disable()
    model.train()
    batch = _training_batch(batch_size, base.action_tokenizer.first_action_id, device, gen)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    times, losses = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(**batch, logits="labeled")
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(out.loss.detach()))
        del out
    return {
        "step_time_ms": 1000 * statistics.median(times),
        "frames_per_s": batch_size / statistics.median(times),
        "peak_mem_gib": _peak_gib(device),
        "gradient_checkpointing": checkpointing,
        "loss_first_last": [losses[0], losses[-1]],
        "error": None,
    }


def bench_predict(model, batch_size: int, runs: int, warmup: int, device, dtype, gen):
    """Median latency of ``predict_action_ids`` (7 greedy tokens, KV cache) for one batch."""
    model.eval()
    inputs = {
        "pixel_values": torch.randn(batch_size, 6, 224, 224, generator=gen).to(device=device, dtype=dtype),
        "input_ids": torch.tensor(PROMPT_IDS, device=device).expand(batch_size, -1).contiguous(),
        "attention_mask": torch.ones(batch_size, len(PROMPT_IDS), dtype=torch.long, device=device),
    }
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            _sync(device)
            start = time.perf_counter()
            ids = model.predict_action_ids(**inputs)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    assert ids.shape == (batch_size, ACTION_DIM)
    latency = statistics.median(times)
    return {"latency_ms": 1000 * latency, "per_sample_ms": 1000 * latency / batch_size, "samples_per_s": batch_size / latency}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("openvla_7b", "tiny"), default="openvla_7b")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu only with --preset tiny (smoke test)")
    parser.add_argument("--train-batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--predict-batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--predict-runs", type=int, default=10)
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_openvla7b_gpu: no CUDA device found (torch.cuda.is_available() is False); this benchmark "
              "needs an NVIDIA GPU with >= 40 GB of memory. Use --preset tiny --device cpu to smoke-test it.",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.device == "cpu" and args.preset != "tiny":
        print("bench_openvla7b_gpu: --device cpu is only for --preset tiny", file=sys.stderr)
        return 2

    from vlamix.model.lora import apply_lora, merge_lora

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    base, config = _build_model(args.preset, device, dtype, args.seed)
    build_s = time.perf_counter() - start
    n_params = sum(p.numel() for p in base.parameters())
    logger.info("built %s: %.3f B parameters in %.1fs", args.preset, n_params / 1e9, build_s)
    model = apply_lora(base, rank=args.lora_rank, alpha=min(args.lora_rank, 16), dropout=0.0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-4)

    train = {}
    for bs in args.train_batch_sizes:
        result = None
        errors = []
        for checkpointing in (False, True):
            try:
                result = bench_train(model, base, optimizer, bs, args.steps, args.warmup, device, dtype, gen, checkpointing)
                break
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not _is_oom(err):
                    raise
                errors.append(f"gradient_checkpointing={checkpointing}: {type(err).__name__}: {str(err).splitlines()[0]}")
                optimizer.zero_grad(set_to_none=True)
                _free(device)
        if result is None:
            result = {"step_time_ms": None, "peak_mem_gib": _peak_gib(device), "error": "; ".join(errors)}
        elif errors:
            result["error_without_checkpointing"] = errors[0]
        train[str(bs)] = result
        logger.info("train batch %d: %s", bs, result)
        _free(device)
    base.gradient_checkpointing_disable()
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    _free(device)

    model = merge_lora(model)  # deployment form: LoRA folded into the bf16 weights
    predict = {}
    for bs in args.predict_batch_sizes:
        try:
            predict[str(bs)] = bench_predict(model, bs, args.predict_runs, args.warmup, device, dtype, gen)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            predict[str(bs)] = {"latency_ms": None, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            _free(device)
        logger.info("predict batch %d: %s", bs, predict[str(bs)])
    ratio = None
    if len(args.predict_batch_sizes) >= 2 and all(predict[str(b)].get("latency_ms") for b in args.predict_batch_sizes[:2]):
        b0, b1 = args.predict_batch_sizes[:2]
        ratio = predict[str(b1)]["latency_ms"] / predict[str(b0)]["latency_ms"]

    record = {
        "benchmark": "openvla7b_lora_train_and_predict",
        "preset": args.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "parameters": n_params,
        "lora_rank": args.lora_rank,
        "lora_trainable_parameters": sum(p.numel() for p in trainable),
        "build_s": build_s,
        "train_steps_timed": args.steps,
        "train": train,
        "predict": predict,
        "predict_latency_ratio": ratio,
        "total_gpu_mem_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
