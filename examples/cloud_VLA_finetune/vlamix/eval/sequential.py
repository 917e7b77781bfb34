"""Sequential paired test for racing: exact error spending on the discordant pairs, valid at every look.

Two benchmark points evaluated on the same LIBERO episodes (same init states and seeds) give one
pair of outcomes per episode, ``(x_a, x_b)`` in {0, 1}^2. Racing looks at the pairs after every round
and stops the worse point as soon as the evidence allows; this module gives the decision rule whose
error rate holds for all those looks together. (The rule racing had before, in
:mod:`vlamix.pipeline.racing`, compared two fixed-sample Wilson 95% intervals after every round, with
no correction for the looks or the number of points and no use of the pairing, so no error rate could
be stated for it. ``benchmarks/bench_racing.py``, 10,000 races per setting, rounds of 10 of at most 200
or 500 episodes: its measured false-stop rate per point was 0.012-0.056 at 200 episodes and up to 0.088
at 500 (growing with the looks), this rule's 0.037-0.053; the worse point of two at gap 0.1 / 0.2 / 0.4
ran 161 / 63 / 15 of 200 episodes under the old rule and 137 / 60 / 24 under this one, which spends
little error early.)

The method: exact conditional error spending on the McNemar sign walk
--------------------------------------------------------------------
*Null hypothesis* H0: on every episode the two points have the same success probability
(``P(x_a = 1) = P(x_b = 1)`` episode by episode, outcomes independent across episodes), which is
what "the two points are equally good" means when they share init states; it holds in particular
when episodes are drawn i.i.d. (random init states) and ``p_a = p_b``. Then
``P(x_a=1, x_b=0) = P(x_a=0, x_b=1)`` on every episode, so, given which episodes are *discordant*
(``x_a != x_b``), each discordant pair is "a+" (``x_a = 1``) or "b+" with probability 1/2,
independently of each other and of the discordance pattern (McNemar, Psychometrika 12, 1947: the
exact McNemar test is the binomial test of this). The statistic is the sign walk
``S_n = a_only - b_only`` after ``n`` pairs (``a_only``/``b_only``: discordant pairs won by a / b);
under H0, given the pattern, ``S`` is a simple symmetric random walk that moves at discordant pairs.

*Boundary*: two-sided error spending (Lan & DeMets, "Discrete sequential boundaries for clinical
trials", Biometrika 70, 1983) with the power family ``alpha(t) = alpha * t^rho`` (Kim & DeMets,
"Design and analysis of group sequential tests based on the type I error spending rate function",
Biometrika 74, 1987, the family ``alpha t^rho``), ``t = n / max_pairs`` the fraction of the planned pairs.
The test looks after **every pair**; at pair ``n`` the boundary is the smallest integer ``b_n >= 1`` with

    P0(|S_n| >= b_n, no earlier crossing | discordance pattern) <= alpha(t_n) - spent_{n-1},

and the test rejects when the observed ``|S_n| >= b_n`` (``S_n > 0``: b is worse, ``S_n < 0``: a is
worse); ``spent_n`` adds the left side. The probability is computed exactly by the recursion of
Armitage, McPherson & Rowe ("Repeated significance tests on accumulating data", JRSS A 132, 1969,
section 2) on the integer walk: the distribution of ``S`` over the paths that have not crossed is
convolved with the fair step (1/2, 1/2) at a discordant pair and cut at ``|S| >= b_n`` after each look.
The boundary depends only on the discordance pattern, which is independent of the signs under H0, so
given any pattern the probability of ever rejecting is the sum of the spent increments,
``<= alpha(1) = alpha``; hence also unconditionally. By symmetry each direction gets half. Because the
boundary is evaluated after every pair, the decision does not depend on how the pairs are split into
calls of :meth:`PairedSequentialTest.update`, and stopping or looking at any time (even depending on
the data) cannot raise the error: the rejection event of any stopped run is contained in that of the
full run. So the guarantee is anytime-valid up to ``max_pairs`` (``tests/test_eval_sequential.py``
checks it by enumerating every sign sequence of a short run, and by simulation).

*Shape* ``rho = 0.5`` (:data:`DEFAULT_RHO`): among rho in {0.25, 0.4, 0.5, 0.6, 0.75, 1} it gave the
fewest mean pairs to a decision summed over gaps 0.1, 0.2 and 0.4 (success rates 0.5 -+ gap / 2) at
200 and 500 pairs, with correlated and with independent outcomes (flat within 1% for 0.4-0.6); larger
rho keeps more error for the end (a little more power at gap 0.1, later stops at large gaps).

*Why this and not a betting e-process*: Ville's inequality makes a betting e-process (Waudby-Smith &
Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 86, 2024: the capital
process ``prod_i (1 + lambda_i (X_i - 1/2))`` on the signs, or a beta-binomial mixture of it) valid
without a horizon, but at a finite horizon it spends only
part of ``alpha`` and so needs more pairs except at the largest gaps. The horizon is known here (the
race's ``max_episodes``), as in STEP (Snyder et al., "Is Your Imitation Learning Policy Better than
Mine? Policy Comparison with Near-Optimal Stopping", RSS 2025), which optimises a rejection region for
two *unpaired* Bernoulli sequences under a linear risk budget; on paired episodes the sign walk moves
only at discordant pairs, so positively correlated outcomes (shared init-state difficulty, as on
LIBERO) need fewer episodes. ``benchmarks/bench_racing.py`` measures all three on the same simulated
pairs (10,000 per setting, looks after every pair, alpha 0.05 two-sided, success rates 0.5 -+ gap / 2):

- false decisions at equal rates 0.3 / 0.5 / 0.8: this test 0.045-0.054 (exact spending; Monte Carlo
  error 0.002), the beta-binomial mixture at ``1/alpha`` 0.021-0.032, STEP 0.047-0.052 on independent
  outcomes and 0.008-0.013 on correlated ones (it ignores the pairing).
- mean pairs to a decision, correlated outcomes (phi 0.33), 200 / 500 pairs: gap 0.2: this test 66.9 /
  74.0, mixture 76.5 / 76.5, STEP 93.4 / 113.3; gap 0.4: 22.4 / 24.3, 23.6 / 23.6, 30.5 / 35.7;
  gap 0.1: 151 / 239, 165 / 279, 177 / 321.
- independent outcomes: gap 0.2: 91.3 / 103.7, 105.2 / 112.0, STEP 90.6 / 109.7; gap 0.4:
  28.3 / 31.3, 29.9 / 29.9, STEP 30.7 / 35.4 (ours / STEP = 0.88-1.01 at gaps 0.2 and 0.4).

So the mixture is ahead only at the largest gap with the longer horizon (by 3-5%), and behind by up to
17% elsewhere. The racing decision itself is one-sided (stop the point when it is worse; this test at
two-sided ``2 alpha`` with one direction acted on, against STEP's ``"comparison"`` policy at alpha):
in the same benchmark (defaults, seed 0, 200 / 500 pairs) false stops at equal rates were 0.046-0.054
for this test and 0.012-0.019 (correlated) / 0.047-0.052 (independent) for STEP, and the ratio of mean
pairs to a decision, this test / STEP, at gaps 0.1 / 0.2 / 0.4 was 0.82 / 0.69 / 0.72 and
0.72 / 0.64 / 0.66 on correlated outcomes, 1.00 / 0.98 / 0.89 and 0.99 / 0.91 / 0.85 on independent ones.

One point against finished points: :class:`VersusFinished` (what ``racing: true`` runs)
-----------------------------------------------------------------------------------------
:func:`vlamix.pipeline.racing.race_point` evaluates points one after another: the point in hand races
against the ``m`` points of the job that have finished on the same episode plan. Competitor ``j`` gets
its own test, fed the pairs of the episodes both ran, in plan order; the point stops when a test finds
it worse. Only the point can be stopped (the competitors are done), so each test is used one-sided:
a two-sided test at ``2 alpha / m`` whose "a_worse" direction has probability exactly ``alpha / m`` of
ever rejecting under H0 (symmetry of the walk). Guarantee (Bonferroni): if the point is as good as
every competitor on every episode, each comparison stops it with probability ``<= alpha / m`` (for a
competitor that is worse, "point worse" is an increasing event of the competitor's wins, so its
probability is at most the one under H0), and ``P(stopped) <= alpha`` over all looks. Nothing is
selected by observed rates (no "best" competitor), so no selection effect enters. A competitor that was
itself stopped ran a prefix of rounds chosen by its own outcomes; its test sees a prefix of the pairs,
and a rejection on a prefix is a rejection of the same test fed the whole plan, so the bound holds.
The bound is per point: in a job of ``k`` equal points run in turn, each later point is stopped with
probability ``<= alpha``, so *some* point is stopped with probability up to ``(k - 1) alpha``
(``benchmarks/bench_racing.py`` reports both). :func:`race_sequential` runs this for R simulated
jobs at once (the benchmark checks it against ``race_point`` race by race).

Several points together: :class:`PairedRace`
--------------------------------------------
``k`` points run the same episodes in rounds. Every pair of points ``(i, j)`` has its own test at
level ``alpha / C(k, 2)`` (two-sided), fed the pairs while both run. After a round a point stops when
a test against a point still running says it is worse. The leader is never needed: every pair is
tested, so the changing identity of the best point does not matter. Guarantee (Bonferroni):

- let ``B`` be the points whose true success rate equals the best's. Point ``j`` in ``B`` is stopped
  only if some test ``(i, j)`` rejects in the direction "j worse". For ``i`` in ``B`` that is a
  rejection of a true H0 (probability ``<= alpha / (2 C(k, 2))`` for that direction); for ``i`` not in
  ``B`` (``p_i < p_j`` on every episode) the signs favour ``j``, and "j worse" is an increasing event
  of the "i+" signs, so its probability is at most the one under H0 (same bound). A test frozen when
  one of its points stops rejects only if the same test fed the whole plan would (same boundaries up
  to the stop), so stopping other points cannot raise these probabilities.
- A union bound over the ordered pairs ``(i, j)`` with ``j`` in ``B``, at most ``k (k - 1) = 2 C(k, 2)``
  of them, each ``<= alpha / (2 C(k, 2))``, gives ``P(some best point is stopped) <= alpha`` (all
  points equal is the worst case); with a single best point there are ``k - 1`` such pairs and the
  bound is ``alpha / k``.

A round that would stop every running point (only possible through contradictory decisions) keeps
those with the most successes (they share episodes, so counts compare).

Units and shapes: outcomes are episodes, 0/1 (bool or int arrays); ``n`` counts pairs (episodes run
by both points); ``batch`` races are independent copies (the benchmark's Monte Carlo), ``R`` below.
:func:`simulate_outcomes` draws such outcomes with a shared per-episode difficulty (the benchmark's
and the tests' model).

Usage::

    from vlamix.eval.sequential import PairedSequentialTest, VersusFinished, paired_sequential_test, race_paired
    test = PairedSequentialTest(alpha=0.05, max_pairs=200)
    test.update(round_a, round_b)          # bool [10] each: one round of shared episodes
    test.decision                          # None, "a_worse" or "b_worse"
    paired_sequential_test(xa, xb, max_pairs=200)["decision"]
    race = race_paired(outcomes, round_size=10)   # bool [k, 200]: k points on the same episodes
    race.stopped_at_round, race.episodes, race.episodes_saved
    point = VersusFinished(n_competitors=2, alpha=0.05, max_pairs=200)
    point.update(1, mine, theirs)          # this round's pairs with competitor 1; then point.stopped, .stopped_by

Size: one file because the boundary (``spending``, the exact conditional bound) and the three ways of running it
(one pair, a race of k points on a matrix, a point against finished ones) must stay one rule with one error
rate; about a third of the file is this docstring, which states the guarantee and its measured figures.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import norm

from vlamix.eval.paired import ALPHA

__all__ = [
    "A_WORSE",
    "B_WORSE",
    "PairedRace",
    "PairedSequentialTest",
    "VersusFinished",
    "paired_sequential_test",
    "race_paired",
    "race_sequential",
    "simulate_outcomes",
    "spending",
]

#: Default shape of the spending function :func:`spending` (module docstring, "Shape").
DEFAULT_RHO = 0.5

#: Decision of a test: the first point (``x_a``) is worse / the second one (``x_b``) is worse.
A_WORSE, B_WORSE = "a_worse", "b_worse"
_NAMES = {-1: A_WORSE, 0: None, 1: B_WORSE}


def spending(t: Any, alpha: float, rho: float = DEFAULT_RHO) -> np.ndarray:
    """Power-family error-spending function ``alpha * min(t, 1)^rho`` (Kim & DeMets, Biometrika 74, 1987).

    Args:
        t: information fraction(s) in [0, 1] (here pairs seen / ``max_pairs``), float array or scalar.
        alpha: total two-sided error, in (0, 1).
        rho: shape > 0 (1: linear, STEP's default risk budget; 3: close to O'Brien-Fleming; 0.5, the
            default, spends early, closer to Pocock).
    Returns:
        float64 array of ``t``'s shape: the error that may be spent up to ``t``.
    """
    return alpha * np.minimum(np.asarray(t, dtype=np.float64), 1.0) ** rho


def _check_alpha(alpha: Any, name: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _binary(name: str, x: Any) -> np.ndarray:
    """``x`` as an int8 array of 0/1; ValueError naming ``name`` for other values."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    if arr.size and (arr.dtype.kind not in "iuf" or not np.all((arr == 0) | (arr == 1))):
        raise ValueError(f"{name} must hold only 0/1 or bool outcomes, got {arr.dtype} values {np.unique(arr)[:5]!r}")
    return arr.astype(np.int8)


