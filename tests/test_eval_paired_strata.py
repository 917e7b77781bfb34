"""The stratified matched-pairs test (paired_test method "mcnemar_strata", stratified_sign_test).

Exactness against statsmodels' exact McNemar (equal tasks) and against enumeration (unequal tasks);
then, by seeded simulation on correlated paired outcomes with task-dependent success rates
(:func:`vlamix.eval.sequential.simulate_outcomes`: shared per-episode difficulty, latent correlation
0.7, tasks at success rates 0.15 .. 0.85 with 10 or 20 shared episodes), its type-I error at 0.05
against that of the independent-samples CMH test on the same data, and their power at a gap.

Why CMH is the wrong test here: it treats the two points' episodes of a task as independent samples,
so its error depends on how the two points' outcomes on one episode correlate, which it does not see.
When both points find the same init states hard (positive correlation) the difference of the two
success counts varies less than CMH assumes: CMH is *conservative* and loses power. When each point
fails on init states the other solves (two mixtures that learned different skills: negative
correlation at equal task success rates) it varies more, and CMH rejects a true null far more often
than alpha. The paired tests condition on the discordant episodes and hold alpha in both cases
(:func:`test_type_one_error_when_the_points_fail_on_different_init_states`).
"""

import itertools
import math

import numpy as np
import pytest

from vlamix.eval.paired import paired_test, stratified_sign_test
from vlamix.eval.sequential import simulate_outcomes

RATES = np.linspace(0.15, 0.85, 10)  # per task
SIZES = [10, 20] * 5  # shared episodes per task
TASK = np.repeat(np.arange(len(SIZES)), SIZES)
KEYS = [("libero_spatial", int(t), i, "original") for i, t in enumerate(TASK)]


def _rates(gap):
    return np.stack([np.clip(RATES + gap, 0.01, 0.97)[TASK], RATES[TASK]])  # [2, episodes]: a, b


def _rejection_rates(x, methods, alpha=0.05):
    hits = {m: 0 for m in methods}
    for race in x:
        oa, ob = dict(zip(KEYS, race[0].tolist())), dict(zip(KEYS, race[1].tolist()))
        for m in methods:
            hits[m] += paired_test(oa, ob, m)["p_value"] < alpha
    return {m: hits[m] / len(x) for m in methods}


