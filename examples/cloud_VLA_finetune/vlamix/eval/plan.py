"""The rollout plan: which LIBERO episodes an evaluation runs, validated before any env is built.

An evaluation is a list of :class:`EpisodeSpec` (suite, task, trial index = init-state index,
instruction, instruction variant), ordered by suite, instruction variant, task id, episode index.
Suites are any suite of the installed LIBERO registry that derives from a standard one, including
the LIBERO-PRO perturbation suites (``libero_spatial_swap``, ...; ``vlamix suites`` lists them); step
limits and the norm-stats key follow :func:`base_suite`. A suite that is registered but whose BDDL
or init-state files are not installed fails in :func:`check_suites`, before any env is built. The plan decides what runs; the rollout
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

from vlamix.core.constants import LIBERO_SUITES
from vlamix.core.suites import INSTRUCTION_VARIANTS, check_suites, suite_info, task_instruction

__all__ = ["EpisodeSpec", "plan_episodes"]

@dataclass(frozen=True)
class EpisodeSpec:
    """One rollout episode to run.

    Attributes:
        suite: LIBERO task suite, e.g. "libero_spatial" or a perturbation suite "libero_spatial_swap".
        task_id: task index in the suite.
        episode_index: index of the episode among the task's trials (0-based).
        init_state_index: index of the suite's fixed init state used (= episode_index).
        instruction: the task's language instruction (for a suite whose perturbation changes the
            language, ``_lan``/``_task``, the instruction of its BDDL file).
        instruction_variant: one of :data:`INSTRUCTION_VARIANTS`; how the prompt is built from
            ``instruction`` (the policy passes it on as ``variants=``).
    """

    suite: str
    task_id: int
    episode_index: int
    init_state_index: int
    instruction: str
    instruction_variant: str = "original"

    @property
    def key(self) -> tuple:
        """Identifies the episode in the JSONL file: ``(suite, task_id, episode_index)``, plus the
        instruction variant when it is not "original" (so rows of older runs keep their keys)."""
        if self.instruction_variant == "original":
            return (self.suite, self.task_id, self.episode_index)
        return (self.suite, self.task_id, self.episode_index, self.instruction_variant)


def plan_episodes(
    suites: str | Sequence[str],
    tasks: int | Sequence[int] | None = None,
    trials_per_task: int = 1,
    instruction_variants: str | Sequence[str] = ("original",),
    variant_suites: Sequence[str] | None = None,
) -> list[EpisodeSpec]:
    """List the episodes of an evaluation, validating every name and index before any env is built.

    Args:
        suites: one suite name or several: any suite of the installed LIBERO registry derived from
            a standard suite (``vlamix suites`` lists them), e.g. "libero_spatial", "libero_spatial_swap".
        tasks: None = every task of each suite; an int N = the first N task ids; a sequence = those
            task ids (in every suite).
        trials_per_task: episodes per task; episode k starts from init state k, so at most the
            number of init states of the task (50 in the standard suites).
        instruction_variants: one or several of :data:`INSTRUCTION_VARIANTS`; each is a separate set
            of episodes on the same init states.
        variant_suites: the suites on which the variants other than "original" run (None = all of
            ``suites``); each must be one of ``suites``.
    Returns:
        EpisodeSpecs ordered by suite, instruction variant (as given), task id, episode index.
    Raises:
        ValueError: unknown suite (lists the standard suites), task id out of range, N larger than
            the suite, duplicate ids, suites or variants, unknown variant, or trials outside
            [1, n_init_states].
        SuiteUnavailableError: a registered suite whose task files are not installed.
    """
    if isinstance(suites, str):
        suites = [suites]
    suites = list(suites)
    if not suites:
        raise ValueError(f"suites: need at least one task suite; standard suites: {', '.join(LIBERO_SUITES)}")
    if isinstance(instruction_variants, str):
        instruction_variants = [instruction_variants]
    variants = list(instruction_variants)
    bad = [v for v in variants if v not in INSTRUCTION_VARIANTS]
    if bad or not variants or len(set(variants)) != len(variants):
        raise ValueError(f"instruction_variants: got {variants}; allowed (each at most once): {', '.join(INSTRUCTION_VARIANTS)}")
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
    check_suites(tuple(suites))
    if variant_suites is not None and (isinstance(variant_suites, str) or not set(variant_suites) <= set(suites)):
        raise ValueError(f"variant_suites: got {variant_suites!r}; must be a list of suites among {suites}")

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
            bad_ids = [t for t in tasks if not 0 <= int(t) < n_tasks]
            if bad_ids:
                raise ValueError(f"tasks: task ids {bad_ids} outside [0, {n_tasks}) for suite '{suite}'")
            task_ids = [int(t) for t in tasks]
        per_task = []
        for task_id in task_ids:
            n_init = len(bench.get_task_init_states(task_id))
            if trials_per_task > n_init:
                raise ValueError(
                    f"trials_per_task={trials_per_task} exceeds the {n_init} init states of {suite} task {task_id}"
                )
            per_task.append((task_id, task_instruction(suite, task_id, bench)))
        for variant in variants:
            if variant != "original" and variant_suites is not None and suite not in variant_suites:
                continue
            for task_id, instruction in per_task:
                specs += [EpisodeSpec(suite, task_id, k, k, instruction, variant) for k in range(trials_per_task)]
    return specs
