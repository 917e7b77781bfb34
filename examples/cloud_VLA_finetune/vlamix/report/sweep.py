"""Sweep plots of a job report: per-task success rate and held-out action accuracy against a numeric
hyperparameter (e.g. the sampling temperature T of ``benchmarkingjob_temperature_sweep.yaml``).

A *sweep axis* is a numeric :class:`vlamix.pipeline.config.BenchConfig` field (int or float, not bool) that
takes at least two distinct values over the job's points. For each axis the points are split into
*families* by the values of the other fields that vary across the job (e.g. ``loss_weighting``), and
every family gives one line per task (success rate), plus one line of held-out action-token accuracy;
a family with a single value of the axis is drawn as markers. ``inf`` values (``temperature: .inf``)
are drawn one step to the right of the largest finite value and labelled ``inf``.

Files, per axis ``<field>``, in the report folder::

    sweep_<field>.png     left: success rate per task; right: held-out action-token accuracy
    sweep_<field>.json    the plotted series (see :func:`sweep_series`); ``inf`` written as "inf"
    sweep_<field>.csv     the same, one row per plotted point: family, metric, task, x, y

Usage::

    from vlamix.report.sweep import write_sweep_plots
    plots = write_sweep_plots(predictions, "workspace/vla_temperature_sweep/report")
    plots[0].png, plots[0].series
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

#: Config fields never used as a sweep axis (evaluation bookkeeping, not training choices).
_NOT_AXES = ("eval_workers", "eval_seed")


@dataclass
class SweepPlot:
    """One axis's files and data.

    Attributes:
        field: the hyperparameter. png, json, csv: written paths.
        series: plotted lines: ``{"family": str, "metric": "success_rate" | "action_token_accuracy",
            "task": "<suite>/<task_id>" | None, "instruction": str | None, "x": [float | "inf"],
            "y": [float | None]}``, x ascending.
    """

    field: str
    png: str
    json: str
    csv: str
    series: list[dict[str, Any]] = field(default_factory=list)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def sweep_axes(predictions: Sequence[dict[str, Any]]) -> list[str]:
    """Numeric config fields with >= 2 distinct values over ``predictions`` (config order)."""
    configs = [p.get("config") or {} for p in predictions]
    if len(configs) < 2:
        return []
    axes = []
    for name in configs[0]:
        if name in _NOT_AXES:
            continue
        values = [c.get(name) for c in configs]
        if all(_is_number(v) for v in values) and len({float(v) for v in values}) >= 2:
            axes.append(name)
    return axes


def varying_fields(configs: Sequence[dict[str, Any]], skip: Sequence[str] = ()) -> list[str]:
    """Config fields (first-seen order) whose values differ among ``configs``, except those in ``skip``."""
    names = list(dict.fromkeys(n for c in configs for n in c))
    return [n for n in names if n not in skip and len({_key(c.get(n)) for c in configs}) > 1]


def field_text(name: str, value: Any) -> str:
    """``name=value`` as labels show it (floats ``%g``, mixtures ``spatial=1:object=2``)."""
    return f"{name}={_short(value)}"


def _families(predictions: Sequence[dict[str, Any]], axis: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Points grouped by the values of the other varying config fields; label ``a=x, b=y`` ("all" if none)."""
    configs = [p.get("config") or {} for p in predictions]
    varying = varying_fields(configs, skip=(axis,))
    groups: dict[str, list[dict[str, Any]]] = {}
    for p, c in zip(predictions, configs):
        label = ", ".join(field_text(n, c.get(n)) for n in varying) or "all"
        groups.setdefault(label, []).append(p)
    return list(groups.items())


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ":".join(f"{k.replace('libero_', '').replace('_no_noops', '')}={w:g}" for k, w in v.items())
    return str(v)


def _x_out(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


def sweep_series(predictions: Sequence[dict[str, Any]], axis: str) -> list[dict[str, Any]]:
    """The series of axis ``axis`` (see :class:`SweepPlot`): per family, one success-rate line per task
    (tasks in order of appearance) and one ``action_token_accuracy`` line; points without a value
    (task not evaluated, no offline metrics) have ``y = None``. Points with equal x in a family keep
    the first."""
    out: list[dict[str, Any]] = []
    for family, points in _families(predictions, axis):
        by_x: dict[float, dict[str, Any]] = {}
        for p in points:
            by_x.setdefault(float(p["config"][axis]), p)
        xs = sorted(by_x)
        tasks: dict[str, str | None] = {}
        for x in xs:
            for name, entry in ((by_x[x].get("summary") or {}).get("per_task") or {}).items():
                tasks.setdefault(name, entry.get("instruction"))
        for task, instruction in tasks.items():
            ys = [((by_x[x].get("summary") or {}).get("per_task") or {}).get(task, {}).get("success_rate") for x in xs]
            out.append({"family": family, "metric": "success_rate", "task": task, "instruction": instruction,
                        "x": [_x_out(x) for x in xs], "y": ys})  # fmt: skip
        acc = [(by_x[x].get("offline") or {}).get("action_token_accuracy") for x in xs]
        acc = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in acc]
        out.append({"family": family, "metric": "action_token_accuracy", "task": None, "instruction": None,
                    "x": [_x_out(x) for x in xs], "y": acc})  # fmt: skip
    return out


