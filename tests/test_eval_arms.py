"""Training-seed aggregation (issue 28): the arm interval's coverage, P(best), the arm comparison, letters, the
Pareto front, and the rank columns and report built on them.

The coverage claims are shown by seeded simulation: per-seed success rates are drawn around a known arm rate with a
planted between-seed variance (logit-normal), episodes are Bernoulli draws, and the share of intervals that cover
the true arm rate is counted. The same simulation shows the wrong methods under-covering: a Wilson interval that
pools every episode as independent, and a percentile bootstrap over 3 seeds.
"""

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit, logit

from vlamix.eval.arms import (METHOD_ONE_SEED, METHOD_SEEDS, compare_arms, estimate, pareto_front, prob_best,
                              prob_greater, seed_counts)
from vlamix.eval.stats import wilson_interval

REPS = 1000


def true_arm_rate(p0, tau):
    """E[expit(logit(p0) + tau Z)], Z standard normal (Gauss-Hermite, 80 nodes)."""
    x, w = hermegauss(80)
    return float(np.sum(w * expit(logit(p0) + tau * x)) / np.sqrt(2 * np.pi))


def simulate(rng, p0, tau, seeds, n):
    """Per-seed (successes, episodes) of one arm: seed rates logit-normal around p0 with SD tau on the logit scale."""
    rates = expit(logit(p0) + tau * rng.standard_normal(seeds))
    return {s: (int(k), n) for s, k in enumerate(rng.binomial(n, rates))}


def coverage(p0, tau, seeds, n, reps=REPS, seed=0):
    """(coverage of the arm interval, of a pooled Wilson interval, of a percentile bootstrap over the seeds, of a
    t-interval on the per-seed rates) on one scenario."""
    from scipy.stats import t as student

    rng = np.random.default_rng(seed)
    mu = true_arm_rate(p0, tau)
    ours = pooled = boot = tee = 0
    for _ in range(reps):
        counts = simulate(rng, p0, tau, seeds, n)
        est = estimate(counts)
        ours += est.ci_low <= mu <= est.ci_high
        low, high = wilson_interval(est.n_successes, est.n_episodes)
        pooled += low <= mu <= high
        rates = np.array(est.seed_rates)
        means = rates[rng.integers(0, seeds, size=(400, seeds))].mean(axis=1)  # resample the seeds
        boot += np.quantile(means, 0.025) <= mu <= np.quantile(means, 0.975)
        half = student.ppf(0.975, seeds - 1) * rates.std(ddof=1) / np.sqrt(seeds)
        tee += rates.mean() - half <= mu <= rates.mean() + half
    return ours / reps, pooled / reps, boot / reps, tee / reps


# (p0, logit SD of the seed effect, seeds, episodes per seed)
SCENARIOS = [(p0, tau, s, n) for p0 in (0.5, 0.75, 0.9) for tau in (0.0, 1.0) for s in (3, 5) for n in (20, 50)]


@pytest.mark.parametrize("p0,tau,seeds,n", SCENARIOS)
def test_arm_interval_keeps_95_percent_coverage_with_3_and_5_seeds(p0, tau, seeds, n):
    ours, pooled, boot, tee = coverage(p0, tau, seeds, n, seed=hash((p0, tau, seeds, n)) % 2**32)
    assert ours >= 0.93, (ours, pooled, boot, tee)
    if tau > 0:  # a seed effect that pooling all episodes ignores: the naive interval visibly under-covers
        assert pooled <= 0.85, pooled
    if seeds == 3:  # the bootstrap's interval lies between the smallest and the largest of 3 seed means
        assert boot <= 0.88, boot
    if (p0, tau, seeds, n) == (0.9, 1.0, 5, 50):  # skewed seed effect: the symmetric t-interval under-covers
        assert tee <= 0.93 < ours, (tee, ours)


def test_one_seed_is_the_clopper_pearson_interval_over_the_episodes():
    from scipy.stats import beta

    est = estimate({7: (13, 20)})
    assert est.method == METHOD_ONE_SEED and est.n_seeds == 1 and math.isnan(est.between_seed_sd)
    assert (est.n_effective, est.x_effective) == (20.0, 13.0)
    assert (est.ci_low, est.ci_high) == pytest.approx((beta(13, 8).ppf(0.025), beta(14, 7).ppf(0.975)))
    assert estimate({7: (0, 20)}).ci_low == 0.0 and estimate({7: (20, 20)}).ci_high == 1.0


