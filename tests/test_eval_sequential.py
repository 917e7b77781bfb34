"""Sequential paired racing test (vlamix.eval.sequential): its error guarantee, by enumeration and by simulation.

The simulations are seeded and vectorised (latent-Gaussian outcomes with a shared per-episode
difficulty, :func:`simulate_outcomes`); no peer package is needed. Monte Carlo standard error of a
rate near 0.05 over 4,000 races: 0.0034, so the bound 0.055 is about 1.5 standard errors above alpha.
"""

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from vlamix.eval.sequential import (
    A_WORSE,
    B_WORSE,
    PairedRace,
    PairedSequentialTest,
    VersusFinished,
    paired_sequential_test,
    race_paired,
    race_sequential,
    simulate_outcomes,
    spending,
)

ALPHA = 0.05
BOUND = 0.055  # alpha plus Monte Carlo margin


def test_error_is_exact_by_enumerating_every_sign_sequence():
    # 14 discordant pairs among 20: all 2^14 sign sequences are equally likely under H0
    pattern = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0], bool)
    signs = np.array(list(itertools.product([0, 1], repeat=int(pattern.sum()))), dtype=np.int8)
    xa = np.zeros((len(signs), pattern.size), np.int8)
    xb = np.zeros_like(xa)
    xa[:, pattern], xb[:, pattern] = signs, 1 - signs
    alpha = 0.2
    test = PairedSequentialTest(alpha, max_pairs=20, batch=len(signs))
    test.update(xa, xb)
    rate = np.mean(test.codes != 0)
    undecided_spent = test.alpha_spent[test.codes == 0]
    # the rejection probability is exactly what the boundary spent, at most alpha, and nearly all of it
    assert rate == pytest.approx(undecided_spent[0], abs=1e-12)
    assert np.ptp(undecided_spent) < 1e-12
    assert 0.8 * alpha < rate <= alpha
    # symmetric: each direction gets half
    assert np.mean(test.codes == 1) == pytest.approx(rate / 2, abs=1e-12)


def test_decision_does_not_depend_on_how_pairs_are_batched():
    rng = np.random.default_rng(1)
    x = simulate_outcomes(rng, 60, [0.45, 0.65], 0.5, 150)
    whole = PairedSequentialTest(ALPHA, 150, batch=60)
    whole.update(x[:, 0], x[:, 1])
    pieces = PairedSequentialTest(ALPHA, 150, batch=60)
    for start in range(0, 150, 7):
        pieces.update(x[:, 0, start:start + 7], x[:, 1, start:start + 7])
    assert np.array_equal(whole.codes, pieces.codes) and np.array_equal(whole.decided_at, pieces.decided_at)
    assert (whole.codes == -1).sum() > 30  # point a (0.45) is found worse in most races
    one = [paired_sequential_test(x[i, 0], x[i, 1], max_pairs=150) for i in range(60)]
    assert [r["decision"] for r in one] == whole.decision
    assert [r["decided_at"] for r in one] == whole.decided_at.tolist()


def test_direction_and_one_shot_fields():
    xa = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0] * 6, bool)
    xb = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 0] * 6, bool)
    out = paired_sequential_test(xa, xb, alpha=ALPHA, max_pairs=200)
    assert out["decision"] == A_WORSE
    assert out["b_only"] - out["a_only"] >= out["boundary"] and out["n_pairs"] == out["decided_at"] < 60
    assert paired_sequential_test(xb, xa, max_pairs=200)["decision"] == B_WORSE
    assert paired_sequential_test(xa, xa, max_pairs=200)["decision"] is None  # never a discordant pair
    assert spending(0.25, ALPHA) == pytest.approx(ALPHA * 0.5)


@pytest.mark.parametrize("rho", [0.5, 0.0])
def test_false_stop_with_two_equal_points(rho):
    rng = np.random.default_rng(7)
    rates = [0.3, 0.5, 0.8]
    x = np.concatenate([simulate_outcomes(rng, 1400, [p, p], rho, 200) for p in rates])  # 4,200 races
    test = PairedSequentialTest(ALPHA, 200, batch=len(x))
    test.update(x[:, 0], x[:, 1])
    rate = np.mean(test.codes != 0)
    assert rate <= BOUND
    assert rate >= 0.03  # the exact spending uses the error it may (a Ville bound at 1/alpha gives ~0.02)
    # the same episodes and looks without a multiplicity correction: a fixed-sample exact McNemar test at
    # 0.05 after every round of 10 stops far more often, so this simulation can tell the difference
    d = x[:, 0].astype(np.int8) - x[:, 1].astype(np.int8)
    a, b = np.cumsum(d == 1, axis=1)[:, 9::10], np.cumsum(d == -1, axis=1)[:, 9::10]
    p_naive = np.minimum(1.0, 2 * binom.cdf(np.minimum(a, b), a + b, 0.5))
    assert np.mean((p_naive < ALPHA).any(axis=1)) > 0.1


