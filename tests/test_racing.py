"""Racing for the evaluation budget, wired into the runner (issue 12, item 4; vlamix.pipeline.racing).

The decision rule of one point against the finished points of its job (:func:`race_point`) on stub
evaluations, then the real path: the example's own basemodel and metric files through ``vlamix run``
(:func:`vlamix.bench.job.run_job`) in a copy of the example, with training, rollouts and offline
metrics replaced by fakes whose outcomes are known (no LIBERO, no model). The fake rollout keeps rows
in the point's episodes JSONL and reuses them by episode key, as :func:`vlamix.eval.rollout.evaluate` does.
"""

import csv
import json
import math
import os
import shutil

import pytest
import yaml

from configs import checked
from vlamix.bench import job as bench_job
from vlamix.bench import metrics
from vlamix.core.errors import ConfigError
from vlamix.eval.plan import EpisodeSpec
from vlamix.eval.stats import wilson_interval
from vlamix.pipeline.config import eval_key, train_key
from vlamix.pipeline.point import episodes_path
from vlamix.pipeline.racing import Competitor, plan_key, plan_rounds, race_point

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EXAMPLE_REL = os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench")
SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"


def _plan(tasks=2, trials=6):
    return [EpisodeSpec("libero_spatial", t, k, k, f"task {t}") for t in range(tasks) for k in range(trials)]


def _runner(success, calls):
    """run_round stub: every episode's outcome is ``success(spec)``; records the specs of each call."""
    def run(part):
        calls.append([(s.task_id, s.episode_index) for s in part])
        return [{"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index, "success": success(s),
                 "error": None} for s in part]
    return run


def _competitor(success, label="strong", specs=None):
    """A finished point with ``success(spec)`` on every episode of ``specs`` (default: the whole plan)."""
    return Competitor(label, f"/job/vlamix_points/{label}.json",
                      {(s.suite, s.task_id, s.episode_index, "original"): bool(success(s)) for s in (specs or _plan())})


def _first_rejection(alpha_two_sided, max_pairs):
    """Pairs after which an all-discordant walk (one point always loses) first crosses the exact boundary:
    the first n with P0(|S_n| = n) = 2^(1-n) <= alpha * sqrt(n / max_pairs) (no error is spent before, as
    2^(1-n) is the only mass at |S| >= n and it exceeds the allowance until then)."""
    return next(n for n in range(1, max_pairs + 1) if 2.0 ** (1 - n) <= alpha_two_sided * math.sqrt(n / max_pairs))


# ------------------------------------------------------------------------------------------ rule
def test_rounds_take_the_same_trials_of_every_task():
    rounds = plan_rounds(_plan(tasks=3, trials=5), 2)
    assert [[(s.task_id, s.episode_index) for s in r] for r in rounds] == [
        [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)],
        [(0, 2), (0, 3), (1, 2), (1, 3), (2, 2), (2, 3)],
        [(0, 4), (1, 4), (2, 4)],
    ]
    with pytest.raises(ValueError, match="round_trials"):
        plan_rounds(_plan(), 0)