def test_interval_over_seeds_is_clopper_pearson_on_the_effective_sample_size():
    """Korn & Graubard (1998), written out here: n* = p~(1 - p~) / V * (z / t_{s-1})^2, V = max(S^2, floor) / s."""
    from scipy.stats import beta, norm, t

    est = estimate({7: (13, 20), 8: (18, 20), 9: (11, 20)})
    rates = np.array([0.65, 0.9, 0.55])
    p_tilde = 44 / 64
    v = max(rates.var(ddof=1), p_tilde * (1 - p_tilde) / 20) / 3
    n_star = p_tilde * (1 - p_tilde) / v * (norm.ppf(0.975) / t.ppf(0.975, 2)) ** 2
    x = 0.7 * n_star
    assert est.method == METHOD_SEEDS and est.seeds == (7, 8, 9) and est.n_episodes == 60 and est.n_successes == 42
    assert est.pooled_success_rate == pytest.approx(0.7) and est.between_seed_sd == pytest.approx(rates.std(ddof=1))
    assert est.n_effective == pytest.approx(n_star) and n_star < 10  # the seeds disagree: far fewer than 60 episodes
    exact = (beta(x, n_star - x + 1).ppf(0.025), beta(x + 1, n_star - x).ppf(0.975))
    assert (est.ci_low, est.ci_high) == pytest.approx(exact)
    # seeds that agree exactly keep a positive width: the floor makes n* the episodes, times the df adjustment
    same = estimate({1: (10, 20), 2: (10, 20), 3: (10, 20)})
    assert same.n_effective == pytest.approx(60 * (norm.ppf(0.975) / t.ppf(0.975, 2)) ** 2)
    assert same.ci_low < 0.5 < same.ci_high
    # P(best) and the comparisons integrate the Jeffreys posterior of the same effective sample: inside the interval
    post = est.posterior()
    assert post.mean() == pytest.approx((x + 0.5) / (n_star + 1))
    assert est.ci_low < post.ppf(0.025) < post.ppf(0.975) < est.ci_high


def test_seed_counts_drop_error_rows_and_repeated_episodes():
    rows = [{"suite": "s", "task_id": 0, "episode_index": i, "success": i < 3} for i in range(5)]
    rows += [{"suite": "s", "task_id": 0, "episode_index": 4, "success": True},  # the last row of an episode wins
             {"suite": "s", "task_id": 0, "episode_index": 5, "success": False, "error": "WorkerDied"}]
    assert seed_counts({7: rows, 8: rows[-1:]}) == {7: (4, 5)}


def test_prob_best_is_one_over_k_for_equal_arms_and_near_one_for_a_clearly_better_arm():
    same = {a: estimate({1: (12, 20), 2: (15, 20), 3: (10, 20)}) for a in "abc"}
    p = prob_best(same)
    assert p == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=2e-4)
    clear = {"good": estimate({1: (19, 20), 2: (20, 20), 3: (18, 20)}),
             "poor": estimate({1: (5, 20), 2: (7, 20), 3: (4, 20)}),
             "mid": estimate({1: (10, 20), 2: (13, 20), 3: (9, 20)})}
    p = prob_best(clear)
    assert p["good"] > 0.99 and p["poor"] < 1e-3 and sum(p.values()) == pytest.approx(1.0, abs=1e-3)
    # two arms: P(best) is the probability that one mean exceeds the other; one seed and three seeds mix
    mixed = {"one": estimate({7: (14, 20)}), "three": estimate({1: (12, 20), 2: (15, 20), 3: (10, 20)})}
    p = prob_best(mixed)
    assert p["one"] == pytest.approx(prob_greater(mixed["one"], mixed["three"]), abs=1e-4)
    assert p["one"] + p["three"] == pytest.approx(1.0, abs=1e-3) and p["one"] > 0.5  # 0.70 vs 0.62
    # the quadrature agrees with draws from the same posteriors (the arms' interval model)
    rng = np.random.default_rng(3)
    draws = {a: e.posterior().rvs(size=200_000, random_state=rng) for a, e in clear.items()}
    stacked = np.stack([draws[a] for a in clear])
    mc = np.bincount(stacked.argmax(axis=0), minlength=3) / stacked.shape[1]
    assert list(prob_best(clear).values()) == pytest.approx(list(mc), abs=0.005)
    tight = {"a": estimate({1: (0, 50)}), "b": estimate({1: (25, 50), 2: (26, 50), 3: (25, 50)})}  # one seed vs three
    a, b = (tight[k].posterior().rvs(200_000, random_state=rng) for k in "ab")
    mc = np.mean(a > b)
    assert prob_greater(tight["a"], tight["b"]) == pytest.approx(mc, abs=0.002)


