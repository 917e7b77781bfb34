"""Run an Ianvs ``benchmarkingjob.yaml`` without Ianvs: the grid of mixtures, then the leaderboard.

Usage (from the repository root, which plays the Ianvs root: every URL in the YAML files is
relative to the current directory)::

    python -m vlamix.bench.job -f examples/cloud_VLA_finetune/singletask_learning_bench/benchmarkingjob.yaml
    python -m vlamix.bench.job -f .../benchmarkingjob.yaml --dry-run     # validate and list the grid

The same file runs under Ianvs with ``ianvs -f .../benchmarkingjob.yaml``.

What it reproduces of Ianvs (kubeedge/ianvs ``core/``), for each grid point in Ianvs order
(algorithms in ``test_object`` order, then the Cartesian product of the hyperparameter value
lists, see :mod:`vlamix.bench.spec`), as ``SingleTaskLearning.run`` + ``TestCase.compute_metrics``:

1. ``basemodel = ClassFactory.get_cls("general", <module name>)(**hyperparameters)`` after loading
   the module file; the same for every other module with a ``url``.
2. ``basemodel.preprocess()`` if it has one.
3. ``BASE_MODEL_URL=<initial_model_url>``; ``basemodel.train(train_data)`` with the parsed train
   index (``.x``/``.y``, ``data_type="train"``, :mod:`vlamix.bench.dataset`).
4. ``model_path = basemodel.save("<point dir>/output/train/")`` (the folder is not created for it);
   ``None`` means ``initial_model_url``.
5. ``RESULT_SAVED_URL=<point dir>/output/inference/``; ``basemodel.load(model_path)``;
   ``prediction = basemodel.predict(test_data.x)`` (test index, ``data_type="inference"``).
6. ``metric(test_data.y, prediction)`` for every testenv metric (test index, ``"eval overall"``).

Then the rank files of :mod:`vlamix.bench.rank` at ``<workspace>/<job name>/rank/``, and the
selected leaderboard printed with prettytable.

What it adds: :func:`check_job` (also ``vlamix check -f``, and the basemodel's first construction
under ``ianvs -f``) validates every point's basemodel hyperparameters with
:meth:`vlamix.pipeline.config.BenchConfig.from_dict`, checks the testenv indexes list every point's datasets
and suites, and loads every module/metric file before the first point runs, so a bad value fails
in seconds, naming the field and the point. Each point's folder
``<workspace>/<job name>/<algorithm>/<point id>/`` (``point id`` = a hash of the algorithm and its
hyperparameters, so it is stable across runs) keeps ``point.json``, ``prediction.json`` and
``result.json``; a point whose ``result.json`` says ``completed`` is not run again (resume; metrics
added to the testenv later are computed from ``prediction.json``). A point that raises is recorded
(``result.json`` status ``failed``, ``error.txt``), the other points still run, and the next run
retries it. Module files are imported with ``importlib.util.spec_from_file_location`` under a
private module name; their folder is on ``sys.path`` only while the file executes.

Size: one file because it is Ianvs's job semantics in one place (grid order, point folders, resume, rank files,
failed points) that ``vlamix run``, the Ray backend and ``vlamix check`` share; YAML parsing, records, rank
columns and the command are apart.
"""

from __future__ import annotations

import contextlib
import glob
import copy
import hashlib
import importlib.util
import itertools
import json
import logging
import math
import os
import sys
import time
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from vlamix.bench.dataset import IndexFileError, load_index
from vlamix.core.index import index_names
from vlamix.bench.records import (
    ERROR_FILE,
    POINT_FILE,
    PREDICTION_FILE,
    RESULT_FILE,
    PointResult,
    jsonable,
    nan_to_none,
    plain,
    read_json,
    resume_point,
    write_json,
)
from vlamix.bench.rank import RankRow, format_rank_table, hyperparameter_columns, read_rank_file, write_rank_files
from vlamix.bench.registry import get_class_factory
from vlamix.bench.spec import AlgorithmSpec, JobConfigError, JobSpec, load_job
from vlamix.core.console import LOG_FILE_ENV, say
from vlamix.core.errors import ConfigError
from vlamix.core.io import atomic_write_text
from vlamix.core.labels import mixture_label
from vlamix.pipeline.config import BenchConfig
from vlamix.bench.metrics import ARM_METRICS, arm_values
from vlamix.pipeline.arms import arm_table
from vlamix.pipeline.checks import check_environment
from vlamix.pipeline.expert import check_hyperparameters as check_reference_hyperparameters
from vlamix.pipeline.ledger import entries as ledger_entries
from vlamix.pipeline.ledger import entry_name, ledger_of
from vlamix.pipeline.point import RUNTIME_KEYS
from vlamix.report.markdown import leaderboard_table, write_report