def test_a_point_worse_on_the_shared_episodes_stops_when_the_paired_boundary_is_crossed():
    calls = []
    strong = _competitor(lambda s: True)
    rows, evaluated, rec = race_point(_plan(), _runner(lambda s: False, calls), round_trials=2,
                                      competitors=lambda: [strong], alpha=0.05)
    # one competitor: one-sided 0.05 = two-sided 0.1 over 12 planned pairs; every pair is discordant against the
    # point, so the walk crosses at pair 5 (2^-4 = 0.0625 <= 0.1 sqrt(5/12) = 0.0645; 0.125 > 0.0577 at pair 4):
    # inside round 2 (pairs 5-8), so the point stops after round 2 of 3
    assert _first_rejection(0.1, 12) == 5
    assert calls == [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, 2), (0, 3), (1, 2), (1, 3)]]
    assert len(rows) == 8 and len(evaluated) == 8
    assert rec["stopped_at_round"] == 2 and rec["rounds_run"] == 2 and rec["looks"] == 2
    assert (rec["episodes_planned"], rec["episodes_evaluated"], rec["episodes_saved"]) == (12, 8, 4)
    assert rec["stopped_by"] == "strong" and rec["alpha"] == 0.05 and rec["comparison_alpha"] == pytest.approx(0.05)
    stop = rec["competitor"]
    # at 5 pairs |S| is odd, so |S| >= 4 and |S| = 5 have the same probability 2^-4: the boundary is the smaller
    assert (stop["n_pairs"], stop["point_only"], stop["competitor_only"], stop["boundary"]) == (5, 0, 5, 4)
    assert stop["statistic"] == 5
    assert stop["decision"] == "point worse" and stop["decided_at_pair"] == 5
    assert stop["alpha_spent"] == pytest.approx(2.0 ** -5)  # one-sided: half of the two-sided 2^-4
    assert "McNemar" in rec["method"] and "Lan & DeMets" in rec["sources"]
    assert [r["decision"] for r in rec["rounds"]] == ["continue", "stop"]


def test_the_error_is_split_over_the_finished_points_and_the_worse_one_does_not_stop_the_point():
    # rounds of 2 episodes (1 trial of 2 tasks); a competitor that fails everything (as the point does) gives no
    # discordant pair, but it counts in the Bonferroni split: each comparison is one-sided at 0.025
    weak, strong = _competitor(lambda s: False, "weak"), _competitor(lambda s: True, "strong")
    _, _, one = race_point(_plan(), _runner(lambda s: False, []), round_trials=1, competitors=lambda: [strong])
    _, _, two = race_point(_plan(), _runner(lambda s: False, []), round_trials=1, competitors=lambda: [weak, strong])
    assert two["comparison_alpha"] == pytest.approx(0.025) and one["comparison_alpha"] == pytest.approx(0.05)
    assert one["competitor"]["decided_at_pair"] == _first_rejection(0.1, 12) == 5
    assert two["competitor"]["decided_at_pair"] == _first_rejection(0.05, 12) == 6
    assert one["stopped_at_round"] == 3 and two["stopped_at_round"] == 3
    assert two["stopped_by"] == "strong"
    assert [c["n_pairs"] for c in two["competitors"]] == [6, 6] and two["competitors"][0]["decision"] is None


def test_the_best_point_is_never_stopped_and_no_competitor_means_the_whole_plan():
    calls = []
    weak = _competitor(lambda s: s.episode_index == 0, "weak")
    _, evaluated, rec = race_point(_plan(), _runner(lambda s: True, calls), round_trials=2, competitors=lambda: [weak])
    assert len(calls) == 3 and len(evaluated) == 12
    assert rec["stopped_at_round"] is None and rec["episodes_saved"] == 0 and rec["stopped_by"] is None
    assert [r["decision"] for r in rec["rounds"]] == ["continue", "continue", "end"]
    assert rec["competitors"][0]["decision"] == "competitor worse"  # frozen: it can no longer stop the point
    # a point that fails everything but has nobody to lose against runs its whole plan
    calls = []
    _, evaluated, rec = race_point(_plan(), _runner(lambda s: False, calls), round_trials=2, competitors=lambda: [])
    assert len(evaluated) == 12 and rec["episodes_saved"] == 0 and rec["competitors"] == [] and rec["looks"] == 0
    # the same outcomes as the competitor on every episode: no discordant pair, never stopped, whatever the round size
    same = _competitor(lambda s: s.episode_index % 3 != 1, "same")
    for k in (1, 2, 3, 5):
        _, evaluated, rec = race_point(_plan(), _runner(lambda s: s.episode_index % 3 != 1, []), round_trials=k,
                                       competitors=lambda: [same])
        assert rec["stopped_at_round"] is None and len(evaluated) == 12