def test_prob_best_is_calibrated_for_two_equal_arms():
    """With equal true arms, P(best) of one arm is spread over [0, 1] with mean 1/2 (not piled at 0 and 1, which an
    interval that ignores the seed effect would give)."""
    rng = np.random.default_rng(5)
    values = [prob_best({arm: estimate(simulate(rng, 0.6, 0.8, 3, 20)) for arm in "ab"})["a"] for _ in range(300)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.05)
    assert np.mean([v < 0.025 or v > 0.975 for v in values]) <= 0.08


def test_arm_comparison_holds_its_error_rate_where_pooling_episodes_does_not():
    """Two arms with the same true rate and a planted seed effect, 3 seeds x 20 episodes: the arm comparison rejects
    in at most about 5% of the replicates; a test that pools the episodes as independent rejects far more often."""
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(11)
    reps, ours, naive = 400, 0, 0
    for _ in range(reps):
        a, b = simulate(rng, 0.6, 0.8, 3, 20), simulate(rng, 0.6, 0.8, 3, 20)
        cmp = compare_arms({"a": estimate(a), "b": estimate(b)})
        ours += not cmp["arms"]["b" if cmp["best"] == "a" else "a"]["tied_with_best"]
        ka, kb = sum(k for k, _ in a.values()), sum(k for k, _ in b.values())
        naive += fisher_exact([[ka, 60 - ka], [kb, 60 - kb]])[1] < 0.05
    assert ours / reps <= 0.065, ours / reps
    assert naive / reps >= 0.2, naive / reps


def test_compare_arms_letters_and_seed_spread():
    est = {"top": estimate({1: (18, 20), 2: (19, 20), 3: (17, 20), 4: (18, 20), 5: (19, 20)}),
           "near": estimate({1: (16, 20), 2: (19, 20), 3: (18, 20), 4: (15, 20), 5: (18, 20)}),
           "low": estimate({1: (2, 20), 2: (4, 20), 3: (3, 20), 4: (1, 20), 5: (2, 20)})}
    cmp = compare_arms(est)
    assert cmp["best"] == "top" and cmp["letters"] == {"top": "a", "near": "a", "low": "b"}
    near, low = cmp["arms"]["near"], cmp["arms"]["low"]
    assert near["tied_with_best"] is True and near["within_seed_spread"] is True  # 0.06 apart; near's seeds span 0.2
    assert low["tied_with_best"] is False and low["within_seed_spread"] is False and low["p_adjusted"] < 0.01
    assert cmp["arms"]["top"]["p_adjusted"] is None
    # one seed each: the seed spread is not measured
    single = compare_arms({"x": estimate({7: (13, 20)}), "y": estimate({7: (9, 20)})})
    assert single["arms"]["y"]["within_seed_spread"] is None


def test_pareto_front_keeps_every_trade_off_and_ties():
    rates = {"a": {"s1": 0.9, "s2": 0.1}, "b": {"s1": 0.1, "s2": 0.9}, "c": {"s1": 0.05, "s2": 0.05},
             "d": {"s1": 0.9, "s2": 0.1}, "e": {"s1": 0.5, "s2": 0.5}, "f": {"s3": 0.0}}
    assert pareto_front(rates) == {"a": True, "b": True, "c": False, "d": True, "e": True, "f": True}


