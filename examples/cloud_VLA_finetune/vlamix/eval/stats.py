"""Success statistics of LIBERO rollouts: success rate, Wilson score interval, per-task and per-suite rates.

Pure NumPy/Python; no simulator. Input rows are the episode rows written by
:func:`vlamix.eval.rollout.evaluate` (one dict per episode with at least ``suite``, ``task_id`` and
``success``).

Usage::

    from vlamix.eval.rollout import read_rows
    from vlamix.eval.stats import summarize, wilson_interval
    summary = summarize(read_rows("workspace/ckpt/eval/episodes.jsonl"))
    summary["success_rate"], summary["ci_low"], summary["ci_high"]
    wilson_interval(0, 10)   # (0.0, 0.2775...)
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Any, Iterable, Mapping

import numpy as np

logger = logging.getLogger(__name__)

#: Two-sided 95% normal quantile, Phi^-1(0.975).
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n``.

    ``center = (p + z^2 / 2n) / (1 + z^2 / n)``, ``half = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)``
    with ``p = successes / n``; the bounds are clipped to [0, 1] (so ``successes == 0`` gives a lower
    bound of exactly 0 and an upper bound of ``z^2 / (n + z^2)``).

    Source: E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
    JASA 22 (1927); recommended for small n by Brown, Cai & DasGupta, Statistical Science 16 (2001).

    Args:
        successes: number of successful episodes k, 0 <= k <= n.
        n: number of episodes. ``n == 0`` carries no information and returns (0.0, 1.0).
        z: normal quantile of the two-sided level (default 95%).
    Returns:
        (low, high): floats in [0, 1], fractions (not percent).
    Raises:
        ValueError: non-integer counts, k outside [0, n], or z <= 0.
    """
    successes, n = _count("successes", successes), _count("n", n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not (isinstance(z, (int, float)) and math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a finite number > 0, got {z!r}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError as err:
        raise ValueError(f"{name} must be an integer, got {value!r}") from err


def _success(i: int, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"episode row {i}: 'success' must be a bool, got {value!r}")


def task_name(suite: str, task_id: int) -> str:
    """Key of a task in the per-task tables: ``"<suite>/<task_id>"``, e.g. ``"libero_spatial/3"``."""
    return f"{suite}/{int(task_id)}"


def _dedupe(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Keep the last row per (suite, task_id, episode_index, instruction_variant); rows without an
    episode index are all kept."""
    out: dict[Any, Mapping[str, Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"episode row {i} is not a mapping: {row!r}")
        for key in ("suite", "task_id", "success"):
            if key not in row:
                raise ValueError(f"episode row {i} has no '{key}' field (fields: {', '.join(map(str, row))})")
        _success(i, row["success"])
        idx = row.get("episode_index")
        # an instruction variant other than "original" (evaluation kit) is a different episode
        variant = row.get("instruction_variant") or "original"
        key = (row["suite"], int(row["task_id"]), int(idx), variant) if idx is not None else ("#row", i)
        if key in out:
            logger.warning("episode %s appears more than once; the last row counts", key)
            del out[key]  # re-insert so the order follows the last occurrence
        out[key] = row
    return list(out.values())


def _merge_versions(rows: Iterable[Mapping[str, Any]]) -> dict[str, str] | None:
    """Simulator versions of the rows: one value per package, or ``"a | b"`` when the rows disagree."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        versions = row.get("versions")
        if isinstance(versions, Mapping):
            for pkg, ver in versions.items():
                vals = seen.setdefault(str(pkg), [])
                if str(ver) not in vals:
                    vals.append(str(ver))
    if not seen:
        return None
    return {pkg: " | ".join(sorted(vals)) for pkg, vals in seen.items()}


def summarize(rows: Iterable[Mapping[str, Any]], z: float = Z_95) -> dict[str, Any]:
    """Aggregate episode rows into the benchmark's success metrics.

    Rows repeating the same (suite, task_id, episode_index) count once (the last one). Episodes
    with an ``error`` (a crash of the evaluation infrastructure: worker death, timeout, env or
    policy exception; :mod:`vlamix.eval.server`) are NOT policy failures: they are left out of every
    rate and count and are counted in ``n_errors`` only.

    Args:
        rows: episode dicts with ``suite`` (str), ``task_id`` (int), ``success`` (bool) and
            optionally ``instruction``, ``episode_index``, ``error``, ``versions``.
        z: normal quantile of the interval (default 95%).
    Returns:
        dict with
            success_rate (float fraction in [0, 1]; NaN when every episode has an error), ci_low,
            ci_high (Wilson interval of it), n_episodes (episodes without errors), n_successes,
            n_errors (episodes with an error) (int),
            per_task: {"<suite>/<task_id>": {suite, task_id, instruction, success_rate, n, n_successes,
                       ci_low, ci_high}} ordered by suite then task id,
            per_suite: {suite: {success_rate, n, n_successes, ci_low, ci_high}},
            worst_task (its "<suite>/<task_id>"; the first in per_task order on ties),
            worst_task_success_rate (float),
            mean_task_success_rate (unweighted mean over tasks),
            versions ({package: version}, only when rows carry ``versions``).
    Raises:
        ValueError: no rows, or a row without ``suite``/``task_id``/``success``.
    """
    all_episodes = _dedupe(rows)
    if not all_episodes:
        raise ValueError("no episode rows to summarise")
    episodes = [r for r in all_episodes if not r.get("error")]
    n_errors = len(all_episodes) - len(episodes)
    if not episodes:
        logger.warning("all %d episodes ended with an error: no success rate", n_errors)
        return {"success_rate": math.nan, "ci_low": 0.0, "ci_high": 1.0, "n_episodes": 0, "n_successes": 0,
                "n_errors": n_errors, "per_task": {}, "per_suite": {}, "worst_task": None,
                "worst_task_success_rate": math.nan, "mean_task_success_rate": math.nan}
    suites_order: list[str] = []
    tasks: dict[tuple[str, int], dict[str, Any]] = {}
    for row in episodes:
        suite, task_id = str(row["suite"]), int(row["task_id"])
        if suite not in suites_order:
            suites_order.append(suite)
        entry = tasks.setdefault(
            (suite, task_id),
            {"suite": suite, "task_id": task_id, "instruction": row.get("instruction"), "n": 0, "n_successes": 0},
        )
        entry["n"] += 1
        entry["n_successes"] += int(bool(row["success"]))

    per_task: dict[str, dict[str, Any]] = {}
    for suite, task_id in sorted(tasks, key=lambda k: (suites_order.index(k[0]), k[1])):
        entry = tasks[(suite, task_id)]
        low, high = wilson_interval(entry["n_successes"], entry["n"], z)
        entry.update(success_rate=entry["n_successes"] / entry["n"], ci_low=low, ci_high=high)
        per_task[task_name(suite, task_id)] = entry

    per_suite: dict[str, dict[str, Any]] = {}
    for suite in suites_order:
        n = sum(e["n"] for e in per_task.values() if e["suite"] == suite)
        k = sum(e["n_successes"] for e in per_task.values() if e["suite"] == suite)
        low, high = wilson_interval(k, n, z)
        per_suite[suite] = {"success_rate": k / n, "n": n, "n_successes": k, "ci_low": low, "ci_high": high}

    n_episodes = len(episodes)
    n_successes = sum(int(bool(r["success"])) for r in episodes)
    low, high = wilson_interval(n_successes, n_episodes, z)
    worst = min(per_task, key=lambda name: per_task[name]["success_rate"])  # min keeps the first on ties
    summary: dict[str, Any] = {
        "success_rate": n_successes / n_episodes,
        "ci_low": low,
        "ci_high": high,
        "n_episodes": n_episodes,
        "n_successes": n_successes,
        "n_errors": n_errors,
        "per_task": per_task,
        "per_suite": per_suite,
        "worst_task": worst,
        "worst_task_success_rate": per_task[worst]["success_rate"],
        "mean_task_success_rate": sum(e["success_rate"] for e in per_task.values()) / len(per_task),
    }
    versions = _merge_versions(episodes)
    if versions is not None:
        summary["versions"] = versions
    return summary
