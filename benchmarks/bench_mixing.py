"""Benchmark of the data-ratio machinery on real RLDS data: sampler tracking, loader speed, update cost.

Measures, on the datasets under ``--data-dir`` (the scripted-expert demos the default grid records,
or ``openvla/modified_libero_rlds``):

1. ``proportions``: realised versus target group proportions per window of ``--window`` batches,
   for a static 2:1 mixture and for a dynamic one whose weights change every window (a DoReMi
   controller fed planted per-group losses, so that the target moves deterministically). Reports
   the largest absolute gap per window.
2. ``loader_fps``: frames per second of :class:`vlamix.data.mixture.MixtureLoader` (train split,
   decoded 224x224 images), with every filter off and with the filters on (``filter_nonfinite``,
   ``filter_action_limit``, ``filter_min_motion`` over a window), after ``--warmup`` batches.
3. ``update_overhead``: a real fine-tuning run of the built-in tiny model with ``strategy: doremi``
   and ``mixing_update_every: 1`` (an update after every step); the wall time of the updates
   (gathering the per-group losses, the DRO step, ``set_weights``) as a fraction of the step time,
   from ``train_log.jsonl``.

Prints ONE JSON object on stdout (progress on stderr). Not part of the test suite.

Usage::

    bash scripts/run_default_grid.sh        # records the demos into workspace/data/libero_rlds (once)
    .venv/bin/python benchmarks/bench_mixing.py
    .venv/bin/python benchmarks/bench_mixing.py --data-dir data/modified_libero_rlds --batches 400
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

logger = logging.getLogger("bench_mixing")
SPATIAL, OBJECT = "libero_spatial_no_noops", "libero_object_no_noops"


def _cfg(data_dir: str, **changes):
    from vlamix.pipeline.config import BenchConfig

    values = {"mixture": {SPATIAL: 2, OBJECT: 1}, "data_dir": data_dir, "demos": "none", "batch_size": 8, "seed": 7}
    values.update(changes)
    return BenchConfig.from_dict(values)


def _window_gaps(loader, batches: int, window: int, on_window=None) -> list[dict]:
    """Draw ``batches`` batches; per window of ``window`` batches, target vs realised group shares."""
    rows = []
    for start in range(0, batches, window):
        if on_window is not None:
            on_window(start // window)
        target = loader.weights
        counts = np.zeros(len(loader.group_names))
        for _ in range(min(window, batches - start)):
            counts += np.bincount(loader.next_batch()["group_index"], minlength=len(loader.group_names))
        realised = counts / counts.sum()
        gap = float(np.max(np.abs(realised - np.array([target[g] for g in loader.group_names]))))
        rows.append({"first_batch": start, "target": target, "realised": dict(zip(loader.group_names, realised.tolist())), "max_abs_gap": gap})
    return rows


def bench_proportions(data_dir: str, batches: int, window: int) -> dict:
    from vlamix.data.mixture import MixtureLoader

    static = MixtureLoader.for_point(_cfg(data_dir))
    static_rows = _window_gaps(static, batches, window)

    cfg = _cfg(data_dir, strategy="doremi", mixing_update_every=1, dro_eta=0.5, dro_smoothing=0.05)
    loader = MixtureLoader.for_point(cfg)
    controller = cfg.mixing.strategy_class()(cfg.mixing, loader.group_names, loader.initial_weights)
    controller.set_reference([1.0] * len(loader.group_names))
    planted = np.linspace(2.0, 1.0, len(loader.group_names))  # group 0 has the highest excess loss

    def update(k: int) -> None:
        if k == 0:
            return
        controller.observe(planted, np.ones(len(planted)))
        loader.set_weights(controller.after_step(k))

    dynamic_rows = _window_gaps(loader, batches, window, update)
    return {
        "window_batches": window,
        "batch_size": static.batch_size,
        "static": {"max_abs_gap": max(r["max_abs_gap"] for r in static_rows), "windows": static_rows},
        "dynamic": {"max_abs_gap": max(r["max_abs_gap"] for r in dynamic_rows), "windows": dynamic_rows},
    }


def _fps(loader, batches: int, warmup: int) -> float:
    for _ in range(warmup):
        loader.next_batch()
    start = time.perf_counter()
    for _ in range(batches):
        loader.next_batch()
    return batches * loader.batch_size / (time.perf_counter() - start)


def bench_loader(data_dir: str, batches: int, warmup: int) -> dict:
    from vlamix.data.mixture import MixtureLoader

    off = MixtureLoader.for_point(_cfg(data_dir, filter_nonfinite=False))
    on = MixtureLoader.for_point(_cfg(data_dir, filter_action_limit=1.0, filter_min_motion=0.05, filter_motion_window=3))
    fps_off, fps_on = _fps(off, batches, warmup), _fps(on, batches, warmup)
    return {
        "frames_per_s_no_filter": fps_off,
        "frames_per_s_filtered": fps_on,
        "ratio_filtered_over_unfiltered": fps_on / fps_off,
        "filter_counts": on.filter_counts,
    }


def bench_update_overhead(data_dir: str, steps: int) -> dict:
    from vlamix.train.finetune import finetune

    cfg = _cfg(data_dir, strategy="doremi", mixing_update_every=1, train_steps=steps, mixture={SPATIAL: 1, OBJECT: 1})
    with tempfile.TemporaryDirectory() as out:
        finetune(cfg, out, log_every=max(1, steps))
        with open(os.path.join(out, "train_log.jsonl")) as fh:
            rows = [json.loads(line) for line in fh]
    rows = rows[1:]  # the first step builds the tf.data pipelines
    update = [r["mixing_update_s"] for r in rows if "mixing_update_s" in r]
    step = [r["step_time_s"] for r in rows]
    return {
        "steps": len(step),
        "median_step_time_s": float(np.median(step)),
        "median_update_time_s": float(np.median(update)),
        "update_fraction_of_step_time": float(np.sum(update) / np.sum(step)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("workspace", "data", "libero_rlds"))
    parser.add_argument("--batches", type=int, default=200, help="batches per proportions run and per fps run")
    parser.add_argument("--window", type=int, default=25, help="batches per proportions window")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in (SPATIAL, OBJECT):
        if not os.path.isdir(os.path.join(args.data_dir, name)):
            print(f"dataset {name} not found under {args.data_dir}; run scripts/run_default_grid.sh once to record "
                  f"the demos, or pass --data-dir", file=sys.stderr)
            return 2
    result = {
        "data_dir": args.data_dir,
        "proportions": bench_proportions(args.data_dir, args.batches, args.window),
        "loader_fps": bench_loader(args.data_dir, args.batches, args.warmup),
        "update_overhead": bench_update_overhead(args.data_dir, args.train_steps),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
