"""Racing rules on simulated paired episodes: false stops at equal success rates, episodes saved at a gap, STEP.

Simulation (:func:`vlamix.eval.sequential.simulate_outcomes`): every race has k points evaluated on
the same episodes. Episode e has a shared difficulty ``z_e ~ N(0, 1)`` (its init state); point i
succeeds when ``sqrt(rho) z_e + sqrt(1 - rho) eps_ie < Phi^-1(p_i)`` with ``eps_ie ~ N(0, 1)``
independent (a latent-Gaussian threshold model), so its success rate is ``p_i`` and two points'
outcomes on one episode are positively correlated (latent correlation ``rho``, default 0.5;
``outcome_correlation`` below reports the resulting phi coefficient at p = 0.5). Points with equal
``p_i`` have equal success probability on every episode (the null hypothesis of
:mod:`vlamix.eval.sequential`). Every setting draws its own seeded episodes; every rule in a setting
sees the same episodes.

``sequential`` is the setting ``racing: true`` runs (:func:`vlamix.pipeline.racing.race_point`): the k
points run one after another in rounds of ``--round-size`` episodes (at most ``--max-episodes``); point
1 runs its whole plan, point i races against the i - 1 finished points (their whole plan, or the rounds
they ran before they were stopped), looking after every round but the last. Rules:

- ``new``: :func:`vlamix.eval.sequential.race_sequential`, i.e. :class:`vlamix.eval.sequential.VersusFinished`,
  the code ``race_point`` runs (one-sided paired sequential test at ``alpha / m`` against each of the m
  finished points, exact error spending); the first ``--check`` races of two settings are also run
  through ``race_point`` itself and must agree.
- ``old``: the rule ``race_point`` had before (stop when the point's 95% Wilson upper bound is below the
  highest Wilson lower bound of the finished points), vectorised here.

Reported per maximum: ``equal`` (k = 2 and 4 points of equal success rate ``--base-rates``, correlated
and independent outcomes): ``<rule>`` = the largest per-point stop rate over points 2..k (each point's
guarantee is <= alpha), ``<rule>_each`` per point, ``<rule>_any`` the fraction of races in which some
point is stopped. ``gap`` (one best point at ``0.5 + gap / 2`` run first, k - 1 at ``0.5 - gap / 2``):
``worse_stopped`` (fraction of the worse points stopped), ``episodes_to_decision`` (mean episodes a
worse point runs), ``episodes_saved`` (mean per race, against running every point to the maximum),
``saved_fraction`` (of ``k * max``), and ``best_last_stopped`` (the best point run last, after the
worse ones: the fraction of races in which it is stopped).

``simultaneous``: k points evaluated round by round together (the form of
:func:`vlamix.eval.sequential.race_paired`: every pair at ``alpha / C(k, 2)``, familywise) against the
Wilson-overlap rule in that form (the leader = the highest lower bound): the fraction of races in which
some point of k equal ones is stopped.

``step``: the two-point comparison with STEP (Snyder et al., RSS 2025; ``sequentialized-barnard-tests``,
CC BY-NC 4.0, run only in the peers' venv by benchmarks/peer_step.py, see requirements-peers.txt) on
the same sequences, looking after every pair, for correlated (``--rho``) and independent (rho = 0)
pairs. ``one_sided`` is the racing decision (stop the first point when it is worse; error alpha in that
direction): STEP's shipped policy at alpha per direction (``MirroredStepTest(inference_mode=
"comparison")``) against our test as racing runs it (two-sided ``2 alpha``, one direction acted on).
``two_sided``: STEP's ``"ranking"`` mode (one-sided policies at alpha / 2) against ours at alpha.
``false_stop`` at equal rates counts decisions "first point worse" (``false_any``: either direction);
at a gap (the first point worse) ``ours`` / ``step`` are the mean pairs to a decision (the maximum when
none), ``ratio`` = ours / STEP, ``*_rounds`` the same rounded up to whole rounds. STEP is a test for
independent (unpaired) Bernoulli sequences; ours uses the pairing. ``betting`` (beside them, two-sided):
a beta-binomial mixture e-process on the discordant signs (Beta(1, 1) prior, threshold 1 / alpha by
Ville's inequality; Waudby-Smith & Ramdas, JRSS-B 2024), the horizon-free alternative
:mod:`vlamix.eval.sequential` was chosen against.

Prints ONE JSON line (``summary`` first). Not part of the test suite.

Usage::

    .venv/bin/python benchmarks/bench_racing.py                       # 10,000 races per setting
    .venv/bin/python benchmarks/bench_racing.py --races 2000 --no-step

Measured (defaults, one run, 1,321 s on a shared 2-core CPU): summary ``new_false_stop_equal_2_points`` 0.0527,
``new_false_stop_equal_4_points`` 0.0527 (independent outcomes: 0.0533, 0.0527), the old rule's 0.0393 / 0.067
(0.0524 / 0.0881); ``step_correlated_200`` / ``_500``: false stop ours 0.0505 / 0.0536, STEP 0.0188 / 0.0164,
ratio of mean episodes to a decision at gaps 0.1 / 0.2 / 0.4 0.82 / 0.694 / 0.72 and 0.722 / 0.638 / 0.664;
``step_independent_200`` / ``_500``: 0.051 / 0.0516 and 0.052 / 0.05, ratios 0.998 / 0.978 / 0.887 and
0.993 / 0.908 / 0.846; race_point agreed on 800 of 800 races (README "Racing").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy.special import betaln

from vlamix.eval.plan import EpisodeSpec
from vlamix.eval.sequential import PairedSequentialTest, race_paired, race_sequential, simulate_outcomes
from vlamix.eval.stats import Z_95, wilson_interval
from vlamix.pipeline.racing import Competitor, race_point

PEERS_PYTHON = os.environ.get("VLAMIX_PEERS_PYTHON", "/tmp/peers-venv/bin/python")
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_step.py")


def wilson_table(max_episodes: int, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson bounds float64 [k + 1, n + 1] for 0 <= k <= n <= max_episodes (from :func:`wilson_interval`)."""
    low = np.zeros((max_episodes + 1, max_episodes + 1))
    high = np.ones_like(low)
    for n in range(1, max_episodes + 1):
        for k in range(n + 1):
            low[k, n], high[k, n] = wilson_interval(k, n, z)
    return low, high


