"""Offline (teacher-forced) metrics of a checkpoint on the held-out episodes of a mixture.

For every held-out frame (``MixtureLoader(data, mixing, split="heldout")``: the last ``heldout_fraction`` of
each dataset's episodes, never trained on) the model reads the image, the prompt and the
ground-truth action tokens (teacher forcing, as in openvla ``vla-scripts/finetune.py``'s logged
metrics) and predicts each of the 7 action tokens by argmax.

- ``action_token_accuracy``: fraction of the 7 x n_frames action tokens predicted exactly.
- ``action_l1``: mean |a_pred - a_true| over frames and the 7 action dimensions, in model-space
  units (metres / radians per step for the masked dims as the dataset stores them, gripper 0..1),
  where a_pred = un-normalise(bin centre of the predicted token) and a_true = un-normalise(the
  frame's normalised ground-truth action), both with the statistics of the frame's own dataset.

OpenVLA-OFT checkpoints (``action_head: l1_regression``): the held-out frames are action chunks (the loader built
with the checkpoint's ``action_chunk``, wrist image and proprio, as in training), the model predicts each chunk in
one pass, ``action_l1`` is the mean over frames, chunk steps and the 7 dimensions of the un-normalised absolute
error, and ``action_token_accuracy`` is NaN (no tokens).

Fixed held-out set (:func:`vlamix.pipeline.point.fixed_heldout_config`): every point of a job is scored on the same
frames, the held-out episodes of every dataset of the job's train index whose suite the job
evaluates, whatever the point's own mixture (a 1:0 and a 0:1 point both see spatial and object
frames). Results are pooled (the rank columns) and per dataset (``per_dataset``, the report).

Usage::

    from vlamix.eval.offline import offline_metrics
    held = fixed_heldout_config(cfg)   # vlamix.pipeline.point
    offline_metrics("workspace/runs/p0/step_000040", precision="fp32", data=held.data, mixing=held.mixing)
    # {"action_token_accuracy": 0.41, "action_l1": 0.0123, "n_frames": 1830,
    #  "datasets": ["libero_spatial_no_noops", ...], "per_dataset": {"libero_spatial_no_noops": {...}, ...}}

Reading the held-out frames imports TensorFlow (through the RLDS loader) unless a ``loader`` is passed.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from vlamix.core.constants import ACTION_DIM
from vlamix.data.mixture import MixtureLoader
from vlamix.data.normalization import NORM_EPS, unnormalize_actions
from vlamix.data.settings import DataConfig
from vlamix.mixing.settings import MixingConfig
from vlamix.model.checkpoint import load_vla

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@torch.no_grad()
def offline_metrics(
    checkpoint_dir: str,
    *,
    precision: str,
    data: DataConfig | None = None,
    mixing: MixingConfig | None = None,
    loader: Iterable[Mapping[str, Any]] | None = None,
    dataset_names: list[str] | None = None,
    dataset_statistics: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    max_frames: int | None = None,
) -> dict[str, float | int]:
    """Teacher-forced action-token accuracy and un-normalised L1 on the held-out frames.

    Args:
        checkpoint_dir: folder readable by :func:`vlamix.model.checkpoint.load_vla` (a
            :func:`vlamix.train.finetune.finetune` checkpoint, or any OpenVLA folder).
        precision: "fp32" or "bf16" (resolved): the model's dtype.
        data, mixing: the sections whose held-out episodes are read (the default loader
            ``MixtureLoader(data, mixing, "heldout", batch_size=batch_size)``).
        loader: iterable of batches ``{"image": uint8 [B, H, W, 3], "instruction": list[str],
            "action": float32 [B, 7] normalised, "dataset_index": int64 [B]}`` instead.
        dataset_names, dataset_statistics: name of each ``dataset_index`` and ``{name: stats}``
            (OpenVLA layout) used to un-normalise; default: the loader's ``dataset_names`` /
            ``dataset_statistics`` attributes.
        device: default CUDA when available. batch_size: held-out batch size.
        max_frames: stop after this many frames (None: all).
    Returns:
        ``{"action_token_accuracy": float in [0, 1], "action_l1": float >= 0, "n_frames": int,
        "datasets": [name, ...], "per_dataset": {name: {"action_token_accuracy", "action_l1", "n_frames"}}}``
        (pooled over frames, and per dataset of the loader); metrics are NaN without held-out frames.
    Raises:
        ValueError: the loader has no dataset names / statistics, or a batch's actions are not [B, 7].
        KeyError: a dataset of the loader has no statistics.
    """
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _DTYPES[precision]
    if loader is None:
        if data is None or mixing is None:
            raise ValueError("offline_metrics needs a loader, or the data and mixing sections to build one")
    # names and statistics do not depend on the loader's frame options (chunks, wrist image, proprio)
    source = loader if loader is not None else MixtureLoader(data, mixing, "heldout", batch_size=batch_size, seed=0)
    names = list(dataset_names if dataset_names is not None else getattr(source, "dataset_names", []) or [])
    stats = dataset_statistics if dataset_statistics is not None else getattr(source, "dataset_statistics", None)
    if not names or not stats:
        raise ValueError("offline_metrics needs the loader's dataset_names and dataset_statistics (or pass them)")
    missing = [n for n in names if n not in stats]
    if missing:
        raise KeyError(f"no norm stats for datasets {missing}; available: {', '.join(sorted(stats))}")

    model, processor = load_vla(checkpoint_dir, device=dev, dtype=dtype)
    model.eval()
    config = getattr(model, "get_base_model", lambda: model)().config
    if config.parallel_decoding:
        if loader is None:
            loader = MixtureLoader(data, mixing, "heldout", batch_size=batch_size, seed=0,
                                   action_chunk=config.action_chunk, wrist_image=config.num_images_in_input > 1,
                                   proprio=config.use_proprio)
        return _chunk_metrics(model, processor, loader, names, stats, max_frames, dev, dtype, checkpoint_dir, data)
    loader = source
    tokenizer = processor.action_tokenizer
    correct = tokens = frames = 0
    abs_err_sum = 0.0
    per = {n: {"correct": 0, "tokens": 0, "abs_err": 0.0, "frames": 0} for n in names}
    for batch in loader:
        actions = np.asarray(batch["action"], dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise ValueError(f"batch actions must be [B, {ACTION_DIM}], got {list(actions.shape)}")
        batch, actions = _first_frames(batch, actions, frames, max_frames)
        if not len(actions):
            break
        inputs = processor.training_batch(batch["image"], batch["instruction"], actions)
        inputs = {k: v.to(dev) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        out = model(**inputs, logits="labeled")
        # Rows are row-major over (frame, action dim): exactly ACTION_DIM label tokens per frame.
        pred_ids = out.logits.argmax(dim=-1).cpu().numpy().reshape(-1, ACTION_DIM)
        gold_ids = out.targets.cpu().numpy().reshape(-1, ACTION_DIM)
        correct += int((pred_ids == gold_ids).sum())
        tokens += gold_ids.size
        pred_norm = tokenizer.decode(pred_ids)  # float64 [B, 7] bin centres
        index = np.asarray(batch["dataset_index"], dtype=np.int64)
        for d in np.unique(index):
            rows = index == d
            s = stats[names[int(d)]]
            pred = unnormalize_actions(pred_norm[rows], s)
            true = unnormalize_actions(actions[rows].astype(np.float64), s)
            err = float(np.abs(pred - true).sum())
            abs_err_sum += err
            acc = per[names[int(d)]]
            acc["correct"] += int((pred_ids[rows] == gold_ids[rows]).sum())
            acc["tokens"] += int(gold_ids[rows].size)
            acc["abs_err"] += err
            acc["frames"] += int(rows.sum())
        frames += len(actions)
    per_dataset = {
        n: {"action_token_accuracy": a["correct"] / a["tokens"] if a["tokens"] else float("nan"),
            "action_l1": a["abs_err"] / (a["frames"] * ACTION_DIM) if a["frames"] else float("nan"),
            "n_frames": a["frames"]}
        for n, a in per.items()
    }
    ran_on = {"device": str(dev), "dtype": str(dtype).replace("torch.", "")}
    if frames == 0:
        logger.warning("no held-out frames (heldout_fraction = %s); offline metrics are NaN",
                       None if data is None else data.heldout_fraction)
        return {"action_token_accuracy": float("nan"), "action_l1": float("nan"), "n_frames": 0,
                "datasets": names, "per_dataset": per_dataset, **ran_on}
    result = {
        "action_token_accuracy": correct / tokens,
        "action_l1": abs_err_sum / (frames * ACTION_DIM),
        "n_frames": frames,
        "datasets": names,
        "per_dataset": per_dataset,
        **ran_on,
    }
    logger.info("offline metrics of %s: %s", checkpoint_dir, result)
    return result


def _first_frames(batch: Mapping[str, Any], actions: np.ndarray, frames: int,
                  max_frames: int | None) -> tuple[Mapping[str, Any], np.ndarray]:
    """The batch cut to the frames left under ``max_frames`` (``frames`` already read; None: no limit)."""
    if max_frames is None:
        return batch, actions
    keep = max(0, min(len(actions), max_frames - frames))
    return {k: v[:keep] for k, v in batch.items()}, actions[:keep]


def _chunk_metrics(model, processor, loader, names, stats, max_frames, dev, dtype, checkpoint_dir, data):
    """:func:`offline_metrics` of an L1-regression (OpenVLA-OFT) model: un-normalised L1 over whole chunks."""
    frames, abs_err_sum, entries = 0, 0.0, 0
    per = {n: {"abs_err": 0.0, "entries": 0, "frames": 0} for n in names}
    for batch in loader:
        actions = np.asarray(batch["action"], dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != ACTION_DIM:
            raise ValueError(f"batch actions must be [B, chunk, {ACTION_DIM}] for an L1-regression model, got "
                             f"{list(actions.shape)}")
        batch, actions = _first_frames(batch, actions, frames, max_frames)
        if not len(actions):
            break
        inputs = processor.chunk_training_batch(batch["image"], batch["instruction"], actions,
                                                wrist_images=batch.get("wrist_image"), proprio=batch.get("proprio"))
        inputs = {k: v.to(dev) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        pred_norm = model(**inputs).actions.float().cpu().numpy().astype(np.float64)  # [B, chunk, 7]
        index = np.asarray(batch["dataset_index"], dtype=np.int64)
        for d in np.unique(index):
            rows = index == d
            s = stats[names[int(d)]]
            pred = unnormalize_actions(pred_norm[rows], s, eps=NORM_EPS)  # OFT's _unnormalize_actions
            err = np.abs(pred - unnormalize_actions(actions[rows].astype(np.float64), s, eps=NORM_EPS))
            acc = per[names[int(d)]]
            acc["abs_err"] += float(err.sum())
            acc["entries"] += int(err.size)
            acc["frames"] += int(rows.sum())
            abs_err_sum += float(err.sum())
            entries += int(err.size)
        frames += len(actions)
    nan = float("nan")
    per_dataset = {n: {"action_token_accuracy": nan, "action_l1": a["abs_err"] / a["entries"] if a["entries"] else nan,
                       "n_frames": a["frames"]} for n, a in per.items()}
    result = {"action_token_accuracy": nan, "action_l1": abs_err_sum / entries if entries else nan,
              "n_frames": frames, "datasets": names, "per_dataset": per_dataset,
              "device": str(dev), "dtype": str(dtype).replace("torch.", "")}
    if frames == 0:
        logger.warning("no held-out frames (heldout_fraction = %s); offline metrics are NaN",
                       None if data is None else data.heldout_fraction)
    logger.info("offline metrics of %s: %s", checkpoint_dir, result)
    return result
