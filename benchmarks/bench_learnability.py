"""What does the built-in tiny model need to learn one LIBERO task on CPU? (issue 13, docs/LEARNABILITY.md)

One row per *cell* = (fine-tuning mode, learning rate, training steps) on the scripted-expert
demonstrations of one task (an RLDS dataset under ``--data-dir``, e.g. recorded with
``vlamix record-demos --suites libero_object --task-ids 0 --episodes 10``). Each cell:

1. fine-tunes the tiny model (:func:`vlamix.train.finetune.finetune`, the product code path) with
   ``mixture: {<dataset>: 1}``, ``demos: none``, ``batch_size`` 8, ``heldout_fraction`` 0.1;
   records the training wall time and the last logged loss / action-token accuracy / L1 (mean of
   the last 20 steps);
2. measures teacher-forced action-token accuracy and L1 on the held-out episodes
   (:func:`vlamix.eval.offline.offline_metrics`);
3. with ``--trials`` > 0, rolls the final checkpoint out in LIBERO (:func:`vlamix.eval.rollout.evaluate_checkpoint`) for
   ``--trials`` episodes of the task (the suite's fixed init states, in order) and reports the
   success rate with its 95% Wilson interval (:func:`vlamix.eval.stats.summarize`).

Cells are given as ``MODE:LR:STEPS`` (``full:1e-3:1500``); MODE is ``finetune_mode`` (``lora`` or
``full``); ``--model`` picks the built-in preset (``tiny``, or ``tiny-p28`` with 64 instead of 256
vision tokens per image). Cells that differ only in STEPS are one training run
(``<out>/<model>_<mode>_lr<lr>/``): the longer cell resumes from the shorter one's checkpoint, and its
training wall time adds up both segments; the episodes of a cell go to
``<run>/episodes_s<STEPS>.jsonl``. Results are appended to ``<out>/cells.jsonl`` as each cell finishes (a cell already
there is not run again) and the markdown table of all cells is printed at the end.

Usage::

    python benchmarks/bench_learnability.py --dataset libero_object_no_noops --data-dir workspace/learn/data \\
        --task-id 0 --cells full:1e-3:1500 lora:5e-4:1500 --trials 10 --out workspace/learn/study

Not part of the test suite. Training and rollouts are CPU-heavy: run it under ``nice``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

logger = logging.getLogger("bench_learnability")


def parse_cell(text: str) -> dict:
    """``MODE:LR:STEPS`` -> ``{"finetune_mode", "learning_rate", "train_steps"}``.

    Raises:
        argparse.ArgumentTypeError: malformed cell.
    """
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in ("lora", "full"):
        raise argparse.ArgumentTypeError(f"cell must be MODE:LR:STEPS with MODE lora|full, got {text!r}")
    try:
        return {"finetune_mode": parts[0], "learning_rate": float(parts[1]), "train_steps": int(parts[2])}
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"cell must be MODE:LR:STEPS, got {text!r}") from err


def run_key(model: str, cell: dict) -> str:
    """Name of the training run a cell belongs to: cells that differ only in steps share one run."""
    prefix = "" if model == "tiny" else f"{model}_"  # "tiny" keys stay those of the first study
    return f"{prefix}{cell['finetune_mode']}_lr{cell['learning_rate']:g}"


def cell_key(cell: dict, model: str = "tiny") -> str:
    return f"{run_key(model, cell)}_s{cell['train_steps']}"


def _earlier_checkpoint(done: dict, model: str, cell: dict) -> dict | None:
    """The row of the same run with the most steps below ``cell``'s whose checkpoint still exists."""
    rows = [r for r in done.values()
            if r.get("model", "tiny") == model and run_key(model, r) == run_key(model, cell)
            and r["train_steps"] < cell["train_steps"] and os.path.isdir(r["checkpoint"])]
    return max(rows, key=lambda r: r["train_steps"]) if rows else None


