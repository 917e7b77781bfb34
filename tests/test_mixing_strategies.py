"""Data-ratio strategies and action filters: closed-form checks, pure NumPy (no TensorFlow).

Every expected value is derived here from the published formula (or worked out by hand for the
filter masks), never copied from a run of the code under test.
"""

import json
import math

import numpy as np
import pytest

from configs import checked
from vlamix.core.errors import ConfigError
from vlamix.data.filters import DROP_REASONS, ActionFilter, selected_datasets
from vlamix.data.mixture import MixtureSampler
from vlamix.mixing.strategies.doremi import dro_update, reference_losses_from_run
from vlamix.mixing.strategies.exp3 import exp3_epsilon
from vlamix.mixing.skills import skill_of, skill_table
from vlamix.mixing.weights import (
    baseline_group_weights,
    build_sources,
    collapse,
    dataset_mixture_group_weights,
    natural_weights,
    normalised_phase,
    spread,
    temperature_weights,
    uniform_weights,
)

SPATIAL, OBJECT, GOAL = "libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops"
BASE = {"mixture": {SPATIAL: 2, OBJECT: 1}}


def _controller(cfg, groups, initial):
    """The run's weight controller: the registered strategy class of ``cfg`` (vlamix.mixing.strategies)."""
    return cfg.mixing.strategy_class()(cfg.mixing, groups, initial)


def _cfg(**kw):
    return checked({**BASE, **kw})


# ============================================================================ closed-form baselines
COUNTS = np.array([50000, 30000, 2000, 500], dtype=float)


def test_full_dataset_task_balanced_and_temperature_closed_forms():
    np.testing.assert_allclose(natural_weights(COUNTS), COUNTS / COUNTS.sum(), rtol=1e-12)
    np.testing.assert_allclose(uniform_weights(COUNTS), [0.25] * 4, rtol=1e-12)
    root = np.sqrt(COUNTS)
    np.testing.assert_allclose(temperature_weights(COUNTS, 2.0), root / root.sum(), rtol=1e-12)
    # e.g. the smallest group: sqrt(500) / (sqrt(50000) + sqrt(30000) + sqrt(2000) + sqrt(500)) ~ 0.0463
    assert temperature_weights(COUNTS, 2.0)[3] == pytest.approx(
        math.sqrt(500) / (math.sqrt(50000) + math.sqrt(30000) + math.sqrt(2000) + math.sqrt(500))
    )
    cube = COUNTS ** (1 / 3)
    np.testing.assert_allclose(temperature_weights(COUNTS, 3.0), cube / cube.sum(), rtol=1e-12)
    np.testing.assert_allclose(temperature_weights(COUNTS, 1.0), natural_weights(COUNTS), rtol=1e-12)
    np.testing.assert_allclose(temperature_weights(COUNTS, float("inf")), uniform_weights(COUNTS), rtol=1e-12)
    # the temperature flattens: the largest group loses weight, the smallest gains, monotonically in T
    w1, w2, w5 = (temperature_weights(COUNTS, t) for t in (1.0, 2.0, 5.0))
    assert w1[0] > w2[0] > w5[0] > 0.25 and w1[3] < w2[3] < w5[3] < 0.25


def test_zero_count_gets_weight_zero():
    counts = np.array([50000, 0, 2000, 500], dtype=float)
    np.testing.assert_allclose(uniform_weights(counts), [1 / 3, 0, 1 / 3, 1 / 3], rtol=1e-12)
    root = np.sqrt(counts)
    np.testing.assert_allclose(temperature_weights(counts, 2.0), root / root.sum(), rtol=1e-12)
    assert temperature_weights(counts, 2.0)[1] == 0.0
    assert temperature_weights(counts, float("inf"))[1] == 0.0
    assert natural_weights(counts)[1] == 0.0
    with pytest.raises(ValueError):
        temperature_weights(COUNTS, 0.0)
    with pytest.raises(ValueError):
        natural_weights([0, 0])


def test_baseline_group_weights_with_a_dict_of_counts():
    counts = {"a": 50000, "b": 30000, "c": 2000, "d": 500}
    total = sum(counts.values())
    assert baseline_group_weights("full_dataset", counts) == pytest.approx({k: v / total for k, v in counts.items()})
    assert baseline_group_weights("task_balanced", counts) == pytest.approx({k: 0.25 for k in counts})
    roots = {k: math.sqrt(v) for k, v in counts.items()}
    assert baseline_group_weights("temperature", counts, 2.0) == pytest.approx({k: r / sum(roots.values()) for k, r in roots.items()})
    assert baseline_group_weights("temperature", counts, 1.0) == pytest.approx(baseline_group_weights("full_dataset", counts))
    assert baseline_group_weights("temperature", counts, float("inf")) == pytest.approx(baseline_group_weights("task_balanced", counts))
    with_zero = {**counts, "b": 0}
    assert baseline_group_weights("task_balanced", with_zero) == pytest.approx({"a": 1 / 3, "b": 0.0, "c": 1 / 3, "d": 1 / 3})
    assert baseline_group_weights("temperature", with_zero, 2.0)["b"] == 0.0
    assert list(baseline_group_weights("full_dataset", counts)) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):
        baseline_group_weights("static", counts)


