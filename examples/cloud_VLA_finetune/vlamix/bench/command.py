"""The job runner's command line (``vlamix run`` and ``python -m vlamix.bench``): the local backend
(:func:`vlamix.bench.job.run_job`, points one after another) or Ray (:func:`vlamix.bench.ray_backend.run_job_ray`)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Sequence

from vlamix.bench.job import CHECK_ERRORS, run_job
from vlamix.bench.ray_backend import load_ray_settings, run_job_ray
from vlamix.bench.spec import load_job
from vlamix.core.console import setup_console

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None, *, redirect_output: bool = False) -> int:
    """Command line: ``python -m vlamix.bench -f benchmarkingjob.yaml [--dry-run] [--allow-extra] [--recompute-metrics]``.

    Returns the exit status: 0 when every point has a result, 1 when some point failed, 2 for an
    invalid job (nothing ran). ``redirect_output``: the process is the command (``vlamix run``), so what libraries
    print on fds 1 and 2 goes to the job's log file (:func:`vlamix.core.console.setup_console`); False when called
    from Python (tests, notebooks): only the logging handlers change.
    """
    parser = argparse.ArgumentParser(prog="python -m vlamix.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--benchmarking_config_file", dest="job_file", required=True, help="benchmarkingjob.yaml (as `ianvs -f`)")
    parser.add_argument("--dry-run", action="store_true", help="validate the job and list the grid points; run nothing")
    parser.add_argument("--allow-extra", action="store_true", help="accept basemodel hyperparameters that are not BenchConfig fields")
    parser.add_argument("--recompute-metrics", action="store_true", help="recompute the metrics of finished points from prediction.json")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="everything on the console (default: progress there, the rest in <job dir>/logs/job.log)")
    # distributed runner (vlamix.bench.ray_backend)
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="local: points one after another; ray: one Ray Tune trial per point")
    parser.add_argument("--address", default=None, help="Ray cluster address for --backend ray (default: start a local Ray)")
    args = parser.parse_args(argv)
    try:
        log_file = None if args.dry_run else os.path.join(load_job(args.job_file).job_dir, "logs", "job.log")
    except CHECK_ERRORS:
        log_file = None  # the job fails its check below, with the message on the console
    teardown = setup_console(log_file, verbose=args.verbose, redirect=redirect_output)
    try:
        return _run(args)
    finally:
        teardown()


def _run(args: argparse.Namespace) -> int:
    try:
        if args.backend == "ray" and not args.dry_run:
            result = run_job_ray(args.job_file, address=args.address, allow_extra=args.allow_extra, recompute_metrics=args.recompute_metrics)
        else:
            if args.backend == "ray":  # a dry run checks the ray: block too
                load_ray_settings(args.job_file)
            result = run_job(args.job_file, allow_extra=args.allow_extra, dry_run=args.dry_run, recompute_metrics=args.recompute_metrics)
    except CHECK_ERRORS as err:
        logger.error("%s", err)
        return 2
    if args.dry_run:
        for p in result.points:
            print(f"{p.point.number:3d}  {p.point.point_id}  {p.output_dir}  {p.point.describe()}")
        return 0
    return 1 if result.failed else 0
