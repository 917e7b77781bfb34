"""``exp3``: online data mixing with the EXP3 bandit, the training loss as reward.

Albalak et al. 2023, "Efficient Online Data Mixing For Language Model Pre-Training", Algorithm 1 (official code
``alon-albalak/online-data-mixing``, ``megatron/data/data_sampling_utils.py``)::

    eps_t  = min(1/G, sqrt(ln G / (G t)))                   t = 1, 2, ... (update count)
    R_g    = a * R_g + (1 - a) * L_g / pi_g                 for groups that drew frames (reward = loss,
                                                            importance-weighted; a = exp3_smoothing)
    pi_g   = (1 - G eps_t) * softmax(eps_{t-1} * R)_g + eps_t

with ``R = 0`` and ``eps_0 = 1/G`` at the start; until the first update the mixture weights are used. ODM updates
after every step with one group per batch; here a batch mixes groups and the update runs every K steps with each
group's mean loss over those steps.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy


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


@STRATEGIES.register("exp3")
class EXP3(Strategy):
    """Online data mixing (see the module docstring)."""

    name = "exp3"
    params = ("balance_by_size", "mixing_level", "skill_map", "mixing_update_every", "exp3_smoothing")
    dynamic = True

    @classmethod
    def describe(cls, mixing, data, by):
        return f"exp3 a={mixing.exp3_smoothing:g} K={mixing.mixing_update_every}{by}"

    def __init__(self, mixing, groups, initial):
        super().__init__(mixing, groups, initial)
        self.alpha = float(mixing.exp3_smoothing)
        self.reward_estimates = np.zeros(len(self.groups))
        self.eps = 1.0 / len(self.groups)
        self.updates = 0

    def after_step(self, step: int) -> dict[str, float] | None:
        if step % self.every != 0:
            return None
        window = self._window_loss()
        self.reward_estimates = exp3_reward_update(self.reward_estimates, window, self.weights, self.alpha)
        self.updates += 1
        eps_prev, self.eps = self.eps, exp3_epsilon(len(self.groups), self.updates)
        self.weights = exp3_probabilities(self.reward_estimates, eps_prev, self.eps)
        self.history.append(self._row(step, "update", window, self.reward_estimates))
        return self.current()

    def extra_state(self) -> dict[str, Any]:
        return {"reward_estimates": self.reward_estimates.tolist(), "eps": self.eps, "updates": self.updates}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.reward_estimates = np.asarray(state["reward_estimates"], dtype=np.float64)
        self.eps = float(state["eps"])
        self.updates = int(state["updates"])
