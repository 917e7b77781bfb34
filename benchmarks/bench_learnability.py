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
vision tokens per image); ``--set FIELD=VALUE`` (repeatable, VALUE read as YAML) sets any other configuration
field for every cell, e.g. OpenVLA-OFT's recipe with ``--set action_head=l1_regression --set action_chunk=8``
(issue 29); such cells get the overrides in their run name and the recipe
(:func:`vlamix.pipeline.config.recipe_label`) in their row. Cells that differ only in STEPS are one training run
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
import dataclasses
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


def parse_override(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` -> ``(FIELD, VALUE)`` with VALUE parsed as YAML (``8`` -> int, ``true`` -> bool).

    Raises:
        argparse.ArgumentTypeError: no ``=`` or an empty field name.
    """
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE, got {text!r}")
    return name.strip(), yaml.safe_load(value)


def run_key(model: str, cell: dict, overrides: dict | None = None) -> str:
    """Name of the training run a cell belongs to: cells that differ only in steps share one run.

    ``overrides`` (``--set``) join the name in field order, ``<field>-<value>``, so that e.g. an
    ``action_head=l1_regression`` run never shares a folder or a row with the token-head run.
    """
    prefix = "" if model == "tiny" else f"{model}_"  # "tiny" keys stay those of the first study
    suffix = "".join(f"_{name}-{value}" for name, value in sorted((overrides or {}).items()))
    return f"{prefix}{cell['finetune_mode']}_lr{cell['learning_rate']:g}{suffix}"


def cell_key(cell: dict, model: str = "tiny", overrides: dict | None = None) -> str:
    return f"{run_key(model, cell, overrides)}_s{cell['train_steps']}"


#: Fields the script sets from its own arguments or the cell: ``--set`` may not name them (the run name would
#: say one value and the training use another).
OWNED_FIELDS = {
    "finetune_mode": "--cells", "learning_rate": "--cells", "train_steps": "--cells", "mixture": "--dataset",
    "data_dir": "--data-dir", "model": "--model", "demos": None, "batch_size": "--batch-size",
    "heldout_fraction": None, "seed": "--seed", "eval_suites": "--dataset", "eval_tasks": "--task-id",
    "trials_per_task": "--trials", "eval_workers": "--workers",
}


def cell_config(args: argparse.Namespace, cell: dict):
    """The :class:`~vlamix.pipeline.config.BenchConfig` of one cell (validated: raises ``ValueError`` naming a bad field)."""
    from vlamix.core.constants import DATASET_TO_SUITE
    from vlamix.pipeline.config import BenchConfig

    return BenchConfig.from_dict({
        "mixture": {args.dataset: 1}, "data_dir": args.data_dir, "model": args.model, "demos": "none",
        "batch_size": args.batch_size, "heldout_fraction": 0.1, "seed": args.seed,
        "eval_suites": [DATASET_TO_SUITE[args.dataset]], **args.overrides, **cell,
    })


def _earlier_checkpoint(done: dict, model: str, cell: dict, overrides: dict | None = None) -> dict | None:
    """The row of the same run with the most steps below ``cell``'s whose checkpoint still exists."""
    rows = [r for r in done.values()
            if r.get("model", "tiny") == model
            and run_key(model, r, r.get("overrides")) == run_key(model, cell, overrides)
            and r["train_steps"] < cell["train_steps"] and os.path.isdir(r["checkpoint"])]
    return max(rows, key=lambda r: r["train_steps"]) if rows else None


def _mean(rows: list[dict], key: str) -> float | None:
    """Mean of ``key`` over the rows that log it (``None`` where a head has no such figure, e.g. the token accuracy
    of an L1-regression head); ``None`` if none do (written to ``cells.jsonl`` as JSON ``null``)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` for ``None`` or NaN (a figure the cell's head does not have)."""
    return "-" if value is None or value != value else format(value, spec)


def run_cell(args: argparse.Namespace, cell: dict, previous: dict | None = None, earlier: dict | None = None) -> dict:
    """Train (unless ``previous`` row's checkpoint exists) and evaluate one cell; return its row.

    ``earlier``: a row of the same run with fewer steps; training resumes from its checkpoint
    (bit-identical to training from scratch on the CPU: constant learning rate, checkpointed
    optimiser, data and RNG state) and the cell's training wall time is the earlier row's plus
    this segment's.
    """
    from vlamix.core.constants import DATASET_TO_SUITE
    from vlamix.eval.rollout import evaluate_checkpoint
    from vlamix.eval.stats import summarize
    from vlamix.pipeline.config import recipe_label
    from vlamix.train.finetune import finetune

    suite = DATASET_TO_SUITE[args.dataset]
    cfg = cell_config(args, cell)
    run_dir = os.path.join(args.out, run_key(args.model, cell, args.overrides))
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
        "cell": cell_key(cell, args.model, args.overrides), "model": args.model, **cell, "dataset": args.dataset,
        "overrides": args.overrides, "recipe": recipe_label(cfg.to_dict()),
        "data_dir": args.data_dir, "task_id": args.task_id,
        "train_seconds": round(train_s, 1),
        "loss_last20": _mean(tail, "loss"),
        "action_accuracy_last20": _mean(tail, "action_accuracy"),  # NaN for an L1 head: no action tokens
        "l1_last20": _mean(tail, "l1_loss"),
        "heldout": heldout, "checkpoint": ckpt,
    }
    if args.trials > 0:
        t1 = time.perf_counter()
        ev = cfg.eval  # the evaluation fields of the cell (defaults, or --set), as a job's point passes them
        rows = evaluate_checkpoint(ckpt, suite, [args.task_id], args.trials,
                                   out_jsonl=os.path.join(run_dir, f"episodes_s{cell['train_steps']}.jsonl"),
                                   rollout=dataclasses.replace(cfg.rollout, eval_workers=args.workers),
                                   seed=ev.eval_seed, num_steps_wait=ev.num_steps_wait, max_steps=ev.eval_max_steps,
                                   center_crop=cfg.resolved_center_crop(), open_loop_steps=cfg.resolved_open_loop_steps())
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
        "| model | recipe | mode | lr | steps | train wall (s) | train loss | train action acc. | held-out action acc. | held-out L1 "
        "| SR (succ./episodes) | 95% Wilson |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h = r.get("heldout") or {}
        sr = (f"{r['success_rate']:.2f} ({r['successes']}/{r['episodes']}) | [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
              if "episodes" in r else "not evaluated | -")
        lines.append(
            f"| {r.get('model', 'tiny')} | {r.get('recipe', 'tokens')} | {r['finetune_mode']} | {r['learning_rate']:g} | {r['train_steps']} | {r['train_seconds']:.0f} | "
            f"{_fmt(r['loss_last20'], '.2f')} | {_fmt(r['action_accuracy_last20'], '.3f')} | "
            f"{_fmt(h.get('action_token_accuracy'), '.3f')} | {_fmt(h.get('action_l1'), '.3f')} | {sr} |"
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
    parser.add_argument("--set", dest="sets", type=parse_override, action="append", default=[], metavar="FIELD=VALUE",
                        help="any other configuration field for every cell (repeatable; VALUE is YAML)")
    parser.add_argument("--out", default="workspace/learn/study")
    args = parser.parse_args(argv)
    args.overrides = dict(args.sets)
    for name in args.overrides:
        if name in OWNED_FIELDS:
            flag = OWNED_FIELDS[name]
            parser.error(f"--set {name}: set by this script" + (f"; use {flag}" if flag else " (fixed for the study)"))
    for cell in args.cells:  # a bad field or value fails here, before any training
        try:
            cell_config(args, cell)
        except ValueError as err:
            parser.error(str(err))
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
        key = cell_key(cell, args.model, args.overrides)
        if key in done and done[key].get("episodes", 0) >= args.trials:
            rows.append(done[key])
            continue
        row = run_cell(args, cell, done.get(key), _earlier_checkpoint(done, args.model, cell, args.overrides))
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        done[key] = row
        logger.info("cell %s: %s", key, row)
        rows.append(row)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
