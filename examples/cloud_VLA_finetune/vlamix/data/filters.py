"""Action-based filtering of training steps (applied per dataset, before batching).

A step of an episode is dropped, for the first reason that applies, when:

``nonfinite``
    any of its 7 raw action values is NaN or +-Inf (``filter_nonfinite``, on by default);
``out_of_range``
    any raw action value has ``|a_d| > filter_action_limit`` (off when the limit is None);
``near_zero_motion``
    the largest L2 norm of the first 6 action dims (EEF delta xyz + delta rpy, raw RLDS units)
    over a centred window of ``filter_motion_window`` steps, ``[t - (W-1)//2, t + W//2]`` clipped to
    the episode, is below ``filter_min_motion`` (off when 0), *unless* the gripper command changes
    inside that window (``a[s, 6] != a[s-1, 6]`` for some ``s`` in it): steps where only the gripper
    moves are kept, and so are their neighbours within the window. Non-finite steps count as
    "no motion" in the neighbours' windows.

Whole datasets are removed by ``dataset_whitelist`` / ``dataset_blacklist`` (reason ``dataset_list``).
The near-zero rule generalises OpenVLA's no-op filter (``modified_libero_rlds`` drops steps with
``||a[:6]|| < 1e-4`` whose gripper command equals the previous step's; openvla
``experiments/robot/libero/regenerate_libero_dataset.py``) to a window, so that slow segments of a
move are not cut out one step at a time.

Everything here is NumPy on the raw actions cached with the dataset statistics
(:attr:`vlamix.data.normalization.DatasetStats.actions`); :class:`vlamix.data.mixture.MixtureLoader`
turns the masks into a ``tf.boolean_mask`` on each episode. Held-out episodes are never filtered, so
offline metrics stay comparable across filter settings.

Usage::

    f = ActionFilter(min_motion=1e-3, motion_window=3, action_limit=1.0)
    keep, reason = f.episode_mask(actions)     # bool [T], int8 [T] (index into DROP_REASONS, -1 = kept)
    counts = f.count(actions_of_all_episodes, lengths)   # {"total", "kept", "nonfinite", ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Reasons a step is dropped, in order of precedence (a step is counted under the first one).
DROP_REASONS = ("nonfinite", "out_of_range", "near_zero_motion")
#: Reason under which every step of a white/blacklisted dataset is counted.
LIST_REASON = "dataset_list"
#: Keys of a counts record, in report order.
COUNT_KEYS = ("total", "kept", *DROP_REASONS, LIST_REASON)
_ARM_DIMS = 6
_GRIPPER = 6


@dataclass(frozen=True)
class ActionFilter:
    """Per-step keep rule on raw actions (see the module docstring).

    Attributes:
        min_motion: threshold on the windowed max of ``||a[:6]||_2``, raw action units; 0 = off.
        motion_window: window length W in steps (>= 1; 1 = the step alone).
        action_limit: drop steps with any ``|a_d|`` above this (raw units); None = off.
        drop_nonfinite: drop steps with a NaN/Inf value.
    Raises:
        ValueError: ``motion_window < 1``, ``min_motion < 0`` or ``action_limit <= 0``.
    """

    min_motion: float = 0.0
    motion_window: int = 1
    action_limit: float | None = None
    drop_nonfinite: bool = True

    def __post_init__(self) -> None:
        if int(self.motion_window) < 1:
            raise ValueError(f"motion_window must be >= 1, got {self.motion_window}")
        if not self.min_motion >= 0:
            raise ValueError(f"min_motion must be >= 0, got {self.min_motion}")
        if self.action_limit is not None and not self.action_limit > 0:
            raise ValueError(f"action_limit must be > 0 or None, got {self.action_limit}")

    @classmethod
    def from_config(cls, cfg: Any) -> "ActionFilter":
        """The filter of a :class:`vlamix.data.settings.DataConfig` (fields ``filter_*``)."""
        return cls(
            min_motion=float(cfg.filter_min_motion),
            motion_window=int(cfg.filter_motion_window),
            action_limit=None if cfg.filter_action_limit is None else float(cfg.filter_action_limit),
            drop_nonfinite=bool(cfg.filter_nonfinite),
        )

    @property
    def active(self) -> bool:
        """True when some rule can drop a step."""
        return self.drop_nonfinite or self.action_limit is not None or self.min_motion > 0

    def episode_mask(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep mask and drop reason of every step of one episode.

        Args:
            actions: float [T, 7] raw RLDS actions (gripper -1 open / +1 close).
        Returns:
            (keep bool [T], reason int8 [T]): ``reason[t]`` indexes :data:`DROP_REASONS`, -1 if kept.
        Raises:
            ValueError: ``actions`` is not [T, 7].
        """
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 7:
            raise ValueError(f"actions must be [T, 7], got shape {list(a.shape)}")
        reason = np.full(a.shape[0], -1, dtype=np.int8)
        if a.shape[0] == 0:
            return np.ones(0, bool), reason
        finite = np.isfinite(a).all(axis=1)
        if self.drop_nonfinite:
            reason[~finite] = DROP_REASONS.index("nonfinite")
        if self.action_limit is not None:
            with np.errstate(invalid="ignore"):
                beyond = (np.abs(a) > self.action_limit).any(axis=1)
            reason[(reason < 0) & beyond] = DROP_REASONS.index("out_of_range")
        if self.min_motion > 0:
            motion = np.where(finite, np.linalg.norm(np.where(np.isfinite(a[:, :_ARM_DIMS]), a[:, :_ARM_DIMS], 0.0), axis=1), 0.0)
            gripper = a[:, _GRIPPER]
            change = np.zeros(a.shape[0], dtype=bool)
            change[1:] = np.isfinite(gripper[1:]) & np.isfinite(gripper[:-1]) & (gripper[1:] != gripper[:-1])
            window_motion = _window_reduce(motion, self.motion_window, np.maximum, 0.0)
            window_change = _window_reduce(change, self.motion_window, np.logical_or, False)
            still = (window_motion < self.min_motion) & ~window_change
            reason[(reason < 0) & still] = DROP_REASONS.index("near_zero_motion")
        return reason < 0, reason

    def masks(self, actions: np.ndarray, lengths: Sequence[int]) -> tuple[np.ndarray, dict[str, int]]:
        """Keep mask and counts over episodes stored back to back (one :meth:`episode_mask` each).

        Args:
            actions: float [sum(lengths), 7] raw actions. lengths: steps per episode.
        Returns:
            (keep bool [sum(lengths)], counts ``{"total", "kept", "nonfinite", "out_of_range",
            "near_zero_motion", "dataset_list"}``; ``dataset_list`` is 0 here, see :func:`excluded_counts`).
        """
        keep = np.ones(int(np.sum(lengths, dtype=np.int64)), dtype=bool)
        counts = empty_counts()
        start = 0
        for n in lengths:
            mask, reason = self.episode_mask(actions[start : start + int(n)])
            keep[start : start + int(n)] = mask
            _add_episode(counts, mask, reason)
            start += int(n)
        return keep, counts

    def count(self, actions: np.ndarray, lengths: Sequence[int]) -> dict[str, int]:
        """The counts of :meth:`masks`."""
        return self.masks(actions, lengths)[1]


