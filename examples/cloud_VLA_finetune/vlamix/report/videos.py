"""The report's section of rollout errors and episode videos (:mod:`vlamix.eval.video` writes the MP4s)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from vlamix.core.labels import point_label
from vlamix.eval.rollout import read_rows


def report_lines(results: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """Markdown section "Rollout errors and videos" of the job report: per point the error
    episodes (flagged when over the point's ``eval_max_error_fraction``) and links to its videos.

    ``results`` are the points' prediction dicts (``summary``, ``checkpoint``, optional ``episodes``);
    the episode rows are read from ``<checkpoint>/eval/episodes.jsonl`` when not included. Returns []
    when no point has errors or videos.
    """
    lines: list[str] = []
    for res in results:
        summary = res.get("summary") or {}
        checkpoint = res.get("checkpoint")
        rows = res.get("episodes")
        jsonl = os.path.join(checkpoint, "eval", "episodes.jsonl") if checkpoint else None
        if rows is None and jsonl and os.path.isfile(jsonl):
            rows = read_rows(jsonl)
        videos = [r for r in rows or [] if r.get("video")]
        n_errors = int(summary.get("n_errors") or 0)
        if not videos and not n_errors:
            continue
        flag = " **(too many errors: success rate rests on fewer episodes)**" if summary.get("too_many_errors") else ""
        lines.append(f"- {point_label(res)}: {n_errors} error episode(s){flag}")
        for r in videos:
            target = os.path.relpath(os.path.join(os.path.dirname(jsonl), r["video"]), out_dir) if jsonl else r["video"]
            outcome = "success" if r.get("success") else "failure"
            lines.append(f"  - [{r['suite']} task {r['task_id']} trial {r['episode_index']} ({outcome})]({target})")
    return (["## Rollout errors and videos", ""] + lines + [""]) if lines else []
