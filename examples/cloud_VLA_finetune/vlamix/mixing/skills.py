"""Skill of a LIBERO task, derived from its language instruction (for ``mixing_level: skill``).

The skill is the first verb of the instruction found in a verb table: "pick up the black bowl ... and
place it on the plate" -> ``pick``; "put the bowl on the stove" -> ``place``; "open the top drawer and
put the bowl inside" -> ``open``; "turn on the stove" -> ``turn``. Instructions with no known verb
get :data:`UNKNOWN_SKILL`.

The mapping is visible and overridable: ``skill_map`` (a :class:`vlamix.pipeline.config.BenchConfig` field)
maps either a single verb to a skill (added to / replacing the table: ``{"grab": "pick"}``) or a
whole lower-cased instruction to a skill (``{"put both the alphabet soup and the tomato sauce in the
basket": "place"}``); whole-instruction entries win. :func:`skill_table` gives the resulting
``{instruction: skill}`` table, which training writes into ``mixing_summary.json``.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

#: Verb -> skill. Covers the verbs of the LIBERO-Spatial/Object/Goal/10/90 instructions.
DEFAULT_SKILL_VERBS: dict[str, str] = {
    "pick": "pick",
    "grab": "pick",
    "lift": "pick",
    "place": "place",
    "put": "place",
    "open": "open",
    "close": "close",
    "shut": "close",
    "push": "push",
    "turn": "turn",
    "stack": "stack",
}
UNKNOWN_SKILL = "other"
_WORD = re.compile(r"[a-z]+")


def _split_map(skill_map: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    verbs = dict(DEFAULT_SKILL_VERBS)
    exact: dict[str, str] = {}
    for key, skill in (skill_map or {}).items():
        key = str(key).strip().lower()
        (verbs if _WORD.fullmatch(key) else exact)[key] = str(skill)
    return verbs, exact


def skill_of(instruction: str, skill_map: Mapping[str, str] | None = None) -> str:
    """Skill of one instruction (see the module docstring).

    Args:
        instruction: language instruction (any case).
        skill_map: overrides, verb -> skill or instruction -> skill.
    Returns:
        the skill name, :data:`UNKNOWN_SKILL` if no verb of the table occurs.
    """
    verbs, exact = _split_map(skill_map)
    text = instruction.strip().lower()
    if text in exact:
        return exact[text]
    for word in _WORD.findall(text):
        if word in verbs:
            return verbs[word]
    return UNKNOWN_SKILL


def skill_table(instructions: Iterable[str], skill_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{instruction: skill}`` for the distinct instructions, in first-seen order."""
    return {text: skill_of(text, skill_map) for text in dict.fromkeys(i.strip().lower() for i in instructions)}
