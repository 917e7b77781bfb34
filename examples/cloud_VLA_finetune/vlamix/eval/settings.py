"""The evaluation sections of a benchmark point: which episodes (:class:`EvalConfig`) and the rollout runtime
(:class:`RolloutConfig`: where the policy runs, env workers, faults, videos)."""

from __future__ import annotations

from dataclasses import dataclass

from vlamix.core.constants import LIBERO_SUITES
from vlamix.core.errors import ConfigError
from vlamix.core.settings import check_bool, check_choice, check_int, check_positive, check_range, setting
from vlamix.core.suites import INSTRUCTION_VARIANTS, base_suite

#: Rollout runtime choices.
EVAL_DTYPES = ("auto", "fp32", "bf16", "fp16")
EVAL_VIDEOS = ("none", "failures", "all")


@dataclass(frozen=True)
class EvalConfig:
    """Which LIBERO episodes a point is evaluated on, and the offline metrics."""

    eval_suites: tuple[str, ...] | None = setting(
        None, role="episodes", allowed="LIBERO / LIBERO-PRO suites (`vlamix suites`)",
        doc="task suites to roll out in; null = the suites of the datasets trained on")
    eval_tasks: int | None = setting(2, role="episodes", unit="tasks", doc="first N task ids of each suite (null = all)", allowed=">= 1, null")
    trials_per_task: int = setting(1, role="episodes", unit="episodes", doc="episodes per task, each from the next init state", allowed=">= 1")
    eval_max_steps: int | None = setting(
        None, role="episodes", unit="policy steps", doc="episode step limit (null = the suite's reference limit)", allowed=">= 1, null")
    num_steps_wait: int = setting(10, role="episodes", unit="steps", doc="dummy-action steps before the policy acts", allowed=">= 0")
    eval_seed: int = setting(7, role="episodes", allowed="[0, 2**32)", doc="seed of the environments")
    center_crop: bool | None = setting(
        None, role="episodes", allowed="true, false, null (auto)",
        doc="centre-crop 90% of the image as OpenVLA's LIBERO eval; null = follow the checkpoint's image_aug")
    eval_instruction: tuple[str, ...] = setting(
        ("original",), role="eval", allowed=", ".join(INSTRUCTION_VARIANTS),
        doc="instruction ablations, each a separate set of episodes on the same init states")
    eval_instruction_suites: tuple[str, ...] | None = setting(
        None, role="eval", doc="suites on which the variants other than original run (null = every evaluation suite)")
    offline_max_frames: int | None = setting(
        None, role="eval", unit="frames", doc="held-out frames the offline metrics use at most (null = all)", allowed=">= 1, null")
    open_loop_steps: int | None = setting(
        None, role="episodes", key_omits_default=True, unit="actions", allowed="null or 1..action_chunk",
        doc="actions of a predicted chunk executed before the next observation (null = the whole chunk, as "
            "OpenVLA-OFT's LIBERO eval: 8)")

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field (suite names by their form; whether they
        are installed is an environment check)."""
        if self.eval_suites is not None:
            if not isinstance(self.eval_suites, tuple) or not self.eval_suites or not all(isinstance(s, str) for s in self.eval_suites):
                raise ConfigError("eval_suites", f"got {self.eval_suites!r}; allowed: null or a list of task suites, e.g. {list(LIBERO_SUITES[:2])}")
            for suite in self.eval_suites:
                try:
                    base_suite(suite)
                except ValueError as err:
                    raise ConfigError("eval_suites", str(err)) from err
            if len(set(self.eval_suites)) != len(self.eval_suites):
                raise ConfigError("eval_suites", f"lists a suite twice: {list(self.eval_suites)}; list each suite once")
        variants = self.eval_instruction
        if not isinstance(variants, tuple) or not variants or len(set(variants)) != len(variants) or any(
            v not in INSTRUCTION_VARIANTS for v in variants
        ):
            raise ConfigError("eval_instruction", f"got {variants!r}; allowed: a non-empty list of distinct values from {', '.join(INSTRUCTION_VARIANTS)}")
        if self.eval_tasks is not None:
            check_int("eval_tasks", self.eval_tasks, 1)
        check_int("trials_per_task", self.trials_per_task, 1)
        if self.eval_max_steps is not None:
            check_int("eval_max_steps", self.eval_max_steps, 1)
        check_int("num_steps_wait", self.num_steps_wait, 0)
        check_int("eval_seed", self.eval_seed, 0)
        if self.eval_seed >= 2**32:
            raise ConfigError("eval_seed", f"must be an integer in [0, 2**32) (NumPy's seed range), got {self.eval_seed!r}")
        if self.offline_max_frames is not None:
            check_int("offline_max_frames", self.offline_max_frames, 1)
        if self.center_crop is not None:
            check_bool("center_crop", self.center_crop)
        if self.open_loop_steps is not None:
            check_int("open_loop_steps", self.open_loop_steps, 1)


@dataclass(frozen=True)
class RolloutConfig:
    """The rollout runtime (:mod:`vlamix.eval.server`, :mod:`vlamix.eval.envs`): never changes a result."""

    eval_workers: int = setting(2, role="runtime", unit="processes", doc="env-worker processes (LIBERO environments)", allowed=">= 1")
    envs_per_worker: int = setting(
        1, role="runtime", allowed="1 or an even number",
        doc="environments per worker; with 2 or more, double buffering and a policy batch of half the slots")
    eval_device: str = setting("auto", role="runtime", allowed="auto, cpu, cuda, cuda:N", doc="where the rollout policy runs")
    eval_dtype: str = setting(
        "auto", role="runtime", allowed=", ".join(EVAL_DTYPES), doc="policy dtype: auto = bf16 on CUDA, fp32 on the CPU")
    eval_episode_timeout_s: float | None = setting(
        1800.0, role="runtime", unit="s", doc="seconds of an episode's environment work before its worker is replaced (null = none)", allowed="> 0, null")
    eval_max_attempts: int = setting(2, role="runtime", doc="runs of an episode after infrastructure faults before it is an error row", allowed=">= 1")
    eval_max_error_fraction: float = setting(
        0.1, role="runtime", allowed="[0, 1]", doc="a point whose share of error episodes exceeds this is flagged")
    eval_videos: str = setting("none", role="runtime", allowed=", ".join(EVAL_VIDEOS), doc="MP4s of the policy camera")
    eval_videos_per_task: int = setting(2, role="runtime", unit="videos", doc="videos kept per task at most", allowed=">= 0")

    def policy_batch_size(self) -> int:
        """Images per policy call (:func:`vlamix.eval.server.policy_batch_size`): ``eval_workers`` in lock-step,
        half the ``eval_workers * envs_per_worker`` slots with double buffering."""
        return self.eval_workers * self.envs_per_worker // (2 if self.envs_per_worker >= 2 else 1)

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field (CUDA availability is an environment check)."""
        check_int("eval_workers", self.eval_workers, 1)
        value = self.eval_device
        if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
            raise ConfigError("eval_device", f"got {value!r}; allowed: auto, cpu, cuda, cuda:N")
        check_choice("eval_dtype", self.eval_dtype, EVAL_DTYPES)
        if self.eval_dtype == "fp16" and self.eval_device == "cpu":
            raise ConfigError("eval_dtype", "fp16 needs a CUDA eval_device; allowed on the CPU: auto, fp32, bf16")
        check_int("envs_per_worker", self.envs_per_worker, 1)
        if self.envs_per_worker > 1 and self.envs_per_worker % 2:
            raise ConfigError("envs_per_worker", f"must be 1 (lock-step) or an even number (double buffering: two equal "
                              f"slot groups), got {self.envs_per_worker}")
        if self.eval_episode_timeout_s is not None:
            check_positive("eval_episode_timeout_s", self.eval_episode_timeout_s)
        check_int("eval_max_attempts", self.eval_max_attempts, 1)
        check_range("eval_max_error_fraction", self.eval_max_error_fraction, 0.0, 1.0)
        check_choice("eval_videos", self.eval_videos, EVAL_VIDEOS)
        check_int("eval_videos_per_task", self.eval_videos_per_task, 0)
