"""Metric functions behind the example's ``testenv/vla_*.py`` files.

Ianvs calls every non-system metric as ``metric(test_dataset.y, prediction)`` (kubeedge/ianvs
``core/testcasecontroller/testcase/testcase.py`` ``compute_metrics``), where ``prediction`` is what
the basemodel's ``predict`` returned. For this example that is the dict of
``vlamix.pipeline.point.VLADataSelect.predict``::

    {"episodes": [row, ...],          # one LIBERO rollout episode per row (vlamix.eval.rollout)
     "summary": {...},                # vlamix.eval.stats.summarize(episodes)
     "offline": {"action_token_accuracy": float, "action_l1": float, ...},
     "mixing": {"strategy_label": str, "filter_counts": {dataset: {...}}, ...},
     "config": {...}}                 # BenchConfig.to_dict()

``y_true`` (the test index's second column) carries nothing these metrics need and is ignored.
Success metrics are recomputed from the episode rows with :func:`vlamix.eval.stats.summarize`
(success rate as a fraction in [0, 1], Wilson 95% interval); offline metrics are read from
``prediction["offline"]`` and are NaN when the point computed none. The data-ratio columns come
from ``prediction["mixing"]``: ``mixing_strategy`` (the strategy and its parameters, a string) and
the training steps kept / dropped per filter reason, summed over datasets (NaN when unknown).

Precision: every float metric is rounded to :data:`METRIC_DECIMALS` (6) decimal places, so that a
value survives the CSV round trip of Ianvs's rank files unchanged: Ianvs appends a rerun's rows to
the ``all_rank.csv`` it reads back with pandas and drops rows of ``selected_rank.csv`` that are equal
except for time and url, which fails for full-precision floats such as a Wilson bound (issue 8).
Six decimals resolve a success rate over up to 10^5 episodes and L1 errors in action units far
below their noise.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from vlamix.eval.breakdown import breakdown
from vlamix.eval.paired import compare_to_best
from vlamix.eval.stats import summarize
from vlamix.pipeline.ledger import entries as ledger_entries

logger = logging.getLogger(__name__)

#: Decimal places of every float metric (see the module docstring).
METRIC_DECIMALS = 6


def rounded(value: float) -> float:
    """``value`` rounded to :data:`METRIC_DECIMALS` decimal places (NaN and infinities unchanged)."""
    value = float(value)
    return round(value, METRIC_DECIMALS) if math.isfinite(value) else value


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
    pred = _prediction(y_pred)
    value = (pred.get("offline") or {}).get(key)
    if value is None:  # the reference row (no model) has none by design: not worth a warning
        (logger.debug if pred.get("reference") else logger.warning)("prediction has no offline metric '%s'; reporting NaN", key)
        return math.nan
    return float(value)


def success_rate(y_true: Any, y_pred: Any) -> float:
    """Fraction of successful rollout episodes, in [0, 1]."""
    return rounded(_summary(y_pred)["success_rate"])


def success_rate_ci_low(y_true: Any, y_pred: Any) -> float:
    """Lower end of the Wilson 95% score interval of the success rate, in [0, 1]."""
    return rounded(_summary(y_pred)["ci_low"])


def success_rate_ci_high(y_true: Any, y_pred: Any) -> float:
    """Upper end of the Wilson 95% score interval of the success rate, in [0, 1]."""
    return rounded(_summary(y_pred)["ci_high"])


def num_episodes(y_true: Any, y_pred: Any) -> int:
    """Number of rollout episodes behind the success rate."""
    return int(_summary(y_pred)["n_episodes"])


def num_errors(y_true: Any, y_pred: Any) -> int:
    """Rollout episodes that ended with an infrastructure error (worker death, timeout, env or policy
    exception after every attempt); they are not in the success rate (:func:`vlamix.eval.stats.summarize`)."""
    return int(_summary(y_pred)["n_errors"])


def worst_task_success_rate(y_true: Any, y_pred: Any) -> float:
    """Lowest per-task success rate over the evaluated tasks, in [0, 1]."""
    return rounded(_summary(y_pred)["worst_task_success_rate"])


def action_token_accuracy(y_true: Any, y_pred: Any) -> float:
    """Held-out teacher-forced accuracy of the 7 action tokens, in [0, 1] (NaN if not computed)."""
    return rounded(_offline(y_pred, "action_token_accuracy"))


def action_l1(y_true: Any, y_pred: Any) -> float:
    """Held-out mean L1 error of un-normalised actions (action units; NaN if not computed)."""
    return rounded(_offline(y_pred, "action_l1"))


def mixing_strategy(y_true: Any, y_pred: Any) -> str:
    """The data-ratio strategy and its parameters, e.g. ``temperature T=2 by task`` (see
    :meth:`vlamix.pipeline.config.BenchConfig.strategy_label`); empty if the prediction has none."""
    pred = _prediction(y_pred)
    label = (pred.get("mixing") or {}).get("strategy_label")
    return str(label) if label else ""


def _filter_total(y_pred: Any, key: str) -> float:
    pred = _prediction(y_pred)
    counts = (pred.get("mixing") or {}).get("filter_counts")
    if not counts:  # the reference row trains nothing: no filter counts by design
        (logger.debug if pred.get("reference") else logger.warning)("prediction has no filter counts; reporting NaN for '%s'", key)
        return math.nan
    return float(sum(int(c.get(key, 0)) for c in counts.values()))


def steps_kept(y_true: Any, y_pred: Any) -> float:
    """Training steps kept by the action filters, summed over the mixture's datasets."""
    return _filter_total(y_pred, "kept")


