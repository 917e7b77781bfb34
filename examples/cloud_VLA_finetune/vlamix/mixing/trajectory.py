"""The mixture-weight trajectory of a training run: saved as JSON lines and plotted.

Files (in the run folder, copied into every checkpoint)::

    mixing_weights.jsonl   one row per weight change (MixingController.history): step, reason,
                           weights {group: float}, group_loss, signal
    mixing_weights.png     the weights over optimiser steps (step plot, one line per group)
    mixing_summary.json    strategy label, groups, initial / final / time-averaged weights, realised
                           proportions, sources, filter counts, skill table, loss_weighting with
                           initial_loss_weights / loss_weights (None for "none") (checkpoints only)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from vlamix.core.io import atomic_write_jsonl, read_jsonl

TRAJECTORY_FILE = "mixing_weights.jsonl"
PLOT_FILE = "mixing_weights.png"
SUMMARY_FILE = "mixing_summary.json"


def write_trajectory(history: Sequence[Mapping[str, Any]], path: str) -> str:
    """Write the rows as JSON lines, atomically (the whole history each time; it is small)."""
    return atomic_write_jsonl(path, history)


def read_trajectory(path: str) -> list[dict[str, Any]]:
    """Rows of a ``mixing_weights.jsonl``.

    Raises:
        FileNotFoundError: no such file.
    """
    return read_jsonl(path)


def plot_trajectory(history: Sequence[Mapping[str, Any]], path: str, *, total_steps: int, title: str = "") -> str:
    """Step plot of every group's weight from step 0 to ``total_steps``; returns ``path`` (PNG).

    Group names longer than 40 characters (task instructions) are shortened in the legend.
    """
    import matplotlib  # matplotlib only when a plot is drawn (Agg backend chosen first)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"), as above

    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    draw_trajectory(ax, history, total_steps, label=lambda g: g if len(g) <= 40 else g[:37] + "...", fontsize=7)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("mixture weight")
    ax.set_title(title or "mixture weights", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_trajectory(ax, history: Sequence[Mapping[str, Any]], total_steps: int, *, label=str, fontsize: int = 7) -> None:
    """Draw every group's weight as a step line from step 0 to ``total_steps`` on a matplotlib ``ax``
    (y in [0, 1]); ``label(group)`` gives the legend text."""
    steps = [int(r["step"]) for r in history]
    end = max([int(total_steps), *steps])
    for g in (history[0]["weights"] if history else ()):
        values = [float(r["weights"][g]) for r in history]
        ax.step([*steps, end], [*values, values[-1]], where="post", label=label(g))
    ax.set_xlim(0, max(end, 1))
    ax.set_ylim(0, 1)
    if history:
        ax.legend(fontsize=fontsize, loc="best")
