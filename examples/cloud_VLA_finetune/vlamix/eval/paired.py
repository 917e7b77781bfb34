"""Paired comparison of benchmark points evaluated on the same LIBERO episodes.

Every point of a job is rolled out from the same init states with the same seeds, so two points'
outcomes on one episode (suite, task, init state, instruction variant) form a matched pair, and the
right test is a paired one. The tests come from statsmodels; this module only builds the tables.

- :func:`paired_test`: exact McNemar test (binomial test on the discordant pairs; McNemar,
  Psychometrika 12, 1947) on the shared episodes; the exact stratified matched-pairs test
  (``method="mcnemar_strata"``, :func:`stratified_sign_test`: sign flips of the discordant pairs
  within each task, tasks weighted equally; :data:`RANKING_METHOD`, the test of the report and of
  ``tied_with_best``); or Cochran-Mantel-Haenszel stratified by task (``method="cmh"``, statsmodels
  ``StratifiedTable.test_null_odds``), which treats the two points' episodes of a task as independent
  samples although they share init states, so its error depends on how the two points' outcomes
  correlate within a task: conservative (and less powerful) when both find the same init states
  hard, above alpha when each point fails on init states the other solves
  (``tests/test_eval_paired_strata.py`` measures both cases; the paired tests hold alpha in both).
- :func:`holm`: Holm's step-down correction (Holm, Scand. J. Statist. 6, 1979) via statsmodels
  ``multipletests``.
- :func:`compare_to_best`: every point against the best one (highest success rate), Holm-corrected;
  ``tied_with_best`` is True when the corrected p-value is >= alpha (the difference is not
  significant), so several points may share the top of the leaderboard.
- :func:`letter_groups`: compact letter display of all pairwise tests (points sharing a letter are
  not significantly different).
- :func:`pairs_needed`: the number of paired episodes at which a difference of the observed size
  would be significant with 80% power (Connor, Biometrics 43, 1987, paired-proportions formula).

Episode rows with an ``error`` (an infrastructure crash) are never outcomes: they are left out.

Usage::

    from vlamix.eval.paired import compare_to_best
    out = compare_to_best({"2:1": rows_a, "1:1": rows_b, "1:2": rows_c})
    out["best"], out["points"]["1:2"]["p_adjusted"], out["points"]["1:2"]["tied_with_best"]
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy.signal import convolve
from scipy.stats import binom, norm
from statsmodels.stats.contingency_tables import StratifiedTable, mcnemar
from statsmodels.stats.multitest import multipletests

__all__ = [
    "ALPHA",
    "METHOD_NAMES",
    "RANKING_METHOD",
    "compact_letters",
    "compare_to_best",
    "episode_key",
    "holm",
    "letter_groups",
    "outcomes",
    "paired_test",
    "pairs_needed",
    "stratified_sign_test",
]

#: ``method`` values of :func:`paired_test`.
METHODS = ("mcnemar", "mcnemar_strata", "cmh")

#: What each method is called in the report.
METHOD_NAMES = {
    "mcnemar": "exact McNemar test on the shared episodes (McNemar 1947)",
    "mcnemar_strata": "exact stratified matched-pairs (sign-flip) test by task (the exact conditional McNemar "
                      "argument within each task, tasks weighted equally; McNemar 1947, Fisher 1935)",
    "cmh": "Cochran-Mantel-Haenszel test by task (independent samples)",
}

#: The test of :func:`compare_to_best`, :func:`letter_groups` and :func:`pairwise_p_values` (report, ``tied_with_best``):
#: a matched-pairs test stratified by task. With the same number of shared episodes in every task (the plan's
#: default) its p-value is the exact McNemar one.
RANKING_METHOD = "mcnemar_strata"

#: Significance level of every test here (two-sided).
ALPHA = 0.05


def episode_key(row: Mapping[str, Any]) -> tuple[str, int, int, str]:
    """``(suite, task_id, episode_index, instruction_variant)`` of an episode row ("original" when absent).

    Raises:
        ValueError: the row has no suite, task_id or episode_index.
    """
    try:
        return (str(row["suite"]), int(row["task_id"]), int(row["episode_index"]), str(row.get("instruction_variant") or "original"))
    except KeyError as err:
        raise ValueError(f"episode row without {err.args[0]!r}: {dict(row)!r}") from err


def outcomes(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, int, str], bool]:
    """Success per episode key (:func:`episode_key`), the last row of a key winning; rows with an
    ``error`` are left out (not policy outcomes)."""
    out: dict[tuple[str, int, int, str], bool] = {}
    for row in rows:
        key = episode_key(row)
        out.pop(key, None)
        if not row.get("error"):
            out[key] = bool(row["success"])
    return out


def _as_outcomes(x: Any) -> dict:
    """An :func:`outcomes` dict (a mapping) as is; a list of episode rows through :func:`outcomes`."""
    return dict(x) if isinstance(x, Mapping) else outcomes(x)


def paired_test(a: Any, b: Any, method: str = "mcnemar") -> dict[str, Any]:
    """Paired test of two points on their shared episodes.

    Args:
        a, b: episode rows (or :func:`outcomes` dicts) of the two points.
        method: "mcnemar" (exact McNemar on all shared episodes, statsmodels
            ``contingency_tables.mcnemar(exact=True)``), "mcnemar_strata" (exact stratified
            matched-pairs test by (suite, task), :func:`stratified_sign_test`; the same p-value as
            "mcnemar" when every task has the same number of shared episodes) or "cmh"
            (Cochran-Mantel-Haenszel test of odds ratio 1 stratified by (suite, task), statsmodels
            ``StratifiedTable``, treating the two points' episodes as independent samples; strata
            where both points always succeed or always fail carry no information and are dropped).
    Returns:
        dict(n_shared int, a_only int (a succeeded, b failed), b_only int, both int, neither int,
        sr_a, sr_b (success rates on the shared episodes), difference (sr_a - sr_b),
        p_value (float in [0, 1]; 1.0 when there is no discordant pair; NaN without shared episodes),
        method str).
    Raises:
        ValueError: unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"method: got {method!r}; allowed: {', '.join(METHODS)}")
    oa, ob = _as_outcomes(a), _as_outcomes(b)
    shared = [k for k in oa if k in ob]
    n10 = sum(1 for k in shared if oa[k] and not ob[k])
    n01 = sum(1 for k in shared if ob[k] and not oa[k])
    n11 = sum(1 for k in shared if oa[k] and ob[k])
    n00 = len(shared) - n10 - n01 - n11
    out: dict[str, Any] = {"n_shared": len(shared), "a_only": n10, "b_only": n01, "both": n11, "neither": n00, "method": method}
    if not shared:
        return {**out, "sr_a": math.nan, "sr_b": math.nan, "difference": math.nan, "p_value": math.nan}
    out["sr_a"], out["sr_b"] = (n11 + n10) / len(shared), (n11 + n01) / len(shared)
    out["difference"] = out["sr_a"] - out["sr_b"]
    if n10 + n01 == 0:
        out["p_value"] = 1.0
    elif method == "mcnemar":
        out["p_value"] = float(mcnemar([[n11, n10], [n01, n00]], exact=True).pvalue)
    elif method == "mcnemar_strata":
        strata = sorted({k[:2] for k in shared})
        where = {stratum: i for i, stratum in enumerate(strata)}
        counts = np.zeros((3, len(strata)), dtype=np.int64)  # a_only, b_only, shared episodes per stratum
        for k in shared:
            row = where[k[:2]]
            counts[0, row] += oa[k] and not ob[k]
            counts[1, row] += ob[k] and not oa[k]
            counts[2, row] += 1
        out["p_value"] = stratified_sign_test(*counts)
    else:
        out["p_value"] = _cmh_p(oa, ob, shared)
    return out


