"""Benchmark report: a leaderboard table, per-task results and plots from the points of a job.

Input is one result record per benchmark point, as :meth:`vlamix.pipeline.point.VLADataSelect.predict`
returns it (``{"config", "summary", "offline", ...}``). Output, in ``out_dir``:

- ``report.md``: leaderboard (success rate with its Wilson 95% interval and N, worst task, offline
  metrics, the letter group and P(best) of the point's arm), per-task success rates, and the simulator versions;
- ``success_rate.png``: success rate and 95% interval per mixture;
- ``per_task.png``: per-task success rate heat map (mixtures x tasks, with N per cell);
- the evaluation-kit sections of :mod:`vlamix.report.kit` (SR versus ratio, significance letters,
  robustness and instruction-ablation tables, offline metrics per dataset, loss curves, failure
  videos, package versions, "what the data supports");
- ``mixing_weights.png``: the mixture-weight trajectory of every point (one panel per point), and
  in ``report.md`` the initial / final / time-averaged weights, realised proportions and the
  action-filter counts per dataset.

Usage::

    from vlamix.report.markdown import write_report
    write_report(results, "workspace/vla_dataselect_job/report")
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
from prettytable import PrettyTable

from vlamix.mixing.trajectory import draw_trajectory
from vlamix.pipeline.arms import arm_of, arm_table
from vlamix.report.kit import kit_sections, unique_labels
from vlamix.report.sweep import sweep_section
from vlamix.report.videos import report_lines

logger = logging.getLogger(__name__)


def leaderboard_rows(results: Sequence[dict[str, Any]], ranked: bool = False,
                     table: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One flat row per point, sorted by success rate (desc), then CI lower bound (desc); with
    ``ranked=True`` the input order is kept (the caller ranked the points, e.g. by the job's
    ``rank.sort_by``).

    Row keys: mixture, success_rate, ci_low, ci_high, n_episodes, n_errors, worst_task_success_rate,
    action_token_accuracy, action_l1, group (letters of the point's arm), prob_best (P(best) of the point's arm):
    from ``table`` (:func:`vlamix.pipeline.arms.arm_table`, computed from ``results`` when None); None for points
    without episodes and for reference rows.
    """
    table = arm_table(results) if table is None else table
    rows = []
    for res, label in zip(results, unique_labels(results)):
        summary, offline = res.get("summary", {}), res.get("offline", {})
        arm = table.get(arm_of(res)) if isinstance(res.get("episodes"), list) and not res.get("reference") else None
        rows.append(
            {
                "mixture": label,
                "success_rate": summary.get("success_rate"),
                "ci_low": summary.get("ci_low"),
                "ci_high": summary.get("ci_high"),
                "n_episodes": summary.get("n_episodes"),
                "n_errors": summary.get("n_errors"),
                "worst_task_success_rate": summary.get("worst_task_success_rate"),
                "action_token_accuracy": offline.get("action_token_accuracy"),
                "action_l1": offline.get("action_l1"),
                "group": arm["group"] if arm else None,
                "prob_best": arm["p_best"] if arm else None,
            }
        )
    if not ranked:
        rows.sort(key=lambda r: (-(r["success_rate"] or 0.0), -(r["ci_low"] or 0.0)))
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def leaderboard_table(results: Sequence[dict[str, Any]], ranked: bool = False,
                      arms: Mapping[str, Mapping[str, Any]] | None = None):
    """A ``prettytable.PrettyTable`` of :func:`leaderboard_rows` (rank 1 = first row); ``group``: points sharing a
    letter are not distinguishable (Holm, alpha 0.05; with training seeds, on their arms' aggregated evidence),
    ``P(best)``: probability that the point's arm is the best (:mod:`vlamix.eval.arms`)."""
    table = PrettyTable()
    table.field_names = ["rank", "strategy / mixture", "success rate", "95% CI", "N", "errors", "worst task SR", "action acc",
                         "action L1", "group", "P(best)"]
    for i, row in enumerate(leaderboard_rows(results, ranked, arms), start=1):
        ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if row["ci_low"] is not None else "-"
        table.add_row(
            [i, row["mixture"], _fmt(row["success_rate"]), ci, _fmt(row["n_episodes"]), _fmt(row["n_errors"]),
             _fmt(row["worst_task_success_rate"]), _fmt(row["action_token_accuracy"]), _fmt(row["action_l1"], 4),
             _fmt(row["group"]), _fmt(row["prob_best"], 2)]
        )
    return table


def _per_task_matrix(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[list[float | None]]]:
    tasks: list[str] = []
    for res in results:
        for task in res.get("summary", {}).get("per_task", {}):
            if task not in tasks:
                tasks.append(task)
    labels = unique_labels(results)
    matrix = [[r.get("summary", {}).get("per_task", {}).get(t, {}).get("success_rate") for t in tasks] for r in results]
    return labels, tasks, matrix


