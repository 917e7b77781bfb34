"""Mixture weights that change during fine-tuning: excess-loss group DRO, EXP3 online mixing, curriculum.

Every ``mixing_update_every`` (K) optimiser steps the trainer hands the controller the per-group mean
training loss of the last K steps (cross-entropy on the action tokens, nats; groups that drew no frame
keep their previous value) and sets the returned weights on the sampler
(:meth:`vlamix.data.mixture.MixtureLoader.set_weights`, no pipeline rebuild). Everything here is
NumPy and deterministic, so a run repeats for a fixed seed and resumes exactly
(:meth:`MixingController.state_dict`).

``doremi`` (excess-loss group DRO; Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up
Language Model Pretraining", Algorithm 1; applied to robot data by Hejna et al. 2024, "Re-Mix:
Optimizing Data Mixtures for Large Scale Imitation Learning")::

    lambda_g = max(L_g - L_ref_g, 0)                        excess loss, clipped at zero
    alpha'   = alpha * exp(eta * lambda)                    exponentiated-gradient step
    alpha    = (1 - c) * alpha' / sum(alpha') + c * alpha_0 smoothing toward the initial weights

  so every weight stays >= ``c * alpha_0[g]``. ``L_ref`` is the initial model's per-group loss on
  ``dro_reference_batches`` batches drawn uniformly over groups before training
  (``dro_reference: initial``), or a saved run's per-group training loss over the last quarter of its
  ``train_log.jsonl`` (``dro_reference: <run folder>``). Differences from DoReMi: the weights set the
  *sampling* proportions of the run itself (no separate proxy model), and the reference loss is a
  per-group constant rather than a per-example forward pass of a reference model (which would double
  the step cost of a 7B model). The run reports the final and the time-averaged weights (DoReMi's
  output is the average).

``exp3`` (online data mixing; Albalak et al. 2023, "Efficient Online Data Mixing For Language Model
Pre-Training", Algorithm 1; official code ``alon-albalak/online-data-mixing``,
``megatron/data/data_sampling_utils.py``)::

    eps_t  = min(1/G, sqrt(ln G / (G t)))                   t = 1, 2, ... (update count)
    R_g    = a * R_g + (1 - a) * L_g / pi_g                 for groups that drew frames (reward = loss,
                                                            importance-weighted; a = exp3_smoothing)
    pi_g   = (1 - G eps_t) * softmax(eps_{t-1} * R)_g + eps_t

  with ``R = 0`` and ``eps_0 = 1/G`` at the start. Until the first update the mixture weights are used.
  ODM updates after every step with one group per batch; here a batch mixes groups and the update
  runs every K steps with each group's mean loss over those steps.

``curriculum``: ``[{step: s_0 = 0, weights: {...}}, {step: s_1, weights: {...}}, ...]``; after ``s_i``
optimiser steps the weights of phase ``i`` apply (the last phase with ``step <= steps done``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from vlamix.constants import TRAIN_LOG_NAME

from vlamix.mixing.weights import DYNAMIC_STRATEGIES, normalised_phase

_STATE_FORMAT = "vlamix.mixing/1"


# ------------------------------------------------------------------------------------ update rules
def dro_update(
    weights: Sequence[float], excess: Sequence[float], eta: float, smoothing: float, initial: Sequence[float]
) -> np.ndarray:
    """One DoReMi step (see the module docstring).

    Args:
        weights: current weights alpha, float [G] (sum 1). excess: clipped excess losses lambda >= 0, float [G].
        eta: step size > 0. smoothing: c in [0, 1]. initial: alpha_0, float [G] (sum 1).
    Returns:
        new weights, float64 [G], sum 1, each >= ``c * initial[g]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    lam = np.asarray(excess, dtype=np.float64)
    init = np.asarray(initial, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(w) + eta * lam
    logits -= logits[np.isfinite(logits)].max()
    step = np.exp(logits)
    step /= step.sum()
    return (1.0 - smoothing) * step + smoothing * init / init.sum()


def exp3_epsilon(num_groups: int, t: int) -> float:
    """Exploration rate ``min(1/G, sqrt(ln G / (G t)))`` of update ``t >= 1``."""
    return min(1.0 / num_groups, math.sqrt(math.log(num_groups) / (num_groups * t)))


def exp3_probabilities(reward_estimates: Sequence[float], eps_prev: float, eps: float) -> np.ndarray:
    """``(1 - G eps) * softmax(eps_prev * R) + eps``: float64 [G], sum 1."""
    r = eps_prev * np.asarray(reward_estimates, dtype=np.float64)
    e = np.exp(r - r.max())
    return (1.0 - r.size * eps) * e / e.sum() + eps


def exp3_reward_update(
    reward_estimates: Sequence[float], rewards: Sequence[float], probabilities: Sequence[float], alpha: float
) -> np.ndarray:
    """``R_g = alpha R_g + (1 - alpha) r_g / pi_g`` where ``r_g`` is finite; other groups keep ``R_g``."""
    est = np.asarray(reward_estimates, dtype=np.float64).copy()
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    seen = np.isfinite(r)
    est[seen] = alpha * est[seen] + (1.0 - alpha) * r[seen] / p[seen]
    return est


# ------------------------------------------------------------------------------------ controller
class MixingController:
    """Group weights of one run over time: the initial weights, then the updates of a dynamic strategy.

    Args:
        cfg: :class:`vlamix.config.BenchConfig` (``strategy``, ``mixing_update_every``, ``dro_*``,
            ``exp3_smoothing``, ``curriculum``).
        groups: group names in the loader's ``group_names`` order.
        initial: initial weight per group (normalised here).
    Raises:
        ValueError: curriculum phase names that are no group.

    ``history`` holds one row per weight change (the initial weights at step 0 included)::

        {"step": int, "reason": "initial" | "update" | "phase", "weights": {group: float},
         "group_loss": {group: float | None}, "signal": {group: float | None}}

    where ``signal`` is the clipped excess loss (doremi) or the reward estimate ``R`` (exp3).
    """

    def __init__(self, cfg: Any, groups: Sequence[str], initial: Mapping[str, float]):
        self.strategy = cfg.strategy
        self.groups = list(groups)
        init = np.array([float(initial[g]) for g in self.groups], dtype=np.float64)
        self.initial = init / init.sum()
        self.weights = self.initial.copy()
        self.every = int(cfg.mixing_update_every)
        self.eta = float(cfg.dro_eta)
        self.smoothing = float(cfg.dro_smoothing)
        self.exp3_alpha = float(cfg.exp3_smoothing)
        self.phases: list[tuple[int, np.ndarray]] = []
        if self.strategy == "curriculum":
            for phase in cfg.curriculum:
                w = normalised_phase(phase["weights"], self.groups)
                self.phases.append((int(phase["step"]), np.array([w[g] for g in self.groups])))
        self.reference: np.ndarray | None = None
        self.reward_estimates = np.zeros(len(self.groups))
        self.eps = 1.0 / len(self.groups)
        self.updates = 0
        self.last_loss = np.full(len(self.groups), np.nan)
        self._sum = np.zeros(len(self.groups))
        self._count = np.zeros(len(self.groups))
        self.history: list[dict[str, Any]] = [self._row(0, "initial", None, None)]

    @property
    def is_dynamic(self) -> bool:
        """True for strategies whose weights change during training."""
        return self.strategy in DYNAMIC_STRATEGIES

    @property
    def needs_reference(self) -> bool:
        """True while a doremi run still lacks its reference losses."""
        return self.strategy == "doremi" and self.reference is None

    def current(self) -> dict[str, float]:
        """Current weight per group."""
        return dict(zip(self.groups, self.weights.tolist()))

    def set_reference(self, losses: Sequence[float]) -> None:
        """Per-group reference loss L_ref, float [G] (nats); a NaN entry gives that group no excess.

        Raises:
            ValueError: wrong length.
        """
        ref = np.asarray(losses, dtype=np.float64)
        if ref.shape != (len(self.groups),):
            raise ValueError(f"expected {len(self.groups)} reference losses, got shape {list(ref.shape)}")
        self.reference = ref

    def observe(self, loss_sums: Sequence[float], counts: Sequence[float]) -> None:
        """Add one step's per-group loss sums (nats, summed over frames) and frame counts."""
        self._sum += np.asarray(loss_sums, dtype=np.float64)
        self._count += np.asarray(counts, dtype=np.float64)

    def after_step(self, step: int) -> dict[str, float] | None:
        """Call after optimiser step ``step`` (1-based); returns new weights when they change, else None."""
        if self.strategy == "curriculum":
            for start, w in self.phases[1:]:
                if start == step:
                    self.weights = w.copy()
                    self.history.append(self._row(step, "phase", None, None))
                    return self.current()
            return None
        if self.strategy not in ("doremi", "exp3") or step % self.every != 0:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            window = np.where(self._count > 0, self._sum / np.maximum(self._count, 1), np.nan)
        self._sum[:] = 0.0
        self._count[:] = 0.0
        self.last_loss = np.where(np.isfinite(window), window, self.last_loss)
        if self.strategy == "doremi":
            ref = self.reference if self.reference is not None else np.full(len(self.groups), np.nan)
            excess = np.where(np.isfinite(self.last_loss) & np.isfinite(ref), np.maximum(self.last_loss - ref, 0.0), 0.0)
            self.weights = dro_update(self.weights, excess, self.eta, self.smoothing, self.initial)
            signal = excess
        else:
            self.reward_estimates = exp3_reward_update(self.reward_estimates, window, self.weights, self.exp3_alpha)
            self.updates += 1
            eps_prev, self.eps = self.eps, exp3_epsilon(len(self.groups), self.updates)
            self.weights = exp3_probabilities(self.reward_estimates, eps_prev, self.eps)
            signal = self.reward_estimates
        self.history.append(self._row(step, "update", window, signal))
        return self.current()

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
        return {
            "strategy": self.strategy,
            "groups": list(self.groups),
            "initial_weights": dict(zip(self.groups, self.initial.tolist())),
            "final_weights": self.current(),
            "time_averaged_weights": self.time_averaged(total_steps),
            "updates": len(self.history) - 1,
            "reference_loss": None if self.reference is None else dict(zip(self.groups, _nan_to_none(self.reference))),
        }

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (initial and current weights, accumulators, reference, EXP3 estimates, history)."""
        return {
            "format": _STATE_FORMAT,
            "strategy": self.strategy,
            "groups": list(self.groups),
            "initial": self.initial.tolist(),
            "weights": self.weights.tolist(),
            "reference": None if self.reference is None else _nan_to_none(self.reference),
            "reward_estimates": self.reward_estimates.tolist(),
            "eps": self.eps,
            "updates": self.updates,
            "last_loss": _nan_to_none(self.last_loss),
            "sum": self._sum.tolist(),
            "count": self._count.tolist(),
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same strategy and groups.

        Raises:
            ValueError: another format, strategy or group list.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a mixing controller state (format {state.get('format')!r})")
        for key, mine in (("strategy", self.strategy), ("groups", self.groups)):
            if state[key] != mine:
                raise ValueError(f"mixing state was saved with {key}={state[key]!r}, this run has {mine!r}")
        self.initial = np.asarray(state["initial"], dtype=np.float64)
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.reference = None if state["reference"] is None else _none_to_nan(state["reference"])
        self.reward_estimates = np.asarray(state["reward_estimates"], dtype=np.float64)
        self.eps = float(state["eps"])
        self.updates = int(state["updates"])
        self.last_loss = _none_to_nan(state["last_loss"])
        self._sum = np.asarray(state["sum"], dtype=np.float64)
        self._count = np.asarray(state["count"], dtype=np.float64)
        self.history = [dict(row) for row in state["history"]]


def _nan_to_none(x: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in x]


def _none_to_nan(x: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in x], dtype=np.float64)


def find_train_log(path: str) -> str | None:
    """``<path>/train_log.jsonl``, else that of ``path``'s parent (``path`` a ``step_*`` checkpoint), else None."""
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        log = os.path.join(folder, TRAIN_LOG_NAME)
        if os.path.isfile(log):
            return log
    return None


def reference_losses_from_run(path: str, groups: Sequence[str], *, tail_fraction: float = 0.25) -> np.ndarray:
    """Per-group reference loss of a saved run: the mean of its logged ``group_loss`` values over
    the last ``tail_fraction`` of its optimiser steps.

    Args:
        path: a run folder with ``train_log.jsonl``, or one of its ``step_*`` checkpoints.
        groups: the groups needed, in order.
    Returns:
        float64 [G] (nats).
    Raises:
        FileNotFoundError: no ``train_log.jsonl``. ValueError: the run logged no loss for some group.
    """
    log = find_train_log(path)
    if log is None:
        raise FileNotFoundError(f"no {TRAIN_LOG_NAME} in {path} or its parent folder")
    from vlamix.io import read_jsonl

    rows = read_jsonl(log)  # a torn last line (killed run) is skipped
    last_step = max((int(r.get("step", 0)) for r in rows), default=0)
    first = last_step - max(1, int(round(tail_fraction * last_step))) + 1
    values: dict[str, list[float]] = {g: [] for g in groups}
    for row in rows:
        if int(row.get("step", 0)) >= first:
            for g, v in (row.get("group_loss") or {}).items():
                if g in values and v is not None:
                    values[g].append(float(v))
    missing = [g for g, v in values.items() if not v]
    if missing:
        raise ValueError(f"reference run {log} logged no loss for groups {missing} in its last {last_step - first + 1} steps")
    return np.array([float(np.mean(values[g])) for g in groups])