logger = logging.getLogger(__name__)

BASEMODEL = "basemodel"
#: Basemodel registry names whose hyperparameters are not BenchConfig fields (evaluation kit): the
#: scripted-expert reference row, validated by :func:`vlamix.pipeline.expert.check_hyperparameters`.
REFERENCE_BASEMODELS = frozenset({"ScriptedExpertReference"})
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


# ------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class ModulePoint:
    """One module of a grid point: its type, registry name, file url and hyperparameter values."""

    type: str
    name: str
    url: str
    hyperparameters: Mapping[str, Any]


@dataclass(frozen=True)
class GridPoint:
    """One test case: an algorithm with one value per hyperparameter for each of its modules.

    ``number`` is the 1-based position in the job (Ianvs's test-case order), ``total`` the number
    of points in the job.
    """

    algorithm: AlgorithmSpec
    modules: tuple[ModulePoint, ...]
    number: int
    total: int

    @property
    def basemodel(self) -> ModulePoint:
        """The module of type ``basemodel`` (the single-task paradigm's model)."""
        return next(m for m in self.modules if m.type == BASEMODEL)

    @property
    def point_id(self) -> str:
        """12 hex digits of a SHA-1 over algorithm name, paradigm, initial model and module values."""
        payload = {
            "algorithm": self.algorithm.name,
            "paradigm": self.algorithm.paradigm_type,
            "initial_model_url": self.algorithm.initial_model_url,
            "modules": [[m.type, m.name, jsonable(m.hyperparameters)] for m in self.modules],
        }
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def output_dir(self, job_dir: str) -> str:
        """``<job_dir>/<algorithm>/<point id>`` (Ianvs: ``<job_dir>/<algorithm>/<uuid>``)."""
        return os.path.join(job_dir, self.algorithm.name, self.point_id)

    def describe(self) -> str:
        """Human label for logs and errors: ``grid point 2/3 of algorithm 'x' (mixture {...})``."""
        hps = self.basemodel.hyperparameters
        mixture = hps.get("mixture")
        what = f"mixture {mixture}" if mixture is not None else ", ".join(f"{k}={v}" for k, v in hps.items())
        if "strategy" in hps:
            what = f"strategy {hps['strategy']}, {what}"
        return f"grid point {self.number}/{self.total} of algorithm '{self.algorithm.name}' ({what})"

    def headline(self) -> str:
        """The console header of the point: ``point 2/4  vla_dataselect  static spatial:object:goal=1:1:1``."""
        hps = self.basemodel.hyperparameters
        mixture = hps.get("mixture")
        what = mixture_label(mixture) if isinstance(mixture, Mapping) else "reference row"  # the scripted expert
        if "strategy" in hps:
            what = f"{hps['strategy']} {what}"
        if "seed" in hps:
            what += f" seed {hps['seed']}"
        return f"point {self.number}/{self.total}  {self.algorithm.name}  {what}"

    def rank_hyperparameters(self) -> dict[str, str]:
        """Hyperparameter cells of the rank files: ``{"<module type>-<name>": str(value)}``."""
        out: dict[str, str] = {}
        for module in self.modules:
            out.update(hyperparameter_columns(module.type, module.hyperparameters))
        return out


