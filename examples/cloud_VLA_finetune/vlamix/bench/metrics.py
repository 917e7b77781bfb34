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

Columns that compare points (:data:`ARM_METRICS`: the training-seed arm of the point, P(best), the letter group,
the best trade-off, ``tied_with_best``) read the other finished points of the job from its ledger
(``prediction["ledger"]``, :mod:`vlamix.pipeline.ledger`) and aggregate them with
:func:`vlamix.pipeline.arms.arm_table`: under Ianvs they cover the points finished so far, and ``vlamix run``
recomputes them over all points before it writes the rank files. Cost and provenance columns (``train_wall_s``,
``rollout_wall_s``, ``episodes_per_hour``, ``device``, ``dataset_fingerprint``, ``sim_versions``) read the
prediction's ``cost``, ``data_fingerprint`` (:mod:`vlamix.pipeline.provenance`) and the episodes' ``versions``;
they are NaN for a prediction written before they existed. ``recipe`` is the point's action recipe from its
``config`` (:func:`vlamix.pipeline.config.recipe_label`: ``tokens``, or OpenVLA-OFT's ``l1_regression chunk 8
open-loop 8 +wrist +proprio``). String columns are NaN (an empty cell) when unknown,
never "", so that they read back from the CSV as they were written.

Precision: every float metric is rounded to :data:`METRIC_DECIMALS` (6) decimal places, so that a
value survives the CSV round trip of Ianvs's rank files unchanged: Ianvs appends a rerun's rows to
the ``all_rank.csv`` it reads back with pandas and drops rows of ``selected_rank.csv`` that are equal
except for time and url, which fails for full-precision floats such as a Wilson bound (issue 8).
Six decimals resolve a success rate over up to 10^5 episodes and L1 errors in action units far
below their noise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any, Mapping

from vlamix.eval.breakdown import breakdown
from vlamix.eval.stats import summarize
from vlamix.pipeline.arms import arm_of, arm_table, seed_text
from vlamix.pipeline.config import recipe_label
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


def peer_predictions(y_pred: Any) -> list[Mapping[str, Any]]:
    """This prediction, then the predictions of the job's other finished points.

    Peers are the entries of the job ledger the prediction names (``prediction["ledger"]``,
    :mod:`vlamix.pipeline.ledger`), this point's own entry left out (it is the first element). A reference row
    (the scripted expert) has no peers: it is never compared.
    """
    pred = _prediction(y_pred)
    if pred.get("reference"):
        return [pred]
    key = _ledger_state(pred.get("ledger"), pred.get("ledger_entry"))
    if key not in _PEER_CACHE:  # Ianvs computes every metric of a point in turn: read the ledger once per state
        _PEER_CACHE.clear()
        _PEER_CACHE[key] = [peer for _, peer in ledger_entries(pred.get("ledger"), exclude=pred.get("ledger_entry"))]
    return [pred, *_PEER_CACHE[key]]


_PEER_CACHE: dict[Any, list] = {}


def _ledger_state(ledger: str | None, exclude: str | None) -> tuple:
    """The ledger folder, the excluded entry and every entry's (name, mtime, size): a key that changes whenever an
    entry is written."""
    if not ledger or not os.path.isdir(ledger):
        return (ledger, exclude)
    files = []
    for name in sorted(os.listdir(ledger)):
        with contextlib.suppress(OSError):
            st = os.stat(os.path.join(ledger, name))
            files.append((name, st.st_mtime_ns, st.st_size))
    return (ledger, exclude, tuple(files))


# ------------------------------------------------------------------ training seeds, arms, groups (issue 28)
#: Columns computed from the job's arms (:func:`vlamix.pipeline.arms.arm_table`): they need the other points, so
#: under Ianvs they reflect the points finished so far and ``vlamix run`` recomputes them over all points.
ARM_METRICS = ("num_seeds", "seed_success_rates", "pooled_success_rate", "between_seed_sd", "pooled_ci_low",
               "pooled_ci_high", "prob_best", "group", "best_tradeoff", "tied_with_best")