# ============================================================================ sources and groups
PICK = "pick up the bowl and place it on the plate"
PUT = "put the bowl on the stove"
OPEN = "open the top drawer and put the bowl inside"
TURN = "turn on the stove"
# {dataset: (instruction per training episode, kept frames per training episode)}
DATASETS = {
    "d1": ([PICK, PUT, PICK, TURN], [10, 20, 30, 0]),  # d1's TURN episode lost every frame to the filters
    "d2": ([PUT, OPEN, TURN], [5, 15, 8]),
}


def test_build_sources_dataset_level():
    sources = build_sources("dataset", DATASETS)
    assert [(s.name, s.dataset, s.instruction, s.group, s.frames, s.episodes) for s in sources] == [
        ("d1", "d1", None, "d1", 60, None),
        ("d2", "d2", None, "d2", 28, None),
    ]


def test_build_sources_task_level_merges_episodes_and_groups_instructions_across_datasets():
    sources = build_sources("task", DATASETS)
    got = [(s.dataset, s.instruction, s.group, s.frames, s.episodes) for s in sources]
    assert got == [
        ("d1", PICK, PICK, 40, (0, 2)),  # two episodes of one instruction: one source
        ("d1", PUT, PUT, 20, (1,)),
        # d1/TURN has 0 kept frames: no source
        ("d2", PUT, PUT, 5, (0,)),
        ("d2", OPEN, OPEN, 15, (1,)),
        ("d2", TURN, TURN, 8, (2,)),
    ]
    assert [s.name for s in sources][:2] == [f"d1/{PICK}", f"d1/{PUT}"]
    assert list(dict.fromkeys(s.group for s in sources)) == [PICK, PUT, OPEN, TURN]  # PUT: one group, two sources

    group_w = {PICK: 0.1, PUT: 0.5, OPEN: 0.25, TURN: 0.15}
    source_w = spread(group_w, sources)
    # PUT's 0.5 is split over its sources by frames: 20/25 to d1, 5/25 to d2
    np.testing.assert_allclose(source_w, [0.1, 0.5 * 20 / 25, 0.5 * 5 / 25, 0.25, 0.15], rtol=1e-12)
    assert collapse(source_w, sources) == pytest.approx(group_w)
    # spread normalises: unnormalised group weights give the same sources
    np.testing.assert_allclose(spread({g: 4 * w for g, w in group_w.items()}, sources), source_w, rtol=1e-12)
    with pytest.raises(KeyError):
        spread({PICK: 1.0}, sources)


def test_skills_default_verbs_and_overrides():
    assert skill_of(PICK) == "pick"
    assert skill_of(PUT) == "place"
    assert skill_of(OPEN) == "open"
    assert skill_of(TURN) == "turn"
    assert skill_of("  Put The Bowl On The Stove ") == "place"
    assert skill_of("wipe the table") == "other"
    assert skill_of("grasp the mug") == "other"
    # verb override (a new verb, and a default verb mapped elsewhere) and whole-instruction override
    assert skill_of("grab the mug", {"grab": "pick"}) == "pick"
    assert skill_of("grasp the mug", {"grasp": "pick"}) == "pick"
    assert skill_of(PUT, {"put": "insert"}) == "insert"
    assert skill_of(PICK, {"put": "insert"}) == "pick"  # first verb of the instruction still wins
    assert skill_of(OPEN, {OPEN: "drawer"}) == "drawer"
    assert skill_of(OPEN.upper(), {OPEN: "drawer"}) == "drawer"
    assert skill_of("open the bottom drawer", {OPEN: "drawer"}) == "open"  # exact match only
    assert skill_table([PICK, PUT, PICK.upper(), "wipe the table"]) == {PICK: "pick", PUT: "place", "wipe the table": "other"}


def test_build_sources_skill_level():
    sources = build_sources("skill", DATASETS)
    assert [(s.dataset, s.instruction, s.group, s.frames) for s in sources] == [
        ("d1", PICK, "pick", 40),
        ("d1", PUT, "place", 20),
        ("d2", PUT, "place", 5),
        ("d2", OPEN, "open", 15),
        ("d2", TURN, "turn", 8),
    ]
    data = {"d1": ([PICK, "grab the mug", "wipe the table"], [3, 4, 5]), "d2": ([OPEN], [6])}
    groups = [s.group for s in build_sources("skill", data, {"wipe the table": "clean", "open": "pull"})]
    assert groups == ["pick", "pick", "clean", "pull"]
    groups = [s.group for s in build_sources("skill", data)]
    assert groups == ["pick", "pick", "other", "open"]
    with pytest.raises(ValueError):
        build_sources("robot", data)
    with pytest.raises(ValueError):
        build_sources("task", {"d1": ([PICK], [1, 2])})


