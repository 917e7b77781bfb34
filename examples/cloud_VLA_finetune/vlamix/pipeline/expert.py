"""The scripted expert as a reference row of the leaderboard: a point that rolls the expert out on the planned
episodes, the same episodes as every VLA point, through the same batched evaluator
(:func:`vlamix.eval.rollout.evaluate` with :class:`vlamix.eval.expert_policy.ExpertPolicy`: env workers,
server rounds, success detection, step limit and rows as for a VLA checkpoint).

Usage::

    from vlamix.pipeline.expert import ExpertReference
    ref = ExpertReference(eval_suites=["libero_spatial", "libero_object"], eval_tasks=2)
    prediction = ref.predict()          # {"episodes", "summary", "offline", "mixing", "config", "reference": True}
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from vlamix.core.errors import ConfigError
from vlamix.eval.expert_policy import ExpertPolicy
from vlamix.eval.plan import plan_episodes
from vlamix.eval.rollout import evaluate
from vlamix.eval.settings import RolloutConfig
from vlamix.eval.stats import summarize
from vlamix.pipeline import ledger as job_ledger

__all__ = ["DEFAULTS", "EXPERT_LABEL", "ExpertReference", "check_hyperparameters"]

#: Leaderboard label of the reference row.
EXPERT_LABEL = "scripted expert (reference)"
#: Hyperparameters of the reference (the evaluation fields of :class:`vlamix.pipeline.config.BenchConfig`).
DEFAULTS: dict[str, Any] = {
    "eval_suites": ("libero_spatial", "libero_object"),
    "eval_tasks": 2,
    "trials_per_task": 1,
    "eval_max_steps": None,
    "num_steps_wait": 10,
    "eval_workers": 1,
    "eval_seed": 7,
    "eval_instruction": ("original",),
    "eval_instruction_suites": None,
}


def check_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the reference's hyperparameters (names and values as in :class:`vlamix.pipeline.config.BenchConfig`).

    Returns:
        the full settings (defaults filled in; lists as tuples).
    Raises:
        ConfigError: an unknown name or an invalid value (names the field), before any work.
    """
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ConfigError(unknown[0], f"not a scripted-expert hyperparameter; allowed: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **values}
    for name in ("eval_suites", "eval_instruction", "eval_instruction_suites"):
        value = out[name]
        if value is not None:
            out[name] = (value,) if isinstance(value, str) else tuple(value)
    for name, minimum in (("trials_per_task", 1), ("num_steps_wait", 0), ("eval_workers", 1), ("eval_seed", 0)):
        if isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] < minimum:
            raise ConfigError(name, f"must be an integer >= {minimum}, got {out[name]!r}")
    for name in ("eval_tasks", "eval_max_steps"):
        if out[name] is not None and (isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] < 1):
            raise ConfigError(name, f"must be null or an integer >= 1, got {out[name]!r}")
    try:
        plan_episodes(out["eval_suites"], out["eval_tasks"], out["trials_per_task"], out["eval_instruction"],
                      out["eval_instruction_suites"])
    except ValueError as err:
        field = ("eval_instruction_suites" if "variant_suites" in str(err)
                 else "eval_instruction" if "instruction" in str(err) else "eval_suites")
        raise ConfigError(field, str(err)) from err
    return out


class ExpertReference:
    """Single-task-learning basemodel of the reference row: ``train``/``save``/``load`` do nothing
    useful (there is nothing to learn); ``predict`` rolls the expert out on the planned episodes.

    Args:
        **hyperparameters: see :data:`DEFAULTS` (validated by :func:`check_hyperparameters`).
    Raises:
        ConfigError: an invalid hyperparameter.
    """

    def __init__(self, **hyperparameters: Any):
        self.settings = check_hyperparameters(hyperparameters)
        self.model_dir: str | None = None

    def preprocess(self, **kwargs: Any) -> None:
        """Nothing to prepare; Ianvs's single-task paradigm calls it before :meth:`train` (returns None)."""
        return None

    def train(self, train_data: Any = None, valid_data: Any = None, **kwargs: Any) -> None:
        return None

    def save(self, model_path: str) -> str:
        """Write ``expert.json`` (the settings) into the folder ``model_path``; returns the folder."""
        folder = os.path.splitext(os.path.abspath(model_path))[0]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "expert.json"), "w", encoding="utf-8") as fh:
            json.dump({"policy": "scripted_expert", **self.settings}, fh, indent=1, default=list)
        self.model_dir = folder
        return folder

    def load(self, model_url: str | None = None, **kwargs: Any) -> None:
        self.model_dir = model_url or self.model_dir

    def predict(self, data: Any = None, *, ledger: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Roll the expert out; returns a prediction dict like :meth:`vlamix.pipeline.point.VLADataSelect.predict`
        (``offline`` empty: no model) with ``reference: True`` (left out of the paired comparisons). ``ledger``:
        the job ledger (:mod:`vlamix.pipeline.ledger`) the prediction is recorded in, for the report.

        The rows are :func:`vlamix.eval.rollout.evaluate`'s (``eval_workers`` env workers with one environment
        each, lock-step rounds; ``device`` / ``dtype`` None: no model), plus ``split: "reference"``."""
        s = self.settings
        specs = plan_episodes(s["eval_suites"], s["eval_tasks"], s["trials_per_task"], s["eval_instruction"],
                              s["eval_instruction_suites"])
        rows = evaluate(ExpertPolicy, specs, RolloutConfig(eval_workers=s["eval_workers"]), seed=s["eval_seed"],
                        num_steps_wait=s["num_steps_wait"], max_steps=s["eval_max_steps"])
        for row in rows:
            row["split"] = "reference"
        result = {"summary": summarize(rows), "episodes": rows, "offline": {},
                  "mixing": {"strategy_label": EXPERT_LABEL},
                  "config": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}, "reference": True,
                  "label": "scripted_expert"}
        if ledger:
            result["ledger"] = ledger
            result["ledger_entry"] = job_ledger.record(ledger, result)
        return result