def arm_values(y_pred: Any, table: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The :data:`ARM_METRICS` of a prediction, given the arm table of its job (NaN for a reference row and for a
    point whose arm is not in the table)."""
    pred = _prediction(y_pred)
    row = None if pred.get("reference") else table.get(arm_of(pred))
    if row is None:
        return {name: math.nan for name in ARM_METRICS}
    est = row["estimate"]
    tied = row.get("tied_with_best")
    return {
        "num_seeds": est.n_seeds,
        "seed_success_rates": seed_text(est),
        "pooled_success_rate": rounded(est.pooled_success_rate),
        "between_seed_sd": rounded(est.between_seed_sd),
        "pooled_ci_low": rounded(est.ci_low),
        "pooled_ci_high": rounded(est.ci_high),
        "prob_best": rounded(row["p_best"]),
        "group": row["group"] or math.nan,
        "best_tradeoff": bool(row["best_tradeoff"]),
        "tied_with_best": math.nan if tied is None else bool(tied),
    }


def _arm_metric(y_pred: Any, name: str) -> Any:
    """One of :data:`ARM_METRICS` of ``y_pred`` among its peers; the values of all of them are computed once per
    prediction and ledger state (Ianvs asks for each column in turn)."""
    pred = _prediction(y_pred)
    key = (_ledger_state(pred.get("ledger"), pred.get("ledger_entry")), id(pred))
    cached = _ARM_CACHE.get("entry")
    if cached is None or cached[0] != key or cached[1] is not pred:
        cached = (key, pred, arm_values(pred, arm_table(peer_predictions(pred))))
        _ARM_CACHE["entry"] = cached  # holds pred, so its id is not reused while cached
    return cached[2][name]


_ARM_CACHE: dict[str, tuple] = {}


def _arm_column(name: str, doc: str) -> Any:
    """The metric function of the arm column ``name`` (``f(y_true, y_pred)``; ``y_true`` is not used)."""
    def column(y_true: Any, y_pred: Any) -> Any:
        return _arm_metric(y_pred, name)

    column.__name__ = column.__qualname__ = name
    column.__doc__ = doc
    return column


num_seeds = _arm_column("num_seeds", """Training seeds of the point's arm (the points of the job that differ from it
    only in ``seed``) finished so far.""")
seed_success_rates = _arm_column("seed_success_rates", """Per-seed results of the point's arm,
    ``"<seed>:<successes>/<episodes>"`` in seed order, e.g. ``"7:13/20 8:9/20"``.""")
pooled_success_rate = _arm_column("pooled_success_rate", """Success rate of the point's arm over the episodes of
    all its seeds, in [0, 1].""")
between_seed_sd = _arm_column("between_seed_sd", """Sample standard deviation of the arm's per-seed success rates
    (NaN with one seed).""")
pooled_ci_low = _arm_column("pooled_ci_low", """Lower end of the arm's 95% interval: Clopper-Pearson on the effective
    sample size over the seeds (Korn & Graubard 1998; one seed: over the episodes); :mod:`vlamix.eval.arms`.""")
pooled_ci_high = _arm_column("pooled_ci_high", """Upper end of the arm's 95% interval (see :func:`pooled_ci_low`).""")
prob_best = _arm_column("prob_best", """Probability that the point's arm has the highest mean success rate of the
    job's arms on the same episode plan, from the model of the interval (:func:`vlamix.eval.arms.prob_best`).""")
group = _arm_column("group", """Compact letter display: arms sharing a letter are not distinguishable at alpha 0.05
    after Holm's correction (one seed per arm: exact McNemar on the shared episodes; with seeds: the arm comparison
    of :func:`vlamix.eval.arms.compare_arms`).""")
best_tradeoff = _arm_column("best_tradeoff", """True when no other arm is at least as good on every evaluated
    condition (suite x instruction variant) and better on one (:func:`vlamix.eval.arms.pareto_front`, point
    estimates).""")
