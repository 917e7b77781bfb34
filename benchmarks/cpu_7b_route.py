"""The OpenVLA-7B route of ``vlamix run`` / ``ianvs -f``, at full size, on this CPU, in bf16: what a GPU user runs.

Nothing here copies the product: the model folder is written with :func:`vlamix.model.checkpoint.save_vla`, and
the point runs through ``vlamix run -f`` (the entry point the Ianvs adapter shares) on a job written under the
workspace. Stages, each in its own process (its peak RSS is that process tree's, from ``wait4``):

1. ``model_folder``: a random-weight OpenVLA-7B (official shapes, bf16, ``benchmarks/bench_openvla7b_gpu.py``'s
   builder) written once as a model folder in the layout of ``openvla/openvla-7b``: ``config.json``, sharded
   safetensors with the official parameter names (checked against the state-dict manifest of
   ``../shared/reference/openvla`` when present) + ``model.safetensors.index.json``, ``preprocessor_config.json``,
   tokenizer files. Tokenizer: the genuine Llama-2 vocabulary when ``benchmarks/llama_tokenizer.py`` has built
   it (``--tokenizer llama``, or ``auto`` when its cache exists), else the tiny preset's, said in the output.
   Cached under ``workspace/`` with a fingerprint; a second run reuses it.
2. ``train_interrupted``: ``vlamix run -f`` of one point (``model: <folder>``, the default job's recorded LIBERO
   RLDS mixture spatial:object:goal = 2:2:1, LoRA rank 32, ``image_aug: true``, precision auto = bf16, gradient
   checkpointing, batch 1, 2 steps); the process is SIGKILLed while it writes the step-2 checkpoint
   (``VLAMIX_FAULT_AT``), as a preempted job would be (``--short``: right after the step-1 checkpoint is complete).
3. ``resume_and_evaluate``: the same command again: the run resumes from ``step_000001``, trains step 2, saves,
   merges the LoRA adapter for evaluation (float32 per layer, one rounding, in place), rolls out one short
   episode per suite (``--policy-steps``) through the batched server with two env workers (the first policy
   calls hold two suites' instructions of different lengths: a left-padded batch), computes offline metrics on
   ``--offline-frames`` held-out frames and writes the rank rows.

Prints ONE JSON line: per stage wall time, peak RSS and disk; the dtype and device each stage used (from the
checkpoint's training record, the episode rows and the offline metrics); the policy batches served; whether
every logit was finite (no ``NonFiniteLogitsError`` row) and every metric finite. Exit status 0 when every check
passed. A machine with less memory than the route needs fails in the job's own memory check, before any work,
with the estimate (this script does not skip).

Usage (from the repository root; ``bash scripts/setup.sh`` first)::

    .venv/bin/python benchmarks/cpu_7b_route.py                      # 10 policy steps per episode
    .venv/bin/python benchmarks/cpu_7b_route.py --short --policy-steps 2   # the short form that .ci/run runs
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = "./examples/cloud_VLA_finetune/singletask_learning_bench"
MANIFEST = os.path.join(ROOT, "..", "shared", "reference", "openvla", "openvla7b_state_dict_manifest.json")
LLAMA_TOKENIZER_DIR = os.path.join("workspace", "llama2_tokenizer")
JOB_NAME = "cpu_7b_route"
COMPLETE = "FOLDER_COMPLETE.json"


# ------------------------------------------------------------------------------------------ stage 1
def build_model_folder(folder: str, tokenizer_dir: str | None) -> dict:
    """Write the random-weight OpenVLA-7B folder (in this process; the caller runs it in a child)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    from bench_openvla7b_gpu import _build_model

    from vlamix.model.checkpoint import CHECKPOINT_META_NAME, save_vla
    from vlamix.model.processor import VLAProcessor, load_tokenizer
    from vlamix.model.tokenizer import build_tiny_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    model, config = _build_model("openvla_7b", torch.device("cpu"), torch.bfloat16, seed=0)
    built = time.perf_counter() - t0
    tokenizer = load_tokenizer(tokenizer_dir, config) if tokenizer_dir else build_tiny_tokenizer()
    processor = VLAProcessor.from_config(config, tokenizer)
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    save_vla(model, processor, tmp)
    os.remove(os.path.join(tmp, CHECKPOINT_META_NAME))  # official folders carry no vlamix record
    n_params = sum(p.numel() for p in model.parameters())
    del model
    record = {"parameters": n_params, "build_s": round(built, 1), "save_s": round(time.perf_counter() - t0 - built, 1),
              "tokenizer": "llama-2 (genuine vocabulary)" if tokenizer_dir else
              "tiny preset (the Llama-2 tokenizer was not available; run benchmarks/llama_tokenizer.py)",
              "fingerprint": fingerprint(tmp), "manifest_check": check_manifest(tmp)}
    with open(os.path.join(tmp, COMPLETE), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return record


def fingerprint(folder: str) -> str:
    """sha256 of config.json, the shard index, and each shard's name, size and first / last MiB."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        with open(os.path.join(folder, name), "rb") as fh:
            h.update(fh.read())
    for path in sorted(glob.glob(os.path.join(folder, "model-*.safetensors"))):
        size = os.path.getsize(path)
        h.update(f"{os.path.basename(path)}:{size}".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(2**20))
            fh.seek(max(0, size - 2**20))
            h.update(fh.read(2**20))
    return h.hexdigest()[:16]


def check_manifest(folder: str) -> dict:
    """Parameter names and shapes of the shards against the official state-dict manifest (when it is present)."""
    from safetensors import safe_open

    if not os.path.isfile(MANIFEST):
        return {"checked": False, "reason": f"{MANIFEST} not found"}
    with open(MANIFEST, encoding="utf-8") as fh:
        manifest = json.load(fh)
    expected = {e["key"]: tuple(e["shape"]) for e in manifest["entries"]}
    with open(os.path.join(folder, "model.safetensors.index.json"), encoding="utf-8") as fh:
        weight_map = json.load(fh)["weight_map"]
    shapes = {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(os.path.join(folder, shard), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    return {"checked": True, "tensors": len(shapes), "shards": len(set(weight_map.values())),
            "missing": missing[:5], "unexpected": unexpected[:5], "wrong_shape": wrong[:5],
            "ok": not (missing or unexpected or wrong)}


def gemm_gflops() -> dict:
    """Matrix-multiply throughput of this CPU in float32 and bfloat16 ([2048, 4096] @ [4096, 4096], torch's
    threads): what bounds a bf16 LoRA step and a policy call here (CPUs without AVX512-BF16 or AMX run bf16
    GEMMs several times slower than float32)."""
    import torch

    out: dict = {"torch_threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
        a @ b  # warm-up
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        out[f"gemm_{name}_gflops"] = round(3 * 2 * 2048 * 4096 * 4096 / (time.perf_counter() - t0) / 1e9, 1)
    return out


# ------------------------------------------------------------------------------------------ job
def write_job(job_dir: str, model_folder: str, runs_dir: str, policy_steps: int, offline_frames: int) -> str:
    """The job (benchmarkingjob + algorithm file) of one OpenVLA-7B point; paths relative to the repository root.
    ``runs_dir``: the point's training runs, the route's own (so that every invocation trains afresh)."""
    os.makedirs(job_dir, exist_ok=True)
    hp = {
        "mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 2, "libero_goal_no_noops": 1},
        "model": "./" + os.path.relpath(model_folder, ROOT), "demos": "scripted", "demo_tasks": 1,
        "demo_episodes_per_task": 3, "lora_rank": 32, "lora_alpha": 16, "image_aug": True, "precision": "auto",
        "gradient_checkpointing": True, "batch_size": 1, "train_steps": 2, "shuffle_buffer_size": 100,
        "eval_suites": [["libero_spatial", "libero_object", "libero_goal"]], "eval_tasks": 1, "trials_per_task": 1,
        "eval_max_steps": policy_steps, "eval_workers": 2, "envs_per_worker": 1, "eval_device": "cpu",
        "eval_dtype": "bf16", "offline_max_frames": offline_frames, "runs_dir": "./" + os.path.relpath(runs_dir, ROOT),
    }
    algorithm = {"algorithm": {"paradigm_type": "singletasklearning", "initial_model_url": "", "modules": [{
        "type": "basemodel", "name": "VLADataSelect", "url": f"{EXAMPLE}/testalgorithms/vla_dataselect/basemodel.py",
        "hyperparameters": [{k: {"values": v if k == "eval_suites" else [v]}} for k, v in hp.items()]}]}}
    algo_path = os.path.join(job_dir, "vla_algorithm.yaml")
    with open(algo_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(algorithm, fh, sort_keys=False)
    job = {"benchmarkingjob": {
        "name": JOB_NAME, "workspace": "./workspace", "testenv": f"{EXAMPLE}/testenv/testenv.yaml",
        "test_object": {"type": "algorithms", "algorithms": [
            {"name": "vla_dataselect", "url": "./" + os.path.relpath(algo_path, ROOT)}]},
        "rank": {"sort_by": [{"success_rate": "descend"}], "visualization": {"mode": "selected_only", "method": "print_table"},
                 "selected_dataitem": {"paradigms": ["all"], "modules": ["all"], "hyperparameters": ["basemodel-model"],
                                       "metrics": ["success_rate", "num_episodes", "num_errors", "action_token_accuracy",
                                                   "action_l1"]},
                 "save_mode": "selected_and_all"}}}
    path = os.path.join(job_dir, "benchmarkingjob.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(job, fh, sort_keys=False)
    return path


def run_stage(cmd: list[str], env: dict | None = None, log: str | None = None) -> dict:
    """Run a child process; wall time, exit status and the peak RSS of its process tree (wait4)."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") if log else open(os.devnull, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(time.perf_counter() - t0, 1), "exit_code": proc.returncode,
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2), "log": os.path.relpath(log, ROOT) if log else None}


