"""Episode videos: MP4s of the policy camera (imageio + imageio-ffmpeg) and their links in the report.

Env workers (:mod:`vlamix.eval.envs`) write each recorded episode to a temporary file while it runs
(one frame per observation the policy saw, plus the last one: ``steps + 1`` frames of the agent view,
256 px, rotated 180 degrees like the policy's input); the parent keeps it under
``<suite>__task<NN>__trial<NNN>__<success|failure>.mp4`` (:func:`vlamix.eval.server.video_name`)
when ``eval_videos`` and the per-task cap ask for it, else deletes it. Episode rows hold the path
relative to the episodes JSONL's folder (``video``).

Reference: openvla/openvla ``experiments/robot/libero/libero_utils.py`` ``save_rollout_video``
(imageio, 30 fps).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Frames per second of episode videos (as openvla's ``save_rollout_video``).
VIDEO_FPS = 30


class EpisodeVideo:
    """MP4 of one episode, written frame by frame (H.264 via the ffmpeg binary that imageio-ffmpeg ships).

    Args:
        path: output file (its folder is created).
    Raises:
        ImportError: imageio / imageio-ffmpeg not installed (see requirements.txt).
    """

    def __init__(self, path: str):
        import imageio.v2 as imageio

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self.frames = 0
        self.writer = imageio.get_writer(path, fps=VIDEO_FPS, codec="libx264", macro_block_size=1,
                                         ffmpeg_log_level="error")

    def add(self, frame: np.ndarray | None) -> None:
        """Append a frame: uint8 [H, W, 3] (None is skipped)."""
        if frame is not None:
            self.writer.append_data(np.ascontiguousarray(frame))
            self.frames += 1

    def finish(self, final_path: str | None) -> None:
        """Close; move the file to ``final_path``, or delete it when that is None."""
        self.writer.close()
        if final_path is None:
            if os.path.exists(self.path):
                os.remove(self.path)
        else:
            os.replace(self.path, final_path)


def report_lines(results: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """Markdown section "Rollout errors and videos" of the job report: per point the error
    episodes (flagged when over the point's ``eval_max_error_fraction``) and links to its videos.

    ``results`` are the points' prediction dicts (``summary``, ``checkpoint``, optional ``episodes``);
    the episode rows are read from ``<checkpoint>/eval/episodes.jsonl`` when not included. Returns []
    when no point has errors or videos.
    """
    from vlamix.report import point_label

    lines: list[str] = []
    for res in results:
        summary = res.get("summary") or {}
        checkpoint = res.get("checkpoint")
        rows = res.get("episodes")
        jsonl = os.path.join(checkpoint, "eval", "episodes.jsonl") if checkpoint else None
        if rows is None and jsonl and os.path.isfile(jsonl):
            from vlamix.eval.rollout import read_rows

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
