"""vlamix.eval: LIBERO rollout evaluation and success-rate statistics.

Modules:
    vlamix.eval.rollout  ``plan_episodes``, ``evaluate`` (spawn workers, JSONL rows, resume), ``read_rows``
    vlamix.eval.policy   ``VLAPolicy`` (checkpoint -> ``act(images, instructions, suite)``), ``resolve_unnorm_key``
    vlamix.eval.image    the reference evaluation image path without TensorFlow (JPEG round trip, Lanczos-3 resize)
    vlamix.eval.stats    ``wilson_interval``, ``summarize`` (success rate, 95% CI, per task / suite, worst task)

Importing this package imports neither torch, TensorFlow nor the simulator.
"""

from vlamix.eval.image import preprocess_image
from vlamix.eval.policy import VLAPolicy, resolve_unnorm_key
from vlamix.eval.rollout import EpisodeSpec, evaluate, evaluate_checkpoint, plan_episodes, read_rows
from vlamix.eval.stats import summarize, wilson_interval

__all__ = [
    "EpisodeSpec",
    "VLAPolicy",
    "evaluate",
    "evaluate_checkpoint",
    "plan_episodes",
    "preprocess_image",
    "read_rows",
    "resolve_unnorm_key",
    "summarize",
    "wilson_interval",
]