def steps_dropped_nonfinite(y_true: Any, y_pred: Any) -> float:
    """Training steps dropped for a NaN/Inf action value."""
    return _filter_total(y_pred, "nonfinite")


def steps_dropped_out_of_range(y_true: Any, y_pred: Any) -> float:
    """Training steps dropped for an action value beyond ``filter_action_limit``."""
    return _filter_total(y_pred, "out_of_range")


def steps_dropped_near_zero_motion(y_true: Any, y_pred: Any) -> float:
    """Training steps dropped as near-zero motion (``filter_min_motion`` over the window)."""
    return _filter_total(y_pred, "near_zero_motion")


def steps_dropped_dataset_list(y_true: Any, y_pred: Any) -> float:
    """Training steps of datasets removed by ``dataset_whitelist`` / ``dataset_blacklist``."""
    return _filter_total(y_pred, "dataset_list")


# ------------------------------------------------------------------ evaluation kit (issue 10)
# Robustness / generalisation columns (vlamix.eval.breakdown): NaN when the point did not measure
# them (no episode of that condition), never 0.
def _breakdown(y_pred: Any) -> Mapping[str, Any]:
    episodes = _prediction(y_pred).get("episodes")
    if not isinstance(episodes, list):
        raise ValueError("prediction has no 'episodes' list")
    return breakdown(episodes)


def seen_success_rate(y_true: Any, y_pred: Any) -> float:
    """Success rate on tasks the point trained on (standard suites, original instruction); NaN if none."""
    return float(_breakdown(y_pred)["seen_success_rate"])


def unseen_success_rate(y_true: Any, y_pred: Any) -> float:
    """Success rate on tasks the point did not train on (weight 0 or ``heldout_tasks``); NaN if none."""
    return float(_breakdown(y_pred)["unseen_success_rate"])


def perturbed_success_rate(y_true: Any, y_pred: Any) -> float:
    """Success rate over the perturbation suites (LIBERO-PRO), original instruction; NaN if none."""
    return float(_breakdown(y_pred)["perturbed_success_rate"])


def robustness_drop(y_true: Any, y_pred: Any) -> float:
    """Base-suite minus perturbation-suite success rate on the same task ids; NaN if none."""
    return float(_breakdown(y_pred)["robustness_drop"])


def language_reliance(y_true: Any, y_pred: Any) -> float:
    """Success rate with the original minus with the empty instruction, same episodes; NaN if none."""
    return float(_breakdown(y_pred)["language_reliance"])


def worst_suite_success_rate(y_true: Any, y_pred: Any) -> float:
    """Lowest per-suite success rate (original instruction)."""
    return float(_breakdown(y_pred)["worst_suite_success_rate"])


def peer_episodes(y_pred: Any) -> dict[str, list]:
    """Episode rows of the points of the same job that have finished, this point's included.

    Peers are the entries of the job ledger the prediction names (``prediction["ledger"]``,
    :mod:`vlamix.pipeline.ledger`), this point's own entry and reference rows left out. Returns ``{label: rows}``
    with this point first (label "this").
    """
    pred = _prediction(y_pred)
    out: dict[str, list] = {"this": pred.get("episodes") or []}
    if pred.get("reference"):  # a reference row (scripted expert) is not compared
        return out
    for path, peer in ledger_entries(pred.get("ledger"), exclude=pred.get("ledger_entry")):
        rows = peer.get("episodes")
        if isinstance(rows, list) and not peer.get("reference"):
            out[path] = rows
    return out


def tied_with_best(y_true: Any, y_pred: Any) -> Any:
    """True when this point is not significantly worse than the best point (exact stratified matched-pairs test
    by task on the shared episodes, Holm-corrected over the comparisons, alpha 0.05;
    :func:`vlamix.eval.paired.compare_to_best` with :data:`vlamix.eval.paired.RANKING_METHOD`).

    Metrics are computed point by point, so here "the best" is the best of the points of the same
    job that have finished so far (:func:`peer_episodes`); ``vlamix run`` recomputes this column over
    all points of the job before it writes the rank files. NaN when the point shares no episode with
    the best, and for reference rows (``prediction["reference"]``, the scripted expert), which are
    left out of the comparisons.
    """
    if _prediction(y_pred).get("reference"):
        return math.nan  # the reference row (scripted expert) is not a candidate
    tied = compare_to_best(peer_episodes(y_pred))["points"]["this"]["tied_with_best"]
    return math.nan if tied is None else bool(tied)


# ------------------------------------------------------------------ racing (issue 12)
def episodes_saved(y_true: Any, y_pred: Any) -> Any:
    """Planned rollout episodes that racing did not run (:mod:`vlamix.pipeline.racing`): after a round the
    paired sequential test found the point significantly worse than a finished point. An int, 0 for
    a point raced that ran its whole plan; NaN when racing was off for the point."""
    record = _prediction(y_pred).get("racing")
    if not isinstance(record, Mapping):
        return math.nan
    return int(record["episodes_saved"])