def test_dataset_mixture_group_weights_at_task_level():
    disjoint = {"d1": ([PICK, PUT, PICK], [10, 20, 30]), "d2": ([OPEN, TURN], [15, 5])}
    sources = build_sources("task", disjoint)
    w = dataset_mixture_group_weights({"d1": 2, "d2": 1}, sources)
    # dataset totals 2/3 and 1/3, each split over its tasks by frames
    assert w == pytest.approx({PICK: 2 / 3 * 40 / 60, PUT: 2 / 3 * 20 / 60, OPEN: 1 / 3 * 15 / 20, TURN: 1 / 3 * 5 / 20})
    assert w[PICK] + w[PUT] == pytest.approx(2 / 3) and w[OPEN] + w[TURN] == pytest.approx(1 / 3)
    # balance_by_size: dataset weights times kept frames (60 and 20) -> 120 : 20
    b = dataset_mixture_group_weights({"d1": 2, "d2": 1}, sources, balance_by_size=True)
    d1, d2 = 2 * 60 / (2 * 60 + 20), 20 / (2 * 60 + 20)
    assert b == pytest.approx({PICK: d1 * 40 / 60, PUT: d1 * 20 / 60, OPEN: d2 * 15 / 20, TURN: d2 * 5 / 20})
    # an instruction in both datasets collects the share of each dataset
    shared = dataset_mixture_group_weights({"d1": 2, "d2": 1}, build_sources("task", DATASETS))
    assert shared == pytest.approx(
        {PICK: 2 / 3 * 40 / 60, PUT: 2 / 3 * 20 / 60 + 1 / 3 * 5 / 28, OPEN: 1 / 3 * 15 / 28, TURN: 1 / 3 * 8 / 28}
    )
    with pytest.raises(ValueError):
        dataset_mixture_group_weights({"d1": 0, "d2": 0}, sources)


def test_normalised_phase():
    assert normalised_phase({"a": 3}, ["a", "b"]) == {"a": 1.0, "b": 0.0}
    assert normalised_phase({"a": 1, "b": 3}, ["a", "b"]) == pytest.approx({"a": 0.25, "b": 0.75})
    with pytest.raises(ValueError, match="zz"):
        normalised_phase({"zz": 1}, ["a", "b"])


# ============================================================================ action filters
T = 20
NAN_STEP, INF_STEP, OOR_STEP = 2, 4, 6
STILL_RUN = range(8, 12)  # arm ~1e-5, gripper constant
ZERO_RUN = range(13, 20)  # arm exactly 0; gripper flips -1 -> +1 at step 16 (a gripper-only step)
FLIP = 16


def _planted_episode():
    rng = np.random.default_rng(0)
    a = np.zeros((T, 7))
    a[:, :6] = rng.uniform(0.05, 0.5, (T, 6)) * rng.choice([-1.0, 1.0], (T, 6))  # clear motion, |a| < 1
    a[:, 6] = -1.0
    a[NAN_STEP, 0] = np.nan
    a[NAN_STEP, 1] = 5.0  # also out of range: nonfinite takes precedence
    a[INF_STEP, 3] = np.inf  # |inf| > limit too: nonfinite takes precedence
    a[OOR_STEP, 2] = 3.0
    for t in STILL_RUN:
        a[t, :6] = 1e-5 * np.array([1, -1, 1, -1, 1, -1])
    for t in ZERO_RUN:
        a[t, :6] = 0.0
    a[FLIP:, 6] = 1.0
    return a


NF, OOR, NZ = (DROP_REASONS.index(r) for r in ("nonfinite", "out_of_range", "near_zero_motion"))
# worked out by hand. W = 1: every low-motion step without its own gripper change is dropped.
REASONS_W1 = {NAN_STEP: NF, INF_STEP: NF, OOR_STEP: OOR, 8: NZ, 9: NZ, 10: NZ, 11: NZ, 13: NZ, 14: NZ, 15: NZ, 17: NZ, 18: NZ, 19: NZ}
# W = 3, window [t-1, t+1]: 8 and 11 see steps 7 / 12 move; 13 sees 12; 15 and 17 see the flip at 16;
# 14 (13..15), 18 (17..19) and 19 (18..19, clipped) see neither motion nor a gripper change.
REASONS_W3 = {NAN_STEP: NF, INF_STEP: NF, OOR_STEP: OOR, 9: NZ, 10: NZ, 14: NZ, 18: NZ, 19: NZ}


def _expected(reasons):
    reason = np.full(T, -1, np.int8)
    for t, r in reasons.items():
        reason[t] = r
    return reason < 0, reason


