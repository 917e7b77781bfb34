"""STEP (the peer of benchmarks/bench_racing.py) on given outcome sequences, in the peers' virtual environment.

STEP: Snyder et al., "Is Your Imitation Learning Policy Better than Mine? Policy Comparison with
Near-Optimal Stopping", RSS 2025; PyPI ``sequentialized-barnard-tests`` (pinned in
requirements-peers.txt). Its licence is CC BY-NC 4.0 (non-commercial), so it is never a dependency of
vlamix: this script runs only under the peers' interpreter (``/tmp/peers-venv/bin/python``, see
requirements-peers.txt), as a subprocess of bench_racing.py, and imports nothing from vlamix.

STEP is a test for two *independent* (unpaired) Bernoulli sequences; it is fed the same per-episode
sequences as our paired test. ``MirroredStepTest`` runs two one-sided STEP tests; with
``inference_mode="ranking"`` each uses a policy at ``alpha / 2`` (two-sided error alpha, the analogue
of a racing decision), with ``"comparison"`` each uses ``alpha`` (two-sided error up to 2 alpha). The
decisions are read from STEP's own policy table (``policy[t][min(sums)]`` = critical value and
randomisation probabilities, as in ``StepTest.step``) for all sequences at once; the first
``--check`` sequences are also run through ``MirroredStepTest.step`` (the loop of ``run_on_sequence``)
with the same uniform draws, and any disagreement stops the script.

Input: an ``.npz`` with, per setting ``<key>``, ``<key>_a`` and ``<key>_b`` = ``np.packbits`` of bool
[R, n_max] along axis 1. Output (``--out``): an ``.npz`` with ``<key>_code`` (int8 [R]: -1 first
sequence worse, +1 second worse, 0 no decision) and ``<key>_at`` (int64 [R]: pairs at the decision,
n_max if none) and ``info`` (a JSON string: ``{"version", "mode", "policy_alpha", "check"}``). STEP's
policy synthesis prints to stdout; nothing else is printed.

Usage (what bench_racing.py runs)::

    /tmp/peers-venv/bin/python benchmarks/peer_step.py IN.npz --out OUT.npz --n-max 200 --alpha 0.05 --mode ranking
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys

import numpy as np
from sequentialized_barnard_tests import Decision, Hypothesis, MirroredStepTest


def policy_table(policy: list, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STEP's compressed policy as arrays: crit [t, x] (largest max-sum that continues), width L [t, x],
    and reject probabilities P [t, x, 1 .. L] for max-sum = crit + 1 .. crit + L (t, x: pairs, min-sum)."""
    width = max(len(a) for t in range(1, n_max + 1) for a in policy[t])
    crit = np.full((n_max + 1, n_max + 1), n_max + 1, np.int64)
    span = np.zeros((n_max + 1, n_max + 1), np.int64)
    prob = np.zeros((n_max + 1, n_max + 1, width + 1))
    for t in range(1, n_max + 1):
        for x, arr in enumerate(policy[t]):
            crit[t, x], span[t, x] = int(arr[0]), len(arr) - 1
            prob[t, x, 1:len(arr)] = arr[1:]
    return crit, span, prob


def decide(xa: np.ndarray, xb: np.ndarray, table: tuple, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirrored STEP on bool [R, n] sequences; ``uniforms`` float [R, n] are the randomisation draws."""
    crit, span, prob = table
    r, n = xa.shape
    sa, sb = np.cumsum(xa, axis=1), np.cumsum(xb, axis=1)
    code = np.zeros(r, np.int8)
    at = np.full(r, n, np.int64)
    for t in range(1, n + 1):
        a, b = sa[:, t - 1], sb[:, t - 1]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        c, w = crit[t, lo], span[t, lo]
        p = prob[t, lo, np.clip(hi - c, 0, prob.shape[2] - 1)]
        rej = (hi > c + w) | ((hi > c) & (hi <= c + w) & (uniforms[:, t - 1] <= p))
        rej &= (hi != lo) & (code == 0)
        code[rej] = np.where(a[rej] < b[rej], -1, 1)
        at[rej] = t
    return code, at


class _Draws:
    """Stands in for the test's ``rng``: returns the pre-drawn uniform of the current pair."""

    def __init__(self, test: MirroredStepTest, row: np.ndarray) -> None:
        self.test, self.row = test, row

    def random(self, size: int) -> np.ndarray:
        return np.array([self.row[self.test._t - 1]])


def reference(test: MirroredStepTest, xa: np.ndarray, xb: np.ndarray, uniforms: np.ndarray) -> tuple[int, int]:
    """(code, pairs at the decision) from the package's own ``step`` with the same draws (the loop of
    ``run_on_sequence``, whose ``reset`` would replace the draws)."""
    test.reset()
    test.rng = _Draws(test, uniforms)
    for a, b in zip(xa, xb):
        result = test.step(int(a), int(b))
        if result.decision != Decision.FailToDecide:
            # alternative P0LessThanP1: AcceptAlternative = the first sequence is worse, AcceptNull = the second
            return (-1 if result.decision == Decision.AcceptAlternative else 1), int(result.info["Time"])
    return 0, len(xa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-max", type=int, required=True)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--mode", choices=("ranking", "comparison"), default="ranking")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", type=int, default=200, help="sequences also run through MirroredStepTest.step")
    args = parser.parse_args()
    test = MirroredStepTest(Hypothesis.P0LessThanP1, args.n_max, args.alpha, inference_mode=args.mode)
    # 0.0.9's constructor fails to load the policy (its reset() runs before random_seed is set) and
    # step() would load it lazily; load it now (a policy that is not shipped is synthesised here, minutes)
    test.load_existing_policy()
    if test.policy is None:
        sys.exit(f"no STEP policy for n_max={args.n_max}, alpha={args.alpha}, mode={args.mode}")
    table = policy_table(test.policy, args.n_max)
    data = np.load(args.inputs)
    keys = sorted({k[:-2] for k in data.files})
    rng = np.random.default_rng(args.seed)
    out, checked, agree = {}, 0, 0
    for key in keys:
        xa = np.unpackbits(data[f"{key}_a"], axis=1, count=args.n_max).astype(bool)
        xb = np.unpackbits(data[f"{key}_b"], axis=1, count=args.n_max).astype(bool)
        uniforms = rng.random(xa.shape)
        code, at = decide(xa, xb, table, uniforms)
        for i in range(min(args.check - checked, len(xa))):
            ref = reference(test, xa[i], xb[i], uniforms[i])
            agree += ref == (int(code[i]), int(at[i]) if code[i] else args.n_max)
            checked += 1
        out[f"{key}_code"], out[f"{key}_at"] = code, at
    if agree != checked:
        sys.exit(f"vectorised STEP disagrees with MirroredStepTest.step on {checked - agree} of {checked} sequences")
    info = {"version": importlib.metadata.version("sequentialized-barnard-tests"), "mode": args.mode,
            "policy_alpha": test._policy_alpha, "check": f"{agree}/{checked} agree"}
    np.savez(args.out, info=np.array(json.dumps(info)), **out)


if __name__ == "__main__":
    main()
