"""Report sections on training seeds, arm comparisons, best trade-offs and cost (issue 28).

Inputs: the arm table of the job's points (:func:`vlamix.pipeline.arms.arm_table`), one label per arm, and the
points' prediction dicts. :func:`vlamix.report.kit.kit_sections` places the sections:

- **Training seeds** (a job where an arm has two seeds or more): one row per arm with the pooled success rate, the
  per-seed results, the between-seed SD, the 95% interval over seeds (its method named), P(best) and the letters.
- **Significance (arms, aggregated over training seeds)**: every arm against the best on the arms' posteriors
  (:func:`vlamix.eval.arms.compare_arms`), Holm, and whether the difference is within the seed-to-seed spread.
- **Best trade-offs**: the arms no other arm beats on every evaluated condition (suite x instruction variant).
- **Cost and provenance**: per point, training and rollout wall time, episodes per hour, device, the dataset
  fingerprint and the simulator versions: what a user weighs a mixture's gain against, and what two reports must
  share to be compared.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from vlamix.eval.arms import METHOD_SEEDS
from vlamix.pipeline.arms import seed_text

__all__ = ["cost_section", "fmt", "fmt_p", "has_seeds", "seeds_section", "significance_section", "supports_text",
           "tradeoff_section"]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals, '-' for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value: Any) -> str:
    """A p-value with 3 significant digits (small ones in scientific notation), '-' when absent."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _arm_table_lines(table: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], header: Sequence[str],
                     cells: Callable[[Mapping[str, Any], Any], list[str]]) -> list[str]:
    """A markdown table with one row per arm (best pooled success rate first): the label, then ``cells(row,
    estimate)``."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for arm in _ordered(table):
        lines.append("| " + " | ".join([labels[arm], *cells(table[arm], table[arm]["estimate"])]) + " |")
    return lines + [""]


def has_seeds(table: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when some arm of the table has two training seeds or more."""
    return any(row["estimate"].n_seeds > 1 for row in table.values())