def run_cell(args: argparse.Namespace, cell: dict, previous: dict | None = None, earlier: dict | None = None) -> dict:
    """Train (unless ``previous`` row's checkpoint exists) and evaluate one cell; return its row.

    ``earlier``: a row of the same run with fewer steps; training resumes from its checkpoint
    (bit-identical to training from scratch on the CPU: constant learning rate, checkpointed
    optimiser, data and RNG state) and the cell's training wall time is the earlier row's plus
    this segment's.
    """
    from vlamix.pipeline.config import BenchConfig
    from vlamix.core.constants import DATASET_TO_SUITE
    from vlamix.eval.rollout import evaluate_checkpoint
    from vlamix.eval.settings import RolloutConfig
    from vlamix.eval.stats import summarize
    from vlamix.train.finetune import finetune

    suite = DATASET_TO_SUITE[args.dataset]
    cfg = BenchConfig.from_dict({
        "mixture": {args.dataset: 1}, "data_dir": args.data_dir, "model": args.model, "demos": "none", "batch_size": args.batch_size,
        "heldout_fraction": 0.1, "seed": args.seed, "eval_suites": [suite], **cell,
    })
    run_dir = os.path.join(args.out, run_key(args.model, cell))
    if previous is not None and os.path.isdir(previous["checkpoint"]):  # trained before: evaluate only
        ckpt, train_s = previous["checkpoint"], previous["train_seconds"]
    else:
        t0 = time.perf_counter()
        resume = earlier["checkpoint"] if earlier is not None else None
        ckpt = finetune(cfg, run_dir, resume_from=resume, log_every=100)
        train_s = time.perf_counter() - t0 + (earlier["train_seconds"] if earlier is not None else 0.0)
    with open(os.path.join(run_dir, "train_log.jsonl"), encoding="utf-8") as f:
        log = [json.loads(line) for line in f if line.strip()]
    tail = [r for r in log if r["step"] <= cell["train_steps"]][-20:]
    from vlamix.eval.offline import offline_metrics

    heldout = offline_metrics(ckpt, precision=cfg.resolved_precision(), data=cfg.data, mixing=cfg.mixing,
                              batch_size=cfg.train.batch_size, device="cpu")
    row = {
        "cell": cell_key(cell, args.model), "model": args.model, **cell, "dataset": args.dataset,
        "data_dir": args.data_dir, "task_id": args.task_id,
        "train_seconds": round(train_s, 1),
        "loss_last20": sum(r["loss"] for r in tail) / len(tail),
        "action_accuracy_last20": sum(r["action_accuracy"] for r in tail) / len(tail),
        "l1_last20": sum(r["l1_loss"] for r in tail) / len(tail),
        "heldout": heldout, "checkpoint": ckpt,
    }
    if args.trials > 0:
        t1 = time.perf_counter()
        rows = evaluate_checkpoint(ckpt, suite, [args.task_id], args.trials,
                                   out_jsonl=os.path.join(run_dir, f"episodes_s{cell['train_steps']}.jsonl"),
                                   rollout=RolloutConfig(eval_workers=args.workers), seed=args.seed)
        summary = summarize(rows)
        row.update({
            "eval_seconds": round(time.perf_counter() - t1, 1), "episodes": summary["n_episodes"],
            "successes": summary["n_successes"], "errors": summary["n_errors"], "success_rate": summary["success_rate"],
            "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
        })
    return row


def table(rows: list[dict]) -> str:
    """Markdown table of the cells."""
    lines = [
        "| model | mode | lr | steps | train wall (s) | train loss | train action acc. | held-out action acc. | held-out L1 "
        "| SR (succ./episodes) | 95% Wilson |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h = r.get("heldout") or {}
        sr = (f"{r['success_rate']:.2f} ({r['successes']}/{r['episodes']}) | [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
              if "episodes" in r else "not evaluated | -")
        lines.append(
            f"| {r.get('model', 'tiny')} | {r['finetune_mode']} | {r['learning_rate']:g} | {r['train_steps']} | {r['train_seconds']:.0f} | "
            f"{r['loss_last20']:.2f} | {r['action_accuracy_last20']:.3f} | "
            f"{h.get('action_token_accuracy', float('nan')):.3f} | {h.get('action_l1', float('nan')):.3f} | {sr} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from vlamix.model.settings import BUILTIN_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="libero_object_no_noops", help="RLDS dataset name (one task's demos)")
    parser.add_argument("--data-dir", default="workspace/learn/data")
    parser.add_argument("--task-id", type=int, default=0, help="task id of the suite the demos are of")
    parser.add_argument("--model", default="tiny", choices=BUILTIN_MODELS, help="built-in preset to fine-tune")
    parser.add_argument("--cells", type=parse_cell, nargs="+", default=[parse_cell("full:1e-3:1500")])
    parser.add_argument("--trials", type=int, default=20, help="evaluation episodes per cell (0: offline metrics only)")
    parser.add_argument("--workers", type=int, default=1, help="rollout processes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="workspace/learn/study")
    args = parser.parse_args(argv)
    args.cells.sort(key=lambda c: c["train_steps"])  # so that longer cells of a run resume from shorter ones
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cells.jsonl")
    done = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            done = {r["cell"]: r for r in (json.loads(line) for line in f if line.strip())}
    rows = []
    for cell in args.cells:
        key = cell_key(cell, args.model)
        if key in done and done[key].get("episodes", 0) >= args.trials:
            rows.append(done[key])
            continue
        row = run_cell(args, cell, done.get(key), _earlier_checkpoint(done, args.model, cell))
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        done[key] = row
        logger.info("cell %s: %s", key, row)
        rows.append(row)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
