"""What every data-ratio strategy is: a declaration (fields, levels, label, initial weights) and a weight controller.

Controller protocol (what :class:`vlamix.train.finetune.FineTuner` calls): ``observe(loss_sums, counts)``
after each optimiser step with the per-group loss sums (nats) and frame counts of that step;
``after_step(step)`` returns new group weights when they change (else None); ``needs_reference`` /
``set_reference`` for strategies that compare with a reference loss; ``history`` (one row per weight
change), ``time_averaged``, ``summary``; ``state_dict`` / ``load_state_dict`` to resume exactly.
Everything is NumPy and deterministic.

State format ``vlamix.mixing/1`` (stored in ``training_state.pt``): the keys every strategy has
(``strategy``, ``groups``, ``initial``, ``weights``, ``last_loss``, ``sum``, ``count``, ``history``) plus
the strategy's own (:meth:`Strategy.extra_state`). States written before strategies were separate classes
hold every strategy's keys; each class reads its own, so they load unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from vlamix.core.errors import ConfigError
from vlamix.mixing.weights import MIXING_LEVELS, Source, dataset_mixture_group_weights

if TYPE_CHECKING:  # annotations only: the data layer sits above mixing
    from vlamix.data.settings import DataConfig
    from vlamix.mixing.settings import MixingConfig

_STATE_FORMAT = "vlamix.mixing/1"


class Strategy:
    """Base class: static group weights (the initial ones, never updated).

    Class attributes (the declaration):
        name: the ``strategy`` value. params: configuration fields (YAML names) this strategy reads; the train
            key resets every other strategy's parameters to their defaults, so a grid that crosses strategies
            with other strategies' parameters trains each model once.
        levels: mixing levels it supports. default_level: used when ``mixing_level`` is null.
        uses_mixture_weights: False when only the SET of datasets matters (the train key then holds weight 1 each).
        dynamic: the weights change during training.

    Args (the controller):
        mixing: the point's :class:`vlamix.mixing.settings.MixingConfig`.
        groups: group names in the loader's ``group_names`` order. initial: initial weight per group (normalised here).
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()
    levels: ClassVar[tuple[str, ...]] = MIXING_LEVELS
    default_level: ClassVar[str] = "dataset"
    uses_mixture_weights: ClassVar[bool] = True
    dynamic: ClassVar[bool] = False

    # ------------------------------------------------------------------ declaration
    @classmethod
    def check(cls, mixing: "MixingConfig", data: "DataConfig") -> None:
        """Strategy-specific value checks (pure). Raises :class:`ConfigError` naming the field."""
        level = mixing.resolved_level()
        if level not in cls.levels:
            raise ConfigError("mixing_level", f"strategy {cls.name} supports {', '.join(cls.levels)}; got {mixing.mixing_level!r}, "
                              f"allowed: {', '.join(cls.levels)}")

    @classmethod
    def describe(cls, mixing: "MixingConfig", data: "DataConfig", by: str) -> str:
        """The label of the strategy with the parameters it uses; ``by`` is `` by <level>`` when the level is not
        the default, else empty."""
        return f"{cls.name}{by}"

    @classmethod
    def initial_weights(cls, mixing: "MixingConfig", data: "DataConfig", sources: Sequence[Source]) -> dict[str, float]:
        """Group weights at step 0: the mixture weights spread over the sources (natural proportions inside a
        dataset). Raises ValueError when every dataset with frames has weight 0."""
        return dataset_mixture_group_weights(data.mixture, sources, balance_by_size=data.balance_by_size)

    # ------------------------------------------------------------------ controller
    def __init__(self, mixing: "MixingConfig", groups: Sequence[str], initial: Mapping[str, float]):
        self.strategy = self.name
        self.groups = list(groups)
        init = np.array([float(initial[g]) for g in self.groups], dtype=np.float64)
        self.initial = init / init.sum()
        self.weights = self.initial.copy()
        self.every = int(mixing.mixing_update_every)
        self.last_loss = np.full(len(self.groups), np.nan)
        self._sum = np.zeros(len(self.groups))
        self._count = np.zeros(len(self.groups))
        self.history: list[dict[str, Any]] = [self._row(0, "initial", None, None)]

    @property
    def is_dynamic(self) -> bool:
        return self.dynamic

    @property
    def needs_reference(self) -> bool:
        """True while the strategy still lacks the reference losses it compares with (DoReMi)."""
        return False

    def set_reference(self, losses: Sequence[float]) -> None:
        raise TypeError(f"strategy {self.name} uses no reference loss")

    def current(self) -> dict[str, float]:
        """Current weight per group."""
        return dict(zip(self.groups, self.weights.tolist()))

    def observe(self, loss_sums: Sequence[float], counts: Sequence[float]) -> None:
        """Add one step's per-group loss sums (nats, summed over frames) and frame counts."""
        self._sum += np.asarray(loss_sums, dtype=np.float64)
        self._count += np.asarray(counts, dtype=np.float64)

    def after_step(self, step: int) -> dict[str, float] | None:
        """Call after optimiser step ``step`` (1-based); new weights when they change, else None."""
        return None

    def _window_loss(self) -> np.ndarray:
        """Mean loss per group since the last update (NaN for groups without frames); resets the sums."""
        with np.errstate(invalid="ignore", divide="ignore"):
            window = np.where(self._count > 0, self._sum / np.maximum(self._count, 1), np.nan)
        self._sum[:] = 0.0
        self._count[:] = 0.0
        self.last_loss = np.where(np.isfinite(window), window, self.last_loss)
        return window

    def _row(self, step: int, reason: str, loss: np.ndarray | None, signal: np.ndarray | None) -> dict[str, Any]:
        def named(x):
            return None if x is None else {g: (float(v) if np.isfinite(v) else None) for g, v in zip(self.groups, x)}

        return {"step": int(step), "reason": reason, "weights": self.current(), "group_loss": named(loss), "signal": named(signal)}

    # ------------------------------------------------------------------ results
    def time_averaged(self, total_steps: int) -> dict[str, float]:
        """Weights averaged over optimiser steps ``[0, total_steps)`` (each row holds until the next)."""
        acc = np.zeros(len(self.groups))
        rows = self.history
        for i, row in enumerate(rows):
            start = row["step"]
            end = rows[i + 1]["step"] if i + 1 < len(rows) else max(total_steps, start)
            acc += (end - start) * np.array([row["weights"][g] for g in self.groups])
        if acc.sum() <= 0:
            return self.current()
        return dict(zip(self.groups, (acc / acc.sum()).tolist()))

    def summary(self, total_steps: int) -> dict[str, Any]:
        """``{strategy, groups, initial_weights, final_weights, time_averaged_weights, updates, reference_loss}``."""
        reference = getattr(self, "reference", None)
        return {
            "strategy": self.name,
            "groups": list(self.groups),
            "initial_weights": dict(zip(self.groups, self.initial.tolist())),
            "final_weights": self.current(),
            "time_averaged_weights": self.time_averaged(total_steps),
            "updates": len(self.history) - 1,
            "reference_loss": None if reference is None else dict(zip(self.groups, nan_to_none(reference))),
        }

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        """The strategy's own state (plain values)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state` from a saved state."""

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state: weights, accumulators, history and :meth:`extra_state`."""
        return {
            "format": _STATE_FORMAT, "strategy": self.name, "groups": list(self.groups),
            "initial": self.initial.tolist(), "weights": self.weights.tolist(), "last_loss": nan_to_none(self.last_loss),
            "sum": self._sum.tolist(), "count": self._count.tolist(), "history": self.history, **self.extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same strategy and groups.

        Raises:
            ValueError: another format, strategy or group list.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a mixing controller state (format {state.get('format')!r})")
        for key, mine in (("strategy", self.name), ("groups", self.groups)):
            if state[key] != mine:
                raise ValueError(f"mixing state was saved with {key}={state[key]!r}, this run has {mine!r}")
        self.initial = np.asarray(state["initial"], dtype=np.float64)
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.last_loss = none_to_nan(state["last_loss"])
        self._sum = np.asarray(state["sum"], dtype=np.float64)
        self._count = np.asarray(state["count"], dtype=np.float64)
        self.history = [dict(row) for row in state["history"]]
        self.load_extra_state(state)


def nan_to_none(x: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in x]


def none_to_nan(x: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in x], dtype=np.float64)