def test_false_stop_with_four_equal_points():
    rng = np.random.default_rng(11)
    x = np.concatenate([simulate_outcomes(rng, 1000, [p] * 4, 0.5, 200) for p in (0.3, 0.5, 0.8, 0.6)])
    race = race_paired(x, round_size=10, alpha=ALPHA)
    assert race.pair_alpha == pytest.approx(ALPHA / 6)
    false_stop = np.mean((race.stopped_at_round > 0).any(axis=1))
    assert false_stop <= BOUND
    # every pair at alpha instead of alpha / 6 (no Bonferroni split) stops far more often on the same episodes
    loose = PairedRace(4, ALPHA * 6, 200, batch=len(x))
    for start in range(0, 200, 10):
        loose.update(x[:, :, start:start + 10])
    assert np.mean((loose.stopped_at_round > 0).any(axis=1)) > 0.1
    assert race.running.any(axis=1).all()  # a race never stops every point


def _mc_bound(races):
    """alpha plus three Monte Carlo standard errors of a rate near alpha over ``races`` races."""
    return ALPHA + 3.0 * np.sqrt(ALPHA * (1 - ALPHA) / races)


def test_racing_one_point_after_another_stops_an_equal_point_at_most_alpha_of_the_time():
    # what racing: true runs: 4 points of equal success rate, run in order; point i races the i finished ones,
    # each comparison one-sided at alpha / i, looks after every round of 10 but the last
    rng = np.random.default_rng(13)
    x = np.concatenate([simulate_outcomes(rng, 1000, [p] * 4, rho, 200) for p in (0.3, 0.5, 0.8) for rho in (0.5, 0.0)])
    episodes, stopped, by = race_sequential(x, round_size=10, alpha=ALPHA)
    each = (stopped[:, 1:] > 0).mean(axis=0)  # points 2, 3, 4: 6,000 races each
    assert each.max() <= _mc_bound(len(x))
    assert each[0] >= 0.03  # the single comparison uses most of its alpha (one-sided, exact spending)
    assert not (stopped[:, 0] > 0).any() and (episodes[:, 0] == 200).all()
    assert ((by[:, 1:] >= 0) == (stopped[:, 1:] > 0)).all() and (by[:, 3][stopped[:, 3] > 0] < 3).all()
    assert (episodes[stopped > 0] == 10 * stopped[stopped > 0]).all()
    # the same looks without the split over the 3 finished points (each comparison at alpha): the 4th point is
    # stopped far more often, so this simulation can tell the Bonferroni split from its absence
    last = x[:, 3, :190]
    loose = np.zeros(len(x), bool)
    for j in range(3):
        test = PairedSequentialTest(2 * ALPHA, 200, batch=len(x))
        test.update(last, x[:, j, :190])
        loose |= test.codes == -1
    assert loose.mean() > 0.08 and each[2] < loose.mean() - 0.03


def test_versus_finished_splits_alpha_and_names_the_competitor_that_stopped_the_point():
    race = VersusFinished(2, ALPHA, 40)
    assert race.comparison_alpha == pytest.approx(ALPHA / 2) and race.tests[0].alpha == pytest.approx(ALPHA)
    race.update(0, [0] * 10, [0] * 10)  # no discordant pair against competitor 0
    assert race.update(1, [0] * 10, [1] * 10)  # every pair lost against competitor 1
    assert race.stopped_by == 1 and race.tests[0].decision is None and race.tests[1].decision == A_WORSE
    # a competitor found worse cannot stop the point later
    race = VersusFinished(1, ALPHA, 40)
    race.update(0, [1] * 10, [0] * 10)
    assert race.tests[0].decision == B_WORSE
    assert not race.update(0, [0] * 10, [1] * 10) and race.stopped_by == -1
    with pytest.raises(ValueError, match="alpha"):
        VersusFinished(1, 0.5)
    with pytest.raises(ValueError, match="n_competitors"):
        VersusFinished(0)
    with pytest.raises(IndexError, match="competitor"):
        VersusFinished(2).update(2, [0], [1])


