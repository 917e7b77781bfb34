"""What a run shows on the console, and where everything else goes.

The console gets progress and nothing else: one header line per grid point, one progress display per long stage
(recording demonstrations, training, rollouts), warnings and errors of vlamix, and the final leaderboard with the
paths of the report and rank files. Everything else (vlamix's INFO lines, third-party logging, and, for ``vlamix``
commands, whatever libraries print on the process's stdout and stderr, C code included) goes to the job's log
file at DEBUG. ``-v`` / ``--verbose`` brings it all back to the console.

- :func:`setup_console` (the CLI, once a job's log file is known) installs the two handlers and, unless verbose,
  moves file descriptors 1 and 2 to the log file, keeping a duplicate of the terminal for the console handler and
  the progress bars. Under Ianvs, where the engine owns the process and prints its own output, the basemodel
  adapter installs only the console handler (:func:`console_handler`): the same lines appear, nothing is
  redirected.
- :func:`say` logs a console line (an INFO record with ``console=True``; the console handler shows INFO records
  only when they carry that mark, and every WARNING or worse of vlamix).
- :func:`progress` is a tqdm bar on a terminal; elsewhere (a pipe, CI, a log file) it logs a console line at each
  quarter of the total instead of redrawing a bar.
- :func:`quiet_worker` runs first in spawned env-worker and recording processes: their stdout / stderr go to the
  job's log file (:data:`LOG_FILE_ENV`), so robosuite, LIBERO, MuJoCo and EGL output never reaches the console.
- :func:`silence_simulator_banners` stops robosuite's "private macro file" warnings at the source (an empty
  ``robosuite.macros_private`` module: robosuite's defaults apply, as without the file).

No torch, TensorFlow or simulator import here (env workers import this module; tqdm is pure Python).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import types
from typing import Any, Callable, Iterator, TextIO

from tqdm import tqdm

#: Environment variable naming the job's log file, inherited by spawned workers.
LOG_FILE_ENV = "VLAMIX_LOG_FILE"
#: Environment variable set by ``--verbose``: workers keep their output on the console too.
VERBOSE_ENV = "VLAMIX_VERBOSE"
#: Format of the log file's lines.
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
#: Format of the console's lines: the message, prefixed by the level for warnings and errors.
CONSOLE_FORMAT = "%(message)s"

logger = logging.getLogger("vlamix")
_console_stream: TextIO | None = None


class ConsoleFilter(logging.Filter):
    """Passes vlamix's WARNING-or-worse records and INFO records marked ``console=True`` (:func:`say`);
    with ``verbose``, every record of level INFO or worse."""

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return record.levelno >= logging.INFO
        if getattr(record, "console", False):
            return True
        return record.levelno >= logging.WARNING and record.name.split(".")[0] == "vlamix"


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def console_stream() -> TextIO:
    """The stream the console handler and progress bars write to (the terminal kept by :func:`setup_console`,
    else ``sys.stderr``)."""
    return _console_stream or sys.stderr


def console_handler(verbose: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """A handler for the console: :class:`ConsoleFilter`, message-only format."""
    handler = logging.StreamHandler(stream or console_stream())
    handler.addFilter(ConsoleFilter(verbose))
    handler.setFormatter(_ConsoleFormatter(CONSOLE_FORMAT))
    handler.set_name("vlamix-console")
    return handler


def setup_console(log_file: str | None, *, verbose: bool = False, redirect: bool = True) -> Callable[[], None]:
    """Route a ``vlamix`` command's output: console handler + DEBUG log file, and (``redirect``, not verbose)
    file descriptors 1 and 2 to the log file so that library prints and C-level output land there too.

    Args:
        log_file: the job's log file (folders created); None: console only (commands without a job).
        verbose: every INFO record on the console, nothing redirected.
        redirect: move fds 1 and 2 to the log file (False in tests and under Ianvs).
    Returns:
        ``teardown()``: removes the handlers added here and restores the root logger's level and the environment
        variables (the redirected descriptors stay: a redirecting caller is the whole process).
    A second call replaces the handlers installed by the first.
    """
    global _console_stream
    root = logging.getLogger()
    for h in list(root.handlers):  # ours from an earlier call, and logging.basicConfig's stream handler
        if h.get_name() in ("vlamix-console", "vlamix-file") or type(h) is logging.StreamHandler:
            root.removeHandler(h)
            if h.get_name() == "vlamix-file":
                h.close()
    previous_level = root.level
    previous_env = {k: os.environ.get(k) for k in (LOG_FILE_ENV, VERBOSE_ENV)}
    added: list[logging.Handler] = []
    root.setLevel(logging.DEBUG)
    if log_file:
        added.append(_file_handler(log_file))
        root.addHandler(added[-1])
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    elif log_file and redirect and _console_stream is None:
        sys.stdout.flush()
        sys.stderr.flush()
        _console_stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    added.append(console_handler(verbose))
    root.addHandler(added[-1])

    def teardown() -> None:
        for h in added:
            root.removeHandler(h)
            h.close()
        root.setLevel(previous_level)
        for k, v in previous_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    return teardown


def attach_to_vlamix_logger(log_file: str | None) -> None:
    """Under an engine that owns the process (Ianvs): the console handler and the DEBUG log file on the ``vlamix``
    logger only (not propagated to the engine's root handlers, so nothing shows twice); nothing redirected, the
    engine's own output untouched. Idempotent."""
    log = logging.getLogger("vlamix")
    if any(h.get_name() == "vlamix-console" for h in log.handlers):
        return
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(console_handler())
    if log_file:
        log.addHandler(_file_handler(log_file))


def _file_handler(log_file: str) -> logging.Handler:
    """The DEBUG handler of the job's log file (folders created); exports :data:`LOG_FILE_ENV` for workers."""
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.set_name("vlamix-file")
    os.environ[LOG_FILE_ENV] = os.path.abspath(log_file)
    return handler


def say(message: str, *args: Any) -> None:
    """Log a console line (INFO, marked for the console)."""
    logger.info(message, *args, extra={"console": True})


class _Milestones:
    """The non-terminal progress display: a console line at each quarter of the total (and at the end)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit, self.n = max(int(total), 0), desc, unit, int(initial)
        self.postfix: dict[str, Any] = {}
        self._next = self._quarter_after(self.n)

    def _quarter_after(self, n: int) -> int:
        if self.total <= 0:
            return 1 << 62
        q = max(1, -(-self.total // 4))
        return min(self.total, (n // q + 1) * q)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self._next:
            extra = ", ".join(f"{key} {value}" for key, value in self.postfix.items())
            say("%s: %d/%d %s%s", self.desc, min(self.n, self.total), self.total, self.unit, f" ({extra})" if extra else "")
            self._next = self._quarter_after(self.n) if self.n < self.total else 1 << 62

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> None:
        """As tqdm's (``refresh`` is accepted for its signature; the next milestone line shows the values)."""
        self.postfix = kwargs

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Milestones":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True) -> Any:
    """A progress display with ``update(k)``, ``set_postfix(**kw)`` and ``close()``: tqdm on a terminal
    (redrawn in place), else :class:`_Milestones` lines; ``enabled=False`` (e.g. DDP ranks > 0) shows nothing."""
    if not enabled:
        return _Milestones(0, desc, unit)
    stream = console_stream()
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream, leave=True)
    return _Milestones(total, desc, unit, initial)


def silence_simulator_banners() -> None:
    """robosuite warns three times per process that it has no private macro file; give it an empty one (its
    defaults then apply, exactly as without the file). Call before the first ``import robosuite``."""
    sys.modules.setdefault("robosuite.macros_private", types.ModuleType("robosuite.macros_private"))


@contextlib.contextmanager
def captured_prints(name: str = "vlamix.sim") -> Iterator[None]:
    """Run a block whose library prints to stdout (LIBERO's "[info] Applying task order ..."), sending the text to
    the DEBUG log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        logging.getLogger(name).debug("%s", text)


def quiet_worker() -> None:
    """First thing in a spawned worker: unless verbose, its stdout and stderr (fds 1 and 2) go to the job's log
    file named by :data:`LOG_FILE_ENV` (nothing changes without one); robosuite's banners are silenced."""
    silence_simulator_banners()
    path = os.environ.get(LOG_FILE_ENV)
    if not path or os.environ.get(VERBOSE_ENV):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
