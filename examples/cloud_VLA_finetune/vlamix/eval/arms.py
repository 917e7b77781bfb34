"""Training-seed variance: one estimate per *arm* (a training recipe and episode plan, over its training seeds).

A benchmark point is a mixture *and* a training seed: the learnability study trained one cell twice and got 18/20
and 13/20 (docs/LEARNABILITY.md), a spread as large as the mixture effects it measured. An arm is the set of points
that differ only in ``seed``; this module turns their episode rows into one estimate per arm, the probability that
each arm is the best, the comparisons between arms and the compact letter display, all from one model.

**The model** (per arm): an *effective binomial sample*. The success rates ``r_1 .. r_s`` of the arm's ``s`` seeds
(each over that seed's episodes) are independent draws around the arm's mean rate ``mu``, the success rate expected
of the recipe over training seeds and episodes; their spread holds the seed-to-seed and the episode-to-episode
variance together. The arm's estimate is ``p = mean(r)`` with variance ``V = max(S^2, v_floor) / s`` (``S^2`` the
sample variance of the per-seed rates, s - 1 degrees of freedom). Following Korn & Graubard ("Confidence intervals
for proportions with small expected number of positive counts estimated from survey data", Survey Methodology 24,
1998), the seeds are clusters of a survey with few clusters, and ``p`` counts as a binomial proportion over the
*effective sample size* ``n* = p~ (1 - p~) / V * (z / t_{s-1})^2`` (design effect, then the df adjustment that
makes the interval pay for estimating ``V`` from s - 1 degrees of freedom), with ``x* = p n*`` successes:

- the **interval** is the exact (Clopper-Pearson) interval of ``x*`` in ``n*``, the one Korn & Graubard recommend;
- **P(best) and the comparisons** use the Jeffreys posterior ``Beta(x* + 1/2, n* - x* + 1/2)`` of the same effective
  sample (Brown, Cai & DasGupta, Statist. Sci. 16, 2001); its central 95% lies inside the Clopper-Pearson interval.

``v_floor = p~ (1 - p~) / n_bar`` is the binomial variance of one seed's rate at the Agresti-Coull rate
``p~ = (K + 2) / (N + 4)`` (Agresti & Coull, Am. Stat. 52, 1998) and mean episodes per seed ``n_bar``: seeds that
happen to agree (3 x 20/20) do not give a zero-width interval, and ``n*`` never exceeds the episodes. With **one
seed** the spread between seeds is not measured: ``n* = n``, ``x* = k``, and the interval covers episode noise only.

``tests/test_eval_arms.py`` shows by seeded simulation (known arm rate, planted logit-normal seed effect, 3 and 5
seeds, 20 and 50 episodes per seed) that the interval keeps its 95% coverage, where a Wilson interval that treats
every episode as independent and a percentile bootstrap over 3 seeds do not; a t-interval on the per-seed rates
(the textbook cluster-level analysis) under-covers a skewed seed effect (5 seeds x 50 episodes around 0.9: 0.90 in
4,000 replicates), because it is symmetric where the rates are not.

**From the same model**: :func:`prob_best` (probability that an arm has the highest ``mu``) and
:func:`compare_arms` (two-sided posterior tail probability of ``mu_a - mu_b``, Holm-corrected) integrate the arms'
posteriors, taken as independent (each arm's seeds are trained independently; the pairing of evaluation episodes
across arms is not used, which is conservative), by quadrature. :func:`vlamix.eval.paired.compact_letters` gives
the letter display; :func:`pareto_front` marks the arms no other arm beats on every condition (suite x instruction
variant).

Usage::

    from vlamix.eval.arms import estimate, seed_counts, prob_best
    est = {arm: estimate(seed_counts(rows_by_seed)) for arm, rows_by_seed in arms.items()}
    est["1:0"].ci_low, est["1:0"].ci_high, prob_best(est)["1:0"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from vlamix.eval.paired import ALPHA, compact_letters, holm, outcomes

__all__ = ["ArmEstimate", "compare_arms", "estimate", "pareto_front", "prob_best",
           "prob_greater", "seed_counts"]

#: Level of the arms' intervals.
LEVEL = 0.95
METHOD_SEEDS = "Clopper-Pearson on the effective sample size over seeds (Korn & Graubard 1998, t with s-1 df)"
METHOD_ONE_SEED = "Clopper-Pearson (one seed: episodes only)"


def seed_counts(rows_by_seed: Mapping[Hashable, Iterable[Mapping[str, Any]]]) -> dict[Hashable, tuple[int, int]]:
    """``{seed: (successes, episodes)}`` of each seed's episode rows (each episode key once, the last row winning;
    rows with an ``error`` left out: not policy outcomes, :func:`vlamix.eval.paired.outcomes`). Seeds without an
    outcome are dropped."""
    out = {}
    for seed, rows in rows_by_seed.items():
        o = outcomes(rows)
        if o:
            out[seed] = (sum(o.values()), len(o))
    return out


@dataclass(frozen=True)
class ArmEstimate:
    """The estimate of one arm (see the module docstring for the model).

    Attributes:
        seeds: seed ids, sorted. successes, episodes: per seed (int), in ``seeds`` order.
        n_successes, n_episodes: totals over the seeds (int).
        pooled_success_rate: ``n_successes / n_episodes`` (fraction in [0, 1]).
        seed_rates: per-seed success rates (fractions), in ``seeds`` order.
        between_seed_sd: sample SD (ddof 1) of the per-seed rates; NaN with one seed.
        seed_range: max - min of the per-seed rates (0.0 with one seed).
        center: the estimate of ``mu``, the mean of the per-seed rates (= the pooled rate when every seed has as
            many episodes).
        n_effective, x_effective: the effective sample ``n*`` and its successes ``x* = center n*`` (floats).
        ci_low, ci_high: the ``LEVEL`` Clopper-Pearson interval of ``x*`` in ``n*`` (fractions in [0, 1]).
        method: :data:`METHOD_SEEDS` or :data:`METHOD_ONE_SEED`.
    """

    seeds: tuple
    successes: tuple[int, ...]
    episodes: tuple[int, ...]
    n_successes: int
    n_episodes: int
    pooled_success_rate: float
    seed_rates: tuple[float, ...]
    between_seed_sd: float
    seed_range: float
    center: float
    n_effective: float
    x_effective: float
    ci_low: float
    ci_high: float
    method: str

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def posterior(self) -> Any:
        """The frozen scipy distribution of ``mu``: the Jeffreys posterior ``beta(x* + 1/2, n* - x* + 1/2)`` of the
        effective sample."""
        return stats.beta(self.x_effective + 0.5, self.n_effective - self.x_effective + 0.5)


def estimate(counts: Mapping[Hashable, tuple[int, int]], level: float = LEVEL) -> ArmEstimate:
    """The :class:`ArmEstimate` of an arm from ``{seed: (successes, episodes)}`` (:func:`seed_counts`).

    Raises:
        ValueError: no seed, a seed with no episode, or successes outside [0, episodes].
    """
    if not counts:
        raise ValueError("an arm needs at least one seed with episodes")
    seeds = tuple(sorted(counts, key=lambda s: (str(type(s)), s)))
    k = np.array([int(counts[s][0]) for s in seeds], dtype=np.float64)
    n = np.array([int(counts[s][1]) for s in seeds], dtype=np.float64)
    if (n < 1).any() or (k < 0).any() or (k > n).any():
        raise ValueError(f"per-seed counts must have 0 <= successes <= episodes, episodes >= 1: {dict(counts)}")
    rates = k / n
    s = len(seeds)
    total_k, total_n = int(k.sum()), int(n.sum())
    base = dict(seeds=seeds, successes=tuple(int(x) for x in k), episodes=tuple(int(x) for x in n),
                n_successes=total_k, n_episodes=total_n, pooled_success_rate=total_k / total_n,
                seed_rates=tuple(float(r) for r in rates), seed_range=float(rates.max() - rates.min()))
    tail = (1.0 - level) / 2.0
    center = float(rates.mean())
    if s == 1:
        n_eff, sd, method = float(total_n), math.nan, METHOD_ONE_SEED
    else:
        var = float(np.var(rates, ddof=1))
        p_tilde = (total_k + 2.0) / (total_n + 4.0)
        floor = p_tilde * (1.0 - p_tilde) / float(n.mean())
        z, t = stats.norm.ppf(1.0 - tail), stats.t.ppf(1.0 - tail, s - 1)
        n_eff = p_tilde * (1.0 - p_tilde) / (max(var, floor) / s) * (z / t) ** 2
        sd, method = math.sqrt(var), METHOD_SEEDS
    x = center * n_eff
    low = 0.0 if total_k == 0 else float(stats.beta.ppf(tail, x, n_eff - x + 1.0))
    high = 1.0 if total_k == total_n else float(stats.beta.ppf(1.0 - tail, x + 1.0, n_eff - x))
    return ArmEstimate(**base, between_seed_sd=sd, center=center, n_effective=n_eff, x_effective=x, ci_low=low,
                       ci_high=high, method=method)


#: Gauss-Legendre nodes and weights on [0, 1] of :func:`_integral`.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(512)
_NODES, _WEIGHTS = (_NODES + 1.0) / 2.0, _WEIGHTS / 2.0


def _integral(dist_a: Any, others: Sequence[Any]) -> float:
    """``P(X_a > X_b for every b)`` for independent continuous X: ``int_0^1 prod_b F_b(Q_a(u)) du``, a bounded
    integrand on [0, 1] whatever the supports, by 512-node Gauss-Legendre quadrature (exact for equal posteriors,
    where the integrand is ``u^(k-1)``; deterministic, so the rank files are stable)."""
    if not others:
        return 1.0
    x = dist_a.ppf(_NODES)
    value = float(np.sum(_WEIGHTS * np.prod([d.cdf(x) for d in others], axis=0)))
    return min(1.0, max(0.0, value))


def prob_greater(a: ArmEstimate, b: ArmEstimate) -> float:
    """Posterior probability that arm ``a``'s mean rate exceeds arm ``b``'s (independent posteriors)."""
    return _integral(a.posterior(), [b.posterior()])


def prob_best(estimates: Mapping[Hashable, ArmEstimate]) -> dict[Hashable, float]:
    """Posterior probability that each arm has the highest mean success rate (sums to 1 up to the quadrature error;
    k arms with equal posteriors get 1/k each).

    Returns:
        ``{arm: probability in [0, 1]}``, rounded to 4 decimals (the rounding keeps the value stable across machines
        for the rank files).
    """
    dists = {label: est.posterior() for label, est in estimates.items()}
    return {label: round(_integral(d, [o for other, o in dists.items() if other != label]), 4)
            for label, d in dists.items()}


def compare_arms(estimates: Mapping[Hashable, ArmEstimate], alpha: float = ALPHA) -> dict[str, Any]:
    """Every arm against the best and every pair, on the arms' posteriors (the module's model).

    The test of a pair is the two-sided posterior tail probability ``p = 2 min(P(mu_a > mu_b), P(mu_a < mu_b))``;
    comparisons with the best are Holm-corrected among themselves, the pairs of the letter display over all pairs
    (as :func:`vlamix.eval.paired.letter_groups` does for episodes).

    Returns:
        dict(best = the arm with the highest pooled success rate (the first on ties; None without arms), alpha,
        letters = {arm: letters}, arms = {arm: {success_rate (pooled), n_seeds, n_episodes, difference (this
        arm's pooled rate minus the best's), p_value, p_adjusted (None for the best), tied_with_best (bool),
        within_seed_spread (|difference| <= the larger per-seed range of the two arms; None when both have one
        seed)}}).
    """
    labels = list(estimates)
    result: dict[str, Any] = {"best": None, "alpha": alpha, "letters": {}, "arms": {}}
    if not labels:
        return result
    best = max(labels, key=lambda a: estimates[a].pooled_success_rate)
    result["best"] = best

    cache: dict[frozenset, float] = {}

    def p_two_sided(a: Hashable, b: Hashable) -> float:
        if frozenset((a, b)) not in cache:
            g = prob_greater(estimates[a], estimates[b])
            cache[frozenset((a, b))] = min(1.0, 2.0 * min(g, 1.0 - g))
        return cache[frozenset((a, b))]

    others = [a for a in labels if a != best]
    raw = [p_two_sided(a, best) for a in others]
    adjusted = holm(raw)
    for a in labels:
        e, b = estimates[a], estimates[best]
        diff = e.pooled_success_rate - b.pooled_success_rate
        spread = None if e.n_seeds < 2 and b.n_seeds < 2 else bool(abs(diff) <= max(e.seed_range, b.seed_range) + 1e-12)
        entry = {"success_rate": e.pooled_success_rate, "n_seeds": e.n_seeds, "n_episodes": e.n_episodes,
                 "difference": diff, "within_seed_spread": spread if a != best else None}
        if a == best:
            entry.update(p_value=None, p_adjusted=None, tied_with_best=True)
        else:
            i = others.index(a)
            entry.update(p_value=raw[i], p_adjusted=adjusted[i], tied_with_best=bool(adjusted[i] >= alpha))
        result["arms"][a] = entry
    pairs = [(labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))]
    pair_p = dict(zip(pairs, holm([p_two_sided(a, b) for a, b in pairs])))

    def differ(a: Hashable, b: Hashable) -> bool:
        return pair_p.get((a, b), pair_p.get((b, a), 1.0)) < alpha

    order = sorted(labels, key=lambda a: -estimates[a].pooled_success_rate)
    result["letters"] = compact_letters(order, differ)
    return result


def pareto_front(rates: Mapping[Hashable, Mapping[Hashable, float]]) -> dict[Hashable, bool]:
    """The best trade-offs: True for each arm that no other arm beats on every condition.

    Args:
        rates: ``{arm: {condition: success rate}}`` (conditions such as ``(suite, instruction variant)``).
    Returns:
        ``{arm: bool}``: False when another arm is at least as good on every condition both measured and strictly
        better on one (point estimates; arms sharing no condition never dominate each other).
    """
    def dominates(a: Mapping, b: Mapping) -> bool:
        shared = [c for c in b if c in a and not (math.isnan(a[c]) or math.isnan(b[c]))]
        return bool(shared) and all(a[c] >= b[c] for c in shared) and any(a[c] > b[c] for c in shared)

    return {arm: not any(dominates(other, r) for o, other in rates.items() if o != arm) for arm, r in rates.items()}