def test_racing_one_point_after_another_saves_episodes_at_a_gap():
    rng = np.random.default_rng(17)
    # the best point first: the three worse points are stopped early against it
    x = simulate_outcomes(rng, 1000, [0.7, 0.3, 0.3, 0.3], 0.5, 200)
    episodes, stopped, by = race_sequential(x, round_size=10, alpha=ALPHA)
    assert np.mean(stopped[:, 1:] > 0) > 0.99 and episodes[:, 1:].mean() < 60
    # the best point last: it is never stopped by the worse ones
    x = simulate_outcomes(rng, 1000, [0.3, 0.3, 0.3, 0.7], 0.5, 200)
    _, stopped, _ = race_sequential(x, round_size=10, alpha=ALPHA)
    assert not (stopped[:, 3] > 0).any()


def test_clear_gap_is_detected_early():
    rng = np.random.default_rng(3)
    x = simulate_outcomes(rng, 1000, [0.7, 0.3], 0.5, 200)
    race = race_paired(x, round_size=10, alpha=ALPHA)
    assert np.mean(race.stopped_at_round[:, 1] > 0) > 0.99  # the worse point is stopped
    assert not (race.stopped_at_round[:, 0] > 0).any()  # the best never
    assert race.episodes[:, 1].mean() < 45  # of 200: it stops after 2-4 rounds
    assert race.episodes_saved.mean() > 0.38 * 2 * 200
    assert (race.stopped_by[:, 1][race.stopped_at_round[:, 1] > 0] == 0).all()
    # four points, one best: the three worse ones go, the best stays
    x4 = simulate_outcomes(rng, 500, [0.7, 0.3, 0.3, 0.3], 0.5, 200)
    race4 = race_paired(x4, round_size=10, alpha=ALPHA)
    assert np.mean(race4.stopped_at_round[:, 1:] > 0) > 0.99 and not (race4.stopped_at_round[:, 0] > 0).any()
    assert race4.episodes[:, 1:].mean() < 60


def test_single_race_and_round_bookkeeping():
    outcomes = np.array([[1] * 40, [0] * 40, [1, 0] * 20], bool)
    race = race_paired(outcomes, round_size=10, alpha=ALPHA, max_episodes=40)
    assert race.stopped_at_round.shape == (3,) and race.stopped_at_round[0] == 0
    assert race.stopped_at_round[1] > 0 and race.stopped_by[1] == 0
    assert race.episodes[1] == 10 * race.stopped_at_round[1] and race.episodes[0] == 40
    assert race.episodes_saved == 3 * 40 - race.episodes.sum()
    assert race.successes[0] == 40


@pytest.mark.parametrize("kwargs,name", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": True}, "alpha"), ({"alpha": "0.05"}, "alpha"),
    ({"max_pairs": 0}, "max_pairs"), ({"max_pairs": 2.5}, "max_pairs"), ({"spending_rho": 0}, "spending_rho"),
    ({"batch": 0}, "batch"),
])
def test_invalid_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PairedSequentialTest(**{"alpha": ALPHA, "max_pairs": 10, **kwargs})


def test_invalid_inputs_name_the_argument():
    test = PairedSequentialTest(ALPHA, 10)
    with pytest.raises(ValueError, match="x_a"):
        test.update([0, 2], [0, 1])
    with pytest.raises(ValueError, match="x_b"):
        test.update([0, 1], [0.5, 1])
    with pytest.raises(ValueError, match="same shape"):
        test.update([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="x_a must have shape"):
        test.update([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="max_pairs"):
        test.update([0] * 11, [1] * 11)
    with pytest.raises(ValueError, match="active"):
        PairedSequentialTest(ALPHA, 10, batch=2).update([[0], [1]], [[1], [0]], active=[True, False, True])
    with pytest.raises(ValueError, match="n_points"):
        PairedRace(1)
    with pytest.raises(ValueError, match="outcomes"):
        PairedRace(3, batch=2).update(np.zeros((3, 10), bool))
    with pytest.raises(ValueError, match="max_episodes"):
        PairedRace(2, max_episodes=10).update(np.zeros((2, 11), bool))
    with pytest.raises(ValueError, match="round_size"):
        race_paired(np.zeros((2, 10), bool), round_size=0)
    with pytest.raises(ValueError, match="rho"):
        simulate_outcomes(np.random.default_rng(0), 2, [0.5, 0.5], 1.0, 10)
    with pytest.raises(ValueError, match="rates"):
        simulate_outcomes(np.random.default_rng(0), 2, [0.0, 0.5], 0.5, 10)
