"""Arms: the points of a job grouped by what they measure, over their training seeds (issue 28).

A point is a mixture *and* a training seed. ``seed`` is a train-role field, so listing several values in
``vla_algorithm.yaml`` (``- seed: {values: [7, 8, 9]}``) is a grid axis like any other; the *arm* of a point is its
training signature without ``seed`` (:meth:`vlamix.pipeline.config.BenchConfig.training_signature`) plus its episode
plan (:func:`vlamix.pipeline.racing.plan_key`): the points of one arm differ only in their seed and roll out the same
episodes. :func:`arm_table` aggregates the finished points of a job into one row per arm with the statistics of
:mod:`vlamix.eval.arms` (pooled and per-seed rates, the between-seed spread, an interval that accounts for it,
P(best), comparisons and letters, the best trade-offs across conditions).

Which comparison gives the letters and ``tied_with_best``: when every arm has one seed, the paired test of the report
on the shared episodes with Holm (:data:`vlamix.eval.paired.RANKING_METHOD`: the exact stratified matched-pairs test
by task; the stronger one without seeds); as soon as one arm has two seeds or more, the arm-level comparison of
:func:`vlamix.eval.arms.compare_arms` on the aggregated evidence. Arms are compared with the arms of the same episode
plan only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Iterable, Mapping

from vlamix.core.errors import ConfigError
from vlamix.eval.arms import ArmEstimate, compare_arms, estimate, pareto_front, prob_best, seed_counts
from vlamix.eval.breakdown import breakdown
from vlamix.eval.paired import RANKING_METHOD, compare_to_best, letter_groups
from vlamix.pipeline.config import BenchConfig
from vlamix.pipeline.racing import plan_key

logger = logging.getLogger(__name__)

__all__ = ["arm_key", "arm_of", "arm_table", "seed_of", "seed_text"]


def arm_key(cfg: BenchConfig) -> str:
    """12 hex digits over the training signature without ``seed`` and the episode plan: equal for points that
    differ only in their training seed."""
    signature = {k: v for k, v in cfg.training_signature().items() if k != "seed"}
    blob = json.dumps({"training": signature, "plan": plan_key(cfg.to_dict())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def arm_of(prediction: Mapping[str, Any]) -> str:
    """The arm of a prediction: its ``arm_key`` (written by ``predict``); for a prediction written before arms
    existed, :func:`arm_key` of its ``config``, or (a config that no longer validates) its own train key or
    checkpoint (an arm of one point)."""
    if prediction.get("arm_key"):
        return str(prediction["arm_key"])
    config = prediction.get("config")
    if isinstance(config, Mapping):
        try:
            return arm_key(BenchConfig.from_dict(dict(config), allow_extra=True))
        except (ConfigError, KeyError, TypeError, ValueError) as err:
            logger.debug("arm of an old prediction from its config failed (%s); it is an arm of its own", err)
    return "point-" + str(prediction.get("train_key") or prediction.get("checkpoint"))


def seed_of(prediction: Mapping[str, Any]) -> Any:
    """The training seed of a prediction (``config["seed"]``; None when unknown)."""
    return (prediction.get("config") or {}).get("seed")


def seed_text(est: ArmEstimate) -> str:
    """Per-seed results as one stable string, seeds in order: ``"7:13/20 8:11/20 9:14/20"``."""
    return " ".join(f"{s}:{k}/{n}" for s, k, n in zip(est.seeds, est.successes, est.episodes))


def _condition_rates(rows_by_seed: Mapping[Any, list]) -> dict[tuple[str, str], float]:
    """Success rate per (suite, instruction variant), pooled over the seeds (each seed's episodes counted once)."""
    k: dict[tuple[str, str], int] = {}
    n: dict[tuple[str, str], int] = {}
    for rows in rows_by_seed.values():
        for c in breakdown(rows)["per_condition"]:
            key = (c["suite"], c["instruction_variant"])
            k[key] = k.get(key, 0) + c["n_successes"]
            n[key] = n.get(key, 0) + c["n"]
    return {key: k[key] / n[key] for key in n if n[key]}


def arm_table(predictions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per arm of the finished points ``predictions`` (reference rows and points without episodes left out).

    Returns:
        ``{arm: row}`` in order of first appearance; row = dict(arm, plan, estimate (:class:`ArmEstimate`),
        predictions ({seed: prediction}, the first per seed), p_best (float), group (letters, str),
        tied_with_best (bool or None), p_adjusted (vs the best arm of its plan; None for the best), difference
        (pooled rate minus the best's), within_seed_spread (bool or None), best_tradeoff (bool), conditions
        ({(suite, instruction variant): success rate pooled over the seeds}), comparison (:data:`vlamix.eval.paired.RANKING_METHOD` or "seeds")).
    """
    arms: dict[str, dict[str, Any]] = {}
    for pred in predictions:
        if pred.get("reference") or not isinstance(pred.get("episodes"), list):
            continue
        arm = arm_of(pred)
        row = arms.setdefault(arm, {"arm": arm, "plan": pred.get("plan_key"), "predictions": {}})
        row["predictions"].setdefault(seed_of(pred), pred)  # the same arm and seed twice: the same run, keep one
    for row in list(arms.values()):
        counts = seed_counts({s: p["episodes"] for s, p in row["predictions"].items()})
        if not counts:  # every episode of the arm ended with an error
            del arms[row["arm"]]
            continue
        row["estimate"] = estimate(counts)
    for plan in dict.fromkeys(row["plan"] for row in arms.values()):
        _compare(plan, {a: r for a, r in arms.items() if r["plan"] == plan})
    return arms


def _compare(plan: Any, rows: Mapping[str, dict[str, Any]]) -> None:
    """Fill the comparison fields of the rows of one episode plan (see :func:`arm_table`)."""
    estimates = {a: r["estimate"] for a, r in rows.items()}
    for a, p in prob_best(estimates).items():
        rows[a]["p_best"] = p
    for r in rows.values():
        r["conditions"] = _condition_rates({s: p["episodes"] for s, p in r["predictions"].items()})
    front = pareto_front({a: r["conditions"] for a, r in rows.items()})
    seeds = any(e.n_seeds > 1 for e in estimates.values())
    if seeds:
        cmp = compare_arms(estimates)
        letters, entries = cmp["letters"], cmp["arms"]
    else:
        episodes = {a: next(iter(r["predictions"].values()))["episodes"] for a, r in rows.items()}
        letters = letter_groups(episodes)
        entries = compare_to_best(episodes)["points"]
    best_rate = max(e.pooled_success_rate for e in estimates.values())
    for a, row in rows.items():
        e = entries[a]
        row.update(group=letters.get(a, ""), tied_with_best=e.get("tied_with_best"), p_adjusted=e.get("p_adjusted"),
                   difference=row["estimate"].pooled_success_rate - best_rate, best_tradeoff=front[a],
                   within_seed_spread=e.get("within_seed_spread"), comparison="seeds" if seeds else RANKING_METHOD)
