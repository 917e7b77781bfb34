"""Evaluation kit: perturbation suites, instruction variants, paired statistics, breakdown columns.

No simulator is started: suites are resolved from the installed LIBERO registry (file checks only),
statistics run on constructed episode rows.
"""

import json
import math
import os

import numpy as np
import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.eval import paired
from vlamix.eval.breakdown import breakdown, tag_rows, training_split
from vlamix.eval.plan import EpisodeSpec, plan_episodes
from vlamix.core.suites import INSTRUCTION_VARIANTS, SuiteUnavailableError, base_suite, list_suites, perturbation, suite_max_steps
from vlamix.eval.stats import summarize, wilson_interval

SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"


# ---------------------------------------------------------------------------- suites
@pytest.mark.parametrize(
    "suite, base, steps",
    [("libero_10_lan", "libero_10", 520), ("libero_goal_swap", "libero_goal", 300),
     ("libero_object_object", "libero_object", 280), ("libero_spatial_task", "libero_spatial", 220),
     ("libero_goal_object_ood", "libero_goal", 300), ("libero_90", "libero_90", 400)],
)
def test_perturbation_suite_resolves_to_base_suite_and_step_limit(suite, base, steps):
    assert base_suite(suite) == base
    assert suite_max_steps(suite) == steps


def test_norm_stats_key_follows_the_base_suite():
    from vlamix.eval.policy import resolve_unnorm_key

    stats = {SPATIAL: {}, OBJECT: {}}
    assert resolve_unnorm_key(stats, base_suite("libero_object_swap")) == OBJECT
    assert resolve_unnorm_key(stats, base_suite("libero_spatial_lan")) == SPATIAL


def test_non_derived_suite_is_rejected_with_the_standard_names():
    with pytest.raises(ValueError, match="libero_mine.*allowed: libero_spatial, libero_object"):
        base_suite("libero_mine")
    assert perturbation("libero_goal_with_mug").startswith("distractor: adds mug")
    assert perturbation("libero_goal_swap").startswith("position")


def test_registered_suite_without_files_fails_in_planning_and_config():
    with pytest.raises(SuiteUnavailableError, match="libero_spatial_env.*not installed"):
        plan_episodes("libero_spatial_env", 1, 1)
    with pytest.raises(ConfigError) as err:
        checked({"mixture": {SPATIAL: 1}, "eval_suites": ["libero_spatial", "libero_spatial_temp"]})
    assert err.value.field == "eval_suites" and "libero_spatial_temp" in str(err.value)
    # a perturbation suite with its files is a valid evaluation suite
    cfg = checked({"mixture": {SPATIAL: 1}, "eval_suites": ["libero_spatial", "libero_spatial_swap"]})
    assert cfg.resolved_eval_suites() == ("libero_spatial", "libero_spatial_swap")


def test_list_suites_marks_availability():
    table = {e["suite"]: e for e in list_suites()}
    for kind in ("lan", "object", "swap", "task"):
        entry = table[f"libero_10_{kind}"]
        assert entry["available"] and entry["n_tasks"] == 10 and entry["max_steps"] == 520
    assert not table["libero_goal_env"]["available"]
    assert "libero_goal_env" in table["libero_goal_env"]["problem"] and "not installed" in table["libero_goal_env"]["problem"]
    assert "libero_mine" not in table