tied_with_best = _arm_column("tied_with_best", """True when this point's arm is not significantly worse than the
    best arm (Holm-corrected, alpha 0.05): with one seed per arm the exact McNemar test on the shared episodes
    (:func:`vlamix.eval.paired.compare_to_best`), with seeds the arm comparison of
    :func:`vlamix.eval.arms.compare_arms`.

    Metrics are computed point by point, so here "the best" is the best of the points of the same job that have
    finished so far (:func:`peer_predictions`); ``vlamix run`` recomputes this column over all points of the job
    before it writes the rank files. NaN when the point shares no episode with the best, and for reference rows
    (``prediction["reference"]``, the scripted expert), which are left out of the comparisons.""")


# ------------------------------------------------------------------ cost and provenance (issue 28)
def _cost(y_pred: Any, key: str, digits: int) -> float:
    value = (_prediction(y_pred).get("cost") or {}).get(key)
    return math.nan if value is None or not math.isfinite(float(value)) else round(float(value), digits)


def train_wall_s(y_true: Any, y_pred: Any) -> float:
    """Seconds of training: the logged optimiser-step times of the point's run (a reused run reports the time of the
    run that trained it; :mod:`vlamix.pipeline.provenance`); NaN when unknown."""
    return _cost(y_pred, "train_wall_s", 1)


def rollout_wall_s(y_true: Any, y_pred: Any) -> float:
    """Wall seconds of the rollout calls that ran the point's episodes; NaN when unknown."""
    return _cost(y_pred, "rollout_wall_s", 1)


def episodes_per_hour(y_true: Any, y_pred: Any) -> float:
    """Rollout episodes per hour of rollout wall time; NaN when unknown."""
    return _cost(y_pred, "episodes_per_hour", 2)


def device(y_true: Any, y_pred: Any) -> Any:
    """What the point ran on: ``"<device>"`` when training and rollouts shared it, else ``"train <a>; rollout <b>"``
    (a GPU's name, or ``cpu (<n> cores)``); NaN when unknown."""
    cost = _prediction(y_pred).get("cost") or {}
    train, rollout = cost.get("train_device"), cost.get("rollout_device")
    if train and rollout and train != rollout:
        return f"train {train}; rollout {rollout}"
    return train or rollout or math.nan


def dataset_fingerprint(y_true: Any, y_pred: Any) -> Any:
    """``rlds:<12 hex digits>`` over the training datasets' file names, sizes and feature specs
    (:func:`vlamix.pipeline.provenance.data_fingerprint`): equal values, same training data. NaN when unknown."""
    value = (_prediction(y_pred).get("data_fingerprint") or {}).get("fingerprint")
    return f"rlds:{value}" if value else math.nan


def sim_versions(y_true: Any, y_pred: Any) -> Any:
    """Simulator stack of the episodes, ``"<package>=<version>;..."`` sorted by package (``a | b`` where episodes
    disagree); NaN when the rows carry no versions."""
    versions = _summary(y_pred).get("versions")
    return ";".join(f"{k}={v}" for k, v in sorted(versions.items())) if versions else math.nan


# ------------------------------------------------------------------ action recipe (issue 29)
def recipe(y_true: Any, y_pred: Any) -> Any:
    """The point's action recipe (:func:`vlamix.pipeline.config.recipe_label`): ``tokens`` (OpenVLA) or
    ``l1_regression chunk <n> open-loop <k>`` with ``+wrist`` / ``+proprio`` (OpenVLA-OFT); NaN for a reference row
    (the scripted expert has no action recipe) and for a prediction without a config."""
    pred = _prediction(y_pred)
    config = pred.get("config")
    if pred.get("reference") or not isinstance(config, Mapping):
        return math.nan
    return recipe_label(config)


# ------------------------------------------------------------------ racing (issue 12)
def episodes_saved(y_true: Any, y_pred: Any) -> Any:
    """Planned rollout episodes that racing did not run (:mod:`vlamix.pipeline.racing`): after a round the
    paired sequential test found the point significantly worse than a finished point. An int, 0 for
    a point raced that ran its whole plan; NaN when racing was off for the point."""
    record = _prediction(y_pred).get("racing")
    if not isinstance(record, Mapping):
        return math.nan
    return int(record["episodes_saved"])
