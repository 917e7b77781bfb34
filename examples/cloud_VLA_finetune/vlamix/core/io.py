"""Crash-safe file writing and strict reading: what a later run trusts is never half-written.

Every file that a later run reads to decide what is finished (training markers, results, rank
files, norm stats, checkpoints, mixing files, point records) is written with :func:`atomic_path`
(or its wrappers :func:`atomic_write_text` / :func:`atomic_write_json`) or, for a folder,
:func:`atomic_dir`: the content goes to a temporary sibling in the same folder, is flushed and
fsynced, and only then renamed over the target (``os.replace`` is atomic on POSIX within one file
system), after which the folder is fsynced so the rename survives a power cut. A kill at any point
leaves either the old file or the new one, never a mix; a leftover temporary file is never read
(its name starts with ``.`` and contains ``.tmp-``).

Append-only logs (episode rows, ``train_log.jsonl``) stay JSON lines; :func:`read_jsonl` tolerates
a torn last line (the append a kill interrupted) and :func:`repair_jsonl` cuts it off before more
rows are appended.

YAML: :func:`load_yaml` is ``yaml.safe_load`` that rejects duplicate mapping keys (PyYAML keeps the
last value silently), used for every YAML file the project reads.

Fault injection (tests only): :func:`fault_point` kills the process with SIGKILL when the
environment variable :data:`FAULT_ENV` names the point, so a test can stop a run between any two
writes and check that the rerun finishes with the same results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
from typing import Any, Callable, Iterator

import yaml

from vlamix.core.constants import TRAIN_LOG_NAME

logger = logging.getLogger(__name__)

#: Environment variable naming the fault points at which the process SIGKILLs itself (tests only):
#: a comma-separated list of ``name`` or ``name@k`` (the k-th time the point is reached, 1-based).
FAULT_ENV = "VLAMIX_FAULT_AT"
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process if :data:`FAULT_ENV` names ``name`` (``name@k``: the k-th hit).

    A no-op unless the variable is set; used to simulate a kill (OOM killer, preemption, Ctrl-C of a
    job scheduler) at a chosen point in fault-injection tests.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    for item in spec.split(","):
        target, _, nth = item.strip().partition("@")
        if target == name and (not nth or int(nth) == _fault_hits[name]):
            logger.warning("fault injection: killing the process at %s (hit %d)", name, _fault_hits[name])
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: str) -> None:
    """fsync a folder so that renames and new entries in it are durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """True for the temporary names this module creates (never to be read as results)."""
    return name.startswith(".") and (".tmp-" in name or ".partial-" in name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block exits normally, make it ``path``.

    For writers that take a file name (``torch.save``, ``safetensors.save_file``, ``np.savez``)::

        with atomic_path("ckpt/model.safetensors") as tmp:
            save_file(tensors, tmp)

    The temporary file is fsynced, renamed over ``path`` (``os.replace``) and the folder fsynced. If
    the block raises, the temporary file is removed and ``path`` is left as it was.
    Fault point: ``atomic:<basename of path>`` (after the fsync, before the rename).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        fault_point(f"atomic:{os.path.basename(path)}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return os.fspath(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any, **dump_kwargs: Any) -> str:
    """``json.dump(payload, indent=2, **dump_kwargs)`` to ``path`` atomically; returns ``path``.

    The payload is serialised before the file is touched, so an unserialisable value raises
    ``TypeError`` and leaves the old file in place.
    """
    dump_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(payload, **dump_kwargs))


def atomic_write_jsonl(path: str | os.PathLike, rows: Any) -> str:
    """Write every row of ``rows`` as one JSON line, atomically (the whole file each time)."""
    return atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _fsync_tree(root: str) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(folder, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder beside ``path``; when the block exits normally, make it ``path``.

    Everything in the folder is fsynced, then an existing ``path`` is moved aside, the new folder
    renamed into place and the old one removed. A kill leaves ``path`` either absent (rerun redoes
    it), old or new, never partly written; a kill between the two renames leaves no ``path`` and
    the old folder under a temporary name that no reader looks at (removed by the next call).
    If the block raises, the temporary folder is removed and ``path`` is left as it was.
    Fault point: ``atomic_dir:<basename of path>`` (after the fsync, before the renames).
    """
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):  # leftovers of killed calls for this target
        if name.startswith(f".{base}.partial-") or name.startswith(f".{base}.old-"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        yield tmp
        _fsync_tree(tmp)
        fault_point(f"atomic_dir:{base}")
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.replace(path, os.path.join(old, base))
        os.replace(tmp, path)
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------- JSON lines
def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = False) -> list[Any]:
    """Rows of a JSON-lines file, tolerating a torn last line.

    A last line that is not valid JSON (an append cut by a kill) is skipped with a warning; an
    invalid line before the last one is corruption and raises.

    Raises:
        FileNotFoundError: no such file (unless ``missing_ok``, then ``[]``).
        ValueError: an invalid line that is not the last one (names the file and line number).
    """
    path = os.fspath(path)
    if missing_ok and not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    rows = []
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    for k, (lineno, line) in enumerate(numbered):
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            if k == len(numbered) - 1:
                logger.warning("%s:%d: skipping a torn last line (an interrupted append)", path, lineno)
                break
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err}); the file is corrupt") from err
    return rows


def repair_jsonl(path: str | os.PathLike) -> int:
    """Make an append-only JSON-lines file end in a complete row (before appending to it).

    A torn last line (not valid JSON: an append cut by a kill) is cut off; a complete last row that
    lacks only its newline gets one. Returns the number of bytes removed (0 when nothing was cut
    or the file is absent).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as fh:
        data = fh.read()
    body = data.rstrip(b"\n")
    cut = body.rfind(b"\n") + 1
    last = body[cut:]
    complete = True
    if last.strip():
        try:
            json.loads(last)
        except ValueError:
            complete = False
    if complete:
        if data and not data.endswith(b"\n"):
            atomic_write_bytes(path, data + b"\n")
        return 0
    keep = body[:cut]
    atomic_write_bytes(path, keep)
    logger.warning("%s: removed a torn last line (%d bytes)", path, len(data) - len(keep))
    return len(data) - len(keep)


def filter_jsonl(path: str | os.PathLike, keep: Callable[[Any], bool]) -> int:
    """Rewrite a JSON-lines file atomically with only the rows for which ``keep(row)`` is true
    (a torn last line is dropped). Returns the number of rows removed; 0 if the file is absent."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return 0
    rows = read_jsonl(path)
    kept = [row for row in rows if keep(row)]
    with open(path, "rb") as fh:
        torn = not fh.read().endswith(b"\n") and os.path.getsize(path) > 0
    if len(kept) != len(rows) or torn:
        atomic_write_jsonl(path, kept)
    return len(rows) - len(kept)


# ------------------------------------------------------------------------------------------ YAML
class DuplicateKeyError(ValueError):
    """A YAML mapping names the same key twice (PyYAML would keep the last value silently)."""


def _unique_key_loader():
    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class raises its own error for unhashable keys
                if key in seen and key != "<<":
                    raise DuplicateKeyError(
                        f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                        f"{seen[key].start_mark.line + 1}); YAML would silently keep only the last value: keep one"
                    )
                seen[key] = key_node
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


_LOADER = None


def load_yaml(stream: Any, source: str = "<yaml>") -> Any:
    """``yaml.safe_load`` that rejects duplicate mapping keys.

    Args:
        stream: YAML text, bytes or an open file. source: file name for error messages.
    Raises:
        DuplicateKeyError: a mapping repeats a key (the message names the key, both lines and ``source``).
        yaml.YAMLError: not valid YAML.
    """
    global _LOADER
    if _LOADER is None:
        _LOADER = _unique_key_loader()
    try:
        return yaml.load(stream, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as err:
        raise DuplicateKeyError(f"{source}: {err}") from None


def find_train_log(path: str) -> str | None:
    """``<path>/train_log.jsonl``, else that of ``path``'s parent (``path`` a ``step_*`` checkpoint), else None."""
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        log = os.path.join(folder, TRAIN_LOG_NAME)
        if os.path.isfile(log):
            return log
    return None