@pytest.mark.parametrize("window, reasons", [(1, REASONS_W1), (3, REASONS_W3)])
def test_episode_mask_matches_hand_computed_mask(window, reasons):
    f = ActionFilter(min_motion=1e-3, motion_window=window, action_limit=2.0)
    keep, reason = f.episode_mask(_planted_episode())
    want_keep, want_reason = _expected(reasons)
    assert keep.dtype == bool and reason.dtype == np.int8
    np.testing.assert_array_equal(keep, want_keep)
    np.testing.assert_array_equal(reason, want_reason)
    assert keep[FLIP]  # the gripper-only step is kept
    if window == 3:
        assert keep[FLIP - 1] and keep[FLIP + 1]  # and its window neighbours


def test_count_sums_per_reason_over_episodes():
    f = ActionFilter(min_motion=1e-3, motion_window=3, action_limit=2.0)
    a = _planted_episode()
    second = a[:10]  # a second episode: the first 10 steps (its window is clipped at step 9)
    counts = f.count(np.concatenate([a, second]), [T, 10])
    # second episode: 2, 4 nonfinite, 6 out of range, 9 sees 8..9 only (clipped) -> near zero; 8 sees 7
    per_reason = {r: list(REASONS_W3.values()).count(DROP_REASONS.index(r)) for r in DROP_REASONS}
    per_reason["near_zero_motion"] += 1
    per_reason["nonfinite"] += 2
    per_reason["out_of_range"] += 1
    assert counts == {"total": 30, "kept": 30 - sum(per_reason.values()), **per_reason, "dataset_list": 0}
    keep2, reason2 = f.episode_mask(second)
    assert reason2[9] == NZ and keep2[8]


def test_filter_switches():
    a = _planted_episode()
    # nonfinite rule off, motion rule off: the NaN step stays; the Inf step is still out of range
    keep, reason = ActionFilter(action_limit=10.0, drop_nonfinite=False).episode_mask(a)
    want = np.ones(T, bool)
    want[INF_STEP] = False
    np.testing.assert_array_equal(keep, want)
    assert reason[INF_STEP] == OOR and reason[NAN_STEP] == -1
    # with the motion rule, W = 1: a non-finite step has no motion -> near zero (NaN) / out of range (Inf first)
    keep, reason = ActionFilter(min_motion=1e-3, action_limit=2.0, drop_nonfinite=False).episode_mask(a)
    assert reason[INF_STEP] == OOR and reason[OOR_STEP] == OOR
    assert reason[NAN_STEP] == OOR  # its 5.0 is out of range
    b = a.copy()
    b[NAN_STEP, 1] = 0.1
    _, reason = ActionFilter(min_motion=1e-3, action_limit=2.0, drop_nonfinite=False).episode_mask(b)
    assert reason[NAN_STEP] == NZ
    # W = 3 keeps it: its neighbours move
    keep, reason = ActionFilter(min_motion=1e-3, motion_window=3, action_limit=2.0, drop_nonfinite=False).episode_mask(b)
    assert keep[NAN_STEP] and reason[NAN_STEP] == -1
    # everything off: all kept
    keep, _ = ActionFilter(drop_nonfinite=False).episode_mask(a)
    assert keep.all()
    assert not ActionFilter(drop_nonfinite=False).active
    # defaults: only the non-finite steps go
    keep, reason = ActionFilter().episode_mask(a)
    assert np.flatnonzero(~keep).tolist() == [NAN_STEP, INF_STEP]


def test_filter_argument_errors():
    with pytest.raises(ValueError, match="motion_window"):
        ActionFilter(motion_window=0)
    with pytest.raises(ValueError):
        ActionFilter(min_motion=-1.0)
    with pytest.raises(ValueError):
        ActionFilter(action_limit=0.0)
    with pytest.raises(ValueError):
        ActionFilter().episode_mask(np.zeros((5, 6)))


def test_from_config_and_even_window():
    f = ActionFilter.from_config(_cfg(filter_min_motion=1e-3, filter_motion_window=2, filter_action_limit=2.0, filter_nonfinite=False).data)
    assert f == ActionFilter(min_motion=1e-3, motion_window=2, action_limit=2.0, drop_nonfinite=False)
    # W = 2: window [t, t+1]: 8..10 see only still steps (11 sees 12); 13..14 see no change; 15 sees the flip at 16
    a = _planted_episode()
    a[NAN_STEP] = a[0]
    a[INF_STEP] = a[0]
    a[OOR_STEP, 2] = 0.3
    keep, _ = f.episode_mask(a)
    assert np.flatnonzero(~keep).tolist() == [8, 9, 10, 13, 14, 17, 18, 19]


# ============================================================================ white / blacklists
def test_selected_datasets_lists():
    names = ["a", "b", "c", "d"]
    assert selected_datasets(names, None, None) == (names, [])
    assert selected_datasets(names, ["c", "a"], None) == (["a", "c"], ["b", "d"])
    assert selected_datasets(names, None, ["b"]) == (["a", "c", "d"], ["b"])
    assert selected_datasets(names, ["a", "b"], ["b"]) == (["a"], ["b", "c", "d"])
    assert selected_datasets(names, [], None) == ([], names)