def _rounds(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


# ------------------------------------------------------------------ sequential: what racing: true runs
def sequential_old(x: np.ndarray, round_size: int, table: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson rule ``race_point`` had before this rule, on bool [R, k, n], points in index order."""
    low, high = table
    r, k, n = x.shape
    rounds = _rounds(n, round_size)
    episodes = np.zeros((r, k), np.int64)
    successes = np.zeros((r, k), np.int64)
    stopped = np.zeros((r, k), np.int64)
    episodes[:, 0], successes[:, 0] = n, x[:, 0].sum(axis=1)
    rows = np.arange(r)
    for i in range(1, k):
        best_low = low[successes[:, :i], episodes[:, :i]].max(axis=1)
        running = np.ones(r, bool)
        for q, (s, e) in enumerate(rounds):
            successes[:, i] += np.where(running, x[:, i, s:e].sum(axis=1), 0)
            episodes[running, i] += e - s
            if q == len(rounds) - 1:
                break
            stop = running & (high[successes[rows, i], episodes[rows, i]] < best_low)
            stopped[stop, i] = q + 1
            running &= ~stop
    return episodes, stopped


def check_sequential(x: np.ndarray, round_size: int, alpha: float) -> tuple[int, int]:
    """(agreeing, checked) races between :func:`vlamix.eval.sequential.race_sequential` and
    :func:`vlamix.pipeline.racing.race_point`
    itself (planted episode rows and competitors; one task, so a round is ``round_size`` trials)."""
    episodes, stopped, _ = race_sequential(x, round_size=round_size, alpha=alpha)
    n = x.shape[2]
    specs = [EpisodeSpec("libero_spatial", 0, e, e, "task 0") for e in range(n)]
    agree = 0
    for r in range(len(x)):
        finished: list[Competitor] = []
        got_eps, got_stop = [], []
        for i in range(x.shape[1]):
            def run(part, i=i):
                return [{"suite": s.suite, "task_id": 0, "episode_index": s.episode_index,
                         "success": bool(x[r, i, s.episode_index]), "error": None} for s in part]

            rows, _, rec = race_point(specs, run, round_trials=round_size, competitors=lambda: list(finished),
                                      alpha=alpha)
            got_eps.append(rec["episodes_evaluated"])
            got_stop.append(rec["stopped_at_round"] or 0)
            finished.append(Competitor(str(i), "", {("libero_spatial", 0, row["episode_index"], "original"): row["success"]
                                                    for row in rows}))
        agree += got_eps == episodes[r].tolist() and got_stop == stopped[r].tolist()
    return agree, len(x)


def _rng(seed: int, *key: float) -> np.random.Generator:
    return np.random.default_rng([seed, *(int(round(v * 1000)) for v in key)])


def _r(v: float) -> float:
    return round(float(v), 4)


def _stop_rates(stopped: np.ndarray) -> tuple[float, list[float], float]:
    """(largest per-point rate over points 2..k, per point, any point) of stop rounds int [R, k]."""
    each = (stopped[:, 1:] > 0).mean(axis=0)
    return _r(each.max()), [_r(v) for v in each], _r((stopped > 0).any(axis=1).mean())


def sequential_section(args: argparse.Namespace, n_max: int, table: tuple) -> dict:
    out: dict = {"equal": {}, "equal_independent": {}, "gap": {}}
    for label, rho in (("equal", args.rho), ("equal_independent", 0.0)):
        for k in args.points:
            rows = {}
            for base in args.base_rates:
                x = simulate_outcomes(_rng(args.seed, n_max, k, base, rho, 10), args.races, [base] * k, rho, n_max)
                row = {}
                for name, (_, stop) in (("new", race_sequential(x, round_size=args.round_size, alpha=args.alpha)[:2]),
                                        ("old", sequential_old(x, args.round_size, table))):
                    row[name], row[f"{name}_each"], row[f"{name}_any"] = _stop_rates(stop)
                rows[str(base)] = row
            out[label][f"{k}_points"] = rows
    for k in args.points:
        rows = {}
        for gap in args.gaps:
            hi, lo = 0.5 + gap / 2, 0.5 - gap / 2
            x = simulate_outcomes(_rng(args.seed, n_max, k, gap, 11), args.races, [hi] + [lo] * (k - 1), args.rho, n_max)
            last = simulate_outcomes(_rng(args.seed, n_max, k, gap, 12), args.races, [lo] * (k - 1) + [hi], args.rho, n_max)
            row = {}
            for name, rule in (("new", lambda v: race_sequential(v, round_size=args.round_size, alpha=args.alpha)[:2]),
                               ("old", lambda v: sequential_old(v, args.round_size, table))):
                eps, stop = rule(x)
                saved = (n_max - eps).sum(axis=1)
                row[name] = {"worse_stopped": _r((stop[:, 1:] > 0).mean()),
                             "episodes_to_decision": round(float(eps[:, 1:].mean()), 1),
                             "episodes_saved": round(float(saved.mean()), 1), "saved_fraction": _r(saved.mean() / (k * n_max)),
                             "best_last_stopped": _r((rule(last)[1][:, -1] > 0).mean())}
            rows[str(gap)] = row
        out["gap"][f"{k}_points"] = rows
    return out


# ------------------------------------------------------------------ simultaneous: k points round by round together
def simultaneous_wilson(x: np.ndarray, round_size: int, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The Wilson-overlap rule with every point running round by round (leader = highest lower bound; the first
    of equal ones): stop round int64 [R, k]."""
    low, high = table
    r, k, n = x.shape
    running = np.ones((r, k), bool)
    successes = np.zeros((r, k), np.int64)
    episodes = np.zeros((r, k), np.int64)
    stopped = np.zeros((r, k), np.int64)
    rows = np.arange(r)
    for number, (s, e) in enumerate(_rounds(n, round_size), start=1):
        successes += np.where(running, x[:, :, s:e].sum(axis=2), 0)
        episodes += running * (e - s)
        lo, hi = low[successes, episodes], high[successes, episodes]
        leader = np.argmax(np.where(running, lo, -np.inf), axis=1)
        stop = running & (hi < lo[rows, leader][:, None])
        stop[rows, leader] = False
        running &= ~stop
        stopped[stop] = number
    return stopped


def simultaneous_section(args: argparse.Namespace, n_max: int, table: tuple) -> dict:
    out: dict = {}
    for k in args.points:
        rows = {}
        for base in args.base_rates:
            x = simulate_outcomes(_rng(args.seed, n_max, k, base, args.rho, 13), args.races, [base] * k, args.rho, n_max)
            new = race_paired(x, round_size=args.round_size, alpha=args.alpha)
            rows[str(base)] = {"new_any": _r((new.stopped_at_round > 0).any(axis=1).mean()),
                               "old_any": _r((simultaneous_wilson(x, args.round_size, table) > 0).any(axis=1).mean())}
        out[f"{k}_points"] = rows
    return out


# ------------------------------------------------------------------ two points against STEP
def betting(xa: np.ndarray, xb: np.ndarray, alpha: float, prior: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Beta-binomial mixture e-process on the discordant signs: (decided bool [R], pairs at the decision int [R]).

    ``E_n = B(a + c, b + c) / B(c, c) * 2^(a + b)`` with ``a``/``b`` the discordant pairs won by each
    point and prior Beta(c, c); under H0 E is a nonnegative martingale with mean 1, so by Ville's
    inequality ``P0(sup_n E_n >= 1 / alpha) <= alpha`` (both directions together).
    """
    d = xa.astype(np.int8) - xb.astype(np.int8)
    a, b = np.cumsum(d == 1, axis=1), np.cumsum(d == -1, axis=1)
    log_e = betaln(a + prior, b + prior) - betaln(prior, prior) + (a + b) * np.log(2.0)
    cross = log_e >= np.log(1.0 / alpha)
    decided = cross.any(axis=1)
    return decided, np.where(decided, np.argmax(cross, axis=1) + 1, xa.shape[1])


def _pairs(args: argparse.Namespace, n_max: int, rho: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two-point sequences per setting: ``eq<p>`` (equal rates p) and ``gap<g>`` (0.5 -+ g / 2; a is the worse)."""
    settings = {f"eq{p}": (p, p) for p in args.base_rates}
    settings.update({f"gap{g}": (0.5 - g / 2, 0.5 + g / 2) for g in args.gaps})
    out = {}
    for key, (pa, pb) in settings.items():
        x = simulate_outcomes(_rng(args.seed, n_max, pa, pb, rho, 2), args.races, [pa, pb], rho, n_max)
        out[key] = (x[:, 0], x[:, 1])
    return out


def run_step(pairs: dict, n_max: int, alpha: float, mode: str, seed: int, check: int) -> tuple[dict, dict]:
    """STEP decisions per setting from benchmarks/peer_step.py in the peers' interpreter: ({key: (code, at)}, info)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, **{f"{key}_{s}": np.packbits(v, axis=1) for key, (a, b) in pairs.items() for s, v in (("a", a), ("b", b))})
        cmd = [PEERS_PYTHON, PEER_SCRIPT, src, "--out", dst, "--n-max", str(n_max), "--alpha", str(alpha),
               "--mode", mode, "--seed", str(seed), "--check", str(check)]
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip()[-500:]}")
        data = np.load(dst)
        return {key: (data[f"{key}_code"], data[f"{key}_at"]) for key in pairs}, json.loads(str(data["info"]))


def step_available() -> str | None:
    """None when the peers' interpreter imports STEP; else the reason."""
    if not os.path.exists(PEERS_PYTHON):
        return f"no peers interpreter at {PEERS_PYTHON} (pip install -r requirements-peers.txt into a venv there, or set VLAMIX_PEERS_PYTHON)"
    proc = subprocess.run([PEERS_PYTHON, "-c", "import sequentialized_barnard_tests"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"{PEERS_PYTHON} cannot import sequentialized_barnard_tests: {proc.stderr.strip()[-200:]}"


def ours(pairs: dict, n_max: int, alpha: float) -> dict:
    """Our test per setting, looking after every pair: {key: (code int8 [R], pairs at the decision int [R])}."""
    out = {}
    for key, (a, b) in pairs.items():
        test = PairedSequentialTest(alpha, n_max, batch=len(a))
        test.update(a, b)
        out[key] = (test.codes, np.where(test.decided_at > 0, test.decided_at, n_max))
    return out


def compare(args: argparse.Namespace, mine: dict, peer: dict, bet: dict, n_max: int) -> dict:
    """Per setting: false stops (eq) or mean pairs to a decision and the fraction decided (gap)."""
    out: dict = {"equal": {}, "gap": {}}
    for p in args.base_rates:
        key = f"eq{p}"
        out["equal"][str(p)] = {"ours_false_stop": _r((mine[key][0] == -1).mean()), "step_false_stop": _r((peer[key][0] == -1).mean()),
                                "ours_false_any": _r((mine[key][0] != 0).mean()), "step_false_any": _r((peer[key][0] != 0).mean()),
                                "betting_false_any": _r(bet[key][0].mean())}
    for g in args.gaps:
        key = f"gap{g}"
        ours_n, step_n = mine[key][1], peer[key][1]
        rounds = [np.minimum(np.ceil(v / args.round_size) * args.round_size, n_max).mean() for v in (ours_n, step_n)]
        out["gap"][str(g)] = {"ours": round(float(ours_n.mean()), 1), "step": round(float(step_n.mean()), 1),
                              "ratio": round(float(ours_n.mean() / step_n.mean()), 3),
                              "ours_rounds": round(float(rounds[0]), 1), "step_rounds": round(float(rounds[1]), 1),
                              "ratio_rounds": round(float(rounds[0] / rounds[1]), 3),
                              "betting": round(float(bet[key][1].mean()), 1),
                              "ours_decided": _r((mine[key][0] == -1).mean()), "step_decided": _r((peer[key][0] == -1).mean()),
                              "ours_wrong_way": _r((mine[key][0] == 1).mean()), "step_wrong_way": _r((peer[key][0] == 1).mean())}
    return out


def step_section(args: argparse.Namespace) -> dict:
    out: dict = {"note": "STEP is a test for independent (unpaired) Bernoulli sequences; it is fed the same "
                         "per-episode sequences as our paired test. Pairs to a decision count the maximum when "
                         "there is none; looks after every pair.",
                 "alpha": args.alpha}
    for label, rho in (("correlated", args.rho), ("independent", 0.0)):
        out[label] = {}
        for n_max in args.max_episodes:
            pairs = _pairs(args, n_max, rho)
            cell = {}
            # (our name, STEP mode, our two-sided level): one-sided = the racing decision at alpha
            for name, mode, our_alpha in (("one_sided", "comparison", 2 * args.alpha), ("two_sided", "ranking", args.alpha)):
                peer, info = run_step(pairs, n_max, args.alpha, mode, args.seed, args.check)
                bet = {key: betting(a, b, our_alpha) for key, (a, b) in pairs.items()}
                out.setdefault("peer", info["version"])
                out.setdefault("checks", []).append(f"{label} {n_max} {mode}: {info['check']}")
                cell[name] = {"ours_two_sided_alpha": our_alpha, "step_mode": mode, "step_policy_alpha": info["policy_alpha"],
                              **compare(args, ours(pairs, n_max, our_alpha), peer, bet, n_max)}
            out[label][str(n_max)] = cell
    return out


def summary(out: dict, args: argparse.Namespace) -> dict:
    """The figures the issue asks for, gathered from the sections."""
    seq = [(n, out["sequential"][n]) for n in map(str, args.max_episodes)]
    res: dict = {}
    for rule in ("new", "old"):
        for label in ("equal", "equal_independent"):
            for k in args.points:
                res[f"{rule}_false_stop_{label}_{k}_points"] = max(row[rule] for _, s in seq for row in s[label][f"{k}_points"].values())
        for k in args.points:
            res[f"{rule}_simultaneous_any_{k}_points"] = max(
                row[f"{rule}_any"] for n in map(str, args.max_episodes) for row in out["simultaneous"][n][f"{k}_points"].values())
    for n, s in seq:
        for k in args.points:
            for g in args.gaps:
                cell = s["gap"][f"{k}_points"][str(g)]
                res[f"saved_fraction_{n}_{k}_points_gap{g}"] = {"new": cell["new"]["saved_fraction"], "old": cell["old"]["saved_fraction"]}
    if out.get("step"):
        for label in ("correlated", "independent"):
            for n in map(str, args.max_episodes):
                cell = out["step"][label][n]["one_sided"]
                res[f"step_{label}_{n}"] = {
                    "false_stop": {"ours": max(v["ours_false_stop"] for v in cell["equal"].values()),
                                   "step": max(v["step_false_stop"] for v in cell["equal"].values())},
                    **{f"ratio_gap{g}": cell["gap"][str(g)]["ratio"] for g in args.gaps}}
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--races", type=int, default=10000, help="races per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--rho", type=float, default=0.5, help="latent correlation of two points' outcomes")
    parser.add_argument("--round-size", type=int, default=10)
    parser.add_argument("--max-episodes", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--points", type=int, nargs="+", default=[2, 4], help="points per race (equal-rate and gap settings)")
    parser.add_argument("--base-rates", type=float, nargs="+", default=[0.3, 0.5, 0.8])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    parser.add_argument("--check", type=int, default=200, help="races also run through race_point / MirroredStepTest")
    parser.add_argument("--no-step", action="store_true", help="leave out the STEP comparison")
    args = parser.parse_args()
    start = time.time()
    eq = simulate_outcomes(_rng(args.seed, 0), args.races, [0.5, 0.5], args.rho, max(args.max_episodes))
    out: dict = {"races": args.races, "seed": args.seed, "alpha": args.alpha, "round_size": args.round_size,
                 "latent_rho": args.rho, "outcome_correlation": _r(np.corrcoef(eq[:, 0].ravel(), eq[:, 1].ravel())[0, 1]),
                 "mc_se_at_alpha": _r(np.sqrt(args.alpha * (1 - args.alpha) / args.races)),
                 "sequential": {}, "simultaneous": {}}
    checks = []
    for n_max in args.max_episodes:
        table = wilson_table(n_max)
        for rates, key in (([0.5, 0.5, 0.5, 0.5], 0), ([0.6, 0.5, 0.4, 0.3], 1)):
            x = simulate_outcomes(_rng(args.seed, n_max, key, 3), args.check, rates, args.rho, n_max)
            agree, total = check_sequential(x, args.round_size, args.alpha)
            if agree != total:
                raise SystemExit(f"the vectorised paired rule disagrees with race_point on {total - agree} of {total} races")
            checks.append(f"{n_max} {rates}: {agree}/{total}")
        out["sequential"][str(n_max)] = sequential_section(args, n_max, table)
        out["simultaneous"][str(n_max)] = simultaneous_section(args, n_max, table)
    out["race_point_check"] = checks
    reason = "--no-step" if args.no_step else step_available()
    out["step"] = None if reason else step_section(args)
    if reason:
        out["step_reason"] = reason
    out["seconds"] = round(time.time() - start, 1)
    print(json.dumps({"summary": summary(out, args), **out}))


if __name__ == "__main__":
    main()