def _ordered(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(table, key=lambda a: -table[a]["estimate"].pooled_success_rate)


def seeds_section(table: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Markdown of the "Training seeds" table ([] when no arm has two seeds)."""
    if not has_seeds(table):
        return []
    lines = ["## Training seeds (one row per arm)", "",
             "An arm is the points that differ only in `seed`. *95% interval*: " + METHOD_SEEDS + " for arms with "
             "two seeds or more (it accounts for the seed-to-seed spread; `vlamix.eval.arms`), Clopper-Pearson over "
             "the episodes for an arm with one seed (seed spread not measured). *P(best)*: probability that the arm "
             "has the highest mean success rate, from the same model (the Jeffreys posterior of the effective "
             "sample). Arms sharing a letter are not distinguishable (Holm, alpha 0.05).", ""]
    return lines + _arm_table_lines(
        table, labels, ["arm", "seeds", "per seed (successes/episodes)", "pooled SR", "between-seed SD",
                        "95% interval", "P(best)", "group"],
        lambda row, e: [str(e.n_seeds), seed_text(e), f"{fmt(e.pooled_success_rate)} ({e.n_successes}/{e.n_episodes})",
                        fmt(e.between_seed_sd), f"[{fmt(e.ci_low)}, {fmt(e.ci_high)}]", fmt(row["p_best"]),
                        row["group"]])


def significance_section(table: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Markdown of the arm-level significance section (for a job with seeds)."""
    best = _ordered(table)[0]
    lines = ["## Significance (arms, aggregated over training seeds)", "",
             f"Every arm against the best (**{labels[best]}**) on the aggregated evidence: the two-sided posterior "
             "tail probability of the difference of the arms' mean success rates (each arm's posterior from its "
             "per-seed rates, the model of the interval; `vlamix.eval.arms.compare_arms`), Holm-corrected, alpha "
             "0.05. *Within seed spread*: the difference is no larger than the range of per-seed success rates of one "
             "of the two arms, so other training seeds could reverse the order.", ""]
    return lines + _arm_table_lines(
        table, labels, ["arm", "group", "pooled SR", "seeds", "difference to best", "p (Holm)", "tied with best",
                        "within seed spread"],
        lambda row, e: [row["group"], fmt(e.pooled_success_rate), str(e.n_seeds), fmt(row["difference"]),
                        fmt_p(row["p_adjusted"]), fmt(row["tied_with_best"]), fmt(row["within_seed_spread"])])


def supports_text(table: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Sentences of "What the data supports" for a job with seeds."""
    order = _ordered(table)
    best, e = order[0], table[order[0]]["estimate"]
    text = [f"The highest pooled success rate is {labels[best]}'s ({fmt(e.pooled_success_rate)} over {e.n_episodes} "
            f"episodes from {e.n_seeds} training seed(s); P(best) {fmt(table[best]['p_best'])})."]
    below = [a for a in order if table[a]["tied_with_best"] is False]
    tied = [a for a in order[1:] if table[a]["tied_with_best"] is True]
    clauses = {
        "Below it on the aggregated evidence (Holm, alpha 0.05): ": [
            f"{labels[a]} (p = {fmt_p(table[a]['p_adjusted'])})" for a in below],
        "Not distinguishable from it: ": [
            f"{labels[a]} (difference {fmt(0.0 - table[a]['difference'] + 0.0)}"  # never "-0.000"
            f"{'; within the seed-to-seed spread' if table[a]['within_seed_spread'] else ''}, "
            f"p = {fmt_p(table[a]['p_adjusted'])})" for a in tied],
    }
    text += [head + ", ".join(items) + "." for head, items in clauses.items() if items]
    spread = [a for a in order[1:] if table[a]["within_seed_spread"]]
    if spread:
        text.append(f"{len(spread)} of {len(order) - 1} differences to the best are within the seed-to-seed spread: "
                    "the ranking of those arms could change with other training seeds.")
    return text


def tradeoff_section(table: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Markdown of "Best trade-offs" ([] when the job evaluates one condition only: the front is then the top)."""
    names = list(dict.fromkeys(c for row in table.values() for c in row["conditions"]))
    if len(names) < 2:
        return []
    head = " | ".join(f"{s}" + ("" if v == "original" else f" ({v})") for s, v in names)
    lines = ["## Best trade-offs", "",
             "Arms no other arm beats on every evaluated condition (suite x instruction; success rates pooled over "
             "seeds, point estimates). For every other arm, some arm is as good on every condition and better on "
             "one.", "",
             f"| arm | best trade-off | {head} |", "|---|---|" + "---|" * len(names)]
    for arm in _ordered(table):
        rates = table[arm]["conditions"]
        lines.append(f"| {labels[arm]} | {'yes' if table[arm]['best_tradeoff'] else 'no'} | "
                     + " | ".join(fmt(rates.get(c)) for c in names) + " |")
    return lines + [""]


def cost_section(results: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[str]:
    """Markdown of "Cost and provenance" (one row per point; [] when no point has a cost record)."""
    rows = []
    for label, res in zip(labels, results):
        cost, fp = res.get("cost"), (res.get("data_fingerprint") or {}).get("fingerprint")
        if not isinstance(cost, Mapping):
            continue
        versions = (res.get("summary") or {}).get("versions") or {}
        rows.append(f"| {label} | {fmt(cost.get('train_wall_s'), 1)} | {fmt(cost.get('rollout_wall_s'), 1)} | "
                    f"{fmt(cost.get('episodes_per_hour'), 1)} | {cost.get('train_device') or '-'} | "
                    f"{cost.get('rollout_device') or '-'} | {'rlds:' + fp if fp else '-'} | "
                    + (", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "-") + " |")
    if not rows:
        return []
    return ["## Cost and provenance", "",
            "Training: the logged optimiser-step times of the point's run (a run reused from `runs_dir` reports the "
            "time of the run that trained it). Rollouts: wall time of the calls that ran the point's episodes. Two "
            "rank files or reports compare safely where the dataset fingerprints and simulator versions agree.", "",
            "| point | training (s) | rollouts (s) | episodes / h | training device | rollout device | datasets "
            "| simulator |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]
