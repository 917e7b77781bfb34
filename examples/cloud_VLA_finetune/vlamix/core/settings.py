"""Configuration fields that know their role: the one place that decides which keys a field belongs to.

Every field of every configuration section (:class:`vlamix.data.settings.DataConfig`, ...,
:class:`vlamix.pipeline.config.BenchConfig` composes them) is declared with :func:`setting`, which tags it
with its **role**:

========  ==========================================================================================
role      what a change does
========  ==========================================================================================
train     changes the trained model: the field is part of the train key (a new training run)
episodes  changes which rollout episodes run: part of the eval key (the checkpoint is reused)
eval      changes how a point is evaluated or scored, not the episodes' rows: in no key
runtime   changes where and how fast things run, never a result: in no key
========  ==========================================================================================

Every list the code needs ("which fields make the train key", "which must match when a run resumes",
"which determine the episodes", the configuration reference in ``docs/configuration.md``) is derived
from these tags; none is kept by hand. The flat ``field: values`` form of ``vla_algorithm.yaml`` is
unchanged: each field's YAML name is its name (or ``yaml``).

Also here: the pure value checks the sections share (they raise :class:`vlamix.core.errors.ConfigError`
naming the field and the allowed values).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

from vlamix.core.errors import ConfigError

#: Roles and what a change of such a field does.
ROLES = {
    "train": "changes the trained model: part of the train key",
    "episodes": "changes which rollout episodes run: part of the eval key",
    "eval": "changes how a point is evaluated or scored, not which model or episodes: in no key",
    "runtime": "changes where and how fast it runs, not what it computes: in no key",
}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    role: str,
    doc: str,
    unit: str = "",
    allowed: str = "",
    yaml: str | None = None,
    key_omits_default: bool = False,
    may_change_on_resume: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its role and documentation.

    Args:
        default / default_factory: as :func:`dataclasses.field` (neither: the field is required).
        role: one of :data:`ROLES`.
        doc: one line for the configuration reference.
        unit: physical unit or kind (``"steps"``, ``"s"``, ``"frames"``); allowed: the allowed values in words.
        yaml: the name in ``vla_algorithm.yaml`` when it differs from the attribute name.
        key_omits_default: a train-role field added after runs were stored: left out of the train key while it
            has its default, so the keys of earlier runs stay valid.
        may_change_on_resume: a train-role field that may differ when a run resumes (its step budget, where the
            data lives, how demonstrations were recorded, memory savers).
    Raises:
        ValueError: an unknown role (a programming error, at import time).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    metadata = {"role": role, "doc": doc, "unit": unit, "allowed": allowed, "yaml": yaml,
                "key_omits_default": key_omits_default, "may_change_on_resume": may_change_on_resume}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def yaml_name(f: dataclasses.Field) -> str:
    """The name of a field in ``vla_algorithm.yaml``."""
    return f.metadata.get("yaml") or f.name


def role(f: dataclasses.Field) -> str:
    """The role of a field (raises KeyError for a field not declared with :func:`setting`)."""
    return f.metadata["role"]


def settings_of(section: Any) -> Iterator[dataclasses.Field]:
    """The :func:`setting` fields of a section class or instance, in declaration order."""
    for f in dataclasses.fields(section):
        if "role" in f.metadata:
            yield f


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (``default_factory()`` when it has one; MISSING when required)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# ------------------------------------------------------------------------------------ value checks
def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number > 0, got {value!r}")


def check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(name, f"must be a number in [{lo}, {hi}], got {value!r}")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"got {value!r}; allowed: {', '.join(allowed)}")


def number_string_fix(value: Any) -> str | None:
    """For a string YAML 1.1 did not read as a number (``"5e-4"``), the message with the fix; else None."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    text = value.strip()
    mantissa, _, exponent = text.lower().partition("e")
    if not exponent or not math.isfinite(number):
        return None  # a quoted plain number: the field's own message applies
    fixed = f"{mantissa}.0e{exponent}" if "." not in mantissa else text
    return (
        f"got the string {value!r}: YAML 1.1 (PyYAML) reads a number with an exponent but no '.' as text; "
        f"write {fixed} or {number!r}"
    )