def expand_grid(job: JobSpec) -> list[GridPoint]:
    """All grid points of ``job`` in Ianvs's order (see :func:`vlamix.bench.spec.expand_hyperparameters`)."""
    combos: list[tuple[AlgorithmSpec, tuple[ModulePoint, ...]]] = []
    for algorithm in job.algorithms:
        per_module = []
        for module in algorithm.modules:
            hps_list = module.hyperparameters_list or ({},)
            per_module.append([ModulePoint(module.type, module.name, module.url, copy.deepcopy(h)) for h in hps_list])
        for modules in itertools.product(*per_module):
            combos.append((algorithm, tuple(modules)))
    return [GridPoint(algorithm=a, modules=m, number=i, total=len(combos)) for i, (a, m) in enumerate(combos, 1)]


def validate_grid(points: Sequence[GridPoint], *, allow_extra: bool = False) -> list[BenchConfig]:
    """Validate every point's basemodel hyperparameters as a :class:`BenchConfig` (reference rows,
    :data:`REFERENCE_BASEMODELS`, with their own check; they are not in the returned list).

    The pipeline's runtime keys (:data:`vlamix.pipeline.point.RUNTIME_KEYS`, e.g. ``runs_dir``) are not
    config fields and are left out of the check.

    Args:
        allow_extra: keep unknown hyperparameter names (for basemodels that take more than the
            BenchConfig fields) instead of rejecting them as typos.
    Raises:
        ConfigError: the first invalid point; the message names the field and the point.
        JobConfigError: the grid is empty.
    """
    if not points:
        raise JobConfigError("the job has no grid point (an empty 'values' list?)")
    configs = []
    for point in points:
        try:
            values = {k: v for k, v in point.basemodel.hyperparameters.items() if k not in RUNTIME_KEYS}
            if point.basemodel.name in REFERENCE_BASEMODELS:  # evaluation kit: the scripted-expert reference row
                check_reference_hyperparameters(values)
                continue
            configs.append(check_environment(BenchConfig.from_dict(values, allow_extra=allow_extra)))
        except ConfigError as err:
            raise ConfigError(err.field, f"{str(err).split(': ', 1)[-1]} (in {point.describe()})") from err
    return configs


# ------------------------------------------------------------------------------------------- loading
class ModuleLoadError(RuntimeError):
    """A module or metric file raised while it was executed (the cause is chained)."""


def load_module_file(url: str) -> types.ModuleType:
    """Execute a Python file as Ianvs's ``load_module`` does, without leaving traces on ``sys.path``.

    The module is registered in ``sys.modules`` under a private name derived from its absolute path
    (so two examples' ``basemodel.py`` never collide); the file's folder is first on ``sys.path``
    only while it executes, so it may import sibling files as it could under Ianvs.

    Raises:
        FileNotFoundError: ``url`` is not a file.
        ModuleLoadError: the file raised while executing (chained).
    """
    path = os.path.abspath(url)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"module file {url!r} not found (relative to {os.getcwd()})")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"_vlamix_bench_ext_{hashlib.sha1(path.encode()).hexdigest()[:10]}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise ModuleLoadError(f"load module(url={url}) failed, error: {err}") from err
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def resolve_registered(url: str, name: str) -> Any:
    """Execute ``url`` and return the object it registered as ``name`` (``ClassType.GENERAL``).

    Looked up right after the file ran, so a later file that registers the same alias cannot swap
    the object (Ianvs looks up right after ``load_module`` too).

    Raises:
        FileNotFoundError, ModuleLoadError: see :func:`load_module_file`.
        JobConfigError: the file registers nothing under ``name``.
    """
    load_module_file(url)
    class_factory, class_type = get_class_factory()
    try:
        return class_factory.get_cls(type_name=class_type.GENERAL, t_cls_name=name)
    except ValueError as err:
        raise JobConfigError(
            f"{url}: nothing registered as '{name}'; decorate it with "
            f"@ClassFactory.register(ClassType.GENERAL, alias=\"{name}\") ({err})"
        ) from err