def test_config_white_and_blacklists():
    cfg = checked({"mixture": {SPATIAL: 2, OBJECT: 1, GOAL: 0}, "dataset_whitelist": [OBJECT, GOAL]})
    assert cfg.selected_datasets() == [OBJECT]  # GOAL has weight 0
    assert _cfg(dataset_blacklist=[SPATIAL]).selected_datasets() == [OBJECT]
    with pytest.raises(ConfigError) as err:
        _cfg(dataset_whitelist=[GOAL])
    assert err.value.field == "dataset_whitelist"
    with pytest.raises(ConfigError) as err:
        _cfg(dataset_blacklist=[SPATIAL, OBJECT])
    assert err.value.field == "dataset_blacklist"
    with pytest.raises(ConfigError) as err:
        _cfg(dataset_whitelist=[SPATIAL, "libero_kitchen_no_noops"])
    assert err.value.field == "dataset_whitelist" and "libero_kitchen_no_noops" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _cfg(dataset_blacklist=["libero_kitchen_no_noops"])
    assert err.value.field == "dataset_blacklist" and "libero_kitchen_no_noops" in str(err.value)


# ============================================================================ DRO (doremi)
def test_dro_update_closed_form():
    w0, w1, c = 0.5, 0.5, 0.1
    new = dro_update([w0, w1], [0.5, 0.0], eta=1.0, smoothing=c, initial=[0.5, 0.5])
    e = math.exp(0.5)
    assert new[0] == pytest.approx((1 - c) * w0 * e / (w0 * e + w1) + c * 0.5, rel=1e-12)
    assert new[1] == pytest.approx((1 - c) * w1 / (w0 * e + w1) + c * 0.5, rel=1e-12)
    # non-uniform start, eta 2: exponent eta * excess
    new = dro_update([0.7, 0.2, 0.1], [0.0, 0.3, 1.0], eta=2.0, smoothing=0.2, initial=[1, 1, 2])
    raw = np.array([0.7, 0.2 * math.exp(0.6), 0.1 * math.exp(2.0)])
    np.testing.assert_allclose(new, 0.8 * raw / raw.sum() + 0.2 * np.array([0.25, 0.25, 0.5]), rtol=1e-12)
    # no excess: only the smoothing toward the initial weights
    np.testing.assert_allclose(dro_update([0.9, 0.1], [0, 0], 1.0, 0.5, [0.5, 0.5]), [0.7, 0.3], rtol=1e-12)


def test_dro_smoothing_floor():
    c, init = 0.1, np.array([0.6, 0.4])
    w = init.copy()
    for _ in range(30):
        w = dro_update(w, [40.0, 0.0], eta=1.0, smoothing=c, initial=init)
        assert w[1] >= c * init[1] - 1e-12 and w.sum() == pytest.approx(1.0)
    assert w[1] == pytest.approx(c * init[1], abs=1e-9)  # approaches the floor
    assert w[0] == pytest.approx(1 - c * init[1], abs=1e-9)


def _doremi(k=4, eta=1.0, c=0.1):
    cfg = _cfg(strategy="doremi", mixing_update_every=k, dro_eta=eta, dro_smoothing=c)
    return _controller(cfg, ["g0", "g1"], {"g0": 0.5, "g1": 0.5})


def test_controller_doremi_updates_every_k_steps():
    ctl = _doremi()
    assert ctl.needs_reference and ctl.is_dynamic
    ctl.set_reference([1.0, 1.0])
    assert not ctl.needs_reference
    with pytest.raises(ValueError):
        ctl.set_reference([1.0])
    counts = [(3, 5), (4, 4), (6, 2), (5, 3)]
    for step, (n0, n1) in enumerate(counts, start=1):
        ctl.observe([2.0 * n0, 0.5 * n1], [n0, n1])
        out = ctl.after_step(step)
        if step < 4:
            assert out is None
    e = math.e  # excess: g0 2.0 - 1.0 = 1.0, g1 max(0.5 - 1.0, 0) = 0
    assert out == pytest.approx({"g0": 0.9 * 0.5 * e / (0.5 * e + 0.5) + 0.05, "g1": 0.9 * 0.5 / (0.5 * e + 0.5) + 0.05})
    assert out["g0"] > 0.5
    row = ctl.history[-1]
    assert row["step"] == 4 and row["reason"] == "update"
    assert row["group_loss"] == pytest.approx({"g0": 2.0, "g1": 0.5})
    assert row["signal"] == pytest.approx({"g0": 1.0, "g1": 0.0})  # clipped at zero, not -0.5
    # second window: g1 draws no frame -> keeps its last loss (0.5, no excess); g0 excess 0.5
    prev = np.array([out["g0"], out["g1"]])
    for step in range(5, 9):
        ctl.observe([1.5 * 2, 0.0], [2, 0])
        out = ctl.after_step(step)
        assert (out is None) == (step != 8)
    raw = prev * np.exp([0.5, 0.0])
    expected = 0.9 * raw / raw.sum() + 0.05
    assert [out["g0"], out["g1"]] == pytest.approx(expected.tolist())
    assert ctl.history[-1]["group_loss"] == {"g0": pytest.approx(1.5), "g1": None}
    assert ctl.history[-1]["signal"] == pytest.approx({"g0": 0.5, "g1": 0.0})
    assert [r["step"] for r in ctl.history] == [0, 4, 8]