def write_report(
    results: Sequence[dict[str, Any]], out_dir: str, title: str = "vlamix data-mixture benchmark", ranked: bool = False
) -> str:
    """Write ``report.md`` and the plots for ``results`` into ``out_dir``; returns the report path.

    ``ranked``: keep the order of ``results`` (already ranked) instead of sorting by success rate.
    """
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    os.makedirs(out_dir, exist_ok=True)
    arms = arm_table(results)
    rows = leaderboard_rows(results, ranked, arms)
    labels, tasks, matrix = _per_task_matrix(results)

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows)), 3.2))
    srs = [r["success_rate"] or 0.0 for r in rows]
    lo = [max(0.0, s - (r["ci_low"] or s)) for s, r in zip(srs, rows)]
    hi = [max(0.0, (r["ci_high"] or s) - s) for s, r in zip(srs, rows)]
    ax.bar(range(len(rows)), srs, yerr=[lo, hi], capsize=4, color="#4477aa")
    ax.set_xticks(range(len(rows)), [f"{r['mixture']}\nN={r['n_episodes']}" for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "success_rate.png"), dpi=120)
    plt.close(fig)

    if tasks:
        data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(tasks) + 2), max(2.0, 0.4 * len(labels) + 1)))
        im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if not np.isnan(data[i, j]):
                    n = results[i].get("summary", {}).get("per_task", {}).get(tasks[j], {}).get("n")
                    ax.text(j, i, f"{data[i, j]:.2f}" + (f"\nN={n}" if n else ""), ha="center", va="center", fontsize=6,
                            color="white" if data[i, j] < 0.5 else "black")
        fig.colorbar(im, ax=ax, label="success rate")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "per_task.png"), dpi=120)
        plt.close(fig)

    board = leaderboard_table(results, ranked, arms).get_string()
    lines = [f"# {title}", "", "## Leaderboard", "", "```", board, "```", ""]
    if tasks:
        lines += ["## Per-task success rate", "", "| mixture | " + " | ".join(tasks) + " |",
                  "|---" * (len(tasks) + 1) + "|"]
        for label, row in zip(labels, matrix):
            lines.append(f"| {label} | " + " | ".join(_fmt(v, 2) for v in row) + " |")
        lines.append("")
    lines += _strategy_section(results, out_dir)
    lines += report_lines(results, out_dir)  # rollout errors and episode videos
    lines += kit_sections(results, out_dir)  # evaluation kit: SR vs ratio, significance, robustness, ...
    lines += sweep_section(results, out_dir)  # sweeps over a numeric hyperparameter (issue 14)
    versions = next((r.get("summary", {}).get("versions") for r in results if r.get("summary", {}).get("versions")), None)
    if versions:
        lines += ["## Simulator stack", ""] + [f"- {k}: {v}" for k, v in versions.items()] + [""]
    lines += ["![success rate](success_rate.png)", ""] + (["![per task](per_task.png)", ""] if tasks else [])
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    logger.info("report written to %s", path)
    return path


def _weights_text(weights: dict[str, float] | None) -> str:
    if not weights:
        return "-"
    return ", ".join(f"{_short(k)} {v:.3f}" for k, v in weights.items())


def _short(name: str) -> str:
    name = name.replace("libero_", "").replace("_no_noops", "")
    return name if len(name) <= 32 else name[:29] + "..."


def _strategy_section(results: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """Markdown on the data-ratio strategies and ``mixing_weights.png`` (points with mixing info)."""
    points = [(label, r["mixing"]) for label, r in zip(unique_labels(results), results)
              if isinstance(r.get("mixing"), dict) and r["mixing"].get("final_weights")]
    if not points:
        return []
    lines = ["## Data-ratio strategies", "",
             "| strategy | level | initial weights | final weights | time-averaged weights | realised proportions | loss weights |",
             "|---|---|---|---|---|---|---|"]
    for label, mixing in points:
        lines.append(
            f"| {label} | {mixing.get('mixing_level', '-')} | {_weights_text(mixing.get('initial_weights'))} | "
            f"{_weights_text(mixing.get('final_weights'))} | {_weights_text(mixing.get('time_averaged_weights'))} | "
            f"{_weights_text(mixing.get('realised_proportions'))} | {_weights_text(mixing.get('loss_weights'))} |"
        )
    lines += ["", "### Action filtering (training steps)", "",
              "| strategy | dataset | total | kept | nonfinite | out_of_range | near_zero_motion | dataset_list |",
              "|---|---|---|---|---|---|---|---|"]
    for label, mixing in points:
        for dataset, c in (mixing.get("filter_counts") or {}).items():
            lines.append(f"| {label} | {_short(dataset)} | " + " | ".join(str(c.get(k, 0)) for k in (
                "total", "kept", "nonfinite", "out_of_range", "near_zero_motion", "dataset_list")) + " |")
    lines.append("")
    trajectories = [(label, mixing.get("trajectory") or []) for label, mixing in points]
    if any(t for _, t in trajectories):
        _plot_trajectories(trajectories, [m.get("step") or 0 for _, m in points], os.path.join(out_dir, "mixing_weights.png"))
        lines += ["![mixture weights during training](mixing_weights.png)", ""]
    return lines


def _plot_trajectories(trajectories: Sequence[tuple[str, list]], steps: Sequence[int], path: str) -> None:
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    n = len(trajectories)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (label, history), total in zip(axes.flat, trajectories, steps):
        draw_trajectory(ax, history, total, label=_short, fontsize=6)
        ax.set_title(label if len(label) <= 48 else label[:45] + "...", fontsize=7)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