def test_only_episodes_both_ran_are_paired():
    # the competitor was itself stopped after round 1 (4 episodes) and had an error on one of them: 3 pairs,
    # never enough to cross (5 needed), however badly the point does afterwards
    part = [s for s in _plan() if s.episode_index < 2]
    early = Competitor("early", "/job/vlamix_points/early.json",
                       {(s.suite, s.task_id, s.episode_index, "original"): True for s in part[1:]})
    _, evaluated, rec = race_point(_plan(), _runner(lambda s: False, []), round_trials=2, competitors=lambda: [early])
    assert rec["stopped_at_round"] is None and len(evaluated) == 12
    assert rec["competitors"][0]["n_pairs"] == 3 and rec["competitors"][0]["competitor_only"] == 3
    # the point's own error rows are no outcomes either
    errors = _runner(lambda s: False, [])
    strong = _competitor(lambda s: True)

    def run(part):
        return [dict(r, error="env crashed") if r["episode_index"] in (0, 2) else r for r in errors(part)]

    _, evaluated, rec = race_point(_plan(), run, round_trials=2, competitors=lambda: [strong])
    assert rec["stopped_at_round"] is None and rec["competitors"][0]["n_pairs"] == 4  # trials 1 and 3 of 2 tasks


def test_competitors_are_fixed_at_the_first_look_that_has_one():
    # Ray: another trial finishes while this point runs; from its first look on it counts, later arrivals do not
    asked = []
    found = iter([[], [_competitor(lambda s: True)], [_competitor(lambda s: True), _competitor(lambda s: True, "late")]])

    def competitors():
        asked.append(1)
        return next(found)

    _, evaluated, rec = race_point(_plan(), _runner(lambda s: False, []), round_trials=1, competitors=competitors)
    # looks after rounds 1 (nobody yet) and 2 (one competitor: 4 pairs fed at once), then round 3 (6 pairs: cross at 5)
    assert len(asked) == 2 and rec["looks"] == 2
    assert rec["stopped_at_round"] == 3 and len(evaluated) == 6 and rec["episodes_saved"] == 6
    assert [c["label"] for c in rec["competitors"]] == ["strong"] and rec["comparison_alpha"] == pytest.approx(0.05)
    assert rec["rounds"][0]["decision"] == "continue"


