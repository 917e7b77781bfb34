"""Leaderboard files in Ianvs's format: ``<job dir>/rank/all_rank.csv`` and ``selected_rank.csv``.

Format (kubeedge/ianvs ``core/storymanager/rank/rank.py``, current version): comma-separated, a
header line, then one line per test case (here: per grid point), columns

    rank, algorithm, <metric names...>, paradigm, <module types...>, <"<module type>-<hp name>"...>, time, url

``rank`` numbers the rows 1..N after sorting; a module-type column holds the module's registry name
(``basemodel`` -> ``VLADataSelect``); a hyperparameter column holds ``str(value)`` (a mixture shows as
``{'libero_spatial_no_noops': 2, 'libero_object_no_noops': 1}``); ``time`` is the local time the point
finished (``%Y-%m-%d %H:%M:%S``); ``url`` is the point's output folder
``<workspace>/<job name>/<algorithm>/<point id>``. Missing values are empty cells.

Sorting follows ``Rank._sort_all_df``: the ``sort_by`` entries in order, ``{column: "ascend" |
"descend"}`` (or a bare column name = ascending), entries naming no known column skipped; rows with
a missing/NaN value go last for that key. ``selected_rank.csv`` keeps the columns listed in
``selected_dataitem`` (``["all"]`` = all), drops rows equal in every column but time and url, and
keeps only the listed paradigms.

Deliberate differences from Ianvs: metric columns follow the testenv order (Ianvs uses an unordered
set); ties keep grid order (stable sort); the files are rebuilt from the current grid's points
instead of being appended to the previous run's ``all_rank.csv``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from prettytable import PrettyTable

from vlamix.bench.spec import RankSpec
from vlamix.core.io import atomic_path

logger = logging.getLogger(__name__)

ALL_RANK_FILE = "all_rank.csv"
SELECTED_RANK_FILE = "selected_rank.csv"


@dataclass(frozen=True)
class RankRow:
    """One finished grid point as a leaderboard row.

    Attributes:
        algorithm: algorithm name from ``benchmarkingjob.yaml``.
        paradigm: paradigm type (``singletasklearning``).
        modules: module type -> module registry name.
        hyperparameters: ``"<module type>-<name>"`` -> ``str(value)``.
        metrics: metric name -> value (float/int; NaN or None for missing).
        time: local finish time ``%Y-%m-%d %H:%M:%S``.
        url: output folder of the point.
    """

    algorithm: str
    paradigm: str
    modules: Mapping[str, str]
    hyperparameters: Mapping[str, str]
    metrics: Mapping[str, Any]
    time: str
    url: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def value(self, column: str) -> Any:
        """Cell value of ``column`` (None when this row has none)."""
        if column == "algorithm":
            return self.algorithm
        if column == "paradigm":
            return self.paradigm
        if column == "time":
            return self.time
        if column == "url":
            return self.url
        for table in (self.metrics, self.modules, self.hyperparameters, self.extra):
            if column in table:
                return table[column]
        return None


def hyperparameter_columns(module_type: str, hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """Ianvs's hyperparameter cells: ``{"<module type>-<name>": str(value)}`` in the given order."""
    return {f"{module_type}-{name}": str(value) for name, value in hyperparameters.items()}


def all_header(rows: Sequence[RankRow], metric_names: Sequence[str]) -> list[str]:
    """Columns of ``all_rank.csv`` without the leading ``rank`` column."""
    module_types = _unique(t for row in rows for t in row.modules)
    hp_names = _unique(n for row in rows for n in row.hyperparameters)
    return ["algorithm", *metric_names, "paradigm", *module_types, *hp_names, "time", "url"]


def sort_rows(rows: Sequence[RankRow], sort_by: Sequence[Any], columns: Sequence[str]) -> list[RankRow]:
    """Stable multi-key sort of ``rows`` by the ``sort_by`` entries that name one of ``columns``."""
    keys = []
    for ele in sort_by:
        if isinstance(ele, str):
            name, order = ele, "ascend"
        else:
            (name, order), = ele.items()
        if name not in columns:
            logger.warning("rank.sort_by names '%s', which is no column of the leaderboard; ignored", name)
            continue
        keys.append((name, order == "descend"))
    ordered = list(rows)
    for name, descending in reversed(keys):
        present = [r for r in ordered if not _is_missing(r.value(name))]
        missing = [r for r in ordered if _is_missing(r.value(name))]
        present.sort(key=lambda r: _sort_key(r.value(name)), reverse=descending)
        ordered = present + missing
    return ordered


def selected_table(rows: Sequence[RankRow], rank: RankSpec, metric_names: Sequence[str]) -> tuple[list[str], list[RankRow]]:
    """Header (without ``rank``) and rows of ``selected_rank.csv`` from the sorted ``rows``."""
    selected = rank.selected_dataitem
    module_types = list(selected.get("modules", ["all"]))
    if module_types == ["all"]:
        module_types = _unique(t for row in rows for t in row.modules)
    hp_names = list(selected.get("hyperparameters", ["all"]))
    if hp_names == ["all"]:
        hp_names = _unique(n for row in rows for n in row.hyperparameters)
    metrics = list(selected.get("metrics", ["all"]))
    if metrics == ["all"]:
        metrics = list(metric_names)
    header = ["algorithm", *metrics, "paradigm", *module_types, *hp_names, "time", "url"]
    known = set(all_header(rows, metric_names))
    for column in header:
        if column not in known:
            logger.warning("rank.selected_dataitem names '%s', which no grid point has; the column stays empty", column)
    seen, out = set(), []
    for row in rows:
        key = tuple(_cell(row.value(c)) for c in header[:-2])
        if key in seen:
            continue
        seen.add(key)
        out.append(row)
    paradigms = list(selected.get("paradigms", ["all"]))
    if paradigms != ["all"]:
        out = [r for r in out if r.paradigm in paradigms]
    return header, out


def write_rank_files(rows: Sequence[RankRow], rank: RankSpec, job_dir: str, metric_names: Sequence[str]) -> dict[str, str]:
    """Sort ``rows`` and write ``<job_dir>/rank/all_rank.csv`` (unless ``save_mode`` is
    ``selected_only``) and ``selected_rank.csv``. Returns ``{"all": path, "selected": path}``
    (only the files written)."""
    rank_dir = os.path.join(job_dir, "rank")
    os.makedirs(rank_dir, exist_ok=True)
    header = all_header(rows, metric_names)
    ordered = sort_rows(rows, rank.sort_by, header)
    paths = {}
    if rank.save_mode == "selected_and_all":
        paths["all"] = _write_csv(os.path.join(rank_dir, ALL_RANK_FILE), header, ordered)
    sel_header, sel_rows = selected_table(ordered, rank, metric_names)
    paths["selected"] = _write_csv(os.path.join(rank_dir, SELECTED_RANK_FILE), sel_header, sel_rows)
    return paths


def read_rank_file(path: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (cells as strings) of a rank CSV."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [row for row in reader]


def format_rank_table(path: str) -> str:
    """The rank file as a prettytable text table (what Ianvs's ``print_table`` shows)."""
    header, rows = read_rank_file(path)
    table = PrettyTable(header)
    for row in rows:
        table.add_row(row)
    return table.get_string()


def _write_csv(path: str, header: Sequence[str], rows: Sequence[RankRow]) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", *header])
        for i, row in enumerate(rows, 1):
            writer.writerow([i, *(_cell(row.value(c)) for c in header)])
    return path


def _cell(value: Any) -> str:
    if _is_missing(value):
        return ""
    return str(value)


def _is_missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value == ""):
        return True
    return isinstance(value, float) and math.isnan(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