def resolve_job(job: JobSpec, points: Sequence[GridPoint]) -> tuple[dict[tuple[str, str], Any], dict[str, Callable]]:
    """Load every module and metric file of the job once: ``({(url, name): class}, {metric: function})``.

    Raises:
        JobConfigError: a basemodel without url, or a file that registers nothing under its name.
        FileNotFoundError, ModuleLoadError: see :func:`load_module_file`.
    """
    classes: dict[tuple[str, str], Any] = {}
    for point in points:
        for module in point.modules:
            if module.type == BASEMODEL and not module.url:
                raise JobConfigError(f"{point.algorithm.url}: the basemodel module '{module.name}' needs a url")
            if module.url and (module.url, module.name) not in classes:
                classes[(module.url, module.name)] = resolve_registered(module.url, module.name)
    metric_funcs = {m.name: resolve_registered(m.url, m.name) for m in job.testenv.metrics}
    return classes, metric_funcs


# ------------------------------------------------------------------------------------------- check
@dataclass
class CheckedJob:
    """A job that passed :func:`check_job`: its grid, the validated configs and the loaded files."""

    job: JobSpec
    points: list[GridPoint]
    configs: list[BenchConfig]
    classes: dict[tuple[str, str], Any]
    metric_funcs: dict[str, Callable]


def check_indexes(job: JobSpec, points: Sequence[GridPoint], configs: Sequence[BenchConfig]) -> None:
    """Every point's datasets (non-zero mixture weight) are in the train index and its evaluation
    suites in the test index, as the basemodel requires at ``train``/``predict`` time.

    Raises:
        vlamix.bench.dataset.IndexFileError: an index file is missing or malformed.
        ConfigError: field ``mixture`` or ``eval_suites``, naming the point and the missing entries.
    """
    train = index_names(load_index(job.testenv.train_index, "train"))
    test = index_names(load_index(job.testenv.test_index, "inference"))
    for point, cfg in zip(points, configs):
        for field_name, needed, listed, index in (
            ("mixture", list(cfg.mixture_weights()), train, job.testenv.train_index),
            ("eval_suites", list(cfg.resolved_eval_suites()), test, job.testenv.test_index),
        ):
            missing = [name for name in needed if name not in listed]
            if missing:
                raise ConfigError(
                    field_name,
                    f"{', '.join(missing)} not listed in the testenv index {index} (it lists: {', '.join(listed)}) "
                    f"(in {point.describe()})",
                )


def numeric_selected_columns(job: JobSpec, points: Sequence[GridPoint]) -> list[str]:
    """Hyperparameter columns of ``selected_rank.csv`` whose value is a number in some point.

    Ianvs (``Rank._get_selected``) drops rows equal in every selected column but time and url after
    concatenating the ``all_rank.csv`` it read back with pandas: a hyperparameter cell is written as
    ``str(value)`` but read back as a number, so ``"4" != 4`` and a rerun duplicates the row.
    """
    selected = list(job.rank.selected_dataitem.get("hyperparameters", ["all"]))
    out = []
    for point in points:
        for module in point.modules:
            for name, value in module.hyperparameters.items():
                column = f"{module.type}-{name}"
                if (selected == ["all"] or column in selected) and isinstance(value, (int, float)) and column not in out:
                    out.append(column)
    return out


def check_job(job_file: str, *, allow_extra: bool = False) -> CheckedJob:
    """Check a whole job before anything runs (``vlamix check -f``; ``vlamix run`` and the basemodel's
    first construction under ``ianvs -f`` run it too).

    In this order: the YAML files parse; every grid point's basemodel hyperparameters are a valid
    :class:`BenchConfig` (unknown names rejected unless ``allow_extra``; with ``demos: none`` the
    datasets exist under ``data_dir``, with ``scripted`` they are recordable); every point's
    datasets and evaluation suites are listed in the testenv indexes; every module and metric file
    loads and registers its name. Nothing is trained, recorded or written.

    Raises:
        JobConfigError: a malformed YAML file, an empty grid, a file registering nothing under its name.
        ConfigError: the first invalid point; the message names the field and the point
            (``grid point 3/3 of algorithm 'x' (...)``).
        vlamix.bench.dataset.IndexFileError: a missing or malformed index file.
        FileNotFoundError, ModuleLoadError: a module or metric file.
    """
    job = load_job(job_file)
    points = expand_grid(job)
    configs = validate_grid(points, allow_extra=allow_extra)
    check_indexes(job, points, configs)
    classes, metric_funcs = resolve_job(job, points)
    for column in numeric_selected_columns(job, points):
        logger.warning(
            "rank.selected_dataitem lists '%s', whose values are numbers: Ianvs reads them back from "
            "all_rank.csv as numbers but compares them with the text of the new rows, so a rerun under "
            "`ianvs -f` adds duplicate rows to selected_rank.csv (quote the values or leave the column out)", column)
    return CheckedJob(job=job, points=points, configs=configs, classes=classes, metric_funcs=metric_funcs)