# ============================================================================ EXP3 (online data mixing)
def _odm_reference(initial, windows, alpha):
    """Albalak et al. 2023, Algorithm 1, written out: returns the probabilities after every update."""
    g = len(initial)
    r_hat = np.zeros(g)
    pi = np.asarray(initial, float) / np.sum(initial)
    eps_prev = 1.0 / g
    out = []
    for t, rewards in enumerate(windows, start=1):
        for k, r in enumerate(rewards):
            if r is not None:
                r_hat[k] = alpha * r_hat[k] + (1 - alpha) * r / pi[k]
        eps = min(1.0 / g, math.sqrt(math.log(g) / (g * t)))
        z = np.exp(eps_prev * r_hat - np.max(eps_prev * r_hat))
        pi = (1 - g * eps) * z / z.sum() + eps
        eps_prev = eps
        out.append((pi.copy(), r_hat.copy(), eps))
    return out


def test_exp3_epsilon():
    assert exp3_epsilon(3, 1) == pytest.approx(1 / 3)
    assert exp3_epsilon(3, 3) == pytest.approx(1 / 3)  # sqrt(ln3 / 9) = 0.349 > 1/3
    assert exp3_epsilon(3, 4) == pytest.approx(math.sqrt(math.log(3) / 12))
    assert exp3_epsilon(3, 100) == pytest.approx(math.sqrt(math.log(3) / 300))


def test_controller_exp3_follows_online_data_mixing():
    groups, initial, alpha, k = ["a", "b", "c"], [0.5, 0.3, 0.2], 0.8, 2
    cfg = _cfg(strategy="exp3", mixing_update_every=k, exp3_smoothing=alpha)
    ctl = _controller(cfg, groups, dict(zip(groups, initial)))
    assert ctl.current() == pytest.approx(dict(zip(groups, initial)))  # before the first update: the mixture
    windows = []
    for t in range(1, 15):
        losses = [2.5 - 0.05 * t, 1.0 + 0.3 * math.sin(t), 1.5 + 0.02 * t]
        if t == 6:
            losses[2] = None  # group c draws no frame in this window
        windows.append(losses)
    expected = _odm_reference(initial, windows, alpha)
    step = 0
    for t, losses in enumerate(windows, start=1):
        for j, n in enumerate(([3, 2, 3], [1, 4, 2])):  # two optimiser steps per window, frame-weighted
            step += 1
            counts = [0 if l is None else c for l, c in zip(losses, n)]
            sums = [0.0 if l is None else l * c for l, c in zip(losses, counts)]
            ctl.observe(sums, counts)
            out = ctl.after_step(step)
            assert (out is None) == (j == 0)
        pi, r_hat, eps = expected[t - 1]
        assert [out[g] for g in groups] == pytest.approx(pi.tolist(), rel=1e-9)
        assert ctl.history[-1]["signal"] == pytest.approx(dict(zip(groups, r_hat.tolist())))
        assert ctl.eps == pytest.approx(eps)
        if t == 6:
            assert ctl.history[-1]["signal"]["c"] == pytest.approx(expected[4][1][2])  # R_c unchanged
            assert ctl.history[-1]["group_loss"]["c"] is None
        if t <= 3:  # eps_t = 1/G: (1 - G eps) = 0, the probabilities are uniform
            assert [out[g] for g in groups] == pytest.approx([1 / 3] * 3)
    final = np.array([out[g] for g in groups])
    assert exp3_epsilon(3, 14) < 1 / 3 and final.max() - final.min() > 0.05  # exploitation has started
    assert final.min() >= exp3_epsilon(3, 14) - 1e-12


# ============================================================================ curriculum
def test_curriculum_phases_and_time_average():
    phases = [{"step": 0, "weights": {SPATIAL: 1, OBJECT: 0}}, {"step": 20, "weights": {SPATIAL: 1, OBJECT: 1}}]
    cfg = _cfg(strategy="curriculum", curriculum=phases)
    ctl = _controller(cfg, [SPATIAL, OBJECT], normalised_phase(phases[0]["weights"], [SPATIAL, OBJECT]))
    assert ctl.current() == {SPATIAL: 1.0, OBJECT: 0.0}
    assert all(ctl.after_step(s) is None for s in range(1, 20))
    assert ctl.after_step(20) == pytest.approx({SPATIAL: 0.5, OBJECT: 0.5})
    assert ctl.after_step(21) is None
    assert ctl.time_averaged(40) == pytest.approx({SPATIAL: 0.75, OBJECT: 0.25})
    assert ctl.time_averaged(30) == pytest.approx({SPATIAL: (20 + 10 * 0.5) / 30, OBJECT: 5 / 30})
    assert [(r["step"], r["reason"]) for r in ctl.history] == [(0, "initial"), (20, "phase")]
    summary = ctl.summary(40)
    assert summary["final_weights"] == pytest.approx({SPATIAL: 0.5, OBJECT: 0.5})
    assert summary["initial_weights"] == {SPATIAL: 1.0, OBJECT: 0.0}