def test_plan_with_instruction_variants_and_perturbed_language():
    specs = plan_episodes(["libero_spatial", "libero_spatial_lan"], 2, 2, ["original", "empty"])
    assert len(specs) == 2 * 2 * 2 * 2
    first = [s for s in specs if s.suite == "libero_spatial"]
    assert [(s.instruction_variant, s.task_id, s.episode_index) for s in first[:5]] == [
        ("original", 0, 0), ("original", 0, 1), ("original", 1, 0), ("original", 1, 1), ("empty", 0, 0)]
    # keys: old 3-tuples for "original", the variant appended otherwise; all unique
    assert first[0].key == ("libero_spatial", 0, 0)
    assert first[4].key == ("libero_spatial", 0, 0, "empty")
    assert len({s.key for s in specs}) == len(specs)
    # the _lan suite's instruction is the paraphrase of its BDDL file, not the registry's file name
    lan = next(s for s in specs if s.suite == "libero_spatial_lan" and s.task_id == 0)
    assert lan.instruction != first[0].instruction
    assert lan.instruction.startswith("lift the black bowl")
    with pytest.raises(ValueError, match="instruction_variants.*empty_unwrapped"):
        plan_episodes("libero_spatial", 1, 1, ["original", "blank"])


def test_episode_spec_positional_construction_unchanged():
    spec = EpisodeSpec("libero_spatial", 1, 2, 2, "pick")
    assert spec.instruction_variant == "original" and spec.key == ("libero_spatial", 1, 2)


def test_eval_instruction_config_field():
    cfg = checked({"mixture": {SPATIAL: 1}, "eval_instruction": "empty"})
    assert cfg.get("eval_instruction") == ("empty",)
    cfg = checked({"mixture": {SPATIAL: 1}, "eval_instruction": ["original", "unwrapped"]})
    assert cfg.to_dict()["eval_instruction"] == ["original", "unwrapped"]
    with pytest.raises(ConfigError) as err:
        checked({"mixture": {SPATIAL: 1}, "eval_instruction": ["original", "nothing"]})
    assert err.value.field == "eval_instruction"