def stratified_sign_test(a_only: Any, b_only: Any, n_shared: Any, *, max_lattice: int = 2_000_000,
                         draws: int = 200_000, seed: int = 0) -> float:
    """Exact two-sided stratified matched-pairs (sign-flip) test; strata are tasks.

    Statistic: ``T = sum_t (a_t - b_t) / n_t``, the difference of the two points' mean task success
    rates times the number of tasks (every task weighs the same, as ``mean_task_success_rate`` of
    :func:`vlamix.eval.stats.summarize`). Null hypothesis: on every episode the two points have the same
    success probability, so each discordant pair is won by a or by b with probability 1/2,
    independently (the conditional argument of McNemar's exact test, Psychometrika 12, 1947, applied
    within each stratum; the resulting distribution of T is that of the sign-flip randomisation test
    of paired data, Fisher, The Design of Experiments, 1935, section 21). Then ``a_t ~ Binomial(a_t + b_t, 1/2)``
    independently and the p-value is ``P0(|T| >= |T_observed|)``, computed exactly (up to floating-point rounding: scipy's direct or
    FFT convolution) by convolving the strata on the integer lattice
    ``T * lcm(n_t)`` (tasks with the same ``n_t`` pooled into one binomial). With equal ``n_t`` this is
    the exact McNemar test on the pooled discordant pairs. When the lattice would exceed
    ``max_lattice`` points (many different ``n_t``), the p-value is a seeded Monte Carlo sign-flip
    p-value ``(1 + #{|T*| >= |T|}) / (1 + draws)`` (valid at every ``draws``: Phipson & Smyth, SAGMB 9, 2010).

    Args:
        a_only, b_only: int arrays [S]: per stratum, the shared episodes where only a / only b succeeded.
        n_shared: int array [S]: shared episodes per stratum (>= a_only + b_only, >= 1).
        max_lattice, draws, seed: the exact computation's size limit and the fallback's draws and seed.
    Returns:
        p-value, float in [0, 1]; 1.0 without a discordant pair.
    Raises:
        ValueError: arrays of different shapes, negative counts, or ``n_shared`` < 1 or < a_only + b_only.
    """
    a, b, n = (np.asarray(v, dtype=np.int64).ravel() for v in (a_only, b_only, n_shared))
    if not a.shape == b.shape == n.shape:
        raise ValueError(f"a_only, b_only and n_shared must have the same shape, got {a.shape}, {b.shape}, {n.shape}")
    if np.any(a < 0) or np.any(b < 0) or np.any(n < 1) or np.any(a + b > n):
        raise ValueError("need a_only >= 0, b_only >= 0, n_shared >= 1 and a_only + b_only <= n_shared per stratum "
                         f"(a_only={a.tolist()}, b_only={b.tolist()}, n_shared={n.tolist()})")
    m = a + b
    if not m.any():
        return 1.0
    sizes = np.unique(n[m > 0])
    lattice = math.lcm(*sizes.tolist())
    pooled = [(lattice // int(size), int(m[n == size].sum())) for size in sizes]  # (step, discordant)
    observed = abs(int(sum((a[n == size] - b[n == size]).sum() * step for size, (step, _) in zip(sizes, pooled))))
    if 2 * sum(step * count for step, count in pooled) + 1 <= max_lattice:
        dist = np.ones(1)
        for step, count in pooled:  # 2 A - count, A ~ Bin(count, 1/2), on a lattice of spacing step
            part = np.zeros(2 * step * count + 1)
            part[:: 2 * step] = binom.pmf(np.arange(count + 1), count, 0.5)
            dist = np.clip(convolve(dist, part), 0.0, None)  # direct or FFT, whichever is faster
        values = np.abs(np.arange(len(dist)) - (len(dist) - 1) // 2)
        return float(min(1.0, dist[values >= observed].sum()))
    rng = np.random.default_rng(seed)
    total = np.zeros(draws, dtype=np.int64)
    for step, count in pooled:
        total += (2 * rng.binomial(count, 0.5, size=draws) - count) * step
    return float((1 + np.count_nonzero(np.abs(total) >= observed)) / (1 + draws))


def _cmh_p(oa: Mapping, ob: Mapping, shared: Sequence) -> float:
    """CMH p-value, strata = (suite, task); each stratum's 2x2 table is point (a, b) x (success, failure)."""
    tables = []
    for stratum in sorted({k[:2] for k in shared}):
        keys = [k for k in shared if k[:2] == stratum]
        sa, sb = sum(oa[k] for k in keys), sum(ob[k] for k in keys)
        table = np.array([[sa, len(keys) - sa], [sb, len(keys) - sb]], dtype=np.float64)
        if table[:, 0].sum() > 0 and table[:, 1].sum() > 0:  # else the stratum has no variance
            tables.append(table)
    if not tables:
        return 1.0
    p = float(StratifiedTable(tables).test_null_odds(correction=False).pvalue)
    return 1.0 if math.isnan(p) else p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given; NaN entries stay NaN and are not counted).

    Source: statsmodels ``multipletests(method="holm")``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return [float(v) for v in out]


def _success_rate(o: Mapping) -> float:
    return sum(o.values()) / len(o) if o else math.nan


def compare_to_best(points: Mapping[str, Any], alpha: float = ALPHA, method: str = RANKING_METHOD) -> dict[str, Any]:
    """Every point against the best point on their shared episodes, Holm-corrected over the comparisons.

    Args:
        points: label -> episode rows (or :func:`outcomes` dicts), in leaderboard order.
        alpha: significance level of the corrected tests.
        method: see :func:`paired_test`.
    Returns:
        dict(best = label of the highest success rate over its own non-error episodes (the first
        label on ties; None when no point has an episode), alpha, method,
        points = {label: {success_rate, n_episodes, ... :func:`paired_test` fields vs the best,
        p_adjusted, tied_with_best (True / False; None when the point shares no episode with the
        best), pairs_needed}}). The best point has p_adjusted None and tied_with_best True.
    """
    outs = {label: _as_outcomes(rows) for label, rows in points.items()}
    rates = {label: _success_rate(o) for label, o in outs.items()}
    candidates = [label for label in outs if outs[label]]
    best = max(candidates, key=lambda label: rates[label]) if candidates else None  # max keeps the first
    result: dict[str, Any] = {"best": best, "alpha": alpha, "method": method, "points": {}}
    others = [label for label in outs if label != best]
    tests = {label: paired_test(outs[label], outs[best], method) if best is not None else None for label in others}
    adjusted = holm([t["p_value"] if t else math.nan for t in tests.values()])
    for label in outs:
        entry: dict[str, Any] = {"success_rate": rates[label], "n_episodes": len(outs[label])}
        if label == best:
            entry.update(p_value=None, p_adjusted=None, tied_with_best=True, pairs_needed=None)
        else:
            test = tests[label]
            p_adj = adjusted[others.index(label)]
            entry.update(test or {})
            entry["p_adjusted"] = None if math.isnan(p_adj) else p_adj
            entry["tied_with_best"] = None if math.isnan(p_adj) else bool(p_adj >= alpha)
            entry["pairs_needed"] = pairs_needed(test) if test else None
        result["points"][label] = entry
    return result


def pairwise_p_values(points: Mapping[str, Any], method: str = RANKING_METHOD) -> dict[tuple[str, str], float]:
    """Holm-adjusted p-values of every pair of points ``{(label_i, label_j): p}`` (i before j)."""
    outs = {label: _as_outcomes(rows) for label, rows in points.items()}
    labels = list(outs)
    pairs = [(labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))]
    raw = [paired_test(outs[a], outs[b], method)["p_value"] for a, b in pairs]
    return dict(zip(pairs, holm(raw)))


def letter_groups(points: Mapping[str, Any], alpha: float = ALPHA, method: str = RANKING_METHOD) -> dict[str, str]:
    """Compact letter display of the points (:func:`compact_letters`): points sharing a letter are not significantly
    different (pairwise tests of :func:`paired_test` with ``method``, default :data:`RANKING_METHOD`, Holm-adjusted
    over all pairs); a pair without shared episodes counts as not different. Points are ordered by success rate
    (descending).

    Returns:
        {label: letters}, e.g. ``{"2:1": "a", "1:1": "ab", "1:2": "b"}``.
    """
    outs = {label: _as_outcomes(rows) for label, rows in points.items()}
    p = pairwise_p_values(outs, method)

    def differ(a: str, b: str) -> bool:
        value = p.get((a, b), p.get((b, a)))
        return value is not None and not math.isnan(value) and value < alpha

    order = sorted(outs, key=lambda label: -(_success_rate(outs[label]) if outs[label] else -1.0))
    return compact_letters(order, differ)


def compact_letters(order: Sequence[Hashable], differ: Callable[[Hashable, Hashable], bool]) -> dict[Hashable, str]:
    """Compact letter display: labels sharing a letter are not significantly different.

    ``order`` is the labels by decreasing success rate; each group is a maximal run of consecutive labels no two of
    which ``differ``; group k gets the k-th letter. Runs of consecutive labels are the groups of the insert-absorb
    display (Piepho, J. Comput. Graph. Statist. 13, 2004) whenever the non-significant pairs are contiguous in rate
    order, which is the usual case.

    Returns:
        ``{label: letters}``, e.g. ``{"2:1": "a", "1:1": "ab", "1:2": "b"}``.
    """
    groups: list[list[Hashable]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and not any(differ(order[k], order[j + 1]) for k in range(i, j + 1)):
            j += 1
        run = list(order[i : j + 1])
        if not any(set(run) <= set(g) for g in groups):
            groups.append(run)
    letters = {label: "" for label in order}
    for k, group in enumerate(groups):
        for label in group:
            letters[label] += "abcdefghijklmnopqrstuvwxyz"[k] if k < 26 else f"g{k}"
    return letters


def pairs_needed(test: Mapping[str, Any], alpha: float = ALPHA, power: float = 0.8) -> int | None:
    """Paired episodes needed to detect the observed difference with the given power.

    Connor (1987): ``n = (z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - delta^2))^2 / delta^2`` with
    the observed discordant fractions ``p10 = a_only / n``, ``p01 = b_only / n``,
    ``psi = p10 + p01`` and ``delta = p10 - p01``.

    Returns:
        int (rounded up), or None when the observed difference is 0 or there is no shared episode.
    """
    n = test.get("n_shared") or 0
    if n == 0:
        return None
    p10, p01 = test["a_only"] / n, test["b_only"] / n
    delta, psi = p10 - p01, p10 + p01
    if delta == 0:
        return None
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    value = (za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / (delta * delta)
    return int(math.ceil(value - 1e-9))