# ------------------------------------------------------------------------------------------- running
@dataclass
class JobResult:
    """Outcome of a job: per-point results in grid order and the rank files written."""

    job: JobSpec
    points: list[PointResult]
    rank_files: dict[str, str]

    @property
    def failed(self) -> list[PointResult]:
        return [p for p in self.points if not p.ok]


def run_job(
    job_file: str,
    *,
    allow_extra: bool = False,
    dry_run: bool = False,
    recompute_metrics: bool = False,
    print_leaderboard: bool = True,
) -> JobResult:
    """Run every grid point of ``job_file`` that has no result yet and write the rank files.

    Args:
        job_file: ``benchmarkingjob.yaml``; it and the URLs inside are relative to the current
            directory (the Ianvs root).
        allow_extra: see :func:`validate_grid`.
        dry_run: validate and load everything, run nothing, write nothing.
        recompute_metrics: for finished points, compute every metric again from the saved
            ``prediction.json`` (after a change in a metric file) instead of reusing ``result.json``.
        print_leaderboard: print the selected leaderboard (rank.visualization print_table).
    Returns:
        :class:`JobResult`; failed points are listed in ``.failed`` (the job does not raise for them).
    Raises:
        JobConfigError, ConfigError: before any point runs, for any malformed file or invalid value.
        FileNotFoundError, ModuleLoadError: before any point runs, for a module or metric file.
    """
    job, points, classes, metric_funcs = prepare_job(job_file, allow_extra=allow_extra)
    if dry_run:
        return JobResult(job=job, points=[PointResult(p, "planned", p.output_dir(job.job_dir)) for p in points], rank_files={})

    results = [run_point(point, job, classes, metric_funcs, recompute_metrics=recompute_metrics) for point in points]
    return finish_job(job, results, print_leaderboard=print_leaderboard, metric_funcs=metric_funcs)


def prepare_job(job_file: str, *, allow_extra: bool = False) -> tuple[JobSpec, list[GridPoint], dict[tuple[str, str], Any], dict[str, Callable]]:
    """Check (:func:`check_job`), expand and resolve a job: ``(job, points, classes, metric_funcs)``.

    Shared by :func:`run_job` and the other backends (:mod:`vlamix.bench.ray_backend`, :mod:`vlamix.search.job`).

    Raises:
        JobConfigError, ConfigError, FileNotFoundError, ModuleLoadError: see :func:`run_job`.
    """
    checked = check_job(job_file, allow_extra=allow_extra)
    job, points, classes, metric_funcs = checked.job, checked.points, checked.classes, checked.metric_funcs
    logger.info("job '%s': %d grid point(s), output in %s", job.name, len(points), job.job_dir)
    return job, points, classes, metric_funcs