def _positions(series: Sequence[dict[str, Any]]) -> tuple[dict[str, float], bool]:
    """Plot position of every x value (``inf`` one step right of the largest finite one) and whether
    the axis is logarithmic (all finite x > 0 spanning at least a factor of 10)."""
    finite = sorted({float(x) for s in series for x in s["x"] if x != "inf"})
    log = bool(finite) and finite[0] > 0 and finite[-1] / finite[0] >= 10
    pos = {str(float(x)): float(x) for x in finite}
    if finite:
        inf_at = finite[-1] * 2.0 if log else finite[-1] + max((finite[-1] - finite[0]) / 4, 1.0)
    else:
        inf_at = 1.0
    pos["inf"] = inf_at
    return pos, log


def _pos(x: Any, pos: dict[str, float]) -> float:
    return pos["inf"] if x == "inf" else pos[str(float(x))]


def write_sweep_plots(predictions: Sequence[dict[str, Any]], out_dir: str) -> list[SweepPlot]:
    """Write ``sweep_<field>.png/.json/.csv`` for every sweep axis of ``predictions`` into ``out_dir``.

    Args:
        predictions: vlamix results (``{"config", "summary", "offline", ...}``, as
            :meth:`vlamix.pipeline.point.VLADataSelect.predict` returns them).
        out_dir: report folder (created).
    Returns:
        one :class:`SweepPlot` per axis (none when no numeric field varies).
    """
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    plots = []
    for axis in sweep_axes(predictions):
        series = sweep_series(predictions, axis)
        if not series:
            continue
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.join(out_dir, f"sweep_{axis}")
        pos, log = _positions(series)
        families = list(dict.fromkeys(s["family"] for s in series))
        styles = ["-", "--", ":", "-."]
        fig, (ax_sr, ax_acc) = plt.subplots(1, 2, figsize=(11.0, 5.2), dpi=110)
        colours = {}
        for s in series:
            xs = [_pos(x, pos) for x in s["x"]]
            ys = [math.nan if y is None else y for y in s["y"]]
            style = styles[families.index(s["family"]) % len(styles)]
            single = len(xs) == 1
            if s["metric"] == "success_rate":
                colour = colours.setdefault(s["task"], f"C{len(colours) % 10}")
                label = f"{s['task']} ({s['family']})" if len(families) > 1 else s["task"]
                ax_sr.plot(xs, ys, style, marker="s" if single else "o", color=colour, label=label, ms=7 if single else 4)
            else:
                ax_acc.plot(xs, ys, style, marker="s" if single else "o", color="k", label=s["family"], ms=7 if single else 4)
        has_inf = any("inf" in s["x"] for s in series)
        ticks = sorted(v for k, v in pos.items() if k != "inf" or has_inf)
        for ax, ylabel in ((ax_sr, "success rate"), (ax_acc, "held-out action-token accuracy")):
            if log:
                ax.set_xscale("log")
            ax.set_xticks(ticks, [("inf" if t == pos["inf"] else f"{t:g}") for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel(axis)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
        ax_sr.set_ylim(-0.05, 1.05)
        ax_sr.set_title(f"success rate per task against {axis}", fontsize=9)
        ax_acc.set_title(f"offline accuracy against {axis}", fontsize=9)
        fig.tight_layout()
        fig.savefig(base + ".png")
        plt.close(fig)
        with open(base + ".json", "w", encoding="utf-8") as fh:
            json.dump({"field": axis, "series": series}, fh, indent=2)
        with open(base + ".csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["family", "metric", "task", "x", "y"])
            for s in series:
                for x, y in zip(s["x"], s["y"]):
                    writer.writerow([s["family"], s["metric"], s["task"] or "", x, "" if y is None else y])
        plots.append(SweepPlot(axis, base + ".png", base + ".json", base + ".csv", series))
    return plots


def sweep_section(predictions: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """Markdown lines embedding the sweep plots of :func:`write_sweep_plots` (empty without an axis)."""
    lines: list[str] = []
    for plot in write_sweep_plots(predictions, out_dir):
        name = os.path.basename(plot.png)
        lines += [f"## Sweep over {plot.field}", "",
                  f"Per-task success rate and held-out action-token accuracy against `{plot.field}` "
                  f"(data: `{os.path.basename(plot.json)}`, `{os.path.basename(plot.csv)}`).", "",
                  f"![sweep over {plot.field}]({name})", ""]  # fmt: skip
    return lines
