"""What a job writes and reads back per grid point (shared by every backend of :mod:`vlamix.bench`).

Point folder ``<job dir>/<algorithm>/<point id>/``: ``point.json`` (the point), ``prediction.json`` (the
basemodel's prediction), ``result.json`` (status and metrics: what makes a point finished), ``error.txt`` (the
traceback of a failed point).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from vlamix.bench.dataset import load_index
from vlamix.bench.spec import JobSpec
from vlamix.core.io import atomic_write_json

if TYPE_CHECKING:  # annotations only: the grid point is defined by the runner
    from vlamix.bench.job import GridPoint

logger = logging.getLogger(__name__)

POINT_FILE = "point.json"
RESULT_FILE = "result.json"
PREDICTION_FILE = "prediction.json"
ERROR_FILE = "error.txt"


@dataclass
class PointResult:
    """Outcome of one grid point: status ``completed`` (ran now), ``resumed`` or ``failed``."""

    point: "GridPoint"
    status: str
    output_dir: str
    metrics: dict[str, Any] = field(default_factory=dict)
    time: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "resumed")


def resume_point(point: "GridPoint", out_dir: str, metric_funcs: Mapping[str, Callable], job: JobSpec,
                 recompute: bool) -> PointResult | None:
    """The result of a point that finished before (``result.json`` completed, same point id), its missing metrics
    (or all, with ``recompute``) computed from ``prediction.json``; None when the point must run."""
    record = read_json(os.path.join(out_dir, RESULT_FILE))
    if not record or record.get("status") != "completed" or record.get("point_id") != point.point_id:
        return None
    metrics = {k: math.nan if v is None else v for k, v in record.get("metrics", {}).items()}
    missing = [name for name in metric_funcs if recompute or name not in metrics]
    if missing:
        prediction = read_json(os.path.join(out_dir, PREDICTION_FILE))
        if prediction is None:
            logger.warning("%s: metrics %s missing and no %s; re-running", point.describe(), missing, PREDICTION_FILE)
            return None
        test_data = load_index(job.testenv.test_index, "eval overall")
        for name in missing:
            metrics[name] = plain(metric_funcs[name](test_data.y, prediction))
        record["metrics"] = nan_to_none(metrics)
        write_json(os.path.join(out_dir, RESULT_FILE), record)
    metrics = {name: metrics[name] for name in metric_funcs}
    return PointResult(point, "resumed", out_dir, metrics=metrics, time=record.get("time", ""))


def nan_to_none(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """NaN -> None, so ``result.json`` is standard JSON (read back as NaN)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


def plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, so metrics are JSON-serialisable."""
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=json_default))


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_json(path: str, payload: Any) -> None:
    atomic_write_json(path, payload, indent=1, default=json_default)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        logger.warning("%s is not valid JSON; ignoring it", path)
        return None
