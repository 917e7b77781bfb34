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

Rules (rounds of ``--round-size`` episodes, at most ``--max-episodes`` per point):

- ``new``: :func:`vlamix.eval.sequential.race_paired` (exact error spending on the paired sign walk,
  every pair of points at ``alpha / C(k, 2)``).
- ``old``: the Wilson-overlap rule of :func:`vlamix.search.racing.race` (stop a point whose 95% Wilson
  upper bound is below the leader's lower bound, after every round), vectorised here; the first
  ``--check`` races of two settings are also run through ``race`` itself and must agree.

Reported per maximum (``racing``):

- ``false_stop``: k = 2 and 4 points of equal success rate (``--base-rates``): the fraction of races in
  which any point is stopped (all are best; the new rule's guarantee is <= alpha);
  ``false_stop_independent``: the same with independent outcomes (rho = 0).
- ``gap``: one best point at ``0.5 + gap / 2`` and k - 1 at ``0.5 - gap / 2``: ``false_stop`` (the best
  point stopped), ``worse_stopped`` (fraction of the worse points stopped), ``episodes_to_decision``
  (mean episodes a worse point runs: up to its stop, or the maximum), ``episodes_saved`` (mean per race,
  against running every point to the maximum) and ``saved_fraction`` (of ``k * max``).

``step``: the two-point comparison with STEP (Snyder et al., RSS 2025; ``sequentialized-barnard-tests``,
CC BY-NC 4.0, run only in the peers' venv by benchmarks/peer_step.py, see requirements-peers.txt) on
the same sequences, looking after every pair (no rounds), for correlated (``--rho``) and independent
(rho = 0) pairs: false positives at equal rates and the mean pairs to a decision (the maximum when
none) at each gap. STEP is a test for independent (unpaired) Bernoulli sequences; ours uses the
pairing. ``ranking``: STEP's ``MirroredStepTest(inference_mode="ranking")`` (one-sided policies at
alpha / 2, two-sided error alpha; the policy for alpha / 2 is not shipped and is synthesised by the
package on first use) against ours at alpha. ``comparison``: STEP's shipped policy at alpha per
direction (two-sided error up to 2 alpha) against ours at 2 alpha. ``ratio`` = ours / STEP. Beside them,
``betting``: at the same alpha as ours, a beta-binomial mixture e-process on the discordant signs (Beta(1, 1) prior, threshold
1 / alpha by Ville's inequality; Waudby-Smith & Ramdas, JRSS-B 2024, for the betting view), the
horizon-free alternative that :mod:`vlamix.eval.sequential` was chosen against.

Prints ONE JSON line. Not part of the test suite. Takes about 7 minutes with the defaults on 2 busy
cores (once the peers' venv has the alpha / 2 policies: their synthesis takes about 25 s for 200 and
8 minutes for 500 episodes).

Usage::

    .venv/bin/python benchmarks/bench_racing.py                       # 10,000 races per setting
    .venv/bin/python benchmarks/bench_racing.py --races 2000 --no-step
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

from vlamix.eval.sequential import PairedSequentialTest, race_paired, simulate_outcomes
from vlamix.eval.stats import Z_95, wilson_interval
from vlamix.search.racing import race

PEERS_PYTHON = os.environ.get("VLAMIX_PEERS_PYTHON", "/tmp/peers-venv/bin/python")
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_step.py")


def simulate(rng: np.random.Generator, races: int, episodes: int, rates: list[float], rho: float) -> np.ndarray:
    """Outcomes bool [races, k, episodes] of k points with success rates ``rates`` on shared episodes
    (:func:`vlamix.eval.sequential.simulate_outcomes`)."""
    return simulate_outcomes(rng, races, rates, rho, episodes)


def wilson_table(max_episodes: int, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson bounds float64 [k + 1, n + 1] for 0 <= k <= n <= max_episodes (from :func:`wilson_interval`)."""
    low = np.zeros((max_episodes + 1, max_episodes + 1))
    high = np.ones_like(low)
    for n in range(1, max_episodes + 1):
        for k in range(n + 1):
            low[k, n], high[k, n] = wilson_interval(k, n, z)
    return low, high


def race_wilson(x: np.ndarray, round_size: int, table: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The old rule (:func:`vlamix.search.racing.race`) on bool [R, k, n]: (episodes, stopped_at_round), int [R, k]."""
    low, high = table
    r, k, n = x.shape
    running = np.ones((r, k), bool)
    successes = np.zeros((r, k), np.int64)
    episodes = np.zeros((r, k), np.int64)
    stopped = np.zeros((r, k), np.int64)
    rows = np.arange(r)
    for number, start in enumerate(range(0, n, round_size), start=1):
        count = min(round_size, n - start)
        successes += np.where(running, x[:, :, start:start + count].sum(axis=2), 0)
        episodes += running * count
        lo, hi = low[successes, episodes], high[successes, episodes]
        leader = np.argmax(np.where(running, lo, -np.inf), axis=1)  # the first of equal lower bounds, as max()
        stop = running & (hi < lo[rows, leader][:, None])
        stop[rows, leader] = False
        running &= ~stop
        stopped[stop] = number
    return episodes, stopped


def check_wilson(x: np.ndarray, round_size: int, table: tuple[np.ndarray, np.ndarray]) -> tuple[int, int]:
    """(agreeing, checked) races between :func:`race_wilson` and :func:`vlamix.search.racing.race`."""
    episodes, stopped = race_wilson(x, round_size, table)
    agree = 0
    for i in range(len(x)):
        names = [str(p) for p in range(x.shape[1])]
        res = race(lambda p, s, c: [bool(v) for v in x[i, int(p), s:s + c]], names, round_size=round_size,
                   max_episodes=x.shape[2])
        agree += ([res.episodes[p] for p in names] == episodes[i].tolist()
                  and [res.stopped_at_round[p] or 0 for p in names] == stopped[i].tolist())
    return agree, len(x)


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


def _rng(seed: int, *key: float) -> np.random.Generator:
    return np.random.default_rng([seed, *(int(round(v * 1000)) for v in key)])


def _r(v: float) -> float:
    return round(float(v), 4)


def racing_section(args: argparse.Namespace, n_max: int, table: tuple) -> dict:
    out: dict = {"false_stop": {}, "false_stop_independent": {}, "gap": {}}
    for label, rho in (("false_stop", args.rho), ("false_stop_independent", 0.0)):
        for k in (2, 4):
            rows = {}
            for base in args.base_rates:
                x = simulate(_rng(args.seed, n_max, k, base, rho, 0), args.races, n_max, [base] * k, rho)
                new = race_paired(x, round_size=args.round_size, alpha=args.alpha)
                _, old = race_wilson(x, args.round_size, table)
                rows[str(base)] = {"new": _r((new.stopped_at_round > 0).any(axis=1).mean()),
                                   "old": _r((old > 0).any(axis=1).mean())}
            out[label][f"{k}_points"] = rows
    for k in (2, 4):
        rows = {}
        for gap in args.gaps:
            rates = [0.5 + gap / 2] + [0.5 - gap / 2] * (k - 1)
            x = simulate(_rng(args.seed, n_max, k, gap, 1), args.races, n_max, rates, args.rho)
            new = race_paired(x, round_size=args.round_size, alpha=args.alpha)
            old_eps, old_stop = race_wilson(x, args.round_size, table)
            row = {}
            for name, eps, stop in (("new", new.episodes, new.stopped_at_round), ("old", old_eps, old_stop)):
                saved = (n_max - eps).sum(axis=1)
                row[name] = {"false_stop": _r((stop[:, 0] > 0).mean()), "worse_stopped": _r((stop[:, 1:] > 0).mean()),
                             "episodes_to_decision": round(float(eps[:, 1:].mean()), 1),
                             "episodes_saved": round(float(saved.mean()), 1), "saved_fraction": _r(saved.mean() / (k * n_max))}
            rows[str(gap)] = row
        out["gap"][f"{k}_points"] = rows
    return out


def _pairs(args: argparse.Namespace, n_max: int, rho: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two-point sequences per setting: ``eq<p>`` (equal rates p) and ``gap<g>`` (0.5 +- g / 2; a is the worse)."""
    settings = {f"eq{p}": (p, p) for p in args.base_rates}
    settings.update({f"gap{g}": (0.5 - g / 2, 0.5 + g / 2) for g in args.gaps})
    out = {}
    for key, (pa, pb) in settings.items():
        x = simulate(_rng(args.seed, n_max, pa, pb, rho, 2), args.races, n_max, [pa, pb], rho)
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


def compare(args: argparse.Namespace, mine: dict, peer: dict, bet: dict) -> dict:
    """Per setting: false positives (eq) or mean pairs to a decision and the fraction decided (gap)."""
    out: dict = {"equal": {}, "gap": {}}
    for p in args.base_rates:
        key = f"eq{p}"
        out["equal"][str(p)] = {"ours": _r((mine[key][0] != 0).mean()), "step": _r((peer[key][0] != 0).mean()),
                                "betting": _r(bet[key][0].mean())}
    for g in args.gaps:
        key = f"gap{g}"
        ours_n, step_n = float(mine[key][1].mean()), float(peer[key][1].mean())
        out["gap"][str(g)] = {"ours": round(ours_n, 1), "step": round(step_n, 1), "ratio": round(ours_n / step_n, 3),
                              "betting": round(float(bet[key][1].mean()), 1),
                              "ours_decided": _r((mine[key][0] != 0).mean()), "step_decided": _r((peer[key][0] != 0).mean()),
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
            for mode, our_alpha in (("ranking", args.alpha), ("comparison", 2 * args.alpha)):
                peer, info = run_step(pairs, n_max, args.alpha, mode, args.seed, args.check)
                bet = {key: betting(a, b, our_alpha) for key, (a, b) in pairs.items()}
                out.setdefault("peer", info["version"])
                out.setdefault("checks", []).append(f"{label} {n_max} {mode}: {info['check']}")
                cell[mode] = {"ours_alpha": our_alpha, "step_policy_alpha": info["policy_alpha"],
                              **compare(args, ours(pairs, n_max, our_alpha), peer, bet)}
            out[label][str(n_max)] = cell
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--races", type=int, default=10000, help="races per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--rho", type=float, default=0.5, help="latent correlation of two points' outcomes")
    parser.add_argument("--round-size", type=int, default=10)
    parser.add_argument("--max-episodes", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--base-rates", type=float, nargs="+", default=[0.3, 0.5, 0.8])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    parser.add_argument("--check", type=int, default=200, help="races also run through the reference implementations")
    parser.add_argument("--no-step", action="store_true", help="leave out the STEP comparison")
    args = parser.parse_args()
    start = time.time()
    eq = simulate(_rng(args.seed, 0), args.races, max(args.max_episodes), [0.5, 0.5], args.rho)
    out: dict = {"races": args.races, "seed": args.seed, "alpha": args.alpha, "round_size": args.round_size,
                 "latent_rho": args.rho, "outcome_correlation": _r(np.corrcoef(eq[:, 0].ravel(), eq[:, 1].ravel())[0, 1]),
                 "mc_se_at_alpha": _r(np.sqrt(args.alpha * (1 - args.alpha) / args.races)), "racing": {}}
    checks = []
    for n_max in args.max_episodes:
        table = wilson_table(n_max)
        for rates, key in (([0.5, 0.5, 0.5, 0.5], 0), ([0.6, 0.5, 0.4, 0.3], 1)):
            x = simulate(_rng(args.seed, n_max, key, 3), args.check, n_max, rates, args.rho)
            agree, total = check_wilson(x, args.round_size, table)
            if agree != total:
                raise SystemExit(f"vectorised Wilson rule disagrees with vlamix.search.racing.race on {total - agree} races")
            checks.append(f"{n_max} {rates}: {agree}/{total}")
        out["racing"][str(n_max)] = racing_section(args, n_max, table)
    out["old_rule_check"] = checks
    reason = "--no-step" if args.no_step else step_available()
    out["step"] = None if reason else step_section(args)
    if reason:
        out["step_reason"] = reason
    out["seconds"] = round(time.time() - start, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
