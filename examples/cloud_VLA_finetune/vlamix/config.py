"""The benchmark configuration: one flat, validated record of every hyperparameter.

Every field can be a grid axis in ``vla_algorithm.yaml`` (Ianvs takes the Cartesian product of the
value lists and passes one value per field to the basemodel). The record is validated once, at the
edge (:meth:`BenchConfig.from_dict`), before any data is recorded or any model is built; each error
is a :class:`ConfigError` that names the field and the allowed values.

Relative paths (``data_dir``, ``model``) are resolved against the current working directory, which
is the Ianvs root under ``ianvs -f`` and the repository root for ``vlamix run``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from vlamix.constants import DATASET_TO_SUITE, LIBERO_SUITES

#: Built-in model configurations (no download); anything else is a checkpoint folder path.
BUILTIN_MODELS = ("tiny",)
DEMO_SOURCES = ("scripted", "none")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"config field '{field_name}': {message}")


@dataclass(frozen=True)
class BenchConfig:
    """All hyperparameters of one benchmark point (one row of the leaderboard).

    Data
        mixture: dataset name -> non-negative weight. Weights are normalised to sum 1 and are the
            frame sampling proportions (``{"libero_spatial_no_noops": 2, "libero_object_no_noops": 1}``
            samples 2/3 of frames from spatial). Names are RLDS dataset names of
            ``openvla/modified_libero_rlds`` (:data:`vlamix.constants.DATASET_TO_SUITE`).
        balance_by_size: multiply the weights by the datasets' frame counts before normalising
            (OpenVLA's ``balance_weights``). Off by default, so "2:1" is what is sampled.
        data_dir: folder holding ``<name>/1.0.0/`` RLDS datasets.
        heldout_fraction: fraction of each dataset's episodes (the last ones) kept out of training
            for offline metrics, in [0, 0.5].
        demos: "scripted" records missing datasets with the scripted expert in LIBERO (the embedded
            default); "none" requires the datasets to exist (real data).
        demo_tasks: tasks per suite to record (first N task ids) when ``demos == "scripted"``.
        demo_episodes_per_task: successful episodes to keep per task.
    Model
        model: "tiny" (built-in, random init) or a path to an OpenVLA checkpoint folder.
        lora_rank, lora_alpha, lora_dropout: peft LoRA on all linear layers (OpenVLA recipe:
            rank 32, alpha min(rank, 16), dropout 0).
    Training
        train_steps: optimiser steps. batch_size: frames per micro-batch.
        grad_accumulation_steps: micro-batches per optimiser step. learning_rate: AdamW lr.
        precision: "fp32" or "bf16" autocast. gradient_checkpointing: recompute activations.
        shuffle_buffer_size: frames in each dataset's shuffle buffer. seed: data and init seed.
    Evaluation
        eval_suites: LIBERO task suites to roll out in (default: the suites of the datasets with
            non-zero weight). eval_tasks: first N task ids of each suite (None = all).
        trials_per_task: episodes per task, each from the next init state of the suite.
        eval_max_steps: episode step limit (None = the suite's reference limit).
        num_steps_wait: dummy-action steps before the policy acts (reference: 10).
        eval_workers: parallel rollout processes. eval_seed: seed of the environments.
        center_crop: centre-crop the camera image as OpenVLA's LIBERO evaluation does.
    """

    mixture: Mapping[str, float]
    balance_by_size: bool = False
    data_dir: str = "workspace/data/libero_rlds"
    heldout_fraction: float = 0.1
    demos: str = "scripted"
    demo_tasks: int = 2
    demo_episodes_per_task: int = 4

    model: str = "tiny"
    lora_rank: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0

    train_steps: int = 40
    batch_size: int = 8
    grad_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    shuffle_buffer_size: int = 1000
    seed: int = 7

    eval_suites: tuple[str, ...] | None = None
    eval_tasks: int | None = 2
    trials_per_task: int = 1
    eval_max_steps: int | None = None
    num_steps_wait: int = 10
    eval_workers: int = 2
    eval_seed: int = 7
    center_crop: bool = False

    extra: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, allow_extra: bool = False) -> "BenchConfig":
        """Build and validate a config from flat hyperparameters (as Ianvs passes them).

        Args:
            values: field name -> value; unknown names raise unless ``allow_extra``, in which case
                they are kept in ``extra`` (Ianvs adds its own keys).
        Raises:
            ConfigError: naming the first invalid field.
        """
        known = set(cls.field_names())
        unknown = sorted(k for k in values if k not in known)
        if unknown and not allow_extra:
            raise ConfigError(unknown[0], f"unknown field; allowed fields: {', '.join(sorted(known))}")
        kwargs = {k: v for k, v in values.items() if k in known}
        if "mixture" not in kwargs:
            raise ConfigError("mixture", "required: a mapping from dataset name to weight")
        if isinstance(kwargs.get("eval_suites"), (list, tuple)):
            kwargs["eval_suites"] = tuple(kwargs["eval_suites"])
        cfg = cls(**kwargs, extra={k: values[k] for k in unknown})
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "BenchConfig":
        """A validated copy with some fields changed."""
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.field_names()}
        out["mixture"] = dict(self.mixture)
        out["eval_suites"] = list(self.resolved_eval_suites())
        return out

    # ------------------------------------------------------------------ derived values
    def mixture_weights(self) -> dict[str, float]:
        """Normalised mixture weights (sum 1) of the datasets with non-zero weight, in config order."""
        total = float(sum(self.mixture.values()))
        return {name: float(w) / total for name, w in self.mixture.items() if w > 0}

    def resolved_eval_suites(self) -> tuple[str, ...]:
        if self.eval_suites is not None:
            return tuple(self.eval_suites)
        return tuple(dict.fromkeys(DATASET_TO_SUITE[name] for name in self.mixture_weights()))

    def dataset_path(self, name: str) -> str:
        """Absolute path of dataset ``name``'s RLDS version folder ``<data_dir>/<name>/1.0.0``."""
        from vlamix.constants import RLDS_VERSION

        return os.path.join(os.path.abspath(self.data_dir), name, RLDS_VERSION)

    def missing_dataset_error(self, name: str) -> ConfigError:
        """The error for dataset ``name`` absent from ``data_dir`` (field ``data_dir``), with the remedies."""
        return ConfigError(
            "data_dir",
            f"dataset '{name}' not found at {self.dataset_path(name)}; download openvla/modified_libero_rlds "
            f"into data_dir, or set demos: scripted to record it with the scripted expert",
        )

    def mixture_label(self) -> str:
        """Short human label such as ``spatial:object=2:1`` (weights as given, not normalised)."""
        names = [n.replace("libero_", "").replace("_no_noops", "") for n in self.mixture]
        weights = [_fmt_weight(w) for w in self.mixture.values()]
        return f"{':'.join(names)}={':'.join(weights)}"

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` naming the first invalid one.

        Checks nothing on disk except that, with ``demos == "none"``, each dataset with non-zero
        weight exists under ``data_dir`` (and, for a path ``model``, that the folder exists).
        """
        _check_mixture(self.mixture)
        _check_bool("balance_by_size", self.balance_by_size)
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("data_dir", "must be a non-empty path string")
        _check_range("heldout_fraction", self.heldout_fraction, 0.0, 0.5)
        _check_choice("demos", self.demos, DEMO_SOURCES)
        _check_int("demo_tasks", self.demo_tasks, 1)
        _check_int("demo_episodes_per_task", self.demo_episodes_per_task, 1)
        if self.demos == "none":
            for name in self.mixture_weights():
                if not os.path.isdir(self.dataset_path(name)):
                    raise self.missing_dataset_error(name)
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model", f"must be one of {BUILTIN_MODELS} or a checkpoint folder path")
        if self.model not in BUILTIN_MODELS and not os.path.isdir(self.model):
            raise ConfigError("model", f"'{self.model}' is neither a built-in model {BUILTIN_MODELS} nor an existing folder")
        _check_int("lora_rank", self.lora_rank, 1)
        _check_int("lora_alpha", self.lora_alpha, 1)
        _check_range("lora_dropout", self.lora_dropout, 0.0, 1.0)
        _check_int("train_steps", self.train_steps, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("grad_accumulation_steps", self.grad_accumulation_steps, 1)
        _check_positive("learning_rate", self.learning_rate)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_bool("gradient_checkpointing", self.gradient_checkpointing)
        _check_int("shuffle_buffer_size", self.shuffle_buffer_size, 1)
        _check_int("seed", self.seed, 0)
        suites = self.resolved_eval_suites()
        if not suites:
            raise ConfigError("eval_suites", f"no suite to evaluate; allowed: {', '.join(LIBERO_SUITES)}")
        for suite in suites:
            _check_choice("eval_suites", suite, LIBERO_SUITES)
        if self.eval_tasks is not None:
            _check_int("eval_tasks", self.eval_tasks, 1)
        _check_int("trials_per_task", self.trials_per_task, 1)
        if self.eval_max_steps is not None:
            _check_int("eval_max_steps", self.eval_max_steps, 1)
        _check_int("num_steps_wait", self.num_steps_wait, 0)
        _check_int("eval_workers", self.eval_workers, 1)
        _check_int("eval_seed", self.eval_seed, 0)
        _check_bool("center_crop", self.center_crop)


def _fmt_weight(w: float) -> str:
    return str(int(w)) if float(w).is_integer() else f"{w:g}"


def _check_mixture(mixture: Any) -> None:
    allowed = ", ".join(DATASET_TO_SUITE)
    if not isinstance(mixture, Mapping) or not mixture:
        raise ConfigError("mixture", f"must be a non-empty mapping dataset -> weight; datasets: {allowed}")
    for name, weight in mixture.items():
        if name not in DATASET_TO_SUITE:
            raise ConfigError("mixture", f"unknown dataset '{name}'; allowed: {allowed}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError("mixture", f"weight of '{name}' must be a finite number >= 0, got {weight!r}")
        if weight < 0:
            raise ConfigError("mixture", f"weight of '{name}' is negative ({weight}); weights must be >= 0")
    if sum(mixture.values()) <= 0:
        raise ConfigError("mixture", "all weights are zero; at least one weight must be > 0")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"got {value!r}; allowed: {', '.join(allowed)}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number > 0, got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(name, f"must be a number in [{lo}, {hi}], got {value!r}")
