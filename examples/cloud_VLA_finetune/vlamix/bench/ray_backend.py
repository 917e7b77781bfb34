"""Run a benchmarking job's grid points as Ray Tune trials: one machine or a Ray cluster.

Usage (from the repository root, as the sequential runner)::

    vlamix run -f examples/cloud_VLA_finetune/singletask_learning_bench/benchmarkingjob.yaml --backend ray
    ray start --head                                   # on the head node of a cluster, then on each worker:
    ray start --address HEAD_IP:6379
    vlamix run -f .../benchmarkingjob.yaml --backend ray --address HEAD_IP:6379

Every grid point of :mod:`vlamix.bench.job` is one trial of ``ray.tune.Tuner`` (a ``grid_search``
over the point ids). A trial loads the job again in its own worker process and calls the same
:func:`vlamix.bench.job.run_point`, so the point folders, ids, ``result.json``/``prediction.json``,
the rank files and the report are those of the sequential run (the driver writes the rank files
and the report with :func:`vlamix.bench.job.finish_job` once every trial has ended).

Resources of one trial come from the job file, in a ``ray:`` block of ``benchmarkingjob`` that
Ianvs ignores (its ``BenchmarkingJob._parse_config`` skips unknown keys)::

    benchmarkingjob:
      ray:
        cpus_per_trial: 2          # > 0; rollout workers (eval_workers) and the data loader share them
        gpus_per_trial: 1          # >= 0, fractions allowed (0.5: two tiny-model trials per GPU)
        max_concurrent_trials: 4   # optional cap (default: as many as the resources allow)

Failures and resume: a point that raises is recorded by ``run_point`` (``result.json`` status
``failed``, ``error.txt``) and the other trials go on (``FailureConfig(max_failures=0)``, no fail
fast); a trial whose worker dies (out of memory, node lost) is recorded the same way by the driver.
Points whose ``result.json`` says ``completed`` are not sent to Ray at all, so a driver that was
killed resumes with the same command: finished points are reused, the others run (an interrupted
training run resumes from its last ``step_*`` checkpoint, as in the sequential runner).

Pitfalls handled inside a trial (:func:`_trial`):

* Ray narrows ``CUDA_VISIBLE_DEVICES`` to the trial's GPUs; PyTorch then sees them as ``cuda:0..``.
  EGL renumbers them too, so ``MUJOCO_EGL_DEVICE_ID`` is set to 0 and robosuite's import-time check
  is kept from rejecting it (:mod:`vlamix.sim.egl`). A trial with ``gpus_per_trial: 0`` gets an
  empty ``CUDA_VISIBLE_DEVICES`` (Ray 2.60 no longer empties it), so it never takes a GPU unscheduled.
* TensorFlow (RLDS loader) never takes a GPU (:func:`vlamix.data._tf.import_tf`).
* Rollout and recording workers are ``spawn``-started processes of the trial (never fork: the
  trial has torch and possibly TF loaded); they inherit the trial's environment.
* Ray sets ``OMP_NUM_THREADS`` of a trial to its ``cpus_per_trial``; torch uses that many threads.
* Two trials that share a training run (same training key, e.g. points that differ only in
  evaluation) or a missing demo dataset wait for each other through a file lock instead of
  writing the same folder (:mod:`vlamix.pipeline`).
* Racing (``racing: true``, :mod:`vlamix.pipeline.racing`): trials run in parallel, so a point races
  against the points in the job ledger at the end of its first round that finds one (the trials
  finished by then; the set is then fixed, as the error is split over it); the first trials to run
  have nobody to race against, and the outcome can depend on the order in which trials finish.
* On a cluster every node needs the same checkout, Python environment and workspace at the same
  path (a shared file system): trials write their point folders where the driver reads them.
"""

from __future__ import annotations

import logging
import numbers
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from vlamix.bench.job import (
    JobResult,
    finish_job,
    prepare_job,
    run_point,
)
from vlamix.bench.records import ERROR_FILE, RESULT_FILE, PointResult, read_json, resume_point, write_json
from vlamix.core.errors import ConfigError
from vlamix.sim.egl import use_first_visible_egl_device

logger = logging.getLogger(__name__)

RAY_BLOCK = "ray"
TUNE_DIR = "ray_tune"


