"""The rollout plan: which LIBERO episodes an evaluation runs, validated before any env is built.

An evaluation is a list of :class:`EpisodeSpec` (suite, task, trial index = init-state index,
instruction), ordered by suite, task id, episode index. The plan decides what runs; the rollout
runtime (:mod:`vlamix.eval.rollout`) decides only where and when, so results never depend on
scheduling.

Layout of :mod:`vlamix.eval`:
    plan.py     what to run (episodes, suites)          rollout.py  env workers + the policy loop
    policy.py   checkpoint -> batched actions           stats.py    success rates and statistics
    image.py    the reference image path (no TF)        offline.py  teacher-forced held-out metrics
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vlamix.constants import LIBERO_SUITES, SUITE_MAX_STEPS

__all__ = ["EpisodeSpec", "base_suite", "plan_episodes", "suite_info", "suite_max_steps"]


@dataclass(frozen=True)
class EpisodeSpec:
    """One rollout episode to run.

    Attributes:
        suite: LIBERO task suite, e.g. "libero_spatial".
        task_id: task index in the suite.
        episode_index: index of the episode among the task's trials (0-based).
        init_state_index: index of the suite's fixed init state used (= episode_index).
        instruction: the task's language instruction.
    """

    suite: str
    task_id: int
    episode_index: int
    init_state_index: int
    instruction: str

    @property
    def key(self) -> tuple[str, int, int]:
        """(suite, task_id, episode_index): identifies the episode in the JSONL file."""
        return (self.suite, self.task_id, self.episode_index)


def suite_info(suite: str):
    """LIBERO's benchmark object of a suite (no simulator is started)."""
    from libero.libero import benchmark

    return benchmark.get_benchmark_dict()[suite]()


def plan_episodes(
    suites: str | Sequence[str],
    tasks: int | Sequence[int] | None = None,
    trials_per_task: int = 1,
) -> list[EpisodeSpec]:
    """List the episodes of an evaluation, validating every name and index before any env is built.

    Args:
        suites: one suite name or several, each in :data:`vlamix.constants.LIBERO_SUITES`.
        tasks: None = every task of each suite; an int N = the first N task ids; a sequence = those
            task ids (in every suite).
        trials_per_task: episodes per task; episode k starts from init state k, so at most the
            number of init states of the task (50 in the standard suites).
    Returns:
        EpisodeSpecs ordered by suite, task id, episode index.
    Raises:
        ValueError: unknown suite (lists the allowed names), task id out of range, N larger than
            the suite, duplicate ids or suites, or trials outside [1, n_init_states].
    """
    if isinstance(suites, str):
        suites = [suites]
    suites = list(suites)
    if not suites:
        raise ValueError(f"suites: need at least one task suite; allowed: {', '.join(LIBERO_SUITES)}")
    for suite in suites:
        if suite not in LIBERO_SUITES:
            raise ValueError(f"suites: unknown LIBERO task suite {suite!r}; allowed: {', '.join(LIBERO_SUITES)}")
    if len(set(suites)) != len(suites):
        raise ValueError(f"suites: duplicate suite names in {suites}")
    if isinstance(trials_per_task, bool) or not isinstance(trials_per_task, int) or trials_per_task < 1:
        raise ValueError(f"trials_per_task must be an integer >= 1, got {trials_per_task!r}")
    if tasks is not None and not isinstance(tasks, int):
        tasks = list(tasks)
        if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) for t in tasks) or not tasks:
            raise ValueError(f"tasks must be None, an integer N (first N tasks) or a list of task ids, got {tasks!r}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks: duplicate task ids in {tasks}")
    elif isinstance(tasks, bool) or (isinstance(tasks, int) and tasks < 1):
        raise ValueError(f"tasks must be None, an integer N >= 1 (first N tasks) or a list of task ids, got {tasks!r}")

    specs: list[EpisodeSpec] = []
    for suite in suites:
        bench = suite_info(suite)
        n_tasks = bench.n_tasks
        if tasks is None:
            task_ids = list(range(n_tasks))
        elif isinstance(tasks, int):
            if tasks > n_tasks:
                raise ValueError(f"tasks: first {tasks} tasks requested but suite '{suite}' has {n_tasks}")
            task_ids = list(range(tasks))
        else:
            bad = [t for t in tasks if not 0 <= int(t) < n_tasks]
            if bad:
                raise ValueError(f"tasks: task ids {bad} outside [0, {n_tasks}) for suite '{suite}'")
            task_ids = [int(t) for t in tasks]
        for task_id in task_ids:
            n_init = len(bench.get_task_init_states(task_id))
            if trials_per_task > n_init:
                raise ValueError(
                    f"trials_per_task={trials_per_task} exceeds the {n_init} init states of {suite} task {task_id}"
                )
            instruction = bench.get_task(task_id).language
            specs += [EpisodeSpec(suite, task_id, k, k, instruction) for k in range(trials_per_task)]
    return specs


def base_suite(suite: str) -> str:
    """The standard LIBERO task suite that ``suite`` is (or perturbs).

    Only the standard suites are known for now; perturbation suites (LIBERO-PRO) map to the suite they
    perturb once registered here. Step limits and the norm-stats key follow the base suite.

    Raises:
        ValueError: unknown suite (lists the allowed names).
    """
    if suite in LIBERO_SUITES:
        return suite
    raise ValueError(f"unknown LIBERO task suite {suite!r}; allowed: {', '.join(LIBERO_SUITES)}")


def suite_max_steps(suite: str) -> int:
    """Policy-step limit of ``suite``: that of its base suite (:data:`vlamix.constants.SUITE_MAX_STEPS`).

    Raises:
        ValueError: unknown suite.
    """
    return SUITE_MAX_STEPS[base_suite(suite)]
