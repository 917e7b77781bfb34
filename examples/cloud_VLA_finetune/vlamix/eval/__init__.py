"""vlamix.eval: LIBERO rollout evaluation and success-rate statistics.

Modules:
    vlamix.eval.plan     ``EpisodeSpec``, ``plan_episodes``, ``base_suite``, ``suite_max_steps`` (what to run)
    vlamix.eval.rollout  ``evaluate`` (batched policy + env workers, JSONL rows, resume), ``read_rows``, ``run_episode``
    vlamix.eval.server   ``BatchedRollout``: one batched policy in this process, slot refill, faults
    vlamix.eval.envs     ``LiberoSlot`` and the spawned env-worker processes (no torch, no TensorFlow)
    vlamix.eval.expert_policy  ``ExpertPolicy``: the scripted expert behind the policy interface (its ``ExpertSlot``
                         runs it in the env workers); the reference row's rollouts
    vlamix.eval.video    ``EpisodeVideo`` (imageio MP4s), report links
    vlamix.eval.policy   ``VLAPolicy`` (checkpoint -> ``act(images, instructions, suite)``, device, dtype,
                         merged LoRA), ``resolve_device``, ``resolve_unnorm_key``
    vlamix.eval.image    the reference evaluation image path without TensorFlow (JPEG round trip, Lanczos-3 resize)
    vlamix.eval.stats    ``wilson_interval``, ``summarize`` (success rate, 95% CI, per task / suite, worst task)
    vlamix.eval.paired   paired tests of two points on shared episodes (exact McNemar, stratified by task,
                         CMH), Holm, letter groups
    vlamix.eval.sequential  ``PairedSequentialTest``, ``VersusFinished`` (racing: one point against the
                         finished ones), ``race_sequential``, ``race_paired``: racing decisions whose error
                         holds at every look (exact error spending on the discordant pairs)

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