def empty_counts() -> dict[str, int]:
    """A counts record with every key of :data:`COUNT_KEYS` at 0."""
    return {k: 0 for k in COUNT_KEYS}


def excluded_counts(total_steps: int) -> dict[str, int]:
    """Counts of a dataset removed by the white/blacklist: every step under ``dataset_list``."""
    counts = empty_counts()
    counts["total"] = counts[LIST_REASON] = int(total_steps)
    return counts


def _add_episode(counts: dict[str, int], keep: np.ndarray, reason: np.ndarray) -> None:
    counts["total"] += int(keep.size)
    counts["kept"] += int(keep.sum())
    for i, name in enumerate(DROP_REASONS):
        counts[name] += int((reason == i).sum())


def selected_datasets(
    names: Sequence[str], whitelist: Sequence[str] | None, blacklist: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """Split ``names`` into (kept, removed) by a whitelist (None = all) and a blacklist (None = none)."""
    kept, removed = [], []
    for name in names:
        listed = whitelist is None or name in whitelist
        banned = blacklist is not None and name in blacklist
        (kept if listed and not banned else removed).append(name)
    return kept, removed


def _window_reduce(x: np.ndarray, window: int, op, fill) -> np.ndarray:
    """``out[t] = op-reduce of x[t - (W-1)//2 : t + W//2 + 1]`` (clipped to the array), for 1-D ``x``."""
    if window == 1:
        return x.copy()
    before, after = (window - 1) // 2, window // 2
    padded = np.concatenate([np.full(before, fill, dtype=x.dtype), x, np.full(after, fill, dtype=x.dtype)])
    out = padded[: x.size].copy()
    for shift in range(1, window):
        out = op(out, padded[shift : shift + x.size])
    return out
