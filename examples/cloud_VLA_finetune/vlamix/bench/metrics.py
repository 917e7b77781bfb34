"""Metric functions behind the example's ``testenv/vla_*.py`` files.

Ianvs calls every non-system metric as ``metric(test_dataset.y, prediction)`` (kubeedge/ianvs
``core/testcasecontroller/testcase/testcase.py`` ``compute_metrics``), where ``prediction`` is what
the basemodel's ``predict`` returned. For this example that is the dict of
``vlamix.pipeline.VLADataSelect.predict``::

    {"episodes": [row, ...],          # one LIBERO rollout episode per row (vlamix.eval.rollout)
     "summary": {...},                # vlamix.eval.stats.summarize(episodes)
     "offline": {"action_token_accuracy": float, "action_l1": float, ...},
     "config": {...}}                 # BenchConfig.to_dict()

``y_true`` (the test index's second column) carries nothing these metrics need and is ignored.
Success metrics are recomputed from the episode rows with :func:`vlamix.eval.stats.summarize`
(success rate as a fraction in [0, 1], Wilson 95% interval); offline metrics are read from
``prediction["offline"]`` and are NaN when the point computed none.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from vlamix.eval.stats import summarize

logger = logging.getLogger(__name__)


def _prediction(y_pred: Any) -> Mapping[str, Any]:
    if not isinstance(y_pred, Mapping):
        raise TypeError(f"expected the basemodel's prediction dict with 'episodes', got {type(y_pred).__name__}")
    return y_pred


def _summary(y_pred: Any) -> Mapping[str, Any]:
    pred = _prediction(y_pred)
    episodes = pred.get("episodes")
    if not isinstance(episodes, list):
        raise ValueError(f"prediction has no 'episodes' list (keys: {', '.join(map(str, pred))})")
    return summarize(episodes)


def _offline(y_pred: Any, key: str) -> float:
    offline = _prediction(y_pred).get("offline") or {}
    value = offline.get(key)
    if value is None:
        logger.warning("prediction has no offline metric '%s'; reporting NaN", key)
        return math.nan
    return float(value)


def success_rate(y_true: Any, y_pred: Any) -> float:
    """Fraction of successful rollout episodes, in [0, 1]."""
    return float(_summary(y_pred)["success_rate"])


def success_rate_ci_low(y_true: Any, y_pred: Any) -> float:
    """Lower end of the Wilson 95% score interval of the success rate, in [0, 1]."""
    return float(_summary(y_pred)["ci_low"])


def success_rate_ci_high(y_true: Any, y_pred: Any) -> float:
    """Upper end of the Wilson 95% score interval of the success rate, in [0, 1]."""
    return float(_summary(y_pred)["ci_high"])


def num_episodes(y_true: Any, y_pred: Any) -> int:
    """Number of rollout episodes behind the success rate."""
    return int(_summary(y_pred)["n_episodes"])


def worst_task_success_rate(y_true: Any, y_pred: Any) -> float:
    """Lowest per-task success rate over the evaluated tasks, in [0, 1]."""
    return float(_summary(y_pred)["worst_task_success_rate"])


def action_token_accuracy(y_true: Any, y_pred: Any) -> float:
    """Held-out teacher-forced accuracy of the 7 action tokens, in [0, 1] (NaN if not computed)."""
    return _offline(y_pred, "action_token_accuracy")


def action_l1(y_true: Any, y_pred: Any) -> float:
    """Held-out mean L1 error of un-normalised actions (action units; NaN if not computed)."""
    return _offline(y_pred, "action_l1")
