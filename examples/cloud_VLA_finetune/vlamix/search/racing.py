"""Racing for the evaluation budget: stop evaluating points that are clearly worse than the best.

Points are evaluated in rounds of ``round_size`` episodes each (up to ``max_episodes``). After every
round each active point's success rate gets its Wilson score interval
(:func:`vlamix.eval.stats.wilson_interval`, ``z`` = 1.96 by default); the *leader* is the point with
the highest lower bound. A point whose upper bound falls below the leader's lower bound stops (its
episodes so far stay its result). The leader never stops: its upper bound is at least its own lower
bound. This is Hoeffding/Bernstein racing (Maron & Moore 1994, "Hoeffding races"; Heidrich-Meisner &
Igel 2009 for racing in policy search) with Wilson intervals, which hold at small N.

This module is the decision rule over episode streams (:func:`race`); it is not wired into
``vlamix run`` yet (rollouts of different points would have to be interleaved round by round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vlamix.eval.stats import Z_95, wilson_interval


@dataclass
class RaceResult:
    """Per point: episodes run, successes, the round it stopped in (None: ran to the end)."""

    episodes: dict[str, int]
    successes: dict[str, int]
    stopped_at_round: dict[str, int | None]
    max_episodes: int
    rounds: list[dict[str, tuple[float, float]]] = field(default_factory=list)

    @property
    def stopped(self) -> list[str]:
        return [p for p, r in self.stopped_at_round.items() if r is not None]

    @property
    def episodes_saved(self) -> int:
        """Episodes not run compared with evaluating every point to ``max_episodes``."""
        return sum(self.max_episodes - n for n in self.episodes.values())


def race(
    run_episodes: Callable[[str, int, int], list[bool]],
    points: list[str],
    *,
    round_size: int,
    max_episodes: int,
    z: float = Z_95,
) -> RaceResult:
    """Evaluate ``points`` in rounds, stopping those whose Wilson upper bound < the leader's lower bound.

    Args:
        run_episodes: ``(point, start, count) -> list of successes`` for episodes ``start .. start+count-1``
            of that point (the same episode indices, i.e. init states, for every point).
        round_size, max_episodes: episodes per round and per point at most (>= 1).
    Raises:
        ValueError: ``round_size`` or ``max_episodes`` < 1, or no points.
    """
    if round_size < 1 or max_episodes < 1 or not points:
        raise ValueError(f"need round_size >= 1, max_episodes >= 1 and points, got {round_size}, {max_episodes}, {points}")
    n = {p: 0 for p in points}
    k = {p: 0 for p in points}
    stopped: dict[str, int | None] = {p: None for p in points}
    result = RaceResult(n, k, stopped, max_episodes)
    rnd = 0
    while True:
        active = [p for p in points if stopped[p] is None and n[p] < max_episodes]
        if not active:
            return result
        rnd += 1
        for p in active:
            count = min(round_size, max_episodes - n[p])
            outcomes = run_episodes(p, n[p], count)
            if len(outcomes) != count:
                raise ValueError(f"run_episodes returned {len(outcomes)} outcomes for {count} episodes of {p!r}")
            n[p] += count
            k[p] += sum(bool(o) for o in outcomes)
        bounds = {p: wilson_interval(k[p], n[p], z) for p in points if n[p] > 0}
        result.rounds.append(bounds)
        leader = max((p for p in points if stopped[p] is None), key=lambda p: bounds[p][0])
        for p in points:
            if stopped[p] is None and p != leader and bounds[p][1] < bounds[leader][0]:
                stopped[p] = rnd
