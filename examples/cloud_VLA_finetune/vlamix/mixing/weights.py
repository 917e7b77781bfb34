"""Sources, groups and the closed-form mixture weights of the baseline strategies.

Vocabulary:
    source: what the sampler draws frames from: a whole dataset (``mixing_level: dataset``) or the
        episodes of one task (language instruction) in one dataset (``task`` / ``skill`` levels).
    group: what a strategy assigns weight to: a dataset, a task (one instruction, across datasets)
        or a skill (:mod:`vlamix.mixing.skills`). Weights of a group are spread over its sources in
        proportion to their frames (natural proportions inside the group).

Strategies with closed-form weights (counts = kept training frames per group, after filtering):

``static``        the user's mixture weights (normalised; times the dataset sizes with
                  ``balance_by_size``), dataset level only.
``full_dataset``  ``p(g) = n_g / sum(n)``: all chosen datasets concatenated, natural proportions.
``task_balanced`` ``p(g) = 1 / G`` over tasks (or skills): "proportional sampling by task type".
``temperature``   ``p(g) = n_g^(1/T) / sum(n^(1/T))``: T = 1 natural, T -> inf uniform (as in
                  multilingual data sampling, Arivazhagan et al. 2019, "Massively Multilingual NMT in
                  the Wild", sec. 4.2, and the temperature sampling of mT5 / XLM-R).

Each strategy (:mod:`vlamix.mixing.strategies`) builds its initial group weights from these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from vlamix.mixing.skills import skill_of

#: What weights are given to (:data:`vlamix.mixing.strategies.MIXING_LEVELS` re-states it for the strategies).
MIXING_LEVELS = ("dataset", "task", "skill")


def _as_counts(counts: Sequence[float]) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or not np.all(np.isfinite(n)) or np.any(n < 0) or n.sum() <= 0:
        raise ValueError(f"counts must be finite, >= 0 and not all zero, got {list(np.atleast_1d(n))}")
    return n


def natural_weights(counts: Sequence[float]) -> np.ndarray:
    """``n / sum(n)``: float64 [G]. Raises ValueError for negative, non-finite or all-zero counts."""
    n = _as_counts(counts)
    return n / n.sum()


def uniform_weights(counts: Sequence[float]) -> np.ndarray:
    """``1 / G`` for every group with ``n > 0`` (0 for empty groups): float64 [G]."""
    n = _as_counts(counts)
    w = (n > 0).astype(np.float64)
    return w / w.sum()


def temperature_weights(counts: Sequence[float], temperature: float) -> np.ndarray:
    """``n^(1/T) / sum(n^(1/T))``: float64 [G]; ``T = inf`` gives :func:`uniform_weights`.

    Raises:
        ValueError: ``temperature <= 0`` or NaN, or bad counts.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = _as_counts(counts)
    if math.isinf(temperature):
        return uniform_weights(n)
    w = np.where(n > 0, np.power(n, 1.0 / temperature), 0.0)
    return w / w.sum()


# ------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class Source:
    """One stream the sampler draws from.

    Attributes:
        name: ``<dataset>`` or ``<dataset>/<instruction>``.
        dataset: RLDS dataset name. instruction: the task (None at dataset level).
        group: the group its weight comes from (dataset name, instruction or skill).
        frames: kept training frames (after action filtering).
        episodes: training episode indices (stored order) it reads; None = all training episodes.
    """

    name: str
    dataset: str
    instruction: str | None
    group: str
    frames: int
    episodes: tuple[int, ...] | None = None


def build_sources(
    level: str,
    datasets: Mapping[str, tuple[Sequence[str], Sequence[int]]],
    skill_map: Mapping[str, str] | None = None,
) -> list[Source]:
    """Sources of a mixture at ``level``.

    Args:
        level: one of :data:`MIXING_LEVELS`.
        datasets: ``{dataset: (instruction per training episode, kept frames per training episode)}``
            in mixture order.
        skill_map: skill overrides (``skill`` level).
    Returns:
        sources with ``frames > 0``: one per dataset, or one per (dataset, instruction) in
        first-seen order.
    Raises:
        ValueError: unknown level, or mismatching list lengths.
    """
    if level not in MIXING_LEVELS:
        raise ValueError(f"unknown mixing level {level!r}; allowed: {', '.join(MIXING_LEVELS)}")
    out: list[Source] = []
    for dataset, (instructions, frames) in datasets.items():
        if len(instructions) != len(frames):
            raise ValueError(f"{dataset}: {len(instructions)} instructions for {len(frames)} episodes")
        if level == "dataset":
            total = int(np.sum(frames, dtype=np.int64)) if len(frames) else 0
            if total > 0:
                out.append(Source(dataset, dataset, None, dataset, total, None))
            continue
        by_task: dict[str, list[int]] = {}
        for episode, text in enumerate(instructions):
            by_task.setdefault(text, []).append(episode)
        for text, episodes in by_task.items():
            total = int(sum(int(frames[e]) for e in episodes))
            if total > 0:
                group = text if level == "task" else skill_of(text, skill_map)
                out.append(Source(f"{dataset}/{text}", dataset, text, group, total, tuple(episodes)))
    return out


