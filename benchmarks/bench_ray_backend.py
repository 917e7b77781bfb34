"""Wall time of one job run sequentially and with ``--backend ray`` on this machine.

Builds the job in two fresh Ianvs roots (copies of the example) that share one demo dataset folder,
records the demos once (untimed), then times ``vlamix.bench.job.run_job`` (points one after another)
and ``vlamix.bench.ray_backend.run_job_ray`` (one Ray Tune trial per point, a local Ray started with
``--num-cpus`` CPUs; its start-up is included), and compares the two ``all_rank.csv`` files cell by
cell (all columns but ``time``). Prints ONE JSON object on stdout. Not part of the test suite.

The default grid is the two-point tiny-budget grid of ``tests/test_e2e_job.py`` (LoRA rank 4 and 8,
one task, two demos, two optimiser steps, one three-step episode); ``--train-steps``/``--episodes``
enlarge it.

Usage::

    .venv/bin/python benchmarks/bench_ray_backend.py --workdir /tmp/vlamix_bench_ray
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE_REL = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")


def grid(args) -> dict:
    return {
        "mixture": [{"libero_spatial_no_noops": 1}],
        "lora_rank": [4, 8],
        "demo_tasks": [1],
        "demo_episodes_per_task": [2],
        "heldout_fraction": [0.5],
        "train_steps": [args.train_steps],
        "batch_size": [2],
        "eval_tasks": [1],
        "trials_per_task": [args.episodes],
        "eval_max_steps": [3],
        "eval_workers": [1],
        "data_dir": [os.path.join(args.workdir, "data")],
    }


def make_root(root: str, args, ray_block: dict) -> None:
    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), os.path.join(root, EXAMPLE_REL))
    algo_yaml = os.path.join(root, EXAMPLE_REL, "testalgorithms", "vla_dataselect", "vla_algorithm.yaml")
    with open(algo_yaml) as fh:
        algo = yaml.safe_load(fh)
    algo["algorithm"]["modules"][0]["hyperparameters"] = [{k: {"values": v}} for k, v in grid(args).items()]
    with open(algo_yaml, "w") as fh:
        yaml.safe_dump(algo, fh, sort_keys=False)
    job_yaml = os.path.join(root, EXAMPLE_REL, "benchmarkingjob.yaml")
    with open(job_yaml) as fh:
        job = yaml.safe_load(fh)
    job["benchmarkingjob"]["ray"] = ray_block
    with open(job_yaml, "w") as fh:
        yaml.safe_dump(job, fh, sort_keys=False)


def rank_cells(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.pop("time")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="empty folder for the two roots and the demos")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=1, help="episodes per task")
    args = parser.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=False)
    from vlamix.bench import job as bench_job
    from vlamix.bench import ray_backend
    from vlamix.pipeline.config import BenchConfig
    from vlamix.sim.record import ensure_demo_datasets

    t = time.time()
    ensure_demo_datasets(BenchConfig.from_dict({k: v[0] for k, v in grid(args).items()}).data)
    record_s = time.time() - t
    job_file = os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml")
    out = {"grid": {k: v for k, v in grid(args).items() if k != "data_dir"}, "record_demos_s": round(record_s, 1),
           "num_cpus": args.num_cpus, "cpus_per_trial": args.cpus_per_trial}
    rank = {}
    for backend in ("sequential", "ray"):
        root = os.path.join(args.workdir, backend)
        make_root(root, args, {"cpus_per_trial": args.cpus_per_trial})
        os.chdir(root)
        t = time.time()
        if backend == "sequential":
            result = bench_job.run_job(job_file, print_leaderboard=False)
        else:
            result = ray_backend.run_job_ray(job_file, print_leaderboard=False, num_cpus=args.num_cpus)
        out[f"{backend}_s"] = round(time.time() - t, 1)
        out[f"{backend}_status"] = [p.status for p in result.points]
        rank[backend] = rank_cells(result.rank_files["all"])
        print(f"{backend}: {out[f'{backend}_s']} s", file=sys.stderr)
    out["ray_over_sequential"] = round(out["ray_s"] / out["sequential_s"], 3)
    out["rank_files_equal"] = rank["sequential"] == rank["ray"]
    if not out["rank_files_equal"]:
        out["rank_sequential"], out["rank_ray"] = rank["sequential"], rank["ray"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