# ---------------------------------------------------------------------------- rank columns and report
SUITE = "libero_object"


def _pred(arm, seed, successes, n=20, **extra):
    rows = [{"suite": SUITE, "task_id": 0, "episode_index": i, "success": i < successes,
             "instruction_variant": "original", "versions": {"mujoco": "3.2.7", "numpy": "1.26.4"}} for i in range(n)]
    from vlamix.eval.stats import summarize

    return {"episodes": rows, "summary": summarize(rows), "arm_key": arm, "plan_key": "plan",
            "train_key": f"{arm}-{seed}",
            "config": {"mixture": {"libero_object_no_noops": 1, "libero_spatial_no_noops": 1 if arm == "mix" else 0},
                       "seed": seed}, "mixing": {"strategy_label": f"static {arm}"}, **extra}


def test_arm_columns_read_the_job_ledger_point_by_point(tmp_path):
    from vlamix.bench import metrics
    from vlamix.pipeline.ledger import record

    ledger = str(tmp_path / "job" / "vlamix_points")
    preds = [_pred("solo", 7, 13), _pred("solo", 8, 18), _pred("solo", 9, 11), _pred("mix", 7, 9), _pred("mix", 8, 8)]
    entries = []
    for pred in preds:
        entries.append(record(ledger, pred))
    first = {**preds[0], "ledger": ledger, "ledger_entry": entries[0]}
    assert metrics.num_seeds(None, first) == 3
    assert metrics.seed_success_rates(None, first) == "7:13/20 8:18/20 9:11/20"
    assert metrics.pooled_success_rate(None, first) == pytest.approx(0.7)
    ref = estimate({7: (13, 20), 8: (18, 20), 9: (11, 20)})
    assert metrics.pooled_ci_low(None, first) == pytest.approx(ref.ci_low, abs=1e-6)
    assert metrics.between_seed_sd(None, first) == pytest.approx(ref.between_seed_sd, abs=1e-6)
    mix = {**preds[3], "ledger": ledger, "ledger_entry": entries[3]}
    p_solo, p_mix = metrics.prob_best(None, first), metrics.prob_best(None, mix)
    assert p_solo > 0.5 > p_mix and p_solo + p_mix == pytest.approx(1.0, abs=1e-3)
    assert metrics.group(None, first) == "a"
    assert metrics.best_tradeoff(None, first) is True and metrics.best_tradeoff(None, mix) is False
    # before any other point finished (Ianvs computes metrics point by point) the arm is the point alone
    alone = {**preds[0], "ledger": None}
    assert metrics.num_seeds(None, alone) == 1 and metrics.prob_best(None, alone) == 1.0
    assert metrics.sim_versions(None, first) == "mujoco=3.2.7;numpy=1.26.4"
    # a reference row (scripted expert) is no arm
    assert math.isnan(metrics.num_seeds(None, {**preds[0], "reference": True}))


def test_cost_and_fingerprint_columns():
    from vlamix.bench import metrics

    pred = _pred("solo", 7, 13, cost={"train_wall_s": 571.04, "rollout_wall_s": 710.0, "episodes_per_hour": 101.408,
                                        "train_device": "cpu (2 cores)", "rollout_device": "cpu (2 cores)"},
                 data_fingerprint={"fingerprint": "0123456789ab"})
    assert metrics.train_wall_s(None, pred) == 571.0 and metrics.rollout_wall_s(None, pred) == 710.0
    assert metrics.episodes_per_hour(None, pred) == 101.41 and metrics.device(None, pred) == "cpu (2 cores)"
    assert metrics.dataset_fingerprint(None, pred) == "rlds:0123456789ab"
    pred["cost"]["train_device"] = "NVIDIA H100 80GB HBM3"
    assert metrics.device(None, pred) == "train NVIDIA H100 80GB HBM3; rollout cpu (2 cores)"
    old = _pred("solo", 7, 13)  # a prediction written before the cost record existed
    assert math.isnan(metrics.train_wall_s(None, old)) and math.isnan(metrics.device(None, old))