def finish_job(
    job: JobSpec,
    results: Sequence[PointResult],
    *,
    print_leaderboard: bool = True,
    metric_funcs: Mapping[str, Callable] | None = None,
) -> JobResult:
    """Write the rank files and the report of the finished points, log failures, print the leaderboard.

    ``results`` in grid order (one per point); shared by every backend so that their outputs agree.
    ``metric_funcs`` (from :func:`prepare_job`) enables the cross-point metrics (training-seed arms, letter groups,
    P(best), ``tied_with_best``: over every finished point of the job).
    """
    results = list(results)
    _cross_point_metrics(results, metric_funcs or {})
    rows = [_rank_row(r) for r in results if r.ok]
    rank_files = write_rank_files(rows, job.rank, job.job_dir, job.testenv.metric_names)
    results_ranked = _in_rank_order(results, rank_files)
    report = _write_report(results_ranked, job)
    if report:
        rank_files["report"] = report
    for r in results:
        if not r.ok:
            logger.error("%s FAILED: %s (details in %s)", r.point.describe(), r.error, os.path.join(r.output_dir, ERROR_FILE))
    wide = None
    if rank_files.get("selected"):  # Ianvs's wide table (rank.visualization print_table)
        vis = job.rank.visualization
        if vis.get("mode", "selected_only") == "selected_only" and vis.get("method", "print_table") == "print_table":
            wide = format_rank_table(rank_files["selected"])
            logger.info("selected rank table:\n%s", wide)
    if print_leaderboard and (report or wide):  # the leaderboard, once (ours, else Ianvs's), then where things are
        say("\nLeaderboard of '%s'\n%s", job.name, _leaderboard_text(results_ranked) if report else wide)
        if report:
            say("report: %s", report)
        say("rank files: %s", ", ".join(rank_files[k] for k in ("all", "selected") if rank_files.get(k)))
        if os.environ.get(LOG_FILE_ENV):
            say("log: %s", os.environ[LOG_FILE_ENV])
    return JobResult(job=job, points=results, rank_files=rank_files)


def _in_rank_order(results: Sequence[PointResult], rank_files: Mapping[str, str]) -> list[PointResult]:
    """``results`` ordered as the rows of ``all_rank.csv`` (the job's ``rank.sort_by``); points that
    are not in it (failed) go last, in grid order."""
    path = rank_files.get("all") or rank_files.get("selected")
    if not path or not os.path.isfile(path):
        return list(results)
    header, rows = read_rank_file(path)
    if "url" not in header:
        return list(results)
    order = {os.path.normpath(row[header.index("url")]): i for i, row in enumerate(rows)}
    return sorted(results, key=lambda r: order.get(os.path.normpath(r.output_dir), len(order)))


def _leaderboard_text(results: Sequence[PointResult]) -> str:
    """Compact leaderboard (mixture, success rate with 95% CI and N, offline metrics) of the points."""
    return leaderboard_table(_load_predictions(results), ranked=True).get_string()


def _load_predictions(results: Sequence[PointResult]) -> list[dict[str, Any]]:
    """The finished points' ``prediction.json`` that are vlamix results (have a ``summary``)."""
    predictions = []
    for r in results:
        path = os.path.join(r.output_dir, PREDICTION_FILE)
        if r.ok and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                pred = json.load(fh)
            if isinstance(pred, dict) and isinstance(pred.get("summary"), dict):
                predictions.append(pred)
    return predictions


def _cross_point_metrics(results: Sequence[PointResult], metric_funcs: Mapping[str, Callable]) -> None:
    """The columns that need the other points (:data:`vlamix.bench.metrics.ARM_METRICS`: training-seed arms, P(best),
    letter groups, best trade-offs, ``tied_with_best``) over every finished point of this run of the job; the metric
    files alone see only the points finished before them (:func:`vlamix.bench.metrics.peer_predictions`)."""
    names = [name for name in ARM_METRICS if name in metric_funcs]
    if not names:
        return
    predictions = {}
    for r in results:
        pred = read_json(os.path.join(r.output_dir, PREDICTION_FILE)) if r.ok else None
        if isinstance(pred, dict) and isinstance(pred.get("episodes"), list):
            predictions[r.output_dir] = pred
    table = arm_table(predictions.values())
    for r in results:
        if r.ok:  # reference rows (not compared) stay empty
            values = arm_values(predictions[r.output_dir], table) if r.output_dir in predictions else {}
            r.metrics.update({name: values.get(name, math.nan) for name in names})


def _write_report(results: Sequence[PointResult], job: JobSpec) -> str | None:
    """Write ``<job dir>/report/`` (tables and plots, :mod:`vlamix.report`) from the finished points'
    ``prediction.json``; predictions that are not vlamix results (no ``summary``) are skipped."""
    predictions = _load_predictions(results)
    if not predictions:
        return None
    return write_report(predictions, os.path.join(job.job_dir, "report"), title=f"{job.name}: success rate per data mixture", ranked=True)


