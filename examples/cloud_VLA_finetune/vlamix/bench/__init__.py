"""vlamix.bench: run the Ianvs benchmarking job of this example with or without Ianvs.

Modules:
    spec      parse benchmarkingjob.yaml / testenv.yaml / algorithm YAMLs, expand the grid as Ianvs.
    dataset   Ianvs TXT dataset indexes (train: RLDS datasets, test: LIBERO task suites).
    registry  minimal stand-in of ``sedna.common.class_factory`` (used only when Sedna is absent).
    metrics   the metric functions behind ``testenv/vla_*.py``.
    rank      ``rank/all_rank.csv`` and ``selected_rank.csv`` in Ianvs's format.
    job       the runner: validate all points, run train -> save -> load -> predict -> metrics
              per point (resumable), write the rank files. CLI: ``python -m vlamix.bench -f <yaml>``.
              ``check_job`` (``vlamix check -f <yaml>``) checks a whole job without running it.
    ianvs     what the basemodel does inside a real ``ianvs -f`` process: the job check, once, and
              a log handler.
"""

from importlib import import_module

_EXPORTS = {
    "CheckedJob": "vlamix.bench.job",
    "GridPoint": "vlamix.bench.job",
    "JobResult": "vlamix.bench.job",
    "PointResult": "vlamix.bench.job",
    "check_job": "vlamix.bench.job",
    "expand_grid": "vlamix.bench.job",
    "main": "vlamix.bench.job",
    "run_job": "vlamix.bench.job",
    "validate_grid": "vlamix.bench.job",
    "JobConfigError": "vlamix.bench.spec",
    "JobSpec": "vlamix.bench.spec",
    "load_job": "vlamix.bench.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy, so that ``python -m vlamix.bench.job`` does not import the module twice.
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vlamix.bench' has no attribute {name!r}")