def test_report_aggregates_seeds_and_says_when_a_difference_is_within_their_spread(tmp_path):
    from vlamix.report.markdown import leaderboard_rows, write_report

    preds = [_pred("solo", 7, 13), _pred("solo", 8, 18), _pred("solo", 9, 11),
             _pred("mix", 7, 9), _pred("mix", 8, 14), _pred("mix", 9, 10)]
    text = open(write_report(preds, str(tmp_path))).read()
    seeds = text.split("## Training seeds")[1].split("\n## ")[0]
    assert "| static solo | 3 | 7:13/20 8:18/20 9:11/20 | 0.700 (42/60) |" in seeds
    assert "| static mix | 3 | 7:9/20 8:14/20 9:10/20 | 0.550 (33/60) |" in seeds
    sig = text.split("## Significance (arms, aggregated over training seeds)")[1].split("\n## ")[0]
    mix_row = next(line for line in sig.splitlines() if line.startswith("| static mix"))
    assert mix_row.split("|")[7].strip() == "True" and mix_row.split("|")[8].strip() == "True"  # tied, within spread
    assert "within the seed-to-seed spread" in text.split("## What the data supports")[1]
    rows = leaderboard_rows(preds)
    assert {r["group"] for r in rows} == {"a"} and len({r["prob_best"] for r in rows}) == 2
    assert "## Significance (paired, same episodes)" not in text


def test_arm_key_ignores_the_seed_only():
    from vlamix.pipeline.arms import arm_key
    from vlamix.pipeline.config import BenchConfig, train_key

    base = {"mixture": {"libero_object_no_noops": 1}, "eval_suites": ["libero_object"], "trials_per_task": 20}
    seeds = [BenchConfig.from_dict({**base, "seed": s}) for s in (7, 8, 9)]
    assert len({arm_key(c) for c in seeds}) == 1 and len({train_key(c) for c in seeds}) == 3
    for change in ({"mixture": {"libero_object_no_noops": 1, "libero_spatial_no_noops": 1}}, {"learning_rate": 1e-4},
                   {"trials_per_task": 10}, {"eval_seed": 3}):
        assert arm_key(BenchConfig.from_dict({**base, "seed": 7, **change})) != arm_key(seeds[0]), change
    # a rollout-runtime field (workers) changes neither the arm nor the training
    assert arm_key(BenchConfig.from_dict({**base, "seed": 8, "eval_workers": 2})) == arm_key(seeds[0])


def test_new_columns_survive_ianvs_csv_round_trip_and_deduplication(tmp_path):
    """Ianvs reads all_rank.csv back with pandas, appends the new rows and drops selected rows equal in every column
    but time and url: a rerun's row must equal the row read back (numbers rounded, strings that pandas keeps as
    strings: a fingerprint of hex digits only would come back as a number without its ``rlds:`` prefix)."""
    import io

    pd = pytest.importorskip("pandas")
    from vlamix.bench import metrics
    from vlamix.pipeline.ledger import record

    ledger = str(tmp_path / "vlamix_points")
    cost = {"train_wall_s": 571.0449, "rollout_wall_s": 710.31, "episodes_per_hour": 101.3713,
            "train_device": "cpu (2 cores)", "rollout_device": "cpu (2 cores)"}
    preds = [_pred("solo", s, k, cost=cost, data_fingerprint={"fingerprint": "123456789012"})
             for s, k in ((7, 13), (8, 17), (9, 11))] + [_pred("mix", 7, 9)]
    paths = [record(ledger, p) for p in preds]
    names = [*metrics.ARM_METRICS, "train_wall_s", "rollout_wall_s", "episodes_per_hour", "device",
             "dataset_fingerprint", "sim_versions"]
    # the seed is a hyperparameter column of every Ianvs rank row: the seeds of one arm share their arm columns
    names = ["seed", *names]
    rows = [{name: p["config"]["seed"] if name == "seed" else
             getattr(metrics, name)(None, {**p, "ledger": ledger, "ledger_entry": path}) for name in names}
            for p, path in zip(preds, paths)]
    assert rows[0]["dataset_fingerprint"] == "rlds:123456789012" and rows[0]["group"] == "a"
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf)
    buf.seek(0)
    old = pd.read_csv(buf, index_col=0)
    both = pd.concat([old, pd.DataFrame(rows)]).drop_duplicates(names)
    assert len(both) == len(rows)