def group_names(sources: Sequence[Source]) -> list[str]:
    """Distinct groups of ``sources`` in first-seen order."""
    return list(dict.fromkeys(s.group for s in sources))


def group_frames(sources: Sequence[Source]) -> dict[str, int]:
    """Kept training frames per group."""
    out: dict[str, int] = {}
    for s in sources:
        out[s.group] = out.get(s.group, 0) + s.frames
    return out


def spread(group_weights: Mapping[str, float], sources: Sequence[Source]) -> np.ndarray:
    """Source weights float64 [S]: each group's weight split over its sources by frames (sum 1).

    Raises:
        KeyError: a source's group has no weight.
    """
    frames = group_frames(sources)
    w = np.array([float(group_weights[s.group]) * s.frames / frames[s.group] for s in sources])
    return w / w.sum()


def collapse(source_weights: Sequence[float], sources: Sequence[Source]) -> dict[str, float]:
    """Group weights from source weights (sums over each group's sources)."""
    out = {g: 0.0 for g in group_names(sources)}
    for w, s in zip(source_weights, sources):
        out[s.group] += float(w)
    return out


def baseline_group_weights(strategy: str, counts: Mapping[str, int], temperature: float = 2.0) -> dict[str, float]:
    """Closed-form group weights of ``full_dataset``, ``task_balanced`` or ``temperature``.

    Args:
        strategy: one of the three. counts: kept frames per group. temperature: T (temperature only).
    Raises:
        ValueError: another strategy, or bad counts / temperature.
    """
    names = list(counts)
    n = [counts[g] for g in names]
    if strategy == "full_dataset":
        w = natural_weights(n)
    elif strategy == "task_balanced":
        w = uniform_weights(n)
    elif strategy == "temperature":
        w = temperature_weights(n, temperature)
    else:
        raise ValueError(f"{strategy!r} has no closed-form weights; use one of full_dataset, task_balanced, temperature")
    return dict(zip(names, w.tolist()))


def dataset_mixture_group_weights(
    mixture: Mapping[str, float], sources: Sequence[Source], *, balance_by_size: bool = False
) -> dict[str, float]:
    """Group weights implied by per-dataset mixture weights (static and dynamic starting point).

    Each dataset's normalised weight (times its kept frames with ``balance_by_size``) is spread over
    its sources in natural proportions, then summed per group.

    Raises:
        ValueError: the datasets of ``sources`` all have weight 0.
    """
    dataset_frames: dict[str, int] = {}
    for s in sources:
        dataset_frames[s.dataset] = dataset_frames.get(s.dataset, 0) + s.frames
    raw = {d: float(mixture.get(d, 0.0)) * (dataset_frames[d] if balance_by_size else 1.0) for d in dataset_frames}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError("the mixture gives weight 0 to every dataset that has training frames")
    source_w = [raw[s.dataset] / total * s.frames / dataset_frames[s.dataset] for s in sources]
    return collapse(source_w, sources)


def normalised_phase(weights: Mapping[str, float], groups: Sequence[str]) -> dict[str, float]:
    """A curriculum phase's weights over ``groups`` (missing groups 0), normalised.

    Raises:
        ValueError: a name that is no group, or no weight on any group.
    """
    unknown = [g for g in weights if g not in groups]
    if unknown:
        raise ValueError(f"names {unknown} are not groups of this mixture; groups: {list(groups)}")
    raw = {g: float(weights.get(g, 0.0)) for g in groups}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"phase weights {dict(weights)} give no weight to any group with training frames")
    return {g: w / total for g, w in raw.items()}
