"""LIBERO-10 in the embedded default (issue 13, item 1): the scripted expert runs a conjunction of goals
as a sequence of its primitives. Supported-task table and its refusals, skill table of the LIBERO-10
instructions, goal ordering, and one two-step task in the real simulator (the ``libero`` test,
~20-60 s).

The per-task success rates (10 start states per task, seed 1000) are in docs/scripted-expert.md; the simulator
test here uses start state 0 of seed 0.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from sim_attempts import expert_attempt, in_spawn_worker
from configs import checked
from vlamix import cli
from vlamix.core.errors import ConfigError
from vlamix.mixing.skills import skill_of
from vlamix.sim.expert import GOAL_ORDER, UnsupportedTaskError, parse_goals, scripted_task_ids, supported_tasks

LIBERO10 = "libero_10_no_noops"

#: LIBERO-10's ten instructions (task order 0..9) and the skill each maps to: the first verb, as for
#: LIBERO-Goal's "open the top drawer and put the bowl inside" -> open.
LIBERO10_SKILLS = {
    "put both the alphabet soup and the tomato sauce in the basket": "place",
    "put both the cream cheese box and the butter in the basket": "place",
    "turn on the stove and put the moka pot on it": "turn",
    "put the black bowl in the bottom drawer of the cabinet and close it": "place",
    "put the white mug on the left plate and put the yellow and white mug on the right plate": "place",
    "pick up the book and place it in the back compartment of the caddy": "pick",
    "put the white mug on the plate and put the chocolate pudding to the right of the plate": "place",
    "put both the alphabet soup and the cream cheese box in the basket": "place",
    "put both moka pots on the stove": "place",
    "put the yellow and white mug in the microwave and close it": "place",
}


def test_libero10_instructions_map_to_their_first_verb():
    assert {text: skill_of(text) for text in LIBERO10_SKILLS} == LIBERO10_SKILLS
    # upper case and the instruction override of skill_map work for the two-step instructions too
    assert skill_of("Turn on the stove and put the moka pot on it") == "turn"
    assert skill_of("put both moka pots on the stove", {"put both moka pots on the stove": "stack"}) == "stack"


def test_libero10_supported_tasks_exclude_the_close_goals():
    ids = sorted(supported_tasks("libero_10"))
    assert len(ids) >= 4 and set(ids) <= set(range(10))
    assert 3 not in ids and 9 not in ids  # "... and close it": no primitive closes a drawer or a door
    assert scripted_task_ids("libero_10", len(ids)) == ids


def test_scripted_demos_refuse_more_libero10_tasks_than_supported(tmp_path):
    ids = sorted(supported_tasks("libero_10"))
    base = {"data_dir": str(tmp_path), "demos": "scripted", "mixture": {LIBERO10: 1}}
    with pytest.raises(ConfigError) as err:
        checked({**base, "demo_tasks": len(ids) + 1})
    assert err.value.field == "demo_tasks"
    assert f"supports {len(ids)} task(s) of libero_10: {ids}" in str(err.value)
    assert not (tmp_path / LIBERO10).exists()
    # up to the supported count it is valid; the recorded tasks are the supported ids
    cfg = checked({**base, "demo_tasks": len(ids)})
    assert scripted_task_ids("libero_10", cfg.get("demo_tasks")) == ids


def test_record_demos_refuses_an_unsupported_libero10_task_id(tmp_path, capsys):
    ids = sorted(supported_tasks("libero_10"))
    assert cli.main(["record-demos", "--suites", "libero_10", "--task-ids", str(ids[0]), "3",
                     "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlamix: --task-ids:") and "tasks [3] of libero_10" in err
    assert f"libero_10 (tasks {', '.join(map(str, ids))})" in err  # names the supported ids
    assert not (tmp_path / "d").exists()


def _fake_env(goal, objects=(), sites=()):
    """Stand-in for LIBERO's inner env: the attributes parse_goals reads."""
    return SimpleNamespace(parsed_problem={"goal_state": [list(g) for g in goal]},
                           objects_dict={o: None for o in objects}, object_sites_dict={s: None for s in sites})


def test_goals_run_in_order_knob_before_placing_and_bddl_order_otherwise(monkeypatch):
    import vlamix.sim.expert as expert_module

    monkeypatch.setattr(expert_module, "knob_joint", lambda inner, name: 0)
    env = _fake_env([("On", "moka_pot_1", "flat_stove_1_cook_region"), ("On", "moka_pot_2", "flat_stove_1_cook_region"),
                     ("Turnon", "flat_stove_1")], objects=("moka_pot_1", "moka_pot_2"))
    assert parse_goals(env) == [("turnon", "flat_stove_1", ""), ("on", "moka_pot_1", "flat_stove_1_cook_region"),
                                ("on", "moka_pot_2", "flat_stove_1_cook_region")]
    assert GOAL_ORDER["turnon"] < GOAL_ORDER["on"] == GOAL_ORDER["in"]
    env = _fake_env([("In", "white_yellow_mug_1", "microwave_1_heating_region"), ("Close", "microwave_1")],
                    objects=("white_yellow_mug_1",))
    with pytest.raises(UnsupportedTaskError, match="close"):
        parse_goals(env)


@pytest.mark.libero
def test_expert_turns_on_the_stove_then_puts_the_moka_pot_on_it():
    """LIBERO-10 task 2: ``(And (Turnon flat_stove_1) (On moka_pot_1 flat_stove_1_cook_region))``."""
    out = in_spawn_worker(expert_attempt, "libero_10", 2)
    assert out["steps_planned"] == (("turnon", "flat_stove_1", ""), ("on", "moka_pot_1", "flat_stove_1_cook_region"))
    assert out["first"] == "knob" and out["held_at_start"] == [False, False]
    assert out["last_step"] == ("on", "moka_pot_1", "flat_stove_1_cook_region")  # the second step was reached
    assert out["failure"] is None
    assert out["done"] is True and out["check_success"] is True and out["held_at_end"] == [True, True]
    assert 100 < out["steps"] <= 520
    gripper = out["gripper"]
    closes = np.flatnonzero((gripper[1:] == 1.0) & (gripper[:-1] == -1.0))
    assert len(closes) == 2  # one grasp of the knob, one of the pot