# ---------------------------------------------------------------------------- statistics
def _rows(successes, suite="libero_spatial", tasks=1, variant=None, errors=()):
    """Episode rows: successes[i] is episode i, task i % tasks."""
    out = []
    for i, s in enumerate(successes):
        row = {"suite": suite, "task_id": i % tasks, "episode_index": i // tasks, "success": bool(s)}
        if variant:
            row["instruction_variant"] = variant
        if i in errors:
            row["error"] = "env crashed"
        out.append(row)
    return out


def test_exact_mcnemar_against_hand_computation_and_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar

    # 10 shared episodes: both succeed on 3, only A on 1, only B on 6 -> b=1, c=6
    a = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
    test = paired.paired_test(_rows(a), _rows(b))
    assert (test["a_only"], test["b_only"], test["both"], test["neither"]) == (1, 6, 3, 0)
    # two-sided exact binomial on 7 discordant pairs: 2 * (C(7,0) + C(7,1)) / 2^7 = 16 / 128
    assert test["p_value"] == pytest.approx(16 / 128)
    assert test["p_value"] == pytest.approx(mcnemar([[3, 1], [6, 0]], exact=True).pvalue)
    assert test["difference"] == pytest.approx(0.4 - 0.9)
    # only shared episodes are paired; an error episode is not an outcome
    test = paired.paired_test(_rows(a + [1, 1]), _rows(b, errors={0}))
    assert test["n_shared"] == 9 and test["both"] == 2


def test_cmh_by_task_against_statsmodels():
    from statsmodels.stats.contingency_tables import StratifiedTable

    a = _rows([1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0], tasks=2)
    b = _rows([0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0], tasks=2)
    test = paired.paired_test(a, b, method="cmh")
    t0 = np.array([[5, 1], [2, 4]], dtype=float)  # task 0 (even rows): A 5/6, B 2/6
    t1 = np.array([[3, 3], [0, 6]], dtype=float)  # task 1 (odd rows): A 3/6, B 0/6
    assert test["p_value"] == pytest.approx(StratifiedTable([t0, t1]).test_null_odds(correction=False).pvalue)


def test_holm_on_a_known_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06
    assert paired.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = paired.holm([0.01, math.nan])
    assert out[0] == pytest.approx(0.01) and math.isnan(out[1])


def test_tied_with_best_on_constructed_rows():
    n = 40
    best = [1] * 36 + [0] * 4  # 0.9
    close = [1] * 34 + [0] * 6  # 0.85: 2 discordant pairs -> not significant
    poor = [1] * 10 + [0] * 30  # 0.25: 26 discordant pairs -> significant
    out = paired.compare_to_best({"close": _rows(close), "best": _rows(best), "poor": _rows(poor)})
    assert out["best"] == "best"
    pts = out["points"]
    assert pts["best"]["tied_with_best"] is True and pts["best"]["p_adjusted"] is None
    assert pts["close"]["tied_with_best"] is True and pts["poor"]["tied_with_best"] is False
    raw = [pts["close"]["p_value"], pts["poor"]["p_value"]]
    assert [pts["close"]["p_adjusted"], pts["poor"]["p_adjusted"]] == pytest.approx(paired.holm(raw))
    assert pts["poor"]["p_adjusted"] < 0.05 <= pts["close"]["p_adjusted"]
    assert pts["close"]["n_shared"] == n
    # Connor's formula on the observed discordance: psi = 2/40, delta = -2/40 -> n = z_a^2 * 40 / 2 ... computed
    from scipy.stats import norm

    psi, delta = 2 / 40, -2 / 40
    want = (norm.ppf(0.975) * math.sqrt(psi) + norm.ppf(0.8) * math.sqrt(psi - delta**2)) ** 2 / delta**2
    assert pts["close"]["pairs_needed"] == math.ceil(want)
    # a point that shares no episode with the best is not comparable (None), not "tied"
    other = _rows([1, 0], suite="libero_object")
    out = paired.compare_to_best({"best": _rows(best), "elsewhere": other})
    assert out["points"]["elsewhere"]["tied_with_best"] is None


def test_letter_groups():
    a = [1] * 36 + [0] * 4
    b = [1] * 34 + [0] * 6
    c = [1] * 10 + [0] * 30
    letters = paired.letter_groups({"c": _rows(c), "a": _rows(a), "b": _rows(b)})
    assert letters == {"a": "a", "b": "a", "c": "b"}
    # a middle point indistinguishable from both ends, while the ends differ: "a", "ab", "b"
    hi = [1] * 12 + [0] * 8
    mid = [1] * 8 + [0] * 12
    lo = [1] * 4 + [0] * 16
    letters = paired.letter_groups({"lo": _rows(lo), "hi": _rows(hi), "mid": _rows(mid)})
    p = paired.pairwise_p_values({"hi": _rows(hi), "mid": _rows(mid), "lo": _rows(lo)})
    assert p[("hi", "lo")] < 0.05 <= min(p[("hi", "mid")], p[("mid", "lo")])
    assert letters == {"hi": "a", "mid": "ab", "lo": "b"}


def test_wilson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in [(0, 10), (3, 10), (10, 10), (17, 50), (1, 1), (499, 500)]:
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-12)


def test_summarize_counts_variants_as_separate_episodes():
    rows = _rows([1, 0]) + _rows([0, 0], variant="empty")
    assert summarize(rows)["n_episodes"] == 4


# ---------------------------------------------------------------------------- breakdown columns
def _tagged(successes, suite, split="seen", variant="original", tasks=2):
    rows = _rows(successes, suite=suite, tasks=tasks, variant=variant)
    for r in rows:
        r["split"] = split
    return rows