def disk_gib(*paths: str) -> float:
    total = 0
    for path in paths:
        for dirpath, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files if not os.path.islink(os.path.join(dirpath, f)))
    return round(total / 2**30, 2)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def collect(ws: str, run_dir: str, model_folder: str) -> dict:
    """What the finished point used and produced (from its files)."""
    import math

    steps = sorted(glob.glob(os.path.join(run_dir, "step_*")))
    final = steps[-1]
    training = _read_json(os.path.join(final, "vlamix_checkpoint.json")).get("training", {})
    log = [json.loads(line) for line in open(os.path.join(run_dir, "train_log.jsonl"), encoding="utf-8") if line.strip()]
    episodes = glob.glob(os.path.join(run_dir, "eval_*", "episodes.jsonl"))
    rows = [json.loads(line) for line in open(episodes[0], encoding="utf-8") if line.strip()]
    results = glob.glob(os.path.join(ROOT, "workspace", JOB_NAME, "vla_dataselect", "*", "output", "inference",
                                     "vlamix_prediction.json")) + \
        glob.glob(os.path.join(ROOT, "workspace", JOB_NAME, "**", "eval", "result.json"), recursive=True)
    offline = _read_json(results[0]).get("offline", {}) if results else {}
    rank = os.path.join(ROOT, "workspace", JOB_NAME, "rank", "all_rank.csv")
    return {
        "checkpoints": [os.path.basename(s) for s in steps],
        "train": {"device": training.get("device"), "precision": training.get("precision"),
                  "image_aug": training.get("image_aug"), "steps_logged": [r["step"] for r in log],
                  "step_time_s": [round(r["step_time_s"], 1) for r in log], "losses_finite": all(math.isfinite(r["loss"]) for r in log)},
        "rollouts": {"episodes": len(rows), "device": sorted({r["device"] for r in rows}), "dtype": sorted({r["dtype"] for r in rows}),
                     "policy_batches_served": sorted({r["batch_size"] for r in rows}), "policy_batch": sorted({r["policy_batch"] for r in rows}),
                     "steps": [r["steps"] for r in rows], "errors": [r["error"] for r in rows if r["error"]],
                     "center_crop": sorted({json.dumps(r["policy_options"]) for r in rows}),
                     "policy_s_per_episode": [round(r["policy_s"], 1) for r in rows]},
        "offline": {k: offline.get(k) for k in ("device", "dtype", "n_frames", "action_token_accuracy", "action_l1")},
        "rank_file": os.path.relpath(rank, ROOT) if os.path.isfile(rank) else None,
        "disk_gib": {"model_folder": disk_gib(model_folder), "run": disk_gib(run_dir)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=os.path.join("workspace", JOB_NAME + "_model"),
                        help="where the model folder is cached (relative to the repository root)")
    parser.add_argument("--policy-steps", type=int, default=10, help="policy steps per episode (after 10 wait steps)")
    parser.add_argument("--short", action="store_true", help="the form .ci/run runs: killed after the step-1 checkpoint "
                        "(not mid-write), so one LoRA step per process instead of 2 + 1")
    parser.add_argument("--offline-frames", type=int, default=2, help="held-out frames of the offline metrics")
    parser.add_argument("--tokenizer", choices=("auto", "llama", "tiny"), default="auto",
                        help="auto: the Llama-2 tokenizer when benchmarks/llama_tokenizer.py has cached it, else tiny")
    parser.add_argument("--stage", choices=("all", "build-model", "machine"), default="all",
                        help="machine: only this CPU's GEMM throughput (fp32 vs bf16), a few seconds")
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.stage == "build-model":
        print(json.dumps(build_model_folder(args.folder, args.tokenizer_dir)))
        return 0
    if args.stage == "machine":
        print(json.dumps(gemm_gflops()))
        return 0

    python = sys.executable
    ws = os.path.join(ROOT, args.workspace)
    os.makedirs(ws, exist_ok=True)
    logs = os.path.join(ws, "logs")
    os.makedirs(logs, exist_ok=True)
    tok_dir = os.path.join(ROOT, LLAMA_TOKENIZER_DIR)
    has_llama = os.path.isfile(os.path.join(tok_dir, "tokenizer.json"))
    if args.tokenizer == "llama" and not has_llama:
        print(f"cpu_7b_route: --tokenizer llama but {LLAMA_TOKENIZER_DIR} has no tokenizer; run "
              f"benchmarks/llama_tokenizer.py first", file=sys.stderr)
        return 2
    use_llama = has_llama and args.tokenizer != "tiny"
    folder = os.path.join(ws, "openvla-7b-random-" + ("llama2tok" if use_llama else "tinytok"))
    out: dict = {"route": "openvla-7b random weights, bf16, CPU", "stages": {}, "machine": {
        "cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **gemm_gflops()}}
    t_all = time.perf_counter()

    # 1. the model folder (cached)
    if os.path.isfile(os.path.join(folder, COMPLETE)):
        record = _read_json(os.path.join(folder, COMPLETE))
        stage = {"reused": True, "wall_s": 0.0}
        if fingerprint(folder) != record["fingerprint"]:
            print(f"cpu_7b_route: {folder} changed since it was written (fingerprint); delete it to rebuild", file=sys.stderr)
            return 1
    else:
        cmd = [python, os.path.abspath(__file__), "--stage", "build-model", "--folder", folder]
        if use_llama:
            cmd += ["--tokenizer-dir", tok_dir]
        stage = {"reused": False, **run_stage(cmd, log=os.path.join(logs, "model_folder.log"))}
        if stage["exit_code"] != 0:
            out["stages"]["model_folder"] = stage
            print(json.dumps(out))
            return 1
        record = _read_json(os.path.join(folder, COMPLETE))
    out["stages"]["model_folder"] = {**stage, **record, "disk_gib": disk_gib(folder)}

    # 2. + 3. the point through `vlamix run -f`, killed mid-checkpoint, then resumed
    runs_dir = os.path.join(ws, "runs")
    shutil.rmtree(runs_dir, ignore_errors=True)  # the route trains afresh: a finished run would be reused
    shutil.rmtree(os.path.join(ROOT, "workspace", JOB_NAME), ignore_errors=True)
    job = write_job(os.path.join(ws, "job"), folder, runs_dir, args.policy_steps, args.offline_frames)
    vlamix = [os.path.join(os.path.dirname(python), "vlamix"), "run", "-f", os.path.relpath(job, ROOT)]
    # full form: killed while the step-2 checkpoint is half written (it must be ignored), resumed from step 1;
    # short form: killed right after the step-1 checkpoint is complete, resumed from it (one step saved)
    fault = "checkpoint:saved@1" if args.short else "checkpoint:weights_written@2"
    killed = run_stage(vlamix, env={"VLAMIX_FAULT_AT": fault}, log=os.path.join(logs, "train_interrupted.log"))
    killed["fault"] = fault
    out["stages"]["train_interrupted"] = killed
    run_dirs = [d for d in glob.glob(os.path.join(runs_dir, "*")) if os.path.isdir(d)]  # not the .lock files
    run_dir = run_dirs[0] if len(run_dirs) == 1 else None
    resumable = sorted(glob.glob(os.path.join(run_dir, "step_*"))) if run_dir else []
    killed["checkpoints_left"] = [os.path.basename(s) for s in resumable]
    resumed = run_stage(vlamix, log=os.path.join(logs, "resume_and_evaluate.log"))
    out["stages"]["resume_and_evaluate"] = resumed
    if resumed["exit_code"] == 0 and run_dir:
        out.update(collect(ws, run_dir, folder))
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    checks = {
        "killed_with_step_1_left": killed["exit_code"] == -9 and killed["checkpoints_left"] == ["step_000001"],
        "resumed_from_step_1": out.get("train", {}).get("steps_logged", [None]).count(1) == 1,
        "resumed_and_finished": resumed["exit_code"] == 0 and out.get("checkpoints") == ["step_000001", "step_000002"],
        "trained_bf16_cpu_with_image_aug": out.get("train", {}).get("precision") == "bf16"
        and out.get("train", {}).get("device") == "cpu" and out.get("train", {}).get("image_aug") is True,
        "rolled_out_bf16_cpu": out.get("rollouts", {}).get("dtype") == ["bf16"] and out.get("rollouts", {}).get("device") == ["cpu"],
        "left_padded_batch_served": 2 in out.get("rollouts", {}).get("policy_batches_served", []),
        "every_logit_finite": out.get("rollouts", {}).get("episodes") == 3 and not out.get("rollouts", {}).get("errors"),
        "offline_metrics_finite": isinstance(out.get("offline", {}).get("action_l1"), float),
        "official_names": out["stages"]["model_folder"]["manifest_check"].get("ok", True),
    }
    out["checks"] = checks
    out["ok"] = all(checks.values())
    print(json.dumps(out, default=str), flush=True)
    if not out["ok"]:  # say why on stderr (CI shows it): the failed checks and the end of each stage's log
        print(f"cpu_7b_route: failed checks: {[k for k, v in checks.items() if not v]}", file=sys.stderr)
        for name, stage in out["stages"].items():
            if stage.get("log") and os.path.isfile(os.path.join(ROOT, stage["log"])):
                with open(os.path.join(ROOT, stage["log"]), encoding="utf-8", errors="replace") as fh:
                    tail = fh.readlines()[-25:]
                print(f"--- {name} (exit {stage.get('exit_code')}), last lines of {stage['log']}:\n{''.join(tail)}",
                      file=sys.stderr)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
