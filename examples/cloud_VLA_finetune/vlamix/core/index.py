"""Entries of an Ianvs dataset index as a basemodel receives them (Ianvs rewrites every entry as an absolute path
beside the index file; the entry is the base name). Used by the point (:mod:`vlamix.pipeline.point`) and the job
runners; reading index files is :mod:`vlamix.bench.dataset`."""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np


def index_names(data: Any) -> list[str]:
    """Entry names of index data as a basemodel receives it.

    Accepts an :class:`IndexData` or Sedna parse object (uses ``.x``), or an array/list of entries;
    returns the base name of each entry (``/abs/.../libero_spatial`` -> ``libero_spatial``).

    Raises:
        TypeError: ``data`` is neither.
    """
    entries = getattr(data, "x", data)
    if isinstance(entries, (str, bytes)) or not isinstance(entries, (np.ndarray, list, tuple)):
        raise TypeError(f"expected index data (.x) or a sequence of entries, got {type(data).__name__}")
    return [os.path.basename(os.path.normpath(str(e))) for e in np.asarray(entries).reshape(-1)]


def require_listed(needed: Iterable[str], listed: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming every entry of ``needed`` that the index ``what`` does not list."""
    listed = list(listed)
    missing = [name for name in needed if name not in listed]
    if missing:
        raise ValueError(f"{what} does not list {', '.join(missing)}; it lists: {', '.join(listed)}")