def test_static_strategies_never_change():
    ctl = _controller(_cfg(strategy="temperature"), ["a", "b"], {"a": 3, "b": 1})
    assert ctl.current() == pytest.approx({"a": 0.75, "b": 0.25})
    ctl.observe([1.0, 1.0], [1, 1])
    assert all(ctl.after_step(s) is None for s in range(1, 31))
    assert ctl.time_averaged(30) == pytest.approx({"a": 0.75, "b": 0.25})


# ============================================================================ resume
@pytest.mark.parametrize("strategy", ["doremi", "exp3"])
def test_state_dict_round_trip_mid_run(strategy):
    cfg = _cfg(strategy=strategy, mixing_update_every=3, dro_eta=0.7, dro_smoothing=0.1, exp3_smoothing=0.6)
    groups = ["a", "b", "c"]
    initial = {"a": 0.2, "b": 0.5, "c": 0.3}
    rng = np.random.default_rng(1)
    feed = [(rng.uniform(0.5, 3.0, 3), rng.integers(0, 4, 3)) for _ in range(20)]

    def run(ctl, steps):
        outs = []
        for step in steps:
            loss, n = feed[step - 1]
            ctl.observe(loss * n, n)
            outs.append(ctl.after_step(step))
        return outs

    original = _controller(cfg, groups, initial)
    if strategy == "doremi":
        original.set_reference([1.0, 1.5, float("nan")])
    run(original, range(1, 8))  # two updates, then one step into the third window
    state = json.loads(json.dumps(original.state_dict()))  # as written to disk
    restored = _controller(cfg, groups, initial)  # a resumed run rebuilds it from the same loader
    restored.load_state_dict(state)
    assert restored.current() == original.current()
    a, b = run(original, range(8, 21)), run(restored, range(8, 21))
    assert any(x is not None for x in a)
    for x, y in zip(a, b):
        assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12)
    assert restored.history == original.history
    other = _controller(_cfg(strategy="exp3" if strategy == "doremi" else "doremi"), groups, initial)
    with pytest.raises(ValueError):
        other.load_state_dict(state)
    with pytest.raises(ValueError):
        _controller(cfg, ["a", "b"], {"a": 1, "b": 1}).load_state_dict(state)


# ============================================================================ reference losses of a run
def _write_log(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train_log.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def test_reference_losses_from_run(tmp_path):
    run = tmp_path / "run"
    rows = [{"step": s, "loss": 1.0, "group_loss": {"a": float(s), "b": 10.0 + 2 * s, **({"c": 1.0} if s <= 6 else {})}}
            for s in range(1, 9)]
    _write_log(run, rows)
    # last quarter of 8 steps: steps 7 and 8
    np.testing.assert_allclose(reference_losses_from_run(str(run), ["a", "b"]), [7.5, 25.0])
    np.testing.assert_allclose(reference_losses_from_run(str(run), ["b", "a"]), [25.0, 7.5])
    with pytest.raises(ValueError, match="c"):
        reference_losses_from_run(str(run), ["a", "c"])  # c logged only before the last quarter
    with pytest.raises(ValueError, match="zz"):
        reference_losses_from_run(str(run), ["zz"])
    checkpoint = run / "step_000008"
    checkpoint.mkdir()
    np.testing.assert_allclose(reference_losses_from_run(str(checkpoint), ["a", "b"]), [7.5, 25.0])
    with pytest.raises(FileNotFoundError):
        reference_losses_from_run(str(tmp_path / "nothing" / "here"), ["a"])
    # the config accepts the run and its checkpoint, and rejects a folder without a log
    assert _cfg(strategy="doremi", dro_reference=str(checkpoint)).get("dro_reference") == str(checkpoint)
    _cfg(strategy="doremi", dro_reference=str(run))
    empty = tmp_path / "empty" / "run"
    empty.mkdir(parents=True)
    with pytest.raises(ConfigError) as err:
        _cfg(strategy="doremi", dro_reference=str(empty))
    assert err.value.field == "dro_reference"


# ============================================================================ sampler
def test_sampler_follows_weight_changes_window_by_window():
    sampler = MixtureSampler([0.7, 0.3], seed=5)
    for target in ([0.7, 0.3], [0.2, 0.8], [0.5, 0.5]):
        if target != [0.7, 0.3]:
            sampler.set_weights(target)
        before = sampler.counts
        draws = np.concatenate([sampler.draw(8) for _ in range(40)])
        window = np.bincount(draws, minlength=2) / draws.size
        np.testing.assert_allclose(window, target, atol=0.02)
        np.testing.assert_array_equal(sampler.counts - before, np.bincount(draws, minlength=2))
    # overall: the three windows of 320 frames averaged
    np.testing.assert_allclose(sampler.realised_proportions(), np.mean([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], axis=0), atol=0.01)


# ============================================================================ config validation
@pytest.mark.parametrize(
    "values, field",
    [
        ({"strategy": "magic"}, "strategy"),
        ({"strategy": "temperature", "temperature": 0}, "temperature"),
        ({"strategy": "temperature", "temperature": -1}, "temperature"),
        ({"strategy": "doremi", "dro_eta": -0.1}, "dro_eta"),
        ({"filter_motion_window": 0}, "filter_motion_window"),
        ({"strategy": "doremi", "mixing_update_every": 0}, "mixing_update_every"),
        ({"strategy": "doremi", "dro_smoothing": 1.5}, "dro_smoothing"),
        ({"strategy": "exp3", "exp3_smoothing": 1.0}, "exp3_smoothing"),
        ({"filter_action_limit": 0}, "filter_action_limit"),
        ({"strategy": "task_balanced", "mixing_level": "robot"}, "mixing_level"),
        ({"strategy": "static", "mixing_level": "task"}, "mixing_level"),
        ({"strategy": "curriculum"}, "curriculum"),
        ({"strategy": "curriculum", "curriculum": [{"step": 5, "weights": {SPATIAL: 1}}]}, "curriculum"),
        (
            {"strategy": "curriculum", "curriculum": [
                {"step": 0, "weights": {SPATIAL: 1}}, {"step": 10, "weights": {OBJECT: 1}}, {"step": 10, "weights": {SPATIAL: 1}}]},
            "curriculum",
        ),
        (
            {"strategy": "curriculum", "curriculum": [{"step": 0, "weights": {SPATIAL: 1}}, {"step": 10, "weights": {GOAL: 1}}]},
            "curriculum",
        ),
    ],
)
def test_bad_strategy_parameters_name_their_field(values, field):
    with pytest.raises(ConfigError) as err:
        _cfg(**values)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)


