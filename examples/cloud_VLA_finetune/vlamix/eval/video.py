"""Episode videos: MP4s of the policy camera (imageio + imageio-ffmpeg); their links in the report are
:mod:`vlamix.report.videos`.

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
        import imageio.v2 as imageio  # only when a video is written: env workers and vlamix.eval import without it

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