def test_equal_tasks_give_the_exact_mcnemar_p_value():
    rng = np.random.default_rng(0)
    x = simulate_outcomes(rng, 20, [0.6, 0.4], 0.5, 60)
    keys = [("libero_object", i // 10, i % 10, "original") for i in range(60)]  # 6 tasks x 10 episodes
    for race in x:
        oa, ob = dict(zip(keys, race[0].tolist())), dict(zip(keys, race[1].tolist()))
        strata, plain = paired_test(oa, ob, "mcnemar_strata"), paired_test(oa, ob, "mcnemar")
        assert strata["p_value"] == pytest.approx(plain["p_value"], rel=1e-9)
        assert strata["a_only"] == plain["a_only"] and strata["method"] == "mcnemar_strata"


def test_unequal_tasks_match_enumeration_of_sign_flips():
    a, b, n = np.array([2, 1, 3, 0]), np.array([0, 2, 1, 1]), np.array([5, 7, 10, 4])
    m = a + b
    observed = abs(float(((a - b) / n).sum()))
    p = 0.0
    for k in itertools.product(*(range(c + 1) for c in m)):
        t = float(((2 * np.array(k) - m) / n).sum())
        if abs(t) >= observed - 1e-12:
            p += math.prod(math.comb(c, j) / 2**c for c, j in zip(m, k))
    assert stratified_sign_test(a, b, n) == pytest.approx(p, rel=1e-9)
    # the seeded Monte Carlo fallback (many different task sizes) agrees within its error
    assert stratified_sign_test(a, b, n, max_lattice=10, draws=200_000) == pytest.approx(p, abs=0.005)
    # weights differ from pooled McNemar: the same counts with equal sizes give another p-value
    assert stratified_sign_test(a, b, [10] * 4) != pytest.approx(p, rel=1e-3)
    assert stratified_sign_test([0, 0], [0, 0], [3, 5]) == 1.0


def test_type_one_error_by_simulation():
    # 4,000 races under H0 (same success probability on every episode); MC standard error 0.0034
    x = simulate_outcomes(np.random.default_rng(5), 4000, _rates(0.0), 0.7)
    rates = _rejection_rates(x, ("mcnemar_strata", "cmh"))
    assert rates["mcnemar_strata"] <= 0.05 + 3 * 0.0034
    assert rates["mcnemar_strata"] >= 0.025  # exact and discrete: below alpha but not far below
    # the unpaired CMH on the same data ignores the pairing: conservative, it wastes most of alpha
    assert rates["cmh"] < rates["mcnemar_strata"] - 0.01


def _specialised(rng, races, rates, share=0.9):
    """Outcomes bool [R, 2, episodes] of two points with the same success rate ``rates[e]`` on every episode,
    each better on a different half of the init states: per race and episode a fair coin says which point
    gets ``rate + d`` and which ``rate - d`` (``d = share * min(rate, 1 - rate)``), then independent draws.
    Marginally P(a succeeds) = P(b succeeds) on every episode and episodes are independent: the paired null
    holds; within an episode the outcomes are negatively correlated (covariance -d^2)."""
    d = share * np.minimum(rates, 1.0 - rates)
    sign = np.where(rng.random((races, len(rates))) < 0.5, 1.0, -1.0)
    p = np.stack([rates + sign * d, rates - sign * d], axis=1)  # [R, 2, episodes]
    return rng.random(p.shape) < p


def test_type_one_error_when_the_points_fail_on_different_init_states():
    # 4,000 races under the paired null (MC standard error 0.0034 at 0.05); task-dependent rates 0.15 .. 0.85
    x = _specialised(np.random.default_rng(8), 4000, RATES[TASK])
    rates = _rejection_rates(x, ("mcnemar", "mcnemar_strata", "cmh"))
    for paired in ("mcnemar", "mcnemar_strata"):
        assert 0.025 <= rates[paired] <= 0.05 + 3 * 0.0034
    # the independent-samples CMH test on the same episodes: far above alpha
    assert rates["cmh"] > 0.08


def test_power_by_simulation():
    # a better by 0.1 on every task; 2,000 races (MC standard error <= 0.011)
    x = simulate_outcomes(np.random.default_rng(6), 2000, _rates(0.1), 0.7)
    rates = _rejection_rates(x, ("mcnemar_strata", "cmh"))
    assert rates["mcnemar_strata"] > rates["cmh"] + 0.08


def test_the_ranking_and_the_report_use_the_stratified_test():
    from vlamix.eval.paired import RANKING_METHOD, compare_to_best, letter_groups

    # task 0: 2 shared episodes, both won by a; task 1: 10 shared episodes, 3 won by b: pooled 2 vs 3 (McNemar
    # p = 1), per task a leads by 1.0 - 0.3 (tasks weighted equally)
    keys = [("libero_object", 0, i, "original") for i in range(2)] + [("libero_object", 1, i, "original") for i in range(10)]
    a = dict(zip(keys, [True, True] + [False] * 10))
    b = dict(zip(keys, [False, False] + [True] * 3 + [False] * 7))
    strata, pooled = paired_test(a, b, "mcnemar_strata")["p_value"], paired_test(a, b, "mcnemar")["p_value"]
    assert pooled == pytest.approx(1.0) and strata < 0.9
    out = compare_to_best({"b": b, "a": a})
    assert RANKING_METHOD == "mcnemar_strata" and out["method"] == RANKING_METHOD
    assert out["points"]["a" if out["best"] == "b" else "b"]["p_value"] == pytest.approx(strata)
    assert letter_groups({"a": a, "b": b}) == {"a": "a", "b": "a"}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mcnemar_strata"):
        paired_test({}, {}, method="sign")
    with pytest.raises(ValueError, match="same shape"):
        stratified_sign_test([1, 2], [0], [5, 5])
    with pytest.raises(ValueError, match="n_shared"):
        stratified_sign_test([3], [3], [5])
