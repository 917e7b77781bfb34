"""What a point cost and what it was measured on: the cost record and the dataset fingerprint of a prediction.

:meth:`vlamix.pipeline.point.VLADataSelect.predict` stores both in its prediction (``"cost"``, ``"data_fingerprint"``);
the rank columns ``train_wall_s``, ``rollout_wall_s``, ``episodes_per_hour``, ``device`` and ``dataset_fingerprint``
read them (:mod:`vlamix.bench.metrics`), so a user can weigh a mixture's gain against what it took to measure, and
two rank files are compared safely only where their fingerprints and simulator versions agree.

- Training: the sum of the logged optimiser-step times of the run's ``train_log.jsonl`` up to ``train_steps`` (data
  loading included; model build, data pipeline start and checkpoint writes not), and the device of the checkpoint's
  training record (``vlamix_checkpoint.json``). A training run reused from ``runs_dir`` reports the time of the run
  that trained it, not the (near zero) time of this job; a run that resumed counts each step once. Runs a strategy
  depends on (DoReMi's reference and proxy runs) are not counted.
- Rollouts: the wall time of the :func:`vlamix.eval.rollout.evaluate` calls that ran episodes of this point's
  ``episodes.jsonl`` (its ``episodes.meta.json``), the episodes they ran, and their device. Stored episodes reused by
  a later call cost nothing again; episodes of a call that was killed have no wall time recorded.
- Dataset fingerprint: :func:`vlamix.data.reader.files_hash` (file names, sizes, the first and last 64 KiB of each
  file, so the whole feature spec) of each dataset the point trains on, and 12 hex digits over all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Any

from vlamix.core.io import read_jsonl
from vlamix.data.reader import files_hash
from vlamix.data.settings import DataConfig
from vlamix.eval.rollout import meta_path

logger = logging.getLogger(__name__)

#: The checkpoint's metadata file (:data:`vlamix.model.checkpoint.CHECKPOINT_META_NAME`; read as plain JSON here).
CHECKPOINT_META = "vlamix_checkpoint.json"


def training_cost(train_log: str | None, checkpoint: str | None, train_steps: int) -> dict[str, Any]:
    """``{"train_wall_s": float (NaN without a log), "train_steps_logged": int, "train_device": str | None}``."""
    rows = read_jsonl(train_log, missing_ok=True) if train_log else []
    steps = {}
    for row in rows:  # a step logged twice (a resumed run before its log was trimmed) counts once, the last row
        if isinstance(row, dict) and row.get("step_time_s") is not None and int(row.get("step", 0)) <= train_steps:
            steps[int(row["step"])] = float(row["step_time_s"])
    device = None
    if checkpoint and os.path.isfile(os.path.join(checkpoint, CHECKPOINT_META)):
        try:
            with open(os.path.join(checkpoint, CHECKPOINT_META), encoding="utf-8") as fh:
                training = json.load(fh).get("training") or {}
            device = training.get("device_name") or training.get("device")
        except (OSError, ValueError, AttributeError) as err:
            logger.warning("cannot read the training record of %s: %s", checkpoint, err)
    return {"train_wall_s": sum(steps.values()) if steps else math.nan, "train_steps_logged": len(steps),
            "train_device": device}


def rollout_cost(episodes_jsonl: str | None) -> dict[str, Any]:
    """``{"rollout_wall_s": float, "rollout_episodes_run": int, "episodes_per_hour": float, "rollout_device":
    str | None}`` from the calls recorded in ``episodes.meta.json`` that ran episodes (NaN when none is recorded)."""
    runs = []
    path = meta_path(episodes_jsonl) if episodes_jsonl else None
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as fh:
                runs = [r for r in json.load(fh).get("runs", []) if isinstance(r, dict) and r.get("n_run")]
        except (OSError, ValueError, AttributeError) as err:
            logger.warning("cannot read the rollout record %s: %s", path, err)
    wall = sum(float(r.get("wall_s") or 0.0) for r in runs)
    ran = sum(int(r["n_run"]) for r in runs)
    devices = list(dict.fromkeys(
        str(r.get("device_name") or r.get("device") or (r.get("policy_kwargs") or {}).get("device")) for r in runs))
    return {"rollout_wall_s": wall if runs else math.nan, "rollout_episodes_run": ran,
            "episodes_per_hour": 3600.0 * ran / wall if wall > 0 else math.nan,
            "rollout_device": " + ".join(d for d in devices if d != "None") or None}


def cost_record(train_log: str | None, checkpoint: str | None, train_steps: int,
                episodes_jsonl: str | None) -> dict[str, Any]:
    """:func:`training_cost` and :func:`rollout_cost` in one dict (the prediction's ``"cost"``)."""
    return {**training_cost(train_log, checkpoint, train_steps), **rollout_cost(episodes_jsonl)}


def data_fingerprint(data: DataConfig) -> dict[str, Any]:
    """``{"datasets": {name: files_hash or "missing"}, "fingerprint": 12 hex digits over them}`` for the datasets the
    point trains on (weight > 0, after the white/blacklist), read from ``data_dir`` (no record is parsed)."""
    hashes = {}
    for name in data.selected_datasets():
        path = data.dataset_path(name)
        hashes[name] = files_hash(path) if os.path.isdir(path) else "missing"
    blob = json.dumps(hashes, sort_keys=True)
    return {"datasets": hashes, "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:12]}
