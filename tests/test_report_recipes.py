"""Report section "Recipes side by side" (issue 29) from constructed predictions: present only when the job has
points of two action recipes, points paired by mixture, numbers equal to a hand computation."""

import math

import pytest
from scipy.stats import binomtest

from vlamix.eval.stats import summarize
from vlamix.report.kit import kit_sections
from vlamix.report.recipes import recipe_pairs, recipe_section

OFT = {"action_head": "l1_regression", "action_chunk": 8, "use_wrist_image": True, "use_proprio": True,
       "open_loop_steps": None}
OFT_LABEL = "l1_regression chunk 8 open-loop 8 +wrist +proprio"
Z = 1.959963984540054


def _point(label, recipe, wins):
    """A prediction of mixture ``label``: libero_spatial tasks 0 and 1, 10 episodes each; ``wins[t]`` = the episode
    indices of task t that succeed."""
    rows = [{"suite": "libero_spatial", "task_id": t, "episode_index": e, "success": e in wins[t], "steps": 50}
            for t in (0, 1) for e in range(10)]
    return {"config": {"mixture": {"libero_spatial_no_noops": 1}, **recipe}, "mixing": {"strategy_label": label},
            "episodes": rows, "summary": summarize(rows), "offline": {}}


# mixture "m1": tokens 8/20, OFT 16/20 (OFT alone solves 10 shared episodes, tokens alone 2);
# mixture "m2": tokens 12/20, OFT 10/20 (tokens alone 2, OFT alone 0); "m3" only under tokens
M1_TOKENS = _point("m1", {}, {0: range(4), 1: range(4)})
M1_OFT = _point("m1", OFT, {0: range(9), 1: range(2, 9)})
M2_TOKENS = _point("m2", {}, {0: range(6), 1: range(6)})
M2_OFT = _point("m2", OFT, {0: range(5), 1: range(5)})
M3_TOKENS = _point("m3", {}, {0: range(3), 1: range(1)})
REFERENCE = {**_point("scripted_expert", {}, {0: range(10), 1: range(10)}), "reference": True}


def _wilson(k, n):
    p, denom = k / n, 1 + Z * Z / n
    center, half = (p + Z * Z / (2 * n)) / denom, Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    return center - half, center + half


def test_points_are_paired_by_mixture_and_the_numbers_match_a_hand_computation():
    # leaderboard order mixes the mixtures up: pairing by position would compare m1 with m2
    out = recipe_pairs([M1_OFT, M2_TOKENS, M3_TOKENS, REFERENCE, M2_OFT, M1_TOKENS])
    assert out["recipes"] == ["tokens", OFT_LABEL]  # tokens first: the difference is OFT minus tokens
    assert [r["mixture"] for r in out["rows"]] == ["m1", "m2"]  # m3 has one recipe; the reference row is not compared
    m1, m2 = out["rows"]
    assert (m1["first_result"], m1["second_result"], m2["first_result"], m2["second_result"]) == (
        M1_TOKENS, M1_OFT, M2_TOKENS, M2_OFT)
    p1, p2 = binomtest(2, 12).pvalue, binomtest(0, 2).pvalue  # exact McNemar: same shared episodes in every task
    expected = {"m1": (20, 10, 2, 0.4, p1), "m2": (20, 0, 2, -0.1, p2)}
    for row in out["rows"]:
        t = row["test"]
        n, second_only, first_only, diff, p = expected[row["mixture"]]
        assert (t["n_shared"], t["a_only"], t["b_only"]) == (n, second_only, first_only)
        assert t["difference"] == pytest.approx(diff) and t["p_value"] == pytest.approx(p)
    # Holm over the two rows: the smaller p doubled, the larger one at least that
    assert m1["p_adjusted"] == pytest.approx(2 * p1) and m2["p_adjusted"] == pytest.approx(max(2 * p1, p2))
    assert out["unpaired"] == []


def test_section_shows_each_recipes_rate_interval_and_n_and_the_paired_difference():
    lines = recipe_section([M1_OFT, M2_TOKENS, M3_TOKENS, REFERENCE, M2_OFT, M1_TOKENS])
    assert lines[0] == "## Recipes side by side"
    (lo8, hi8), (lo16, hi16) = _wilson(8, 20), _wilson(16, 20)
    row = (f"| m1 | 0.400 [{lo8:.3f}, {hi8:.3f}] 20 | 0.800 [{lo16:.3f}, {hi16:.3f}] 20 | 20 | 2 | 10 | 0.400 | "
           f"{binomtest(2, 12).pvalue:.3g} | {2 * binomtest(2, 12).pvalue:.3g} |")
    assert row in lines
    assert [line.split(" | ")[0] for line in lines if line.startswith(("| m1 ", "| m2 ", "| m3 "))] == ["| m1", "| m2"]


def test_no_section_with_one_recipe_and_a_note_when_no_mixture_has_both():
    assert recipe_section([M1_TOKENS, M2_TOKENS, REFERENCE]) == []
    assert recipe_section([M1_OFT, M2_OFT]) == []
    assert not any("Recipes side by side" in line for line in kit_sections([M1_TOKENS, M2_TOKENS], "."))
    lines = recipe_section([M1_OFT, M2_TOKENS])
    assert "No mixture was run under two recipes" in "\n".join(lines) and not any(x.startswith("|") for x in lines)


def test_two_points_of_one_mixture_and_recipe_are_not_paired(tmp_path):
    other = _point("m1", OFT, {0: range(10), 1: range(10)})
    other["config"]["train_steps"] = 9
    out = recipe_pairs([M1_TOKENS, M1_OFT, other, M2_TOKENS, M2_OFT])
    assert [r["mixture"] for r in out["rows"]] == ["m2"] and out["unpaired"] == [("m1", None, OFT_LABEL)]
    text = "\n".join(kit_sections([M1_TOKENS, M1_OFT, other, M2_TOKENS, M2_OFT], str(tmp_path)))
    assert "## Recipes side by side" in text and f"Not paired (two or more points of one mixture, seed and recipe): " \
        f"m1, `{OFT_LABEL}`." in text