def run_point(
    point: GridPoint,
    job: JobSpec,
    classes: Mapping[tuple[str, str], Any],
    metric_funcs: Mapping[str, Callable[[Any, Any], Any]],
    *,
    recompute_metrics: bool = False,
) -> PointResult:
    """Run (or resume) one grid point; never raises for a failure inside the point.

    Args:
        classes, metric_funcs: from :func:`resolve_job`.
        recompute_metrics: see :func:`run_job`.
    """
    out_dir = point.output_dir(job.job_dir)
    resumed = resume_point(point, out_dir, metric_funcs, job, recompute_metrics)
    if resumed is not None:
        logger.info("%s: results exist in %s, not re-run", point.describe(), out_dir)
        say("%s  (finished earlier: %s)", point.headline(), _outcome(resumed.metrics))
        return resumed
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, POINT_FILE), _point_record(point))
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(out_dir, ERROR_FILE))
    logger.info("%s: running in %s", point.describe(), out_dir)
    say("%s", point.headline())
    start = time.time()
    try:
        prediction = _run_single_task(point, job, out_dir, classes)
        write_json(os.path.join(out_dir, PREDICTION_FILE), prediction)
        test_data = load_index(job.testenv.test_index, "eval overall")
        metrics = {name: plain(func(test_data.y, prediction)) for name, func in metric_funcs.items()}
    except Exception as err:  # one failing point must not lose the others
        logger.exception("%s failed", point.describe())
        atomic_write_text(os.path.join(out_dir, ERROR_FILE), traceback.format_exc())
        message = f"{type(err).__name__}: {err}"
        write_json(os.path.join(out_dir, RESULT_FILE), {"status": "failed", "point_id": point.point_id, "error": message})
        say("  FAILED: %s (traceback: %s)", message, os.path.join(out_dir, ERROR_FILE))
        return PointResult(point, "failed", out_dir, error=message)
    finished = time.strftime(TIME_FORMAT, time.localtime())
    write_json(
        os.path.join(out_dir, RESULT_FILE),
        {"status": "completed", "point_id": point.point_id, "metrics": nan_to_none(metrics), "time": finished, "wall_seconds": time.time() - start},
    )
    logger.info("%s: %s", point.describe(), metrics)
    say("  done in %s: %s", _duration(time.time() - start), _outcome(metrics))
    return PointResult(point, "completed", out_dir, metrics=metrics, time=finished)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _outcome(metrics: Mapping[str, Any] | None) -> str:
    """``success rate 0.650 [0.43, 0.82], N = 20`` from a point's metrics (what is there of it)."""
    m = metrics or {}
    sr = m.get("success_rate")
    if not isinstance(sr, (int, float)) or sr != sr:
        return "no success rate"
    text = f"success rate {sr:.3f}"
    if isinstance(m.get("success_rate_ci_low"), (int, float)) and isinstance(m.get("success_rate_ci_high"), (int, float)):
        text += f" [{m['success_rate_ci_low']:.2f}, {m['success_rate_ci_high']:.2f}]"
    if m.get("num_episodes") is not None:
        text += f", N = {int(m['num_episodes'])}"
    return text


def _run_single_task(point: GridPoint, job: JobSpec, out_dir: str, classes: Mapping[tuple[str, str], Any]) -> Any:
    """Ianvs ``SingleTaskLearning.run`` for one point; returns the basemodel's prediction."""
    instances = {}
    for module in point.modules:
        if module.url:
            cls = classes[(module.url, module.name)]
            instances[module.type] = cls(**copy.deepcopy(dict(module.hyperparameters)))
        else:
            instances[module.type] = {"method": module.name, "param": dict(module.hyperparameters)}
    basemodel = instances[BASEMODEL]
    if hasattr(basemodel, "preprocess"):
        basemodel.preprocess()
    initial_model = point.algorithm.initial_model_url
    with _environ(BASE_MODEL_URL=initial_model):
        basemodel.train(load_index(job.testenv.train_index, "train"))
        model_path = basemodel.save(os.path.join(out_dir, "output/train/"))
    if model_path is None:
        model_path = initial_model
    test_data = load_index(job.testenv.test_index, "inference")
    with _environ(RESULT_SAVED_URL=os.path.join(out_dir, "output/inference/")):
        basemodel.load(model_path)
        return basemodel.predict(test_data.x)