def _result(field: str) -> property:
    """Read-only view of the array attribute ``field`` through the class's ``_out`` (scalar or per race)."""
    return property(lambda self: self._out(getattr(self, field)))


class PairedSequentialTest:
    """Exact error-spending test of two points on shared episodes (module docstring), looking after every pair.

    Args:
        alpha: two-sided error (float in (0, 1)): under H0 the probability of ever deciding is <= alpha.
        max_pairs: planned pairs (episodes per point) at most (int >= 1); the spending function reaches
            ``alpha`` there.
        spending_rho: shape of :func:`spending` (float > 0, default :data:`DEFAULT_RHO`).
        batch: None for one test; an int R >= 1 for R independent tests advanced together (arrays of
            shape [R] everywhere below, inputs [R, n]).
    Raises:
        ValueError: ``alpha`` outside (0, 1), ``max_pairs`` or ``batch`` not an integer >= 1,
            ``spending_rho`` not > 0.

    Attributes (read-only properties; int / float / str for ``batch=None``, arrays of shape [R] else):
        decision: None, "a_worse" or "b_worse" (list of those for a batch).
        codes: int8: -1 a worse, +1 b worse, 0 undecided.
        n_pairs: pairs looked at (a decided test stops counting).
        a_only, b_only: discordant pairs won by a / by b (int64).
        decided_at: pair count at the decision (0: undecided).
        alpha_spent: error spent so far given the discordance pattern (float64, <= alpha).
        boundary: the last boundary ``b_n`` on ``|a_only - b_only|`` (int64; 0 before the first look).
    """

    def __init__(self, alpha: float = ALPHA, max_pairs: int = 200, *, spending_rho: float = DEFAULT_RHO,
                 batch: int | None = None) -> None:
        self.alpha = _check_alpha(alpha)
        self.max_pairs = _check_count(max_pairs, "max_pairs")
        if isinstance(spending_rho, bool) or not isinstance(spending_rho, (int, float)) or not spending_rho > 0:
            raise ValueError(f"spending_rho must be a number > 0, got {spending_rho!r}")
        self.spending_rho = float(spending_rho)
        self.batch = None if batch is None else _check_count(batch, "batch")
        r = 1 if batch is None else self.batch
        self._w = 8  # the walk's half-width held in _dist; doubled when mass reaches an edge
        self._dist = np.zeros((r, 2 * self._w + 1))  # P0(S = s, not crossed | pattern), s = -w .. w
        self._dist[:, self._w] = 1.0
        self._n = np.zeros(r, np.int64)
        self._a = np.zeros(r, np.int64)
        self._b = np.zeros(r, np.int64)
        self._spent = np.zeros(r)
        self._bound = np.zeros(r, np.int64)
        self._code = np.zeros(r, np.int8)
        self._at = np.zeros(r, np.int64)

    # ------------------------------------------------------------------ results
    def _out(self, arr: np.ndarray) -> Any:
        return arr[0].item() if self.batch is None else arr.copy()

    @property
    def decision(self) -> Any:
        names = [_NAMES[int(c)] for c in self._code]
        return names[0] if self.batch is None else names

    codes = _result("_code")
    n_pairs = _result("_n")
    a_only = _result("_a")
    b_only = _result("_b")
    decided_at = _result("_at")
    alpha_spent = _result("_spent")
    boundary = _result("_bound")

    # ------------------------------------------------------------------ updating
    def update(self, x_a: Any, x_b: Any, active: Any = None) -> Any:
        """Feed pairs in episode order and look after each; returns :attr:`decision`.

        Args:
            x_a, x_b: outcomes of point a and point b on the same episodes (bool or 0/1 ints), shape
                [n] (``batch=None``) or [R, n]; n may be 0.
            active: bool [R] (batch only): the tests that take these pairs; the others, and every
                decided test, ignore them (None: all).
        Returns:
            :attr:`decision` after the last pair.
        Raises:
            ValueError: non-0/1 values (naming ``x_a`` or ``x_b``), shapes that differ or do not fit
                ``batch`` (naming the argument), ``active`` of the wrong shape, or more than
                ``max_pairs`` pairs in an undecided test (naming ``max_pairs``).
        """
        xa, xb = _binary("x_a", x_a), _binary("x_b", x_b)
        want = 1 if self.batch is None else 2
        for name, arr in (("x_a", xa), ("x_b", xb)):
            if arr.ndim != want or (self.batch is not None and arr.shape[0] != self.batch):
                shape = "[n]" if self.batch is None else f"[{self.batch}, n]"
                raise ValueError(f"{name} must have shape {shape}, got {list(arr.shape)}")
        if xa.shape != xb.shape:
            raise ValueError(f"x_a and x_b must have the same shape, got {list(xa.shape)} and {list(xb.shape)}")
        d = (xa - xb).reshape(len(self._n), -1)
        live = self._code == 0
        if active is not None:
            act = np.asarray(active)
            if self.batch is None or act.shape != (self.batch,) or act.dtype != np.bool_:
                raise ValueError(f"active must be a bool array of shape [batch], got {act.dtype} {list(act.shape)}")
            live = live & act
        if d.shape[1] and np.any(self._n[live] + d.shape[1] > self.max_pairs):
            raise ValueError(f"more pairs than max_pairs={self.max_pairs}: {int(self._n[live].max())} seen, "
                             f"{d.shape[1]} more given")
        for j in range(d.shape[1]):
            self._look(d[:, j], live)
        return self.decision

    def _grow(self) -> None:
        extra = max(8, self._w // 4)
        self._dist = np.pad(self._dist, ((0, 0), (extra, extra)))
        self._w += extra

    def _look(self, d: np.ndarray, live: np.ndarray) -> None:
        """One pair (``d = x_a - x_b`` in {-1, 0, 1}, int8 [R]) for the live tests, then one look."""
        rows = np.flatnonzero(live & (self._code == 0))
        if rows.size == 0:
            return
        whole = rows.size == len(self._n)
        sel = slice(None) if whole else rows
        self._n[sel] += 1
        step = d[sel]
        self._a[sel] += step == 1
        self._b[sel] += step == -1
        moved = rows[step != 0]
        if moved.size:
            if np.any(self._dist[moved, 0] > 0) or np.any(self._dist[moved, -1] > 0):
                self._grow()
            old = self._dist[moved]
            new = np.empty_like(old)  # new[s] = (old[s - 1] + old[s + 1]) / 2; the edges hold no mass
            np.add(old[:, :-2], old[:, 2:], out=new[:, 1:-1])
            new[:, 0], new[:, -1] = old[:, 1], old[:, -2]
            new *= 0.5
            self._dist[moved] = new
        w = self._w
        dist = self._dist[sel]
        allowance = spending(self._n[sel] / self.max_pairs, self.alpha, self.spending_rho) - self._spent[sel]
        # tail[:, b - 1] = P0(|S| >= b, not crossed) for b = 1 .. w (the walk is symmetric under H0)
        tail = 2.0 * np.cumsum(dist[:, :w:-1].T, axis=0)[::-1].T
        over = (tail > allowance[:, None]).sum(axis=1)  # tail is non-increasing in b
        bound = over + 1
        spent = np.where(over < w, tail[np.arange(len(over)), np.minimum(over, w - 1)], 0.0)
        dist[np.abs(np.arange(-w, w + 1))[None, :] >= bound[:, None]] = 0.0
        self._dist[sel] = dist
        self._spent[sel] += spent
        self._bound[sel] = bound
        walk = self._a[sel] - self._b[sel]
        hit = np.abs(walk) >= bound
        if np.any(hit):
            idx = rows[hit]
            self._code[idx] = np.sign(walk[hit]).astype(np.int8)
            self._at[idx] = self._n[idx]


def paired_sequential_test(x_a: Any, x_b: Any, alpha: float = ALPHA, max_pairs: int | None = None, *,
                           spending_rho: float = DEFAULT_RHO) -> dict[str, Any]:
    """One-shot :class:`PairedSequentialTest` over whole sequences, stopping at the first decision.

    Args:
        x_a, x_b: outcomes of two points on the same episodes in run order (bool or 0/1, shape [n]).
        alpha: two-sided error (float in (0, 1)).
        max_pairs: the planned horizon (int >= n; None: n).
        spending_rho: see :func:`spending`.
    Returns:
        dict(decision (None | "a_worse" | "b_worse"), decided_at (pairs at the decision, int; 0: none),
        n_pairs (pairs used), a_only, b_only (discordant counts up to the decision), alpha_spent
        (float), boundary (int, last ``b_n``), alpha, max_pairs).
    Raises:
        ValueError: as :class:`PairedSequentialTest` and its ``update``.
    """
    xa = _binary("x_a", x_a)
    if max_pairs is None:
        max_pairs = max(xa.shape[0], 1) if xa.ndim == 1 else 1  # a wrong shape is reported by update
    test = PairedSequentialTest(alpha, max_pairs, spending_rho=spending_rho)
    test.update(xa, x_b)
    return {"decision": test.decision, "decided_at": test.decided_at, "n_pairs": test.n_pairs,
            "a_only": test.a_only, "b_only": test.b_only, "alpha_spent": test.alpha_spent,
            "boundary": test.boundary, "alpha": test.alpha, "max_pairs": test.max_pairs}


class PairedRace:
    """``k`` points racing on shared episodes: every pair tested at ``alpha / C(k, 2)`` (module docstring).

    Args:
        n_points: k >= 2.
        alpha: bound on the probability that a point whose true success rate equals the best's is
            stopped (float in (0, 1)).
        max_episodes: episodes per point at most (int >= 1), the horizon of every pair's test.
        spending_rho: see :func:`spending`.
        batch: None, or R independent races advanced together (outcome arrays get a leading [R]).
    Raises:
        ValueError: ``n_points`` < 2 and as :class:`PairedSequentialTest`.

    Attributes (arrays of shape [k], or [R, k] for a batch):
        running: bool, still evaluated.
        episodes: int64, episodes run per point.
        successes: int64, successes per point.
        stopped_at_round: int64, 1-based round after which the point stopped (0: running).
        stopped_by: int64, index of the point whose test stopped it (-1: running).
        rounds: rounds run (int).
    """

    def __init__(self, n_points: int, alpha: float = ALPHA, max_episodes: int = 200, *,
                 spending_rho: float = DEFAULT_RHO, batch: int | None = None) -> None:
        if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 2:
            raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
        self.n_points = int(n_points)
        self.alpha = _check_alpha(alpha)
        self.max_episodes = _check_count(max_episodes, "max_episodes")
        self.batch = None if batch is None else _check_count(batch, "batch")
        self.pairs = list(combinations(range(self.n_points), 2))
        self.pair_alpha = self.alpha / len(self.pairs)
        r = 1 if batch is None else self.batch
        self._tests = {p: PairedSequentialTest(self.pair_alpha, self.max_episodes, spending_rho=spending_rho, batch=r)
                       for p in self.pairs}
        self._running = np.ones((r, self.n_points), bool)
        self._episodes = np.zeros((r, self.n_points), np.int64)
        self._successes = np.zeros((r, self.n_points), np.int64)
        self._stopped_at = np.zeros((r, self.n_points), np.int64)
        self._stopped_by = np.full((r, self.n_points), -1, np.int64)
        self.rounds = 0

    def _out(self, arr: np.ndarray) -> np.ndarray:
        return arr[0].copy() if self.batch is None else arr.copy()

    running = _result("_running")
    episodes = _result("_episodes")
    successes = _result("_successes")
    stopped_at_round = _result("_stopped_at")
    stopped_by = _result("_stopped_by")

    @property
    def episodes_saved(self) -> Any:
        """Episodes not run against evaluating every point to ``max_episodes`` (int, or int64 [R])."""
        saved = (self.max_episodes - self._episodes).sum(axis=1)
        return int(saved[0]) if self.batch is None else saved

    def update(self, outcomes: Any) -> np.ndarray:
        """Run one round: every running point's outcomes on the round's episodes; then stop the worse points.

        Args:
            outcomes: bool or 0/1, shape [k, c] (or [R, k, c] for a batch): point i's outcomes on the
                round's c episodes (the same episodes for every point); entries of stopped points are
                ignored.
        Returns:
            :attr:`running` after the round.
        Raises:
            ValueError: wrong shape or values (naming ``outcomes``), or more than ``max_episodes``.
        """
        x = _binary("outcomes", outcomes)
        want = (self.n_points,) if self.batch is None else (self.batch, self.n_points)
        if x.ndim != len(want) + 1 or x.shape[:-1] != want:
            raise ValueError(f"outcomes must have shape [{', '.join(map(str, want))}, c], got {list(x.shape)}")
        x = x.reshape(len(self._running), self.n_points, -1)
        if np.any(self._episodes[self._running] + x.shape[2] > self.max_episodes):
            raise ValueError(f"more episodes than max_episodes={self.max_episodes}: "
                             f"{int(self._episodes.max())} run, {x.shape[2]} more given")
        self.rounds += 1
        run = self._running.copy()
        worse = np.zeros_like(run)
        by = np.full(run.shape, -1, np.int64)
        for (i, j), test in self._tests.items():
            both = run[:, i] & run[:, j]
            test.update(x[:, i], x[:, j], active=both)
            code = test._code
            for loser, winner, sign in ((i, j, -1), (j, i, 1)):
                hit = both & (code == sign) & ~worse[:, loser]
                worse[hit, loser] = True
                by[hit, loser] = winner
        self._episodes[run] += x.shape[2]
        self._successes += np.where(run, x.sum(axis=2), 0)
        stop = worse & run
        everyone = stop.sum(axis=1) == run.sum(axis=1)
        if np.any(everyone):  # keep the most successful of the running points
            best = np.where(run, self._successes, -1).max(axis=1, keepdims=True)
            keep = everyone[:, None] & run & (self._successes == best)
            stop &= ~keep
        self._running &= ~stop
        self._stopped_at[stop] = self.rounds
        self._stopped_by[stop] = by[stop]
        return self.running


class VersusFinished:
    """One point against ``m`` finished points on shared episodes: what ``racing: true`` runs (module docstring).

    The point (``x_a`` of every test) is stopped when it is significantly worse than *any* of the ``m``
    competitors: competitor ``j`` has its own :class:`PairedSequentialTest` at two-sided level
    ``2 alpha / m`` whose "a_worse" direction alone is acted on, a one-sided test at ``alpha / m``
    (the walk is symmetric under H0, so each direction gets exactly half of what is spent). By
    Bonferroni, a point at least as good as every competitor on every episode is stopped with
    probability <= ``alpha``, over all looks, however the competitors were chosen, and whatever their
    observed rates (no "best" competitor is selected). A test whose competitor is found significantly
    *worse* ("b_worse") is decided and frozen: that competitor can no longer stop the point.

    Args:
        n_competitors: m >= 1, fixed when the object is made (the Bonferroni divisor; a competitor
            that appears later needs a share of alpha already given out, so it is not added).
        alpha: bound on the probability of stopping a point that is as good as the best (float in (0, 0.5)).
        max_pairs: planned episodes of the point (int >= 1), the horizon of every test.
        spending_rho: see :func:`spending`.
        batch: None for one point; an int R >= 1 for R independent races (the benchmark's Monte Carlo).
    Raises:
        ValueError: ``n_competitors`` < 1, ``alpha`` outside (0, 0.5), and as :class:`PairedSequentialTest`.

    Attributes:
        comparison_alpha: ``alpha / m``, the one-sided level of each comparison (float).
        tests: the m :class:`PairedSequentialTest` (two-sided level ``2 alpha / m``).
    """

    def __init__(self, n_competitors: int, alpha: float = ALPHA, max_pairs: int = 200, *,
                 spending_rho: float = DEFAULT_RHO, batch: int | None = None) -> None:
        self.n_competitors = _check_count(n_competitors, "n_competitors")
        self.alpha = _check_alpha(alpha)
        if not self.alpha < 0.5:
            raise ValueError(f"alpha must be a number in (0, 0.5), got {alpha!r}")
        self.comparison_alpha = self.alpha / self.n_competitors
        self.batch = None if batch is None else _check_count(batch, "batch")
        self.tests = [PairedSequentialTest(2.0 * self.comparison_alpha, max_pairs, spending_rho=spending_rho,
                                           batch=batch) for _ in range(self.n_competitors)]

    def update(self, competitor: int, x_point: Any, x_competitor: Any, active: Any = None) -> Any:
        """Feed pairs of the point and competitor ``competitor`` (index 0 .. m-1) on shared episodes, in plan order.

        Args and Raises: as :meth:`PairedSequentialTest.update` (``x_a`` = the point, ``x_b`` = the
        competitor); IndexError for a competitor index outside 0 .. m-1.
        Returns:
            :attr:`stopped` after the pairs.
        """
        if not 0 <= competitor < self.n_competitors:
            raise IndexError(f"competitor must be in 0..{self.n_competitors - 1}, got {competitor!r}")
        self.tests[competitor].update(x_point, x_competitor, active)
        return self.stopped

    def _worse(self) -> np.ndarray:
        """int64 [m, R]: pairs at which test j found the point worse (0: it did not)."""
        return np.stack([np.where(t._code == -1, t._at, 0) for t in self.tests])

    @property
    def stopped(self) -> Any:
        """True where some comparison found the point worse (bool, or bool [R])."""
        hit = (self._worse() > 0).any(axis=0)
        return bool(hit[0]) if self.batch is None else hit

    @property
    def stopped_by(self) -> Any:
        """Index of the competitor whose test found the point worse at the fewest pairs (the lowest index on
        ties); -1 where none did (int, or int64 [R])."""
        at = self._worse()
        first = np.where(at > 0, at, np.iinfo(np.int64).max).argmin(axis=0)
        out = np.where((at > 0).any(axis=0), first, -1)
        return int(out[0]) if self.batch is None else out


def race_paired(outcomes: Any, *, round_size: int = 10, alpha: float = ALPHA, max_episodes: int | None = None,
                spending_rho: float = DEFAULT_RHO) -> PairedRace:
    """Race ``k`` points over whole outcome tables in rounds of ``round_size`` episodes (:class:`PairedRace`).

    Args:
        outcomes: bool or 0/1, [k, n] (one race) or [R, k, n] (R races): every point's outcome on the
            planned episodes in run order (a stopped point's later entries are never looked at).
        round_size: episodes per round (int >= 1); the last round may be shorter.
        alpha: see :class:`PairedRace`.
        max_episodes: horizon (int >= 1; None: n). Rounds stop at min(n, max_episodes).
        spending_rho: see :func:`spending`.
    Returns:
        the :class:`PairedRace` after the last round.
    Raises:
        ValueError: ``outcomes`` not 2-D or 3-D with k >= 2, ``round_size`` < 1, and as :class:`PairedRace`.
    """
    x = _binary("outcomes", outcomes)
    if x.ndim not in (2, 3):
        raise ValueError(f"outcomes must have shape [k, n] or [R, k, n], got {list(x.shape)}")
    round_size = _check_count(round_size, "round_size")
    horizon = x.shape[-1] if max_episodes is None else min(_check_count(max_episodes, "max_episodes"), x.shape[-1])
    race = PairedRace(x.shape[-2], alpha, max_episodes or x.shape[-1], spending_rho=spending_rho,
                      batch=None if x.ndim == 2 else x.shape[0])
    for start in range(0, horizon, round_size):
        if not race._running.any():
            break
        race.update(x[..., start:min(start + round_size, horizon)])
    return race


def race_sequential(outcomes: Any, *, round_size: int = 10, alpha: float = ALPHA,
                    spending_rho: float = DEFAULT_RHO) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points evaluated one after another, each racing the finished ones (:class:`VersusFinished`), vectorised.

    What ``racing: true`` does (:func:`vlamix.pipeline.racing.race_point`) for R independent jobs at once:
    point 0 runs every episode; point i runs rounds of ``round_size`` episodes and, after every round but
    the last, feeds each earlier point's test the round's pairs (when that point ran the round too: a
    stopped point ran a prefix of rounds) and stops when one finds it worse.

    Args:
        outcomes: bool or 0/1 [R, k, n]: point i's outcome on episode e of race r, points in run order.
        round_size: episodes per round (int >= 1).
        alpha: per-point bound (float in (0, 0.5)).
        spending_rho: see :func:`spending`.
    Returns:
        ``(episodes, stopped_at_round, stopped_by)``, int64 [R, k]: episodes run, the 1-based round after which
        the point stopped (0: not stopped) and the index of the point that stopped it (-1: none).
    Raises:
        ValueError: ``outcomes`` not 3-D or with k < 2, ``round_size`` < 1, and as :class:`VersusFinished`.
    """
    x = _binary("outcomes", outcomes)
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(f"outcomes must have shape [R, k, n] with k >= 2, got {list(x.shape)}")
    round_size = _check_count(round_size, "round_size")
    r, k, n = x.shape
    rounds = [(s, min(s + round_size, n)) for s in range(0, n, round_size)]
    episodes = np.zeros((r, k), np.int64)
    stopped = np.zeros((r, k), np.int64)
    stopped_by = np.full((r, k), -1, np.int64)
    ran = np.zeros((r, k, len(rounds)), bool)  # point i ran round q
    episodes[:, 0], ran[:, 0] = n, True
    for i in range(1, k):
        race = VersusFinished(i, alpha, n, spending_rho=spending_rho, batch=r)
        running = np.ones(r, bool)
        for q, (s, e) in enumerate(rounds):
            episodes[running, i] += e - s
            ran[running, i, q] = True
            if q == len(rounds) - 1:
                break
            for j in range(i):
                race.update(j, x[:, i, s:e], x[:, j, s:e], active=running & ran[:, j, q])
            stop = running & race.stopped
            stopped[stop, i] = q + 1
            stopped_by[stop, i] = race.stopped_by[stop]
            running &= ~stop
    return episodes, stopped, stopped_by


def simulate_outcomes(rng: np.random.Generator, races: int, rates: Any, rho: float,
                      episodes: int | None = None) -> np.ndarray:
    """Outcomes of points on shared episodes with a shared per-episode difficulty (latent-Gaussian model).

    Episode e of race r has a difficulty ``z_re ~ N(0, 1)`` shared by all points (its init state);
    point i succeeds when ``sqrt(rho) z_re + sqrt(1 - rho) eps_ire < Phi^-1(p_ie)`` with independent
    ``eps_ire ~ N(0, 1)``. So point i's success probability on episode e is ``p_ie``, two points'
    outcomes are positively correlated through ``z`` (latent correlation ``rho``), and points with
    equal ``p_ie`` have the same success probability on every episode given ``z`` (the null hypothesis
    of the module docstring). Used by ``benchmarks/bench_racing.py`` and the tests.

    Args:
        rng: NumPy generator (seeded by the caller).
        races: number of independent races R (int >= 1).
        rates: success rates in (0, 1): float [k] (the same on every episode; ``episodes`` needed) or
            [k, n] (per episode, e.g. task-dependent).
        rho: latent correlation in [0, 1).
        episodes: n when ``rates`` is [k].
    Returns:
        bool [R, k, n].
    Raises:
        ValueError: rates outside (0, 1) or not 1-D/2-D, ``rho`` outside [0, 1), ``races`` or
            ``episodes`` not an integer >= 1 (naming the argument).
    """
    p = np.asarray(rates, dtype=np.float64)
    if p.ndim == 1:
        p = np.repeat(p[:, None], _check_count(episodes, "episodes"), axis=1)
    if p.ndim != 2 or not np.all((p > 0) & (p < 1)):
        raise ValueError(f"rates must be a [k] or [k, n] array of values in (0, 1), got shape {list(p.shape)}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must be a number in [0, 1), got {rho!r}")
    races = _check_count(races, "races")
    k, n = p.shape
    shared = rng.standard_normal((races, 1, n), dtype=np.float32)
    own = rng.standard_normal((races, k, n), dtype=np.float32)
    latent = np.float32(np.sqrt(rho)) * shared + np.float32(np.sqrt(1.0 - rho)) * own
    return latent < norm.ppf(p).astype(np.float32)[None]