# ---------------------------------------------------------------------------- cost record and dataset fingerprint
def test_training_cost_sums_each_logged_step_once_up_to_train_steps(tmp_path):
    import json

    from vlamix.pipeline.provenance import CHECKPOINT_META, training_cost

    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "step_time_s": 0.5} for s in range(1, 5)]
    rows += [{"step": 3, "step_time_s": 2.0}, {"step": 4, "step_time_s": 2.0},  # resumed: steps 3-4 again, last wins
             {"step": 5, "step_time_s": 9.0},  # past train_steps (a longer run's log): not this point's cost
             {"event": "saved"}]  # rows without a step time do not count
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / CHECKPOINT_META).write_text(json.dumps({"training": {"device": "cuda", "device_name": "NVIDIA H100"}}))
    cost = training_cost(str(log), str(ckpt), train_steps=4)
    assert cost == {"train_wall_s": 0.5 + 0.5 + 2.0 + 2.0, "train_steps_logged": 4, "train_device": "NVIDIA H100"}
    none = training_cost(None, None, 4)
    assert math.isnan(none["train_wall_s"]) and none["train_steps_logged"] == 0 and none["train_device"] is None


def test_rollout_cost_counts_the_calls_that_ran_episodes(tmp_path):
    import json

    from vlamix.pipeline.provenance import rollout_cost

    episodes = tmp_path / "episodes.jsonl"
    runs = [{"wall_s": 300.0, "n_run": 6, "device": "cpu", "device_name": "cpu (2 cores)"},
            {"wall_s": 60.0, "n_run": 2, "device": "cpu", "device_name": "cpu (2 cores)"},
            {"wall_s": 5.0, "n_run": 0, "device_name": "NVIDIA H100"}]  # a resumed call that found every episode
    (tmp_path / "episodes.meta.json").write_text(json.dumps({"runs": runs}))
    cost = rollout_cost(str(episodes))
    assert cost == {"rollout_wall_s": 360.0, "rollout_episodes_run": 8, "episodes_per_hour": 80.0,
                    "rollout_device": "cpu (2 cores)"}
    assert math.isnan(rollout_cost(str(tmp_path / "none.jsonl"))["episodes_per_hour"])


def test_dataset_fingerprint_follows_the_training_datasets_files(tmp_path):
    from vlamix.pipeline.config import BenchConfig
    from vlamix.pipeline.provenance import data_fingerprint

    def write(name, payload):
        folder = tmp_path / name / "1.0.0"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "features.json").write_text('{"steps": "spec"}')
        (folder / f"{name}-train.tfrecord-00000-of-00001").write_bytes(payload)

    write("libero_object_no_noops", b"a" * 1000)
    write("libero_spatial_no_noops", b"b" * 1000)
    def cfg(mix):
        return BenchConfig.from_dict({"mixture": mix, "data_dir": str(tmp_path)}).data

    both = data_fingerprint(cfg({"libero_object_no_noops": 1, "libero_spatial_no_noops": 1}))
    solo = data_fingerprint(cfg({"libero_object_no_noops": 1, "libero_spatial_no_noops": 0}))
    assert set(both["datasets"]) == {"libero_object_no_noops", "libero_spatial_no_noops"}
    assert set(solo["datasets"]) == {"libero_object_no_noops"} and solo["fingerprint"] != both["fingerprint"]
    # a cache file written beside the data (norm stats) changes nothing; re-recorded data changes the fingerprint
    (tmp_path / "libero_object_no_noops" / "1.0.0" / "dataset_statistics_abc.json").write_text("{}")
    assert data_fingerprint(cfg({"libero_object_no_noops": 1, "libero_spatial_no_noops": 0})) == solo
    write("libero_object_no_noops", b"c" * 1000)
    again = data_fingerprint(cfg({"libero_object_no_noops": 1, "libero_spatial_no_noops": 0}))
    assert again["fingerprint"] != solo["fingerprint"] and len(again["fingerprint"]) == 12
    missing = data_fingerprint(cfg({"libero_goal_no_noops": 1}))
    assert missing["datasets"] == {"libero_goal_no_noops": "missing"}