def _rank_row(result: PointResult) -> RankRow:
    point = result.point
    return RankRow(
        algorithm=point.algorithm.name,
        paradigm=point.algorithm.paradigm_type,
        modules={m.type: m.name for m in point.modules},
        hyperparameters=point.rank_hyperparameters(),
        metrics=result.metrics,
        time=result.time,
        url=result.output_dir,
    )


def _point_record(point: GridPoint) -> dict[str, Any]:
    return {
        "point_id": point.point_id,
        "algorithm": point.algorithm.name,
        "paradigm": point.algorithm.paradigm_type,
        "initial_model_url": point.algorithm.initial_model_url,
        "modules": [{"type": m.type, "name": m.name, "url": m.url, "hyperparameters": jsonable(m.hyperparameters)} for m in point.modules],
    }


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables as Ianvs does for the basemodel; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------------------- CLI
#: What :func:`check_job` raises for an invalid job (exit status 2 of the command lines).
CHECK_ERRORS = (JobConfigError, ConfigError, IndexFileError, FileNotFoundError, ModuleLoadError)


def check_main(job_file: str, *, allow_extra: bool = False, out: Any = None) -> int:
    """``vlamix check -f <job>``: :func:`check_job`, then one line per grid point on ``out`` (stdout).

    Returns 0 when the job is valid, 2 otherwise (the error, naming point and field, goes to stderr).
    """
    out = out or sys.stdout
    try:
        checked = check_job(job_file, allow_extra=allow_extra)
    except CHECK_ERRORS as err:
        print(f"vlamix check: {job_file}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    for point in checked.points:
        print(f"{point.number:3d}  {point.point_id}  ok  {point.describe()}", file=out)
    print(f"vlamix check: job '{checked.job.name}' is valid: {len(checked.points)} grid point(s), "
          f"{len(checked.metric_funcs)} metric(s); output in {checked.job.job_dir}", file=out)
    return 0


# ------------------------------------------------------------------------------------------- report
def job_predictions(job_dir: str) -> list[dict[str, Any]]:
    """Prediction dicts of the finished points of a job: the entries of its ledger (:mod:`vlamix.pipeline.ledger`,
    written by the pipeline under ``vlamix run`` and ``ianvs -f`` alike), then the ``prediction.json`` files that
    ``vlamix run`` writes in each point folder for points the ledger lacks (a job folder run before the ledger
    existed). Only vlamix results (with a ``summary``) count. Ledger entries first, each sorted by path."""
    found = [pred for _, pred in ledger_entries(ledger_of(job_dir))]
    names = {entry_name(pred) for pred in found}
    for path in sorted(glob.glob(os.path.join(job_dir, "*", "*", PREDICTION_FILE))):
        pred = read_json(path)
        if isinstance(pred, dict) and entry_name(pred) not in names:
            found.append(pred)
    return [p for p in found if isinstance(p, dict) and isinstance(p.get("summary"), dict)]


def report_for_job(job_file: str, out_dir: str | None = None) -> str:
    """Write the report of a ``benchmarkingjob.yaml`` from whatever points have finished (``vlamix report -f``);
    returns the ``report.md`` path.

    Args:
        job_file: the job; its workspace is resolved relative to the current directory as when it ran.
        out_dir: default ``<workspace>/<job name>/report``.
    Raises:
        FileNotFoundError: no finished point in the job's ledger or point folders.
    """
    job = load_job(job_file)
    predictions = job_predictions(job.job_dir)
    if not predictions:
        raise FileNotFoundError(f"no finished point (job ledger {ledger_of(job.job_dir)} or prediction.json) under {job.job_dir}")
    return write_report(predictions, out_dir or os.path.join(job.job_dir, "report"), title=f"{job.name}: success rate per data mixture")
