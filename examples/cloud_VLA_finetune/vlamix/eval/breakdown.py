"""Robustness and generalisation breakdown of one point's episode rows.

Conditions of an episode: its suite (standard, or a perturbation of one: :func:`vlamix.core.suites.base_suite`),
its instruction variant (``instruction_variant``, "original" when absent) and its training split
(``split``: "seen" when the task's training frames had weight > 0, else "unseen";
:func:`training_split`). The *reference condition* is a standard suite with the original
instruction. All rates are fractions in [0, 1] over the episodes without an ``error`` (a crash of
the infrastructure is not a policy failure), each episode key counted once (the last row wins).
A quantity the rows cannot give (no episode of that condition) is NaN, never 0.

- ``seen_success_rate`` / ``unseen_success_rate``: reference-condition episodes tagged seen / unseen.
- ``perturbed_success_rate``: original-instruction episodes of perturbation suites.
- ``robustness_drop``: success rate of the base suite minus that of its perturbation suites, on the
  task ids both were evaluated on (base episodes counted once per perturbation suite they are paired with).
- ``language_reliance``: success rate with the original instruction minus with the empty one
  (variant "empty"), on the episodes (suite, task, init state) evaluated with both.
- ``worst_suite_success_rate``: lowest per-suite success rate of the original-instruction episodes.

Usage::

    from vlamix.eval.breakdown import breakdown
    b = breakdown(rows)
    b["robustness_drop"], b["robustness"]  # the column and its table
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from vlamix.core.suites import base_suite, perturbation
from vlamix.data.settings import DataConfig
from vlamix.eval.paired import episode_key

__all__ = ["METRICS", "breakdown", "tag_rows", "training_split"]

#: Rank columns computed here (one ``testenv/vla_<name>.py`` each).
METRICS = (
    "seen_success_rate",
    "unseen_success_rate",
    "perturbed_success_rate",
    "robustness_drop",
    "language_reliance",
    "worst_suite_success_rate",
)


def training_split(data: DataConfig, suite: str, task_id: int) -> str:
    """"seen" or "unseen": whether the point's training frames covered this task.

    A task is seen when the dataset of its base suite (``<base suite>_no_noops``) has weight > 0 and
    passes the white/blacklist, the task id is not in ``heldout_tasks`` of that dataset, with
    ``demos: scripted`` the task was recorded (task id < ``demo_tasks``), and the suite does not
    replace the task (LIBERO-PRO ``_task`` suites are new tasks, always unseen).

    Args:
        data: the point's :class:`vlamix.data.settings.DataConfig`.
    """
    base = base_suite(suite)
    dataset = f"{base}_no_noops"
    if suite == f"{base}_task" or dataset not in data.selected_datasets():
        return "unseen"
    if int(task_id) in tuple((data.heldout_tasks or {}).get(dataset, ())):
        return "unseen"
    if data.demos == "scripted" and int(task_id) >= data.demo_tasks:
        return "unseen"
    return "seen"


def tag_rows(rows: Sequence[dict[str, Any]], specs: Sequence[Any], data: DataConfig) -> list[dict[str, Any]]:
    """Add ``instruction_variant`` (from the spec, if the row lacks it) and ``split`` to each row.

    Args:
        rows: episode rows in the order of ``specs`` (as :func:`vlamix.eval.rollout.evaluate` returns them).
        specs: the :class:`vlamix.eval.plan.EpisodeSpec` list that was evaluated.
    Raises:
        ValueError: a row does not belong to the spec at its position.
    """
    if len(rows) != len(specs):
        raise ValueError(f"{len(rows)} episode rows for {len(specs)} planned episodes")
    for row, spec in zip(rows, specs):
        row.setdefault("instruction_variant", spec.instruction_variant)
        if episode_key(row) != (spec.suite, spec.task_id, spec.episode_index, spec.instruction_variant):
            raise ValueError(f"episode row {episode_key(row)} does not match the planned episode {spec}")
        row["split"] = training_split(data, spec.suite, spec.task_id)
    return list(rows)


def _episodes(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    last: dict[tuple, Mapping[str, Any]] = {}
    for row in rows:
        key = episode_key(row)
        last.pop(key, None)
        last[key] = row
    return [r for r in last.values() if not r.get("error")]


def _rate(rows: Sequence[Mapping[str, Any]]) -> float:
    return sum(bool(r["success"]) for r in rows) / len(rows) if rows else math.nan


def _variant(row: Mapping[str, Any]) -> str:
    return str(row.get("instruction_variant") or "original")


def breakdown(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The columns of :data:`METRICS` and the tables behind them.

    Args:
        rows: episode rows with ``suite``, ``task_id``, ``episode_index``, ``success`` and optionally
            ``instruction_variant``, ``split``, ``error``.
    Returns:
        dict with each name of :data:`METRICS` (float, NaN when not measured) and
            per_condition: [{suite, base_suite, instruction_variant, n, n_successes, success_rate}],
            robustness: [{base_suite, suite, perturbation, tasks, n_base, base_success_rate, n_perturbed,
                          perturbed_success_rate, drop}],
            ablation: [{instruction_variant, n, success_rate, n_paired, original_success_rate, drop}]
                (drop = original minus this variant on the paired episodes),
            n_errors (episodes left out for an error).
    Raises:
        ValueError: a row without its keys, or a suite that derives from no standard suite.
    """
    rows = list(rows)
    eps = _episodes(rows)
    n_errors = len({episode_key(r) for r in rows}) - len(eps)
    std = [r for r in eps if base_suite(str(r["suite"])) == r["suite"]]
    orig = [r for r in eps if _variant(r) == "original"]
    out: dict[str, Any] = {"n_errors": n_errors}

    ref = [r for r in std if _variant(r) == "original"]
    out["seen_success_rate"] = _rate([r for r in ref if r.get("split") == "seen"])
    out["unseen_success_rate"] = _rate([r for r in ref if r.get("split") == "unseen"])
    out["perturbed_success_rate"] = _rate([r for r in orig if base_suite(str(r["suite"])) != r["suite"]])

    conditions: dict[tuple[str, str], list] = {}
    for r in eps:
        conditions.setdefault((str(r["suite"]), _variant(r)), []).append(r)
    out["per_condition"] = [
        {"suite": s, "base_suite": base_suite(s), "instruction_variant": v, "n": len(rs),
         "n_successes": sum(bool(r["success"]) for r in rs), "success_rate": _rate(rs)}
        for (s, v), rs in conditions.items()
    ]
    suite_rates = [c["success_rate"] for c in out["per_condition"] if c["instruction_variant"] == "original"]
    out["worst_suite_success_rate"] = min(suite_rates) if suite_rates else math.nan

    robustness, base_k, base_n, pert_k, pert_n = [], 0, 0, 0, 0
    by_suite: dict[str, list] = {}
    for r in orig:
        by_suite.setdefault(str(r["suite"]), []).append(r)
    for suite, prs in by_suite.items():
        base = base_suite(suite)
        if base == suite or base not in by_suite:
            continue
        tasks = sorted({int(r["task_id"]) for r in prs} & {int(r["task_id"]) for r in by_suite[base]})
        if not tasks:
            continue
        b = [r for r in by_suite[base] if int(r["task_id"]) in tasks]
        p = [r for r in prs if int(r["task_id"]) in tasks]
        robustness.append({"base_suite": base, "suite": suite, "perturbation": perturbation(suite), "tasks": tasks,
                           "n_base": len(b), "base_success_rate": _rate(b), "n_perturbed": len(p),
                           "perturbed_success_rate": _rate(p), "drop": _rate(b) - _rate(p)})
        base_k += sum(bool(r["success"]) for r in b)
        base_n += len(b)
        pert_k += sum(bool(r["success"]) for r in p)
        pert_n += len(p)
    out["robustness"] = robustness
    out["robustness_drop"] = base_k / base_n - pert_k / pert_n if base_n and pert_n else math.nan

    by_key = {episode_key(r)[:3]: r for r in orig}
    ablation = []
    for variant in dict.fromkeys(_variant(r) for r in eps):
        vr = [r for r in eps if _variant(r) == variant]
        paired = [(by_key[episode_key(r)[:3]], r) for r in vr if episode_key(r)[:3] in by_key]
        o_rate = _rate([a for a, _ in paired])
        v_rate = _rate([b for _, b in paired])
        ablation.append({"instruction_variant": variant, "n": len(vr), "success_rate": _rate(vr), "n_paired": len(paired),
                         "original_success_rate": o_rate, "drop": o_rate - v_rate if paired else math.nan})
    out["ablation"] = ablation
    empty = next((a for a in ablation if a["instruction_variant"] == "empty"), None)
    out["language_reliance"] = empty["drop"] if empty else math.nan
    return out
