"""The job ledger: one file per finished point of a job, the one channel through which points see each other.

Racing (:mod:`vlamix.pipeline.racing`) compares a point with the finished points; the ``tied_with_best``
metric compares a point with the best so far; ``vlamix report`` reads every point. Each needs the other points'
episode rows. The pipeline writes a finished point's prediction into ``<job dir>/vlamix_points/<point>.json``
(atomically, last), and every reader is handed that folder explicitly: ``vlamix run`` knows its job folder, and
under Ianvs the basemodel adapter derives it once from ``RESULT_SAVED_URL`` (:func:`vlamix.bench.ianvs.job_ledger`).
A point's file name is its identity (train key and episode plan), so a rerun of the job replaces its own entry.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from typing import Any

from vlamix.core.io import atomic_write_json

logger = logging.getLogger(__name__)

#: Folder of the ledger inside a job folder.
LEDGER_DIR = "vlamix_points"


def ledger_of(job_dir: str) -> str:
    """The ledger folder of a job folder (``<job dir>/vlamix_points``)."""
    return os.path.join(job_dir, LEDGER_DIR)


def entry_name(prediction: dict[str, Any]) -> str:
    """A point's identity in the ledger: ``<train key or checkpoint hash>-<plan key>`` (reference rows: ``reference-<plan>``)."""
    plan = prediction.get("plan_key") or "noplan"
    if prediction.get("reference"):
        who = "reference-" + str(prediction.get("label", "expert"))
    elif prediction.get("train_key"):
        who = str(prediction["train_key"])
    else:
        who = "ckpt" + hashlib.sha256(str(prediction.get("checkpoint")).encode()).hexdigest()[:12]
    return f"{who}-{plan}"


def entry_path(ledger: str, prediction: dict[str, Any]) -> str:
    """Where :func:`record` writes ``prediction``."""
    return os.path.join(ledger, entry_name(prediction) + ".json")


def record(ledger: str, prediction: dict[str, Any]) -> str:
    """Write a finished point's prediction (episodes included) into the ledger; returns its path."""
    os.makedirs(ledger, exist_ok=True)
    path = entry_path(ledger, prediction)
    atomic_write_json(path, prediction, default=str)
    return path


def entries(ledger: str | None, *, exclude: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(path, prediction)`` of every readable entry, sorted by path; ``exclude``: a path left out (the reader's own).
    Unreadable files are skipped with a warning; a missing or None ledger gives []."""
    if not ledger or not os.path.isdir(ledger):
        return []
    out = []
    for path in sorted(glob.glob(os.path.join(ledger, "*.json"))):
        if exclude is not None and os.path.normpath(path) == os.path.normpath(exclude):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                pred = json.load(fh)
        except (OSError, ValueError) as err:
            logger.warning("job ledger: skipping unreadable %s (%s)", path, err)
            continue
        if isinstance(pred, dict):
            out.append((path, pred))
    return out