def test_good_strategy_parameters_pass():
    assert _cfg(strategy="temperature", temperature=float("inf")).get("temperature") == float("inf")
    assert _cfg(strategy="doremi", dro_smoothing=0.0).get("dro_smoothing") == 0.0
    assert _cfg(strategy="task_balanced").resolved_mixing_level() == "task"
    assert _cfg(strategy="temperature").resolved_mixing_level() == "dataset"
    cfg = _cfg(strategy="curriculum", curriculum=[{"step": 0, "weights": {SPATIAL: 1}}, {"step": 10, "weights": {OBJECT: 1}}])
    assert isinstance(cfg.get("curriculum"), tuple) and len(cfg.get("curriculum")) == 2


# ============================================================================ signatures and labels
def test_training_signature_ignores_parameters_the_strategy_does_not_use():
    sig = lambda **kw: _cfg(**kw).training_signature()  # noqa: E731
    assert sig(strategy="task_balanced", temperature=2) == sig(strategy="task_balanced", temperature=5)
    assert sig(strategy="temperature", temperature=2) != sig(strategy="temperature", temperature=5)
    assert sig(strategy="static", dro_eta=0.5) == sig(strategy="static", dro_eta=2.0)
    assert sig(strategy="doremi", dro_eta=0.5) != sig(strategy="doremi", dro_eta=2.0)
    one_to_one = {SPATIAL: 1, OBJECT: 1}
    assert sig(strategy="full_dataset") == sig(strategy="full_dataset", mixture=one_to_one)
    assert sig(strategy="static") != sig(strategy="static", mixture=one_to_one)
    assert sig(strategy="full_dataset") != sig(strategy="task_balanced")


def test_strategy_label_names_strategy_and_parameters():
    label = _cfg(strategy="temperature", temperature=2).strategy_label()
    assert label.startswith("temperature") and "T=2" in label
    assert "T=0.5" in _cfg(strategy="temperature", temperature=0.5).strategy_label()
    label = _cfg(strategy="doremi", dro_eta=0.5, dro_smoothing=0.1, mixing_update_every=5).strategy_label()
    assert label.startswith("doremi") and "eta=0.5" in label and "c=0.1" in label and "K=5" in label
    label = _cfg(strategy="exp3", exp3_smoothing=0.8, mixing_level="task").strategy_label()
    assert label.startswith("exp3") and "a=0.8" in label and "task" in label
    assert "task" in _cfg(strategy="task_balanced").strategy_label()
    assert "skill" in _cfg(strategy="task_balanced", mixing_level="skill").strategy_label()
    label = _cfg(filter_min_motion=1e-3, filter_motion_window=3, filter_action_limit=2.0).strategy_label()
    assert "filter" in label and "0.001" in label and "w3" in label and "2" in label.split("|", 1)[1]
    assert "filter" not in _cfg().strategy_label()