def test_breakdown_columns_on_constructed_rows():
    rows = (
        _tagged([1, 1, 1, 0], "libero_spatial")                         # seen 3/4
        + _tagged([1, 0, 0, 0], "libero_object", split="unseen")         # unseen 1/4
        + _tagged([1, 0, 0, 0], "libero_spatial_swap")                   # perturbed 1/4
        + _tagged([0, 0], "libero_object_lan", tasks=1)                  # perturbed 0/2, task 0 only
        + _tagged([0, 1, 0, 0], "libero_spatial", variant="empty")       # empty: 1/4
    )
    b = breakdown(rows)
    assert b["seen_success_rate"] == pytest.approx(0.75)
    assert b["unseen_success_rate"] == pytest.approx(0.25)
    assert b["perturbed_success_rate"] == pytest.approx(1 / 6)
    # spatial vs swap on tasks {0,1}: 3/4 vs 1/4; object task 0 (episodes 0, 2: 1/2) vs lan 0/2
    assert b["robustness_drop"] == pytest.approx((3 + 1) / 6 - 1 / 6)
    swap = next(r for r in b["robustness"] if r["suite"] == "libero_spatial_swap")
    assert swap["drop"] == pytest.approx(0.5) and swap["tasks"] == [0, 1]
    assert b["language_reliance"] == pytest.approx(0.75 - 0.25)
    assert b["worst_suite_success_rate"] == 0.0
    # a job that measures none of them: NaN, not 0
    plain = breakdown(_rows([1, 0, 1]))
    for name in ("seen_success_rate", "unseen_success_rate", "perturbed_success_rate", "robustness_drop", "language_reliance"):
        assert math.isnan(plain[name]), name
    assert plain["worst_suite_success_rate"] == pytest.approx(2 / 3)


def test_error_episodes_do_not_count_in_breakdown():
    rows = _tagged([1, 0, 0, 0], "libero_spatial")
    rows[1]["error"] = "worker died"
    b = breakdown(rows)
    assert b["seen_success_rate"] == pytest.approx(1 / 3) and b["n_errors"] == 1