@dataclass(frozen=True)
class RaySettings:
    """Resources of one trial (``benchmarkingjob.ray``): CPUs and GPUs (floats), and a cap on trials
    running at once (None: as many as fit)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None

    @classmethod
    def from_mapping(cls, raw: Any) -> "RaySettings":
        """Validate a ``ray:`` block.

        Raises:
            ConfigError: field ``ray.<key>`` for an unknown key or a value out of range.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(RAY_BLOCK, f"must be a mapping with cpus_per_trial, gpus_per_trial, max_concurrent_trials; got {raw!r}")
        allowed = ("cpus_per_trial", "gpus_per_trial", "max_concurrent_trials")
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"{RAY_BLOCK}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
        cpus = raw.get("cpus_per_trial", 1.0)
        if isinstance(cpus, bool) or not isinstance(cpus, numbers.Real) or not cpus > 0:
            raise ConfigError("ray.cpus_per_trial", f"must be a number > 0, got {cpus!r}")
        gpus = raw.get("gpus_per_trial", 0.0)
        if isinstance(gpus, bool) or not isinstance(gpus, numbers.Real) or not gpus >= 0:
            raise ConfigError("ray.gpus_per_trial", f"must be a number >= 0, got {gpus!r}")
        if gpus > 1 and gpus != int(gpus):
            raise ConfigError("ray.gpus_per_trial", f"fractions are allowed only below 1 (several trials per GPU), got {gpus!r}")
        cap = raw.get("max_concurrent_trials")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError("ray.max_concurrent_trials", f"must be an integer >= 1 or null, got {cap!r}")
        return cls(float(cpus), float(gpus), cap)