def test_race_point_takes_the_decisions_of_the_simulated_racing_rule():
    # the guarantee (false stops <= alpha) is shown by seeded simulation on race_sequential
    # (tests/test_eval_sequential.py); here race_point, fed the same simulated episodes through planted rows and
    # ledger competitors, stops the same points after the same rounds, race by race (2 tasks, trials in rounds of 2)
    import numpy as np

    from vlamix.eval.sequential import race_sequential, simulate_outcomes

    rng = np.random.default_rng(29)
    x = np.concatenate([simulate_outcomes(rng, 40, [0.5, 0.5, 0.5], 0.5, 40),
                        simulate_outcomes(rng, 40, [0.8, 0.4, 0.5], 0.5, 40)])
    # simulated episode e of a race = the pair race_point feeds e-th: round k // 2 of 4 episodes, in plan order
    # (task 0's two trials, then task 1's)
    specs = _plan(tasks=2, trials=20)
    index = {(s.task_id, s.episode_index): 4 * (s.episode_index // 2) + 2 * s.task_id + s.episode_index % 2
             for s in specs}
    episodes, stopped, by = race_sequential(x, round_size=4, alpha=0.05)
    assert 20 <= (stopped > 0).sum() < x.shape[0] * 2  # both stops and full runs are compared
    for r in range(x.shape[0]):
        finished = []
        for i in range(3):
            def run(part, i=i):
                return [{"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index, "error": None,
                         "success": bool(x[r, i, index[s.task_id, s.episode_index]])} for s in part]

            rows, _, rec = race_point(specs, run, round_trials=2, competitors=lambda: list(finished), alpha=0.05)
            assert (rec["episodes_evaluated"], rec["stopped_at_round"] or 0) == (episodes[r, i], stopped[r, i])
            assert rec["stopped_by"] == (str(by[r, i]) if by[r, i] >= 0 else None)
            finished.append(Competitor(str(i), "", {(row["suite"], row["task_id"], row["episode_index"], "original"):
                                                    row["success"] for row in rows}))


def test_stored_episodes_are_free_so_a_fully_stored_point_is_not_cut():
    asked = []

    def stored(rest):
        asked.append(len(rest))
        return True

    _, evaluated, rec = race_point(_plan(), _runner(lambda s: False, []), round_trials=2,
                                   competitors=lambda: [_competitor(lambda s: True)], stored=stored)
    assert asked == [4] and len(evaluated) == 12 and rec["stopped_at_round"] is None
    assert [r["decision"] for r in rec["rounds"]] == ["continue", "rest stored", "end"]


def test_bad_alpha_is_refused():
    for alpha in (0.0, 0.5, True, "0.05"):
        with pytest.raises(ValueError, match="alpha"):
            race_point(_plan(), _runner(lambda s: False, []), round_trials=2, competitors=lambda: [], alpha=alpha)


def test_competitors_are_the_finished_points_of_the_job_on_the_same_plan(tmp_path):
    from vlamix.pipeline.ledger import record
    from vlamix.pipeline.racing import finished_competitors

    cfg = _cfg().to_dict()
    plan = plan_key(cfg)

    ledger = str(tmp_path / "job" / "vlamix_points")

    def point(name, k, n, config=cfg, **extra):
        episodes = [{"suite": "libero_spatial", "task_id": t, "episode_index": i, "success": i < k} for t in range(2)
                    for i in range(n)]
        pred = {"episodes": episodes, "config": config, "mixing": {"strategy_label": name}, "checkpoint": name, **extra}
        return record(ledger, pred)

    point("own", 0, 3, train_key="mine")
    point("same_plan", 3, 6, train_key="other")
    point("same_model", 9, 9, train_key="mine", plan_key="earlier")  # an earlier run of this model: not a competitor
    point("expert", 9, 9, reference=True, label="expert")  # the scripted-expert reference row
    point("other_plan", 9, 9, config=_cfg(trials_per_task=4).to_dict())
    point("all_errors", 0, 0)
    with open(os.path.join(ledger, "torn.json"), "w") as fh:
        fh.write("{")
    found = finished_competitors(ledger, plan, exclude_train_key="mine")
    assert [(c.label, c.n_successes, c.n_episodes) for c in found] == [("same_plan", 6, 12)]
    assert found[0].outcomes[("libero_spatial", 1, 2, "original")] is True
    assert found[0].outcomes[("libero_spatial", 1, 3, "original")] is False
    assert finished_competitors(None, plan) == []
    # the ledger's competitor drives race_point: a point failing every episode stops once 5 discordant pairs
    # (trials 0-2 of both tasks, where same_plan succeeded) are in: after round 3 of rounds of 1 trial
    specs = _plan(tasks=2, trials=6)
    _, evaluated, rec = race_point(specs, _runner(lambda s: False, []), round_trials=1,
                                   competitors=lambda: finished_competitors(ledger, plan, exclude_train_key="mine"))
    assert rec["stopped_at_round"] == 3 and len(evaluated) == 6 and rec["stopped_by"] == "same_plan"
    assert rec["competitor"]["point_only"] == 0 and rec["competitor"]["competitor_only"] == 5


# ------------------------------------------------------------------------------------------ config
def _cfg(**kw):
    return checked({"mixture": {SPATIAL: 2, OBJECT: 1}, "trials_per_task": 3, **kw})


def test_racing_fields_change_neither_the_training_key_nor_the_eval_key():
    base, raced = _cfg(), _cfg(racing=True, racing_round_trials=1)
    # keys computed before racing existed (commit 537ed11): earlier runs and rollouts stay valid
    assert (train_key(base), eval_key(base)) == ("39f678885b501826", "741739a9b18b")
    assert (train_key(raced), eval_key(raced)) == (train_key(base), eval_key(base))
    assert episodes_path("/runs/x", raced) == episodes_path("/runs/x", base)
    assert plan_key(raced.to_dict()) == plan_key(base.to_dict())
    assert plan_key(base.to_dict()) != plan_key(_cfg(trials_per_task=4).to_dict())
    assert plan_key(base.to_dict()) != plan_key(_cfg(eval_instruction=["original", "empty"]).to_dict())
    assert plan_key(base.to_dict()) == plan_key(_cfg(eval_workers=1, lora_rank=4).to_dict())


@pytest.mark.parametrize("values, field, words", [
    ({"racing": "yes"}, "racing", ["'yes'", "true or false"]),
    ({"racing_round_trials": 0}, "racing_round_trials", ["integer >= 1", "0"]),
    ({"racing_round_trials": 2.5}, "racing_round_trials", ["integer >= 1"]),
    ({"racing": True, "racing_round_trials": 3}, "racing_round_trials", ["single round", "allowed with racing: true: 1..2"]),
    ({"racing": True, "trials_per_task": 1, "racing_round_trials": 1}, "racing", ["trials_per_task >= 2", "allowed here: false"]),
    ({"racing_alpha": 0.5}, "racing_alpha", ["(0, 0.5)", "0.5"]),
    ({"racing_alpha": "0.05"}, "racing_alpha", ["(0, 0.5)", "'0.05'"]),
], ids=["racing_not_bool", "round_trials_zero", "round_trials_float", "one_round", "one_trial", "alpha_half", "alpha_str"])
def test_bad_racing_values_fail_naming_the_field(values, field, words):
    with pytest.raises(ConfigError) as info:
        _cfg(**values)
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


def test_racing_off_ignores_the_round_size():
    assert _cfg(racing_round_trials=10).get("racing") is False  # no error: one round is fine without racing


# ------------------------------------------------------------------------------------------ metric, report
def test_episodes_saved_metric_and_report_section():
    from vlamix.report.kit import racing_section

    assert math.isnan(metrics.episodes_saved(None, {"episodes": []}))
    _, _, rec = race_point(_plan(), _runner(lambda s: False, []), round_trials=2,
                           competitors=lambda: [_competitor(lambda s: True, "static spatial=2")])
    assert metrics.episodes_saved(None, {"episodes": [], "racing": rec}) == 4
    _, _, full = race_point(_plan(), _runner(lambda s: True, []), round_trials=2, competitors=lambda: [])
    lines = "\n".join(racing_section([{"racing": full}, {"racing": rec}, {}], ["good", "bad", "off"]))
    assert "## Racing" in lines
    assert "Method: paired sequential McNemar test, exact error spending alpha * t^0.5" in lines
    assert "(Lan & DeMets, Biometrika 70 (1983);" in lines
    assert "stopped with probability at most 0.05 over all looks" in lines and "racing_alpha / m" in lines
    assert ("| bad | 2 | 8 / 12 | 4 | 1 point(s): static spatial=2 (0.05) | static spatial=2 (0 vs 5 of 5 shared, "
            "boundary 4) |") in lines
    assert "| good | - | 12 / 12 | 0 | no finished point | - |" in lines
    assert "| off |" not in lines
    assert "Stopped early: bad. Episodes saved in total: 4 of 24 planned (17%)." in lines
    assert racing_section([{}, {"summary": {}}], ["a", "b"]) == []


# ------------------------------------------------------------------------------------------ vlamix run
GRID = {
    "mixture": [{SPATIAL: 2, OBJECT: 1}, {SPATIAL: 1, OBJECT: 1}, {SPATIAL: 1, OBJECT: 2}],
    "model": ["tiny"],
    "eval_suites": [["libero_spatial"]],
    "eval_tasks": [2],
    "trials_per_task": [6],
    "eval_workers": [1],
    "racing": [True],
    "racing_round_trials": [2],
}
#: The fake model's quality per mixture: the 1:1 point fails every episode, the others succeed.
GOOD = {"2:1": True, "1:1": False, "1:2": True}


@pytest.fixture
def job_root(tmp_path, monkeypatch):
    """A copy of the example (the Ianvs root) whose job runs GRID through the real basemodel, with fakes for
    training (a checkpoint per train key), rollouts (rows kept and reused by key) and offline metrics."""
    import vlamix.pipeline.point

    shutil.copytree(os.path.join(REPO, EXAMPLE_REL), tmp_path / EXAMPLE_REL)
    job_yaml = tmp_path / EXAMPLE_REL / "benchmarkingjob.yaml"
    job = yaml.safe_load(job_yaml.read_text())
    job["benchmarkingjob"]["test_object"]["algorithms"] = [
        a for a in job["benchmarkingjob"]["test_object"]["algorithms"] if a["name"] == "vla_dataselect"]
    job_yaml.write_text(yaml.safe_dump(job))
    monkeypatch.chdir(tmp_path)
    ran = []  # (train key, task, trial) of every episode actually rolled out

    def fake_train_run(cfg, runs_dir):
        ckpt = os.path.join(os.path.abspath(runs_dir), train_key(cfg), "step_000001")
        os.makedirs(ckpt, exist_ok=True)
        ratio = ":".join(str(int(w)) for w in cfg.get("mixture").values())
        with open(os.path.join(ckpt, "weights.txt"), "w") as fh:
            fh.write("good" if GOOD[ratio] else "bad")
        return ckpt

    def fake_evaluate(policy, episodes, rollout=None, out_jsonl=None, **kwargs):
        with open(os.path.join(policy, "weights.txt")) as fh:
            good = fh.read() == "good"
        stored = {}
        if os.path.isfile(out_jsonl):
            with open(out_jsonl) as fh:
                for line in fh:
                    row = json.loads(line)
                    stored[tuple(row["episode_key"])] = row
        rows = []
        os.makedirs(os.path.dirname(out_jsonl), exist_ok=True)
        with open(out_jsonl, "a") as fh:
            for s in episodes:
                key = tuple(s.key)
                if key not in stored:
                    stored[key] = {"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index,
                                   "episode_key": list(s.key), "success": good, "error": None}
                    fh.write(json.dumps(stored[key]) + "\n")
                    ran.append((os.path.basename(os.path.dirname(os.path.dirname(out_jsonl))), s.task_id, s.episode_index))
                rows.append(dict(stored[key]))
        return rows

    monkeypatch.setattr(vlamix.pipeline.point, "train_run", fake_train_run)
    monkeypatch.setattr(vlamix.pipeline.point, "evaluate", fake_evaluate)
    monkeypatch.setattr(vlamix.pipeline.point, "offline_metrics", lambda ckpt, **kw: {"action_token_accuracy": 0.5, "action_l1": 0.1})
    monkeypatch.setattr(vlamix.pipeline.point, "ensure_demo_datasets", lambda data: None)
    return tmp_path, ran


def _run(root, **grid_changes):
    algo_yaml = root / EXAMPLE_REL / "testalgorithms" / "vla_dataselect" / "vla_algorithm.yaml"
    algo = yaml.safe_load(algo_yaml.read_text())
    algo["algorithm"]["modules"][0]["hyperparameters"] = [{k: {"values": v}} for k, v in {**GRID, **grid_changes}.items()]
    algo_yaml.write_text(yaml.safe_dump(algo, sort_keys=False))  # mixtures keep spatial first
    result = bench_job.run_job(os.path.join(EXAMPLE_REL, "benchmarkingjob.yaml"), print_leaderboard=False)
    assert [p.status for p in result.points] == ["completed"] * 3
    with open(result.rank_files["all"], newline="") as fh:
        rows = {r["basemodel-mixture"]: r for r in csv.DictReader(fh) if r["url"] in {p.output_dir for p in result.points}}
    return result, {":".join(str(v) for v in json.loads(k.replace("'", '"')).values()): r for k, r in rows.items()}


def _keys():
    return {":".join(str(w) for w in m.values()): train_key(checked({**{k: v[0] for k, v in GRID.items()}, "mixture": m}))
            for m in GRID["mixture"]}


def test_vlamix_run_races_each_point_against_the_finished_points_and_a_later_run_reuses_the_rows(job_root):
    root, ran = job_root
    keys = _keys()
    result, rank = _run(root)
    # 2:1 ran first with nobody to race: its whole plan (2 tasks x 6 trials)
    # 1:1 after it: every shared episode is discordant against it; the paired test (one-sided 0.05, 12 planned
    # pairs) crosses at pair 5, in round 2 (trials 2-3 of both tasks): stopped after 8 episodes, 4 saved
    # 1:2 after both: better than both on every shared episode, never stopped
    per_point = {r: sorted((t, k) for key, t, k in ran if key == keys[r]) for r in GOOD}
    assert per_point["2:1"] == [(t, k) for t in range(2) for k in range(6)]
    assert per_point["1:1"] == [(t, k) for t in range(2) for k in range(4)]
    assert per_point["1:2"] == per_point["2:1"]
    assert {r: rank[r]["episodes_saved"] for r in GOOD} == {"2:1": "0", "1:1": "4", "1:2": "0"}
    assert {r: rank[r]["num_episodes"] for r in GOOD} == {"2:1": "12", "1:1": "8", "1:2": "12"}
    assert float(rank["1:1"]["success_rate"]) == 0.0
    assert float(rank["1:1"]["success_rate_ci_high"]) == pytest.approx(wilson_interval(0, 8)[1], abs=1e-6)
    # the prediction keeps the record: the stop round, the point it lost against and the test at the stop
    stopped = next(p for p in result.points if p.point.basemodel.hyperparameters["mixture"] == {SPATIAL: 1, OBJECT: 1})
    rec = json.loads(open(os.path.join(stopped.output_dir, "prediction.json")).read())["racing"]
    assert rec["stopped_at_round"] == 2 and rec["stopped_by"] == "static spatial:object=2:1"
    assert rec["competitor"]["decided_at_pair"] == 5 and rec["alpha"] == 0.05
    later = next(p for p in result.points if p.point.basemodel.hyperparameters["mixture"] == {SPATIAL: 1, OBJECT: 2})
    rec = json.loads(open(os.path.join(later.output_dir, "prediction.json")).read())["racing"]
    assert rec["stopped_at_round"] is None and rec["comparison_alpha"] == pytest.approx(0.025)  # two finished points
    # 8 pairs with each up to its last look (round 2); the test against 1:1 found 1:1 worse at pair 6 and stopped
    assert {c["label"]: (c["n_pairs"], c["decision"]) for c in rec["competitors"]} == {
        "static spatial:object=2:1": (8, None), "static spatial:object=1:1": (6, "competitor worse")}
    # the report's Racing section lists the stopped point, the method and the total
    report = open(result.rank_files["report"]).read()
    assert "## Racing" in report and "Method: paired sequential McNemar test" in report
    assert ("| static spatial:object=1:1 | 2 | 8 / 12 | 4 | 1 point(s): static spatial:object=2:1 (0.05) | "
            "static spatial:object=2:1 (0 vs 5 of 5 shared, boundary 4) |") in report
    assert "Stopped early: static spatial:object=1:1. Episodes saved in total: 4 of 36 planned (11%)." in report
    assert "exact stratified matched-pairs (sign-flip) test by task" in report

    # the same grid without racing (new point folders): the stored rows are reused, only the 4 episodes the
    # race saved are rolled out now, into the same rollout file (same train and eval keys)
    ran.clear()
    _, rank = _run(root, racing=[False])
    assert sorted((key, t, k) for key, t, k in ran) == [(keys["1:1"], t, k) for t in range(2) for k in range(4, 6)]
    assert {r: rank[r]["num_episodes"] for r in GOOD} == {"2:1": "12", "1:1": "12", "1:2": "12"}
    assert {r: rank[r]["episodes_saved"] for r in GOOD} == {"2:1": "", "1:1": "", "1:2": ""}  # racing off: empty
    cfg = checked({**{k: v[0] for k, v in GRID.items()}, "mixture": {SPATIAL: 1, OBJECT: 1}})
    path = episodes_path(os.path.join(str(root), "workspace", "vlamix_runs", keys["1:1"]), cfg)
    with open(path) as fh:
        assert len(fh.readlines()) == 12  # every planned episode once: none was run twice
