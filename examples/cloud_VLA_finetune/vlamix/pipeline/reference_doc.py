"""The configuration reference (``docs/configuration.md``), generated from the fields' own declarations.

Every field of :class:`vlamix.pipeline.config.BenchConfig` is declared once with
:func:`vlamix.core.settings.setting` (type, default, role, unit, allowed values, a one-line meaning); this
module renders those declarations as Markdown, one table per section. ``vlamix fields`` prints it,
``vlamix fields --write docs/configuration.md`` writes it, and ``tests/test_config_docs.py`` fails when the
file in the repository differs from what the code generates (a field added or changed without regenerating).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from vlamix.core.settings import ROLES, default_of, role, settings_of, yaml_name
from vlamix.pipeline.config import SECTIONS

#: What a role means for the keys, as the reference's "key" column says it.
KEY_TEXT = {
    "train": "train key",
    "episodes": "eval key",
    "eval": "none (scoring)",
    "runtime": "none (runtime)",
}

HEADER = """# Configuration reference (`vla_algorithm.yaml` hyperparameters)

Generated from the field declarations in `vlamix/*/settings.py` by `vlamix fields --write docs/configuration.md`;
do not edit by hand (`tests/test_config_docs.py` fails when this file is stale).

Each field can be a grid axis: list several `values` in `vla_algorithm.yaml`. Relative paths are relative to the
directory the job is started from (the Ianvs root, or this repository's root). An invalid value fails before any
work starts, with an error naming the field and the allowed values.

The **key** column says what a change of the field does to stored work:
{roles}

`null` is YAML's None. A field listed twice in one algorithm file is an error.
"""


def _value(value: Any) -> str:
    """A default as YAML shows it."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and math.isinf(value):
        return "`.inf`"
    if isinstance(value, (tuple, list, dict)):
        return "`" + json.dumps(value if not isinstance(value, tuple) else list(value)) + "`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _key(f: dataclasses.Field) -> str:
    text = KEY_TEXT[role(f)]
    if f.metadata.get("key_omits_default"):
        text += " (only when not the default: older runs stay valid)"
    if f.metadata.get("may_change_on_resume"):
        text += "; may change when a run resumes"
    return text


def _allowed(f: dataclasses.Field) -> str:
    if f.metadata.get("allowed"):
        return f.metadata["allowed"]
    return "true, false" if str(f.type) == "bool" else ""


def configuration_reference() -> str:
    """The whole reference as Markdown (ends with a newline)."""
    roles = "\n".join(f"- {KEY_TEXT[r]}: {text}" for r, text in ROLES.items())
    out = [HEADER.format(roles=roles)]
    for attr, cls in SECTIONS:
        title = (cls.__doc__ or attr).strip().splitlines()[0]
        out.append(f"## `{attr}`: {title}\n")
        out.append("| field | type | default | allowed | unit | key | meaning |")
        out.append("|---|---|---|---|---|---|---|")
        for f in settings_of(cls):
            out.append("| " + " | ".join(_cell(c) for c in (
                f"`{yaml_name(f)}`", f"`{f.type}`", _value(default_of(f)), _allowed(f), f.metadata.get("unit", ""),
                _key(f), f.metadata["doc"])) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
