"""What the example's basemodel does when it runs inside a real Ianvs process (``ianvs -f``).

Ianvs (kubeedge/ianvs ``core/``) builds the basemodel once per grid point and never checks the job
as a whole: hyperparameters reach the basemodel only when their point starts, metric files are
loaded only after the first point has trained and rolled out, and Ianvs configures no handler that
would show the plugin's log lines. The basemodel adapter (``testalgorithms/vla_dataselect/basemodel.py``)
therefore calls, on every construction::

    from vlamix.bench import ianvs
    ianvs.ensure_log_handler()   # INFO lines of the "vlamix" logger on stderr, if nobody set a handler
    ianvs.check_job_once()       # in an Ianvs process: vlamix.bench.job.check_job(<the -f file>), once
    ...
    prediction = pipeline.predict(data, ledger=ianvs.job_ledger())   # the job's ledger, from RESULT_SAVED_URL

How an Ianvs process is recognised: the ``ianvs`` console script (and ``python -m core.cmd.benchmarking``)
imports ``core.cmd.benchmarking`` and parses ``-f/--benchmarking_config_file`` from ``sys.argv``
(``core/cmd/benchmarking.py``); the job file is that argument, relative to the current directory
(the Ianvs root). Outside such a process (``vlamix run``, tests, notebooks) nothing is checked here:
``vlamix run`` checks the job itself before the first point.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Mapping, Sequence

from vlamix.bench.job import check_job
from vlamix.bench.spec import load_job
from vlamix.core.console import attach_to_vlamix_logger, say
from vlamix.pipeline.ledger import ledger_of

#: The module every ``ianvs`` process has imported (the console script's entry point).
IANVS_MAIN_MODULE = "core.cmd.benchmarking"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger(__name__)

_checked: dict[str, bool] = {}


class FallbackHandler(logging.StreamHandler):
    """A stderr handler that stays silent while the root logger has a handler of its own.

    A library imported later may configure the root logger (under ``ianvs -f`` one does, while the
    training data pipeline is built); from then on the root handler shows the propagated records,
    and this one would only print every line twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def ensure_log_handler() -> logging.Handler | None:
    """Give the ``vlamix`` logger a stderr handler at INFO when no handler would show its records.

    Nothing is changed when the ``vlamix`` logger or the root logger already has a handler (the
    user, ``vlamix run`` or pytest configured logging). Ianvs's own logger (``ianvs``) does not
    propagate and leaves the root logger without handlers, so under ``ianvs -f`` this adds one
    (a :class:`FallbackHandler`: each record is printed once even if the root logger gets a
    handler later).

    In an Ianvs process (:func:`ianvs_job_file`), instead: the console handler and the job's DEBUG log file
    (``<job dir>/logs/job.log``) on the ``vlamix`` logger (:func:`vlamix.core.console.attach_to_vlamix_logger`).

    Returns:
        the handler added, or None when one was already configured.
    """
    vlamix_logger = logging.getLogger("vlamix")
    job_file = ianvs_job_file()
    if job_file is not None:  # under ianvs -f: progress lines on the console, the rest in the job's log file
        try:
            log_file = os.path.join(load_job(job_file).job_dir, "logs", "job.log")
        except Exception:  # noqa: BLE001 - the job check reports a broken job file; logging must not
            log_file = None
        attach_to_vlamix_logger(log_file)
        return next(h for h in vlamix_logger.handlers if h.get_name() == "vlamix-console")
    if vlamix_logger.handlers or logging.getLogger().handlers:
        return None
    handler = FallbackHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    vlamix_logger.addHandler(handler)
    if vlamix_logger.level == logging.NOTSET:
        vlamix_logger.setLevel(logging.INFO)
    return handler


def announce(message: str, *args: object) -> None:
    """A console line (:func:`vlamix.core.console.say`) only in an Ianvs process, where no job runner of ours
    prints the point headers and results (under ``vlamix run`` the runner does, so nothing shows twice)."""
    if ianvs_job_file() is not None:
        say(message, *args)


def ianvs_job_file(argv: Sequence[str] | None = None) -> str | None:
    """The ``-f`` job file of the running Ianvs process, or None when this is no Ianvs process.

    Args:
        argv: command line to parse (default ``sys.argv[1:]``); only read when
            ``core.cmd.benchmarking`` is imported (an Ianvs process).
    Returns:
        the path as given on the command line (relative to the current directory), when it is a file.
    """
    if IANVS_MAIN_MODULE not in sys.modules:
        return None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-f", "--benchmarking_config_file", dest="job_file", nargs="?")
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if args.job_file and os.path.isfile(args.job_file):
        return args.job_file
    return None


def check_job_once(job_file: str | None = None) -> bool:
    """Run :func:`vlamix.bench.job.check_job` on the Ianvs job file, once per process and file.

    Args:
        job_file: the job to check; default :func:`ianvs_job_file` (None outside Ianvs: no check).
    Returns:
        True when a check ran now, False when there was nothing to check or it already passed.
    Raises:
        vlamix.core.errors.ConfigError, vlamix.bench.spec.JobConfigError, FileNotFoundError,
        vlamix.bench.job.ModuleLoadError, ValueError: see :func:`vlamix.bench.job.check_job`; the
        message names the grid point and the field. A failed check runs again on the next call.
    """
    job_file = job_file or ianvs_job_file()
    if job_file is None:
        return False
    key = os.path.abspath(job_file)
    if _checked.get(key):
        return False
    logger.info("checking the whole job %s before its first grid point (vlamix check)", job_file)
    checked = check_job(job_file)
    _checked[key] = True
    logger.info("job '%s': %d grid point(s) valid", checked.job.name, len(checked.points))
    return True


#: Environment variable Ianvs sets before ``load`` / ``predict``: ``<job dir>/<algorithm>/<point>/output/inference/``
#: (``vlamix run`` sets it the same way).
RESULT_SAVED_URL = "RESULT_SAVED_URL"


def job_ledger(environ: Mapping[str, str] | None = None) -> str | None:
    """The job ledger folder (:mod:`vlamix.pipeline.ledger`) of the running point, derived from Ianvs's
    ``RESULT_SAVED_URL`` (four levels below the job folder in Ianvs's layout, and ``vlamix run``'s). The only
    place that reads that variable; None when it is not set (a point run outside a job)."""
    url = (os.environ if environ is None else environ).get(RESULT_SAVED_URL)
    if not url:
        return None
    job_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.normpath(url)))))
    return ledger_of(job_dir)
