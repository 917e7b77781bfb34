"""The data section of a benchmark point: which RLDS datasets, in which proportions, filtered how.

:class:`DataConfig` is what :class:`vlamix.data.mixture.MixtureLoader` and the demonstration recorder
(:mod:`vlamix.sim.record`) read. Value checks here are pure (no disk); whether the datasets exist is an
environment check (:mod:`vlamix.pipeline.checks`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from vlamix.core.constants import DATASET_TO_SUITE, RLDS_VERSION
from vlamix.core.errors import ConfigError
from vlamix.core.labels import mixture_label
from vlamix.core.settings import check_bool, check_choice, check_int, check_positive, check_range, setting
from vlamix.data.filters import selected_datasets

#: Where datasets come from: recorded by the scripted expert when missing, or given (real data).
DEMO_SOURCES = ("scripted", "none")
_DATASETS = ", ".join(DATASET_TO_SUITE)


@dataclass(frozen=True)
class DataConfig:
    """RLDS datasets, mixture weights, held-out split, action filters, the shuffle buffer and augmentation."""

    mixture: Mapping[str, float] = setting(
        role="train", doc="dataset -> weight >= 0; normalised, the weights are the frame sampling proportions",
        allowed=f"datasets {_DATASETS}")
    balance_by_size: bool = setting(
        False, role="train", doc="multiply the weights by the datasets' frame counts (OpenVLA's balance_weights)")
    data_dir: str = setting(
        "workspace/data/libero_rlds", role="train", may_change_on_resume=True,
        doc="folder of <name>/1.0.0/ RLDS datasets (relative to the working directory)")
    heldout_fraction: float = setting(
        0.1, role="train", allowed="[0, 0.5]",
        doc="fraction of each dataset's episodes (the last ones) kept out of training for offline metrics")
    demos: str = setting(
        "scripted", role="train", may_change_on_resume=True, allowed=", ".join(DEMO_SOURCES),
        doc="scripted: record missing datasets with the scripted expert in LIBERO; none: they must exist")
    demo_tasks: int = setting(
        2, role="train", may_change_on_resume=True, unit="tasks", doc="tasks per suite to record (first N supported ids)", allowed=">= 1")
    demo_episodes_per_task: int = setting(
        4, role="train", may_change_on_resume=True, unit="episodes", doc="successful episodes recorded per task", allowed=">= 1")
    filter_nonfinite: bool = setting(True, role="train", doc="drop training steps with a NaN/Inf action value")
    filter_action_limit: float | None = setting(
        None, role="train", unit="raw action units", doc="drop steps with any |action value| above this (null = off)", allowed="> 0, null")
    filter_min_motion: float = setting(
        0.0, role="train", unit="raw action units",
        doc="drop steps whose windowed max ||a[:6]|| is below this, except around gripper changes (0 = off)", allowed=">= 0")
    filter_motion_window: int = setting(1, role="train", unit="steps", doc="window of filter_min_motion", allowed=">= 1")
    dataset_whitelist: tuple[str, ...] | None = setting(
        None, role="train", allowed=_DATASETS, doc="datasets of the mixture to keep (null = all)")
    dataset_blacklist: tuple[str, ...] | None = setting(
        None, role="train", allowed=_DATASETS, doc="datasets of the mixture to remove (null = none)")
    heldout_tasks: Mapping[str, tuple[int, ...]] | None = setting(
        None, role="train", key_omits_default=True,
        doc="{dataset: [task id, ...]}: tasks left out of training (their evaluated episodes are 'unseen')")
    shuffle_buffer_size: int = setting(1000, role="train", unit="frames", doc="frames in each dataset's shuffle buffer", allowed=">= 1")
    image_aug: bool = setting(
        False, role="train", key_omits_default=True,
        doc="OpenVLA's training image augmentation (90% crop, brightness, contrast, saturation, hue); "
            "recorded in the checkpoint, and evaluation centre-crops when it is on")

    # ------------------------------------------------------------------ derived
    def mixture_weights(self) -> dict[str, float]:
        """Normalised mixture weights (sum 1) of the datasets with non-zero weight, in the order given."""
        total = float(sum(self.mixture.values()))
        return {name: float(w) / total for name, w in self.mixture.items() if w > 0}

    def selected_datasets(self) -> list[str]:
        """Datasets with non-zero weight that pass ``dataset_whitelist`` / ``dataset_blacklist``."""
        return selected_datasets(list(self.mixture_weights()), self.dataset_whitelist, self.dataset_blacklist)[0]

    def dataset_path(self, name: str) -> str:
        """Absolute path of dataset ``name``'s RLDS version folder ``<data_dir>/<name>/1.0.0``."""
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
        return mixture_label(self.mixture)

    # ------------------------------------------------------------------ values (pure)
    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field (no disk access)."""
        check_mixture(self.mixture)
        check_bool("balance_by_size", self.balance_by_size)
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("data_dir", "must be a non-empty path string")
        check_range("heldout_fraction", self.heldout_fraction, 0.0, 0.5)
        check_choice("demos", self.demos, DEMO_SOURCES)

    def check_counts_and_filters(self) -> None:
        """Demo counts, filters, white/blacklists, held-out tasks, shuffle buffer, augmentation."""
        check_int("demo_tasks", self.demo_tasks, 1)
        check_int("demo_episodes_per_task", self.demo_episodes_per_task, 1)
        check_bool("filter_nonfinite", self.filter_nonfinite)
        if self.filter_action_limit is not None:
            check_positive("filter_action_limit", self.filter_action_limit)
        if isinstance(self.filter_min_motion, bool) or not isinstance(self.filter_min_motion, (int, float)) or not (
            0 <= self.filter_min_motion < math.inf
        ):
            raise ConfigError("filter_min_motion", f"must be a finite number >= 0 (0 = off), got {self.filter_min_motion!r}")
        check_int("filter_motion_window", self.filter_motion_window, 1)
        for name in ("dataset_whitelist", "dataset_blacklist"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(name, f"must be null or a list of dataset names ({_DATASETS}), got {value!r}")
            unknown = [v for v in value if v not in DATASET_TO_SUITE]
            if unknown:
                raise ConfigError(name, f"unknown datasets {unknown}; allowed: {_DATASETS}")
        if not self.selected_datasets():
            field_name = "dataset_whitelist" if self.dataset_whitelist is not None else "dataset_blacklist"
            raise ConfigError(
                field_name, f"removes every dataset of the mixture {list(self.mixture_weights())}; at least one must remain")
        check_int("shuffle_buffer_size", self.shuffle_buffer_size, 1)
        check_bool("image_aug", self.image_aug)
        if self.heldout_tasks is not None:
            if not isinstance(self.heldout_tasks, Mapping):
                raise ConfigError("heldout_tasks", f"must be a mapping dataset -> list of task ids, got {self.heldout_tasks!r}")
            for name, ids in self.heldout_tasks.items():
                if name not in DATASET_TO_SUITE:
                    raise ConfigError("heldout_tasks", f"unknown dataset '{name}'; allowed: {_DATASETS}")
                if not isinstance(ids, tuple) or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids):
                    raise ConfigError("heldout_tasks", f"'{name}': must be a list of task ids (integers >= 0), got {ids!r}")


def check_mixture(mixture: Any) -> None:
    """``mixture``: a non-empty mapping of known dataset names to finite weights >= 0, not all zero.

    Raises:
        ConfigError: field ``mixture``.
    """
    if not isinstance(mixture, Mapping) or not mixture:
        raise ConfigError("mixture", f"must be a non-empty mapping dataset -> weight; datasets: {_DATASETS}")
    for name, weight in mixture.items():
        if name not in DATASET_TO_SUITE:
            raise ConfigError("mixture", f"unknown dataset '{name}'; allowed: {_DATASETS}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError("mixture", f"weight of '{name}' must be a finite number >= 0, got {weight!r}")
        if weight < 0:
            raise ConfigError("mixture", f"weight of '{name}' is negative ({weight}); weights must be >= 0")
    if sum(mixture.values()) <= 0:
        raise ConfigError("mixture", "all weights are zero; at least one weight must be > 0")
