"""docs/configuration.md is generated from the field declarations, and the declarations say what validation does.

A stale reference (a field added, a default or meaning changed, without ``vlamix fields --write``) fails here; so
does an ``allowed`` text that the validation does not enforce (the reference would promise what the code refuses).
"""

import math
import os
import re

import pytest

from vlamix.core.errors import ConfigError
from vlamix.pipeline.config import FIELDS, BenchConfig
from vlamix.pipeline.reference_doc import configuration_reference

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOC = os.path.join(REPO, "docs", "configuration.md")
BASE = {"mixture": {"libero_spatial_no_noops": 1}}


def test_the_reference_in_the_repository_is_the_generated_one():
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    assert text == configuration_reference(), "docs/configuration.md is stale: run `vlamix fields --write docs/configuration.md`"


def test_every_field_has_one_row_with_its_default_and_key():
    rows = [line for line in configuration_reference().splitlines() if line.startswith("| `")]
    names = [re.match(r"\| `([a-z0-9_]+)`", line).group(1) for line in rows]
    assert sorted(names) == sorted(FIELDS) and len(names) == len(set(names))
    row = dict(zip(names, rows))
    assert "| `32` |" in row["lora_rank"] and "train key" in row["lora_rank"]
    assert "eval key" in row["trials_per_task"] and "none (runtime)" in row["eval_workers"]
    assert "(required)" in row["mixture"]


def _numeric_cases():
    """(field, value, accepted) probes from every field's ``allowed`` text of the forms ``>= N``, ``> 0``,
    ``[lo, hi]``, ``[lo, hi)`` (each optionally ``, null``)."""
    cases = []
    for name, (_, f) in FIELDS.items():
        allowed = f.metadata.get("allowed", "")
        parts = [p.strip() for p in re.split(r",(?![^\[]*[\])])", allowed)]
        if "null" in parts:
            cases.append((name, None, True))
        for part in parts:
            if m := re.fullmatch(r">= (-?\d+)", part):
                n = int(m.group(1))
                cases += [(name, n, True), (name, n - 1, False)]
            elif part == "> 0":
                cases += [(name, 0.5, True), (name, 0, False), (name, -1.0, False)]
            elif m := re.fullmatch(r"\[(\d+(?:\.\d+)?), (\d+(?:\.\d+)?)([\])])", part):
                lo, hi, close = float(m.group(1)), float(m.group(2)), m.group(3)
                cases += [(name, lo, True), (name, -0.01 + lo, False), (name, hi + 0.01, False)]
                cases.append((name, hi, close == "]"))
    return cases


CASES = _numeric_cases()


def test_the_probes_cover_the_numeric_fields():
    probed = {c[0] for c in CASES}
    assert {"lora_rank", "train_steps", "heldout_fraction", "eval_tasks", "learning_rate", "lora_dropout",
            "exp3_smoothing", "eval_episode_timeout_s", "num_steps_wait"} <= probed


@pytest.mark.parametrize("name,value,accepted", CASES, ids=[f"{n}={v}" for n, v, _ in CASES])
def test_allowed_values_are_what_validation_enforces(name, value, accepted):
    values = {**BASE, name: value}
    if accepted:
        cfg = BenchConfig.from_dict(values)
        got = cfg.get(name)
        assert got == value or (isinstance(got, float) and math.isclose(got, value))
    else:
        with pytest.raises(ConfigError) as err:
            BenchConfig.from_dict(values)
        assert err.value.field == name
