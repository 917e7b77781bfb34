"""Rollout throughput: batch-1 loop vs per-worker policies vs one batched policy for many LIBERO envs.

CPU part (default; the tiny model in fp32, real LIBERO environments), on the same planned episodes:

(a) ``batch1``: the reference loop in ONE process: ``VLAPolicy`` + one LIBERO env, one image per
    policy call (:func:`vlamix.eval.rollout.run_episode`);
(b) ``per_worker``: the evaluator this project had before the batched runtime (commit
    ``LEGACY_COMMIT``, loaded from git): every worker process loads its own policy and calls it
    with batch 1;
(c) ``vectorised``: :func:`vlamix.eval.rollout.evaluate`: env workers + one batched policy here,
    with 1 env per worker (lock-step rounds: the workers wait during every policy call) and with 2
    (double buffering: the policy runs on one group of envs while the workers step the other);

(b) and (c) at 1 and 2 workers. Reported per run: env-steps/s (policy steps per wall second, start-up
included) and episodes/hour; whether (a), (b), (c) agree on every episode's success flag and step
count (``cpu_agree``), and (a) vs (c) on the executed actions (``cpu_agree_actions``, SHA-1 of the
float32 actions); the share of (a)'s episode time spent in the policy, rendering, physics and
image preprocessing.

Chunk part (``--chunks``; issue 29): the token-head tiny model vs the OpenVLA-OFT tiny model (the same backbone
seed, ``OFT_LIBERO_RECIPE``: L1 head, 8-action chunks, wrist image, proprio) through :func:`evaluate` on the same
episodes, the OFT one at ``open_loop_steps`` 1 (a query and a rendered observation every step) and 8 (OFT's
LIBERO evaluation: one query and one rendered observation per 8 env steps): env-steps/s, camera images rendered
per env step, policy queries per env step, and the speed-up ratios, all from one run on one machine.

GPU part (``--model openvla-7b-random --device cuda``): the OpenVLA-7B architecture with random
weights in bf16 (``benchmarks/bench_openvla7b_gpu.py``'s builder: official shapes, nothing
downloaded) behind ``VLAPolicy``, driven by the same rollout runtime (:func:`evaluate` with env
workers) with synthetic env slots (random 224 px images, ``--env-ms`` of CPU work per step, since
LIBERO's assets do not travel to the GPU machine) at policy batches of 1 (1 worker x 1 env, lock-step),
8 (4 workers x 4 envs) and 16 (8 workers x 4 envs; double buffering serves half the slots per call,
:func:`vlamix.eval.server.policy_batch_size`): env-steps/s, policy latency per batch, the batch the
rows record (``max_served_batch``), full batches, GPU memory peak. Prompts use the tiny preset's tokenizer (the Llama tokenizer
is not downloaded), so prompt lengths differ slightly from the real ones.

Prints ONE JSON object on stdout (progress on stderr). Not part of the test suite.

Usage::

    nice python benchmarks/bench_rollout.py --episodes 4 --max-steps 30            # CPU, ~5-15 min
    python benchmarks/bench_rollout.py --model openvla-7b-random --device cuda     # GPU, < 8 min on one H100/H200
    python benchmarks/bench_rollout.py --model tiny-synthetic --device cpu --env-ms 0   # smoke test of the GPU part
    nice python benchmarks/bench_rollout.py --chunks --episodes 2 --tasks 1 --max-steps 40 --workers 1   # chunks
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

logger = logging.getLogger("bench_rollout")

#: The commit whose ``vlamix/eval/rollout.py`` is baseline (b): per-worker policies, batch 1.
LEGACY_COMMIT = "07c331c"
LEGACY_PATH = "examples/cloud_VLA_finetune/vlamix/eval/rollout.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Norm stats given to the benchmark models (un-normalisation into [-0.9, 0.9], gripper passes).
NORM_STATS = {"libero_spatial_no_noops": {"action": {"q01": [-0.9] * 6 + [0.0], "q99": [0.9] * 6 + [1.0],
                                                     "mask": [True] * 6 + [False]}}}


# ---------------------------------------------------------------------------------------------- CPU
def _tiny_checkpoint(folder: str, seed: int) -> str:
    from vlamix.model.checkpoint import build_tiny, save_vla

    return save_vla(*build_tiny(seed=seed, norm_stats=NORM_STATS), folder)


def _load_legacy():
    """The pre-batching evaluator, from git (module ``vlamix_legacy_rollout``, importable by spawn workers)."""
    src = subprocess.run(["git", "-C", REPO, "show", f"{LEGACY_COMMIT}:{LEGACY_PATH}"], check=True,
                         capture_output=True, text=True).stdout
    folder = tempfile.mkdtemp(prefix="bench_rollout_legacy_")
    path = os.path.join(folder, "vlamix_legacy_rollout.py")
    with open(path, "w") as fh:
        fh.write(src)
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("vlamix_legacy_rollout", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vlamix_legacy_rollout"] = module
    spec.loader.exec_module(module)
    return module


def _summary(name: str, rows: list[dict], wall: float) -> dict:
    steps = sum(int(r["steps"]) for r in rows)
    return {"name": name, "wall_s": round(wall, 2), "env_steps": steps, "env_steps_per_s": round(steps / wall, 3),
            "episodes_per_hour": round(3600 * len(rows) / wall, 1),
            "outcomes": [(bool(r["success"]), int(r["steps"])) for r in rows],
            "digests": [r.get("action_digest") for r in rows], "errors": sum(1 for r in rows if r.get("error"))}


def run_cpu(args) -> dict:
    import torch

    from vlamix.eval.envs import LiberoSlot
    from vlamix.eval.policy import VLAPolicy
    from vlamix.eval.rollout import evaluate, plan_episodes, run_episode
    from vlamix.eval.settings import RolloutConfig

    work = tempfile.mkdtemp(prefix="bench_rollout_")
    folder = _tiny_checkpoint(os.path.join(work, "ckpt"), args.model_seed)
    specs = plan_episodes(args.suite, args.tasks, args.episodes // args.tasks)
    out: dict = {"device": "cpu", "dtype": "fp32", "suite": args.suite, "episodes": len(specs),
                 "max_steps": args.max_steps, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "load_avg_start": os.getloadavg()[0], "runs": {}}

    logger.info("(a) batch-1 loop in one process: %d episodes", len(specs))
    t0 = time.perf_counter()
    policy = VLAPolicy(folder, device="cpu", dtype="fp32")
    slot = LiberoSlot()
    rows_a = [run_episode(slot, policy, spec, args.max_steps) for spec in specs]
    slot.close()
    wall_a = time.perf_counter() - t0
    out["runs"]["batch1"] = _summary("batch1", rows_a, wall_a)
    parts = {k: sum(r[k] for r in rows_a) for k in ("policy_s", "render_s", "physics_s", "preprocess_s", "wall_s")}
    out["step_time_share"] = {k[:-2]: round(parts[k] / parts["wall_s"], 3)
                              for k in ("policy_s", "render_s", "physics_s", "preprocess_s")}
    del policy

    legacy = _load_legacy()
    for workers in args.workers:
        logger.info("(b) per-worker evaluator (%s), %d workers", LEGACY_COMMIT, workers)
        t0 = time.perf_counter()
        rows = legacy.evaluate(folder, specs, workers=workers, device="cpu", max_steps=args.max_steps)
        out["runs"][f"per_worker_{workers}w"] = _summary(f"per_worker_{workers}w", rows, time.perf_counter() - t0)
        for epw in args.envs_per_worker:
            name = f"vectorised_{workers}w" + (f"_{epw}e" if epw > 1 else "")
            logger.info("(c) vectorised evaluator, %d workers x %d envs", workers, epw)
            t0 = time.perf_counter()
            stats: dict = {}
            rows = evaluate(folder, specs, RolloutConfig(eval_workers=workers, envs_per_worker=epw, eval_device="cpu", eval_dtype="fp32"), max_steps=args.max_steps,
                            progress=False, stats=stats)
            run = _summary(name, rows, time.perf_counter() - t0)
            run["policy_share"] = round(stats["policy_s"] / stats["wall_s"], 3)
            run["envs_per_worker"], run["double_buffered"] = epw, len(stats["groups"]) > 1
            out["runs"][name] = run

    a = out["runs"]["batch1"]
    out["cpu_agree"] = all(r["outcomes"] == a["outcomes"] and r["errors"] == 0 for r in out["runs"].values())
    out["cpu_agree_actions"] = all(r["digests"] == a["digests"] for n, r in out["runs"].items() if n.startswith("vectorised"))
    for w in args.workers:
        for epw in args.envs_per_worker:
            tag = f"{w}w" + (f"_{epw}e" if epw > 1 else "")
            out[f"cpu_speedup_vectorised_{tag}_vs_batch1"] = round(
                out["runs"][f"vectorised_{tag}"]["env_steps_per_s"] / a["env_steps_per_s"], 3)
            out[f"cpu_speedup_vectorised_{tag}_vs_per_worker_{w}w"] = round(
                out["runs"][f"vectorised_{tag}"]["env_steps_per_s"] / out["runs"][f"per_worker_{w}w"]["env_steps_per_s"], 3)
    out["load_avg_end"] = os.getloadavg()[0]
    for run in out["runs"].values():
        run.pop("digests")
    return out


def run_chunks(args) -> dict:
    """Token tiny vs OFT tiny (open_loop_steps 1 and 8) on the same LIBERO episodes (see the module docstring)."""
    from vlamix.eval.rollout import evaluate, plan_episodes
    from vlamix.eval.settings import RolloutConfig
    from vlamix.model.checkpoint import build_tiny, save_vla
    from vlamix.model.configuration import OFT_LIBERO_RECIPE

    work = tempfile.mkdtemp(prefix="bench_rollout_chunks_")
    stats = {k: {**v, "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}} for k, v in NORM_STATS.items()}
    token = save_vla(*build_tiny(seed=args.model_seed, norm_stats=stats), os.path.join(work, "token"))
    oft = save_vla(*build_tiny(seed=args.model_seed, norm_stats=stats, recipe=OFT_LIBERO_RECIPE),
                   os.path.join(work, "oft"))
    specs = plan_episodes(args.suite, args.tasks, args.episodes // args.tasks)
    rollout = RolloutConfig(eval_workers=args.workers[0], envs_per_worker=1, eval_device="cpu", eval_dtype="fp32")
    out: dict = {"device": "cpu", "dtype": "fp32", "suite": args.suite, "episodes": len(specs),
                 "max_steps": args.max_steps, "workers": args.workers[0], "cpu_count": os.cpu_count(),
                 "load_avg_start": os.getloadavg()[0], "runs": {}}
    for name, folder, k in (("token", token, 1), ("oft_open_loop_1", oft, 1), ("oft_open_loop_8", oft, 8)):
        logger.info("%s: %d episodes of %d steps", name, len(specs), args.max_steps)
        t0 = time.perf_counter()
        run_stats: dict = {}
        rows = evaluate(folder, specs, rollout, max_steps=args.max_steps, open_loop_steps=k, progress=False,
                        stats=run_stats)
        run = _summary(name, rows, time.perf_counter() - t0)
        steps = run["env_steps"]
        run.pop("digests")
        run.update(renders_per_step=round(sum(r["renders"] for r in rows) / steps, 3),
                   queries_per_step=round(sum(r["policy_queries"] for r in rows) / steps, 3),
                   policy_share=round(run_stats["policy_s"] / run_stats["wall_s"], 3),
                   render_s=round(sum(r["render_s"] for r in rows), 2), policy_s=round(run_stats["policy_s"], 2))
        out["runs"][name] = run
    runs = out["runs"]
    out["speedup_oft8_vs_token"] = round(
        runs["oft_open_loop_8"]["env_steps_per_s"] / runs["token"]["env_steps_per_s"], 3)
    out["speedup_oft8_vs_oft1"] = round(
        runs["oft_open_loop_8"]["env_steps_per_s"] / runs["oft_open_loop_1"]["env_steps_per_s"], 3)
    out["load_avg_end"] = os.getloadavg()[0]
    return out


# ---------------------------------------------------------------------------------------------- GPU
class SyntheticSlot:
    """Env slot without a simulator: random 224 px policy images, ``env_ms`` of CPU work per step, never done."""

    def __init__(self, settings):
        self.rng = np.random.default_rng(0)
        self.env_ms = settings.get("env_ms", 0.0)
        self.images = self.rng.integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
        self.frame = None
        self.t = 0
        self.physics_s = self.render_s = self.preprocess_s = 0.0

    def _work(self):
        end = time.perf_counter() + self.env_ms / 1000.0
        while time.perf_counter() < end:
            pass

    def begin(self, spec):
        self.t = 0
        return self.images[spec.episode_index % len(self.images)]

    def step(self, action):
        self._work()
        self.t += 1
        return self.images[self.t % len(self.images)], False

    def close(self):
        pass


def run_gpu(args) -> dict:
    import functools

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_openvla7b_gpu import _build_model

    from vlamix.eval.policy import VLAPolicy
    from vlamix.eval.rollout import EpisodeSpec, evaluate
    from vlamix.eval.settings import RolloutConfig
    from vlamix.model.processor import VLAProcessor
    from vlamix.model.tokenizer import build_tiny_tokenizer

    smoke = args.model == "tiny-synthetic"  # the same code path with the tiny preset on the CPU
    if not smoke and not torch.cuda.is_available():
        print("bench_rollout: --device cuda needs a CUDA device", file=sys.stderr)
        sys.exit(2)
    cuda = not smoke
    device = torch.device("cpu") if smoke else torch.device(args.device if ":" in args.device else "cuda:0")
    if cuda:
        torch.cuda.set_device(device)
    t0 = time.perf_counter()
    model, config = _build_model("tiny" if smoke else "openvla_7b", device, torch.float32 if smoke else torch.bfloat16,
                                 seed=0)
    model.norm_stats = NORM_STATS
    model.eval()
    processor = VLAProcessor.from_config(config, build_tiny_tokenizer())
    policy = VLAPolicy.from_model(model, processor, device=str(device))
    peak = (lambda: round(torch.cuda.max_memory_allocated(device) / 1e9, 2)) if cuda else (lambda: None)
    out: dict = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "dtype": policy.dtype,
                 "model": args.model, "build_s": round(time.perf_counter() - t0, 1), "env_ms": args.env_ms,
                 "runs": {}, "weights_gb": peak()}
    # warm-up (CUDA kernels, allocator)
    images = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    for b in (1, 16):
        policy.act(images[:b], ["pick up the black bowl"] * b, "libero_spatial")
    if cuda:
        torch.cuda.synchronize(device)
    # (policy batch per call, workers, envs per worker): lock-step 1 x 1; double buffering 4 x 4 = 16 slots in
    # two groups of 8, and 8 x 4 = 32 slots in two groups of 16 (vlamix.eval.server.policy_batch_size)
    for batch, workers, epw in ((1, 1, 1), (8, 4, 4), (16, 8, 4)):
        n_envs = workers * epw
        episodes = n_envs * args.gpu_episodes_per_env
        specs = [EpisodeSpec("libero_spatial", 0, k, k, "pick up the black bowl and place it on the plate")
                 for k in range(episodes)]
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        stats: dict = {}
        t0 = time.perf_counter()
        rows = evaluate(lambda: policy, specs, RolloutConfig(eval_workers=workers, envs_per_worker=epw), max_steps=args.gpu_steps,
                        num_steps_wait=0, progress=False, stats=stats,
                        slot_factory=functools.partial(_synthetic_slot_env, env_ms=args.env_ms))
        wall = time.perf_counter() - t0
        steps = sum(r["steps"] for r in rows)
        full = [b for b, _, _ in stats["batch_log"] if b == batch]
        out["runs"][f"batch_{batch}"] = {
            "workers": workers, "envs_per_worker": epw, "env_slots": n_envs, "policy_batch": rows[0]["policy_batch"],
            "max_served_batch": max(r["batch_size"] for r in rows), "episodes": episodes, "env_steps": steps,
            "wall_s": round(wall, 2), "env_steps_per_s": round(steps / wall, 2),
            "policy_latency_per_batch_ms": round(1000 * stats["policy_s"] / max(1, stats["rounds"]), 1),
            "policy_actions_per_s": round(steps / stats["policy_s"], 2), "full_batches": len(full),
            "rounds": stats["rounds"], "gpu_peak_mem_gb": peak(),
            "errors": sum(1 for r in rows if r["error"]),
        }
        assert rows[0]["policy_batch"] == batch, (rows[0]["policy_batch"], batch)
        logger.info("policy batch %d: %s", batch, out["runs"][f"batch_{batch}"])
    r1, r16 = out["runs"]["batch_1"], out["runs"]["batch_16"]
    out["gpu_speedup_8_vs_1"] = round(out["runs"]["batch_8"]["env_steps_per_s"] / r1["env_steps_per_s"], 2)
    out["gpu_speedup_16_vs_1"] = round(r16["env_steps_per_s"] / r1["env_steps_per_s"], 2)
    out["gpu_policy_actions_per_s_16_vs_1"] = round(r16["policy_actions_per_s"] / r1["policy_actions_per_s"], 2)
    out["gpu_peak_mem_gb"] = max(r["gpu_peak_mem_gb"] for r in out["runs"].values()) if cuda else None
    return out


def _synthetic_slot_env(settings, env_ms):
    return SyntheticSlot({**settings, "env_ms": env_ms})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=("tiny", "openvla-7b-random", "tiny-synthetic"),
                        help="tiny-synthetic: the GPU part's code with the tiny preset on the CPU (smoke test)")
    parser.add_argument("--device", default="cpu", help="cpu (tiny model, LIBERO) or cuda[:N] (7B, synthetic envs)")
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--tasks", type=int, default=2, help="first N tasks of the suite (CPU part)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes in all, split over the tasks (CPU part)")
    parser.add_argument("--max-steps", type=int, default=30, help="policy steps per episode (CPU part)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts of (b) and (c)")
    parser.add_argument("--envs-per-worker", type=int, nargs="+", default=[1, 2],
                        help="envs per worker of (c): 1 = lock-step rounds, >= 2 = double buffering (give at least "
                             "workers x envs episodes so that every slot has work)")
    parser.add_argument("--model-seed", type=int, default=7, help="tiny model seed (7: actions depend on the LIBERO image and instruction)")
    parser.add_argument("--chunks", action="store_true",
                        help="only the chunk part: token tiny vs OFT tiny (open_loop_steps 1 and 8), first --workers")
    parser.add_argument("--gpu-steps", type=int, default=40, help="policy steps per synthetic episode (GPU part)")
    parser.add_argument("--gpu-episodes-per-env", type=int, default=2, help="synthetic episodes per env (GPU part)")
    parser.add_argument("--env-ms", type=float, default=20.0, help="CPU milliseconds per synthetic env step (GPU part)")
    args = parser.parse_args(argv)
    # LIBERO prints to stdout, in this process and in the workers: send fd 1 to stderr while running,
    # so that stdout carries only the JSON object
    json_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if (args.model == "openvla-7b-random") == (args.device == "cpu"):
        parser.error("use --model tiny|tiny-synthetic --device cpu, or --model openvla-7b-random --device cuda")
    if args.model == "tiny":
        if args.episodes % args.tasks:
            parser.error("--episodes must be a multiple of --tasks")
        result = run_chunks(args) if args.chunks else run_cpu(args)
    else:
        result = run_gpu(args)
    json_out.write(json.dumps(result) + "\n")
    json_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