def load_ray_settings(job_file: str) -> RaySettings:
    """The ``benchmarkingjob.ray`` block of ``job_file`` (defaults when absent).

    Raises:
        ConfigError: see :meth:`RaySettings.from_mapping`.
    """
    with open(job_file, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    job = raw.get("benchmarkingjob") if isinstance(raw, Mapping) else None
    return RaySettings.from_mapping(job.get(RAY_BLOCK) if isinstance(job, Mapping) else None)


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Use the Ray runtime that is already initialised, or connect to ``address``, or start a local one.

    A local Ray gets the machine's CPUs and GPUs (or ``num_cpus``/``num_gpus``). Workers get this
    process's ``PYTHONPATH`` (the checkout must be at the same path on every node).
    Returns True when this call started or connected Ray (the caller shuts it down).
    """
    import ray  # optional dependency: ray is only installed for --backend ray

    if ray.is_initialized():
        return False
    pythonpath = os.pathsep.join(p for p in [_package_root(), os.environ.get("PYTHONPATH", "")] if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, runtime_env=runtime_env)
    return True


def _package_root() -> str:
    """The folder that holds the ``vlamix`` package (added to the trials' ``PYTHONPATH``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check_resources(settings: RaySettings) -> None:
    """Fail before any trial when one trial needs more CPUs or GPUs than the whole cluster has.

    Raises:
        ConfigError: ``ray.cpus_per_trial`` / ``ray.gpus_per_trial`` with the cluster's totals.
    """
    import ray  # optional dependency: ray is only installed for --backend ray

    total = ray.cluster_resources()
    if settings.gpus_per_trial > total.get("GPU", 0.0):
        raise ConfigError("ray.gpus_per_trial", f"{settings.gpus_per_trial:g} GPUs per trial, but the Ray cluster has {total.get('GPU', 0.0):g}")
    if settings.cpus_per_trial > total.get("CPU", 0.0):
        raise ConfigError("ray.cpus_per_trial", f"{settings.cpus_per_trial:g} CPUs per trial, but the Ray cluster has {total.get('CPU', 0.0):g}")
    if settings.gpus_per_trial == 0 and total.get("GPU", 0.0) > 0:
        logger.warning("the Ray cluster has %g GPUs but ray.gpus_per_trial is 0: trials run on CPU (their "
                       "CUDA_VISIBLE_DEVICES is emptied); set benchmarkingjob.ray.gpus_per_trial to fine-tune on GPUs", total["GPU"])


def prepare_trial_devices(gpus_per_trial: float) -> None:
    """Device set-up at the start of a trial, before torch touches CUDA.

    A trial that asked for no GPU gets ``CUDA_VISIBLE_DEVICES=""`` (Ray 2.60 leaves the variable
    alone for zero-GPU trials, so every such trial would otherwise see, and use, every GPU of its
    node unscheduled) and, unless set, ``MUJOCO_EGL_DEVICE_ID=0`` (robosuite's EGL context parses an
    empty ``CUDA_VISIBLE_DEVICES`` as a device list and fails without it). A GPU trial renders on
    its first GPU (:func:`vlamix.sim.egl.use_first_visible_egl_device`).
    """
    if gpus_per_trial == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", "0")
    else:
        use_first_visible_egl_device()


def _trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """Body of one Ray Tune trial: run (or resume) one grid point with :func:`run_point`.

    ``config``: ``root`` (the driver's working directory, the Ianvs root), ``job_file``, ``point_id``,
    ``allow_extra``, ``recompute_metrics``. Returns ``{"status", "point_id", "error"}``; the metrics
    are in the point's ``result.json``, which the driver reads.
    """
    os.chdir(config["root"])  # Tune starts trials in their own folder; every URL is relative to the root
    prepare_trial_devices(config["gpus_per_trial"])
    egl = os.environ.get("MUJOCO_EGL_DEVICE_ID")
    logger.info("trial of point %s: CUDA_VISIBLE_DEVICES=%r MUJOCO_EGL_DEVICE_ID=%r OMP_NUM_THREADS=%r",
                config["point_id"], os.environ.get("CUDA_VISIBLE_DEVICES"), egl, os.environ.get("OMP_NUM_THREADS"))
    job, points, classes, metric_funcs = prepare_job(config["job_file"], allow_extra=config["allow_extra"])
    point = next(p for p in points if p.point_id == config["point_id"])
    result = run_point(point, job, classes, metric_funcs, recompute_metrics=config["recompute_metrics"])
    return {"status": result.status, "point_id": point.point_id, "error": result.error or ""}


def run_job_ray(
    job_file: str,
    *,
    address: str | None = None,
    allow_extra: bool = False,
    recompute_metrics: bool = False,
    print_leaderboard: bool = True,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
) -> JobResult:
    """:func:`vlamix.bench.job.run_job` with the unfinished points run as parallel Ray Tune trials.

    Args:
        address: Ray cluster address (``HEAD_IP:6379`` or ``auto``); None: use an initialised Ray or
            start a local one with ``num_cpus``/``num_gpus`` (default: the machine's).
        allow_extra, recompute_metrics, print_leaderboard: see :func:`vlamix.bench.job.run_job`.
    Returns:
        :class:`vlamix.bench.job.JobResult` (points in grid order; ``completed`` ran now, ``resumed``
        were finished before, ``failed`` raised or their trial died).
    Raises:
        ConfigError: an invalid ``ray:`` block, or a trial larger than the cluster, before any trial.
        JobConfigError, FileNotFoundError, ModuleLoadError: as the sequential runner, before any trial.
    """
    settings = load_ray_settings(job_file)
    job, points, classes, metric_funcs = prepare_job(job_file, allow_extra=allow_extra)
    finished: dict[str, PointResult] = {}
    for point in points:
        resumed = resume_point(point, point.output_dir(job.job_dir), metric_funcs, job, recompute_metrics)
        if resumed is not None:
            finished[point.point_id] = resumed
    pending = [p for p in points if p.point_id not in finished]
    logger.info("job '%s' on Ray: %d point(s) finished before, %d to run", job.name, len(finished), len(pending))
    trial_errors: dict[str, str] = {}
    if pending:
        trial_errors = _run_trials(job_file, job, pending, settings, address, allow_extra, num_cpus, num_gpus)
    results = []
    for point in points:
        if point.point_id in finished:
            results.append(finished[point.point_id])
        else:
            results.append(_collect(point, job, metric_funcs, trial_errors.get(point.point_id)))
    return finish_job(job, results, print_leaderboard=print_leaderboard, metric_funcs=metric_funcs)


def _run_trials(job_file, job, pending, settings, address, allow_extra, num_cpus, num_gpus) -> dict[str, str]:
    """One Tuner over the pending points; returns ``{point id: error}`` of trials that died in Ray."""
    import ray  # optional dependency: ray is only installed for --backend ray
    from ray import tune  # optional dependency, as above

    started = connect(address, num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        check_resources(settings)
        trainable = tune.with_resources(_trial, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
        param_space = {
            "point_id": tune.grid_search([p.point_id for p in pending]),
            "root": os.getcwd(),
            "job_file": job_file,
            "allow_extra": allow_extra,
            "recompute_metrics": False,
            "gpus_per_trial": settings.gpus_per_trial,
        }
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=settings.max_concurrent_trials, reuse_actors=False),
            run_config=tune.RunConfig(
                name=f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=os.path.abspath(os.path.join(job.job_dir, TUNE_DIR)),
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                verbose=1,
            ),
        )
        grid = tuner.fit()
        errors = {}
        for res in grid:
            if res.error is not None:
                errors[res.config["point_id"]] = f"{type(res.error).__name__}: {res.error}"
        return errors
    finally:
        if started:
            ray.shutdown()


def _collect(point, job, metric_funcs, trial_error: str | None) -> PointResult:
    """The outcome of a point that was sent to Ray, read from its folder (the trial wrote it)."""
    out_dir = point.output_dir(job.job_dir)
    done = resume_point(point, out_dir, metric_funcs, job, False)
    if done is not None:
        done.status = "completed"
        return done
    record = read_json(os.path.join(out_dir, RESULT_FILE)) or {}
    if record.get("status") == "failed" and record.get("point_id") == point.point_id:
        return PointResult(point, "failed", out_dir, error=record.get("error"))
    # the trial died before run_point could record anything (worker killed, node lost): record it here
    message = trial_error or "the Ray trial ended without a result"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, ERROR_FILE), "w", encoding="utf-8") as fh:
        fh.write(message + "\n")
    write_json(os.path.join(out_dir, RESULT_FILE), {"status": "failed", "point_id": point.point_id, "error": message})
    logger.error("%s: trial failed in Ray: %s", point.describe(), message)
    return PointResult(point, "failed", out_dir, error=message)


__all__ = ["RaySettings", "load_ray_settings", "connect", "check_resources", "run_job_ray"]
