"""Report section "Recipes side by side" (issue 29): the same mixture under two action recipes.

A job may train its mixtures with OpenVLA's action tokens and with OpenVLA-OFT's parallel decoding (Kim, Finn and
Liang 2025, moojink/openvla-oft); the rank column ``recipe`` (:func:`vlamix.pipeline.config.recipe_label`) tells the
points apart. For every pair of recipes of the job and every mixture run under both, :func:`recipe_section` writes
each recipe's success rate with its Wilson 95% interval and N (the points' summaries) and the paired difference on
the episodes both points ran, with the report's paired test (:data:`vlamix.eval.paired.RANKING_METHOD`; Holm's
correction over the rows of the section).

Points are paired by mixture (:func:`vlamix.core.labels.point_label`: the data-ratio strategy and its weights) and
training seed (:func:`vlamix.pipeline.arms.seed_of`); a mixture with two or more points of one recipe and seed (e.g.
two ``train_steps``) has no unique partner and is listed as not paired. Reference rows (the scripted expert) and
points without episodes are left out.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping, Sequence

from vlamix.core.labels import point_label
from vlamix.eval.paired import METHOD_NAMES, RANKING_METHOD, holm, paired_test
from vlamix.pipeline.arms import seed_of
from vlamix.pipeline.config import recipe_label
from vlamix.report.arms import fmt, fmt_p

__all__ = ["recipe_pairs", "recipe_section"]


def _recipes(results: Sequence[Mapping[str, Any]]) -> dict[tuple[str, Any], dict[str, list[Mapping[str, Any]]]]:
    """``{(mixture label, seed): {recipe: [prediction, ...]}}`` of the compared points, in order of appearance."""
    cells: dict[tuple[str, Any], dict[str, list[Mapping[str, Any]]]] = {}
    for res in results:
        if res.get("reference") or not isinstance(res.get("episodes"), list):
            continue
        key = (point_label(res), seed_of(res))
        cells.setdefault(key, {}).setdefault(recipe_label(res.get("config") or {}), []).append(res)
    return cells


def recipe_pairs(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The comparisons of the section.

    Args:
        results: the job's prediction dicts (:meth:`vlamix.pipeline.point.VLADataSelect.predict`).
    Returns:
        dict(recipes: the job's recipes, ``tokens`` first, then by label; rows: one dict per (recipe pair, mixture
        and seed run under both) with keys first, second (recipes), mixture (str), seed, first_result,
        second_result (the two predictions), test (:func:`vlamix.eval.paired.paired_test` of second against first
        with :data:`~vlamix.eval.paired.RANKING_METHOD`: ``difference`` = second's minus first's success rate on the
        shared episodes, ``a_only`` = episodes only the second solved), p_adjusted (Holm over the rows);
        unpaired: ``(mixture, seed, recipe)`` cells with more than one point).
    """
    cells = _recipes(results)
    recipes = sorted({r for by in cells.values() for r in by}, key=lambda r: (r != "tokens", r))
    rows, unpaired = [], []
    for (mixture, seed), by in cells.items():
        unpaired += [(mixture, seed, r) for r, points in by.items() if len(points) > 1]
    for first, second in combinations(recipes, 2):
        for (mixture, seed), by in cells.items():
            a, b = by.get(first, []), by.get(second, [])
            if len(a) == 1 and len(b) == 1:
                rows.append({"first": first, "second": second, "mixture": mixture, "seed": seed,
                             "first_result": a[0], "second_result": b[0],
                             "test": paired_test(b[0]["episodes"], a[0]["episodes"], method=RANKING_METHOD)})
    for row, p in zip(rows, holm([r["test"]["p_value"] for r in rows])):
        row["p_adjusted"] = p
    return {"recipes": recipes, "rows": rows, "unpaired": unpaired}


def _rate(res: Mapping[str, Any]) -> str:
    s = res.get("summary") or {}
    return f"{fmt(s.get('success_rate'))} [{fmt(s.get('ci_low'))}, {fmt(s.get('ci_high'))}] {fmt(s.get('n_episodes'))}"


def recipe_section(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of "Recipes side by side"; [] when the job's compared points have fewer than two recipes."""
    out = recipe_pairs(results)
    if len(out["recipes"]) < 2:
        return []
    seeds = {row["seed"] for row in out["rows"]}
    lines = ["## Recipes side by side", "",
             "The same mixture trained under two action recipes (rank column `recipe`). Each recipe's success rate "
             "with its Wilson 95% interval and N; *difference*: the second recipe's success rate minus the first's "
             f"on the episodes both points ran (suite, task, init state, instruction), {METHOD_NAMES[RANKING_METHOD]}, "
             "two-sided, Holm-corrected over the rows, alpha 0.05. Points are paired per training seed: the "
             "seed-to-seed spread is not in these tests.", ""]
    if not out["rows"]:
        lines += ["No mixture was run under two recipes: " + ", ".join(f"`{r}`" for r in out["recipes"]) + ".", ""]
    for first, second in combinations(out["recipes"], 2):
        rows = [r for r in out["rows"] if r["first"] == first and r["second"] == second]
        if not rows:
            continue
        lines += [f"**`{first}`** (first) versus **`{second}`** (second):", "",
                  "| mixture | first: SR [95% CI] N | second: SR [95% CI] N | shared | only first | only second "
                  "| difference | p | p (Holm) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            t = r["test"]
            name = r["mixture"] + (f" (seed {r['seed']})" if len(seeds) > 1 else "")
            lines.append(f"| {name} | {_rate(r['first_result'])} | {_rate(r['second_result'])} | {t['n_shared']} | "
                         f"{t['b_only']} | {t['a_only']} | {fmt(t['difference'] + 0.0)} | {fmt_p(t['p_value'])} | "
                         f"{fmt_p(r['p_adjusted'])} |")
        lines.append("")
    if out["unpaired"]:
        lines += ["Not paired (two or more points of one mixture, seed and recipe): "
                  + "; ".join(f"{m}, `{r}`" + (f", seed {s}" if s is not None else "") for m, s, r in out["unpaired"])
                  + ".", ""]
    return lines