def test_seen_unseen_tagging_with_heldout_tasks():
    cfg = checked({"mixture": {SPATIAL: 1, OBJECT: 0}, "demos": "scripted", "demo_tasks": 3,
                                 "heldout_tasks": {SPATIAL: [1]}, "eval_suites": ["libero_spatial", "libero_object"]})
    assert cfg.get("heldout_tasks") == {SPATIAL: (1,)}
    assert training_split(cfg.data, "libero_spatial", 0) == "seen"
    assert training_split(cfg.data, "libero_spatial", 1) == "unseen"   # held out
    assert training_split(cfg.data, "libero_spatial", 3) == "unseen"   # never recorded (demo_tasks 3)
    assert training_split(cfg.data, "libero_object", 0) == "unseen"    # weight 0
    assert training_split(cfg.data, "libero_spatial_swap", 0) == "seen"
    assert training_split(cfg.data, "libero_spatial_task", 0) == "unseen"  # a new task
    specs = plan_episodes(["libero_spatial"], [0, 1], 1)
    rows = [{"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index, "success": True} for s in specs]
    tagged = tag_rows(rows, specs, cfg.data)
    assert [r["split"] for r in tagged] == ["seen", "unseen"]
    assert [r["instruction_variant"] for r in tagged] == ["original", "original"]
    with pytest.raises(ConfigError) as err:
        checked({"mixture": {SPATIAL: 1}, "heldout_tasks": {SPATIAL: [-1]}})
    assert err.value.field == "heldout_tasks"


# ---------------------------------------------------------------------------- rank adapters
def test_tied_with_best_metric_reads_the_peers_of_its_job(tmp_path):
    from vlamix.bench import metrics
    from vlamix.pipeline.ledger import record

    ledger = str(tmp_path / "job" / "vlamix_points")
    best = {"episodes": _rows([1] * 36 + [0] * 4), "train_key": "best"}
    poor = {"episodes": _rows([1] * 10 + [0] * 30), "train_key": "poor"}
    paths = {name: record(ledger, pred) for name, pred in (("best", best), ("poor", poor))}
    pred = {**poor, "ledger": ledger, "ledger_entry": paths["poor"]}
    assert metrics.tied_with_best(None, pred) is False
    pred_best = {**best, "ledger": ledger, "ledger_entry": paths["best"]}
    assert metrics.tied_with_best(None, pred_best) is True
    assert metrics.tied_with_best(None, {**poor, "ledger": None}) is True  # no peers: nothing to be worse than
    # the columns of a prediction without perturbation suites are NaN, not 0
    assert math.isnan(metrics.perturbed_success_rate(None, best))
    assert metrics.worst_suite_success_rate(None, best) == pytest.approx(0.9)


def test_metric_files_are_registered_in_testenv():
    import yaml

    root = os.path.join(os.path.dirname(__file__), "..", "examples", "cloud_VLA_finetune", "singletask_learning_bench", "testenv")
    with open(os.path.join(root, "testenv.yaml")) as fh:
        names = {m["name"]: m["url"] for m in yaml.safe_load(fh)["testenv"]["metrics"]}
    for name in ("seen_success_rate", "unseen_success_rate", "perturbed_success_rate", "robustness_drop",
                 "language_reliance", "worst_suite_success_rate", "tied_with_best"):
        assert names[name].endswith(f"testenv/vla_{name}.py")
        assert os.path.isfile(os.path.join(root, f"vla_{name}.py"))


# ---------------------------------------------------------------------------- data: held-out tasks, fixed offline set
@pytest.fixture(scope="module")
def rlds_dir(tmp_path_factory):
    from synthetic_rlds import synthetic_episode
    from vlamix.data.rlds_writer import write_rlds

    root = tmp_path_factory.mktemp("kit_rlds")
    for name in (SPATIAL, OBJECT):
        rng = np.random.default_rng(len(name))
        short = name.split("_")[1]
        episodes = [synthetic_episode(rng, 3, f"{short} task {i % 2}", f"/demos/{name}/{i}.hdf5") for i in range(6)]
        for e in episodes:
            e["wrist_image"] = e["image"][:, ::-1]
        write_rlds(iter(episodes), root, name)
    return str(root)


def _data_cfg(rlds_dir, mixture, **kw):
    values = dict(mixture=mixture, data_dir=rlds_dir, demos="none", batch_size=4, shuffle_buffer_size=8, seed=3,
                  heldout_fraction=0.2, eval_suites=["libero_spatial", "libero_object"])
    values.update(kw)
    return checked(values)


def test_heldout_tasks_are_excluded_from_training(rlds_dir, monkeypatch):
    from vlamix.data import mixture

    # the synthetic instructions are not LIBERO's: map task id 1 of spatial to "spatial task 1"
    monkeypatch.setattr(mixture, "heldout_task_instructions",
                        lambda data, name: {"spatial task 1"} if (data.heldout_tasks or {}).get(name) else set())
    seen = {}
    for held in (None, {SPATIAL: [1]}):
        loader = mixture.MixtureLoader.for_point(_data_cfg(rlds_dir, {SPATIAL: 1}, heldout_tasks=held))
        seen[bool(held)] = set()
        for _ in range(8):
            seen[bool(held)] |= set(loader.next_batch()["instruction"])
    assert seen[False] == {"spatial task 0", "spatial task 1"}
    assert seen[True] == {"spatial task 0"}


def test_offline_heldout_set_is_identical_for_1_0_and_0_1_points(rlds_dir):
    from vlamix.data.mixture import MixtureLoader
    from vlamix.pipeline.point import fixed_heldout_config

    index = [SPATIAL, OBJECT, "libero_goal_no_noops"]  # goal is not evaluated: not in the set
    frames = {}
    for label, mix in (("1:0", {SPATIAL: 1, OBJECT: 0}), ("0:1", {SPATIAL: 0, OBJECT: 1})):
        cfg = fixed_heldout_config(_data_cfg(rlds_dir, mix), index)
        assert dict(cfg.get("mixture")) == {SPATIAL: 1, OBJECT: 1}
        batches = list(MixtureLoader.for_point(cfg, split="heldout"))
        frames[label] = (sum((b["instruction"] for b in batches), []), np.concatenate([b["action"] for b in batches]))
    assert frames["1:0"][0] == frames["0:1"][0]
    assert {t.split()[0] for t in frames["1:0"][0]} == {"spatial", "object"}
    np.testing.assert_array_equal(frames["1:0"][1], frames["0:1"][1])
    # the point's own held-out split (the old behaviour) would differ
    own = sum((b["instruction"] for b in MixtureLoader.for_point(_data_cfg(rlds_dir, {SPATIAL: 1}), split="heldout")), [])
    assert {t.split()[0] for t in own} == {"spatial"}


def test_suites_command_lists_perturbations(capsys):
    from vlamix.cli import main

    assert main(["suites"]) == 0
    lines = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| libero")}
    assert "libero_goal_env" not in lines  # files missing: only with --all
    cells = [c.strip() for c in lines["libero_goal_swap"].split("|")[1:-1]]
    assert cells[:4] == ["libero_goal_swap", "libero_goal", "300", "10"] and cells[4].startswith("position")


# ---------------------------------------------------------------------------- report
def _point(weights, sr_spatial, sr_object, sr_swap, sr_empty, tmp_path, n=10):
    """A prediction dict of a spatial:object point with n episodes per suite (first k succeed)."""
    rows = []
    for suite, sr, variant in (("libero_spatial", sr_spatial, None), ("libero_object", sr_object, None),
                               ("libero_spatial_swap", sr_swap, None), ("libero_spatial", sr_empty, "empty")):
        for r in _rows([i < round(sr * n) for i in range(n)], suite=suite, tasks=2, variant=variant):
            r["split"] = "seen"
            rows.append(r)
    log = tmp_path / f"log_{weights[0]}_{weights[1]}.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 3.0 - s * weights[0] / 10}) + "\n" for s in range(1, 4)))
    mixture = {SPATIAL: weights[0], OBJECT: weights[1]}
    return {"config": {"mixture": mixture, "strategy": "static"}, "episodes": rows, "summary": summarize(rows),
            "offline": {"action_token_accuracy": 0.2 + weights[0] / 10, "action_l1": 0.1,
                        "per_dataset": {SPATIAL: {"action_token_accuracy": 0.3, "action_l1": 0.1, "n_frames": 5},
                                        OBJECT: {"action_token_accuracy": 0.1, "action_l1": 0.2, "n_frames": 5}}},
            "train_log": str(log), "train_key": f"key{weights[0]}{weights[1]}"}


def test_report_has_every_section_and_readable_ratio_plot(tmp_path):
    from vlamix.report.markdown import write_report

    results = [_point((2, 1), 0.9, 0.3, 0.2, 0.8, tmp_path), _point((1, 1), 0.6, 0.6, 0.1, 0.6, tmp_path),
               _point((1, 2), 0.2, 0.3, 0.0, 0.2, tmp_path)]
    path = write_report(results, str(tmp_path / "report"))
    text = open(path).read()
    for heading in ("## Success rate versus mixture ratio", "## Significance (paired, same episodes)",
                    "## Generalisation and robustness", "### Robustness (base suite versus each perturbation, same tasks)",
                    "### Instruction ablation", "### Per suite", "## Offline metrics per dataset", "## Training loss", "## Failure videos",
                    "## Package versions", "## What the data supports", "## Per-task success rate"):
        assert heading in text, heading
    data = json.load(open(tmp_path / "report" / "sr_vs_ratio.json"))
    assert set(data["series"]) == {"libero_spatial", "libero_object", "libero_spatial_swap"}  # one line per suite
    spatial = data["series"]["libero_spatial"]
    assert [p["x"] for p in spatial] == pytest.approx([1 / 3, 1 / 2, 2 / 3])
    assert [p["success_rate"] for p in spatial] == pytest.approx([0.2, 0.6, 0.9])  # the empty variant is not plotted
    assert all(p["ci_low"] <= p["success_rate"] <= p["ci_high"] and p["n"] == 10 for p in spatial)
    assert len(json.load(open(tmp_path / "report" / "loss.json"))) == 3
    # 2:1 succeeds on every episode 1:2 does and on 15 more -> 1:2 differs significantly from the best
    assert "| static" not in text  # labels come from the mixture
    sig = text.split("## Significance")[1].split("##")[0]
    row = next(line for line in sig.splitlines() if line.startswith("| spatial:object=1:2"))
    assert row.split("|")[10].strip() == "False"
    assert "exact stratified matched-pairs (sign-flip) test by task" in sig  # the report names its paired test
    assert "Significantly below it (stratified matched-pairs test by task" in text and "spatial:object=1:2" in text.split("## What the data supports")[1]


# ---------------------------------------------------------------------------- expert reference row
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "cloud_VLA_finetune", "singletask_learning_bench")


def _default_job_points():
    from vlamix.bench.job import expand_grid
    from vlamix.bench.spec import load_job

    cwd = os.getcwd()
    os.chdir(os.path.join(EXAMPLE, "..", "..", ".."))
    try:
        return expand_grid(load_job(os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench", "benchmarkingjob.yaml")))
    finally:
        os.chdir(cwd)


def test_expert_reference_plans_the_same_episodes_as_the_vla_points():
    from vlamix.pipeline.expert import check_hyperparameters

    points = _default_job_points()
    expert = [p for p in points if p.basemodel.name == "ScriptedExpertReference"]
    vla = [p for p in points if p.basemodel.name == "VLADataSelect"]
    assert len(expert) == 1 and len(vla) == 3
    s = check_hyperparameters(dict(expert[0].basemodel.hyperparameters))
    cfg = checked(dict(vla[0].basemodel.hyperparameters))
    assert plan_episodes(s["eval_suites"], s["eval_tasks"], s["trials_per_task"], s["eval_instruction"]) == plan_episodes(
        cfg.resolved_eval_suites(), cfg.get("eval_tasks"), cfg.get("trials_per_task"), cfg.get("eval_instruction"))
    with pytest.raises(ConfigError) as err:
        check_hyperparameters({"mixture": {SPATIAL: 1}})
    assert err.value.field == "mixture"
    with pytest.raises(ConfigError) as err:
        check_hyperparameters({"eval_suites": ["libero_spatial_env"]})
    assert err.value.field == "eval_suites"


@pytest.mark.libero
def test_default_job_reference_row_reports_its_successes_through_the_evaluator(monkeypatch, tmp_path):
    from vlamix.bench import metrics
    from vlamix.eval.server import BatchedRollout
    from vlamix.pipeline.expert import ExpertReference

    # a spy on the batched server's end of episode: the outcomes it detected (suite, success, step, error)
    detected, finish = [], BatchedRollout._finish

    def spy(self, slot, success, error):
        ep = self._slots[slot]
        detected.append((ep.spec.suite, success, ep.steps, error))
        return finish(self, slot, success, error)

    monkeypatch.setattr(BatchedRollout, "_finish", spy)
    monkeypatch.setenv("RESULT_SAVED_URL", str(tmp_path / "job" / "scripted_expert" / "p" / "output" / "inference"))
    [point] = [p for p in _default_job_points() if p.basemodel.name == "ScriptedExpertReference"]
    pred = ExpertReference(**dict(point.basemodel.hyperparameters)).predict()
    rows = pred["episodes"]
    # every row is an outcome the server detected (success flag and step), once per episode
    assert sorted(detected) == sorted((r["suite"], r["success"], r["steps"], r["error"]) for r in rows)
    assert [(r["suite"], r["task_id"], r["episode_index"]) for r in rows] == [
        ("libero_spatial", 0, 0), ("libero_object", 0, 0), ("libero_goal", 0, 0)]
    assert all(r["error"] is None for r in rows)
    # the rows are the batched evaluator's (fields only its server writes): 3 env workers in lock-step, the
    # expert's actions served to all three episodes in one policy call, each episode run once
    assert all((r["episode_key"], r["attempts"], r["batch_size"], r["policy_batch"], r["env_slots"], r["max_steps"]) ==
               ([r["suite"], r["task_id"], 0], 1, 3, 3, 3, 180) for r in rows)
    assert all(len(r["action_digest"]) == 16 and r["render_s"] > 0 and r["physics_s"] > 0 for r in rows)
    assert len({r["action_digest"] for r in rows}) == 3
    # and they report the expert's successes, detected by the server before the step limit
    assert [r["success"] for r in rows] == [True] * 3 and all(r["steps"] < r["max_steps"] for r in rows)
    assert metrics.success_rate(None, pred) == 1.0
    assert pred["reference"] is True and math.isnan(metrics.tied_with_best(None, pred))
    assert math.isnan(metrics.seen_success_rate(None, pred)) and math.isnan(metrics.action_l1(None, pred))


def test_openvla7b_comparison_evaluates_standard_and_libero_pro_suites_with_ablations():
    from vlamix.bench.job import expand_grid
    from vlamix.bench.spec import load_job

    cwd = os.getcwd()
    os.chdir(os.path.join(EXAMPLE, "..", "..", ".."))
    try:
        points = expand_grid(load_job(os.path.join("examples", "cloud_VLA_finetune", "singletask_learning_bench",
                                                   "benchmarkingjob_compare_openvla7b.yaml")))
    finally:
        os.chdir(cwd)
    for point in points:
        hps = point.basemodel.hyperparameters
        suites = hps["eval_suites"]
        assert {"libero_spatial", "libero_object"} <= set(suites)
        assert {f"libero_{b}_{k}" for b in ("spatial", "object") for k in ("lan", "object", "swap", "task")} <= set(suites)
        assert hps["eval_instruction"] == list(INSTRUCTION_VARIANTS)
        assert hps["eval_instruction_suites"] == ["libero_spatial", "libero_object"]
    specs = plan_episodes(suites, 1, 1, hps["eval_instruction"], hps["eval_instruction_suites"])
    assert len(specs) == len(suites) + 3 * 2  # every suite once with "original", the 3 ablations on the 2 standard suites
    assert {s.suite for s in specs if s.instruction_variant == "empty"} == {"libero_spatial", "libero_object"}


def test_report_command_reads_points_of_vlamix_run_and_of_ianvs(tmp_path, monkeypatch):
    from vlamix.cli import main
    from vlamix.pipeline.ledger import ledger_of, record

    monkeypatch.chdir(os.path.join(EXAMPLE, "..", "..", ".."))  # the repository root plays the Ianvs root
    job = tmp_path / "job.yaml"
    job.write_text(open(os.path.join(EXAMPLE, "benchmarkingjob.yaml")).read().replace(
        'workspace: "./workspace"', f'workspace: "{tmp_path / "workspace"}"'))
    job_dir = tmp_path / "workspace" / "vla_mixture_bench"
    a = _point((2, 1), 0.9, 0.3, 0.2, 0.8, tmp_path)
    b = _point((1, 2), 0.2, 0.3, 0.0, 0.2, tmp_path)
    (job_dir / "vla_dataselect" / "p1").mkdir(parents=True)
    (job_dir / "vla_dataselect" / "p1" / "prediction.json").write_text(json.dumps(a))  # vlamix run
    record(ledger_of(str(job_dir)), b)  # real Ianvs: only the pipeline's ledger entry
    assert main(["report", "-f", str(job)]) == 0
    text = (job_dir / "report" / "report.md").read_text()
    assert "spatial:object=2:1" in text and "spatial:object=1:2" in text and "## What the data supports" in text
