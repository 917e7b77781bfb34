"""OpenVLA's LIBERO action transform, dataset statistics and BOUNDS_Q99 action (un)normalisation.

Sources (openvla/openvla):
    ``prismatic/vla/datasets/rlds/oxe/transforms.py::libero_dataset_transform`` — gripper action
        clipped to [0, 1] and inverted (RLDS -1 open / +1 close -> model space 1 open / 0 close).
    ``prismatic/vla/datasets/rlds/utils/data_utils.py::get_dataset_statistics`` — mean/std/max/min/
        q01/q99 of actions and proprio, ``num_transitions``, ``num_trajectories``, cached as
        ``dataset_statistics_<hash>.json`` beside the data (fallback: a user cache folder).
    ``.../data_utils.py::normalize_action_and_proprio`` (BOUNDS_Q99) and
        ``prismatic/extern/hf/modeling_prismatic.py::predict_action`` (un-normalisation).

Conventions:
    action: float [..., 7] = EEF delta xyz (3) + delta roll-pitch-yaw (3) + gripper (1).
    Statistics are those of *model-space* actions (after the LIBERO transform), as in OpenVLA.
    Normalised = ``clip(2 (a - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)`` where ``mask`` is true
    (the 6 arm dims); the gripper (mask false) passes through unchanged. Then, as in OpenVLA, EVERY
    dim with ``min == max`` (constant in the data) is set to 0, masked or not (OpenVLA's
    ``zeros_mask = metadata[key]["min"] == metadata[key]["max"]`` ignores the mask; a dim with
    ``q01 == q99`` but ``min != max`` gets no special case).
    Un-normalised = ``0.5 (a + 1) (q99 - q01) + q01`` where ``mask`` is true, else ``a``, with no
    ``min == max`` case (OpenVLA's ``predict_action``): a constant masked dim un-normalises to its
    constant; a constant UNmasked dim (e.g. a gripper that never moves in the data) was trained on 0
    and passes the predicted value through, as in OpenVLA.
    Proprio = ``observation/state`` float32 [8] (OpenVLA-OFT's ``["EEF_state", "gripper_state"]``;
    OpenVLA itself trains without proprio and stores zeros there). OpenVLA-OFT normalises it with the same
    BOUNDS_Q99 formula on all 8 dims (no mask): in training then with every ``min == max`` dim set to 0
    (``normalize_action_and_proprio``), at evaluation without that step (``experiments/robot/openvla_utils.py``
    ``normalize_proprio``): :func:`normalize_proprio` with ``zero_constant`` True / False.

The stats JSON is OpenVLA's ``dataset_statistics.json`` layout::

    {name: {"action": {"mean", "std", "max", "min", "q01", "q99", "mask"},
            "proprio": {"mean", "std", "max", "min", "q01", "q99"},
            "num_transitions": int, "num_trajectories": int}}

This module does not import TensorFlow at import time: rollout workers use the numpy functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from vlamix.core.constants import ACTION_DIM
from vlamix.core.io import atomic_path, atomic_write_json
from vlamix.data.reader import open_rlds

logger = logging.getLogger(__name__)

#: Which action dims are normalised: the 6 arm dims yes, the gripper no (OpenVLA LIBERO configs).
ACTION_NORMALIZATION_MASK = (True,) * 6 + (False,)
#: Epsilon in the BOUNDS_Q99 denominator (OpenVLA).
NORM_EPS = 1e-8
#: Identifies the statistics recipe; part of the cache key, so changing the recipe invalidates caches.
STATS_RECIPE = "vlamix-stats-v2;libero_dataset_transform;proprio=observation/state[8];np.quantile-linear;finite-rows"
#: Name of the environment variable that overrides the fallback cache folder.
CACHE_ENV = "VLAMIX_CACHE_DIR"


# ---------------------------------------------------------------------------------------- transform
def libero_transform_actions(actions: np.ndarray) -> np.ndarray:
    """OpenVLA's ``libero_dataset_transform`` on actions: RLDS space -> model space.

    Args:
        actions: float [..., 7], gripper -1 (open) ... +1 (close).
    Returns:
        float32 [..., 7]: arm dims unchanged; gripper ``1 - clip(g, 0, 1)`` (1 = open, 0 = close).
    Raises:
        ValueError: last dim is not 7.
    """
    a = np.asarray(actions, dtype=np.float32)
    _check_action_dim(a)
    out = a.copy()
    out[..., -1] = 1.0 - np.clip(a[..., -1], 0.0, 1.0)
    return out


# ---------------------------------------------------------------------------------------- statistics
def compute_stats(
    actions: np.ndarray,
    proprio: np.ndarray,
    num_trajectories: int,
    mask: tuple[bool, ...] = ACTION_NORMALIZATION_MASK,
) -> dict[str, Any]:
    """Statistics of one dataset in OpenVLA's layout (the value under the dataset name).

    Args:
        actions: float [N, 7] model-space actions of all N transitions.
        proprio: float [N, P] proprio of the same transitions.
        num_trajectories: number of episodes the transitions came from.
        mask: action normalisation mask stored with the action stats.
    Returns:
        ``{"action": {mean, std, max, min, q01, q99, mask}, "proprio": {...}, "num_transitions",
        "num_trajectories"}`` with lists of Python floats (JSON-able). Quantiles: ``np.quantile``
        (linear interpolation), as in OpenVLA. Transitions with a NaN/Inf value are left out of
        the moments (logged), so one corrupt step cannot turn the norm stats into NaN;
        ``num_transitions`` still counts every transition.
    Raises:
        ValueError: no transitions, every transition non-finite, or mismatching shapes.
    """
    actions = np.asarray(actions, dtype=np.float32)
    proprio = np.asarray(proprio, dtype=np.float32)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f"actions must be a non-empty [N, {ACTION_DIM}] array, got shape {list(actions.shape)}")
    _check_action_dim(actions)
    if proprio.ndim != 2 or proprio.shape[0] != actions.shape[0]:
        raise ValueError(f"proprio must be [N={actions.shape[0]}, P], got shape {list(proprio.shape)}")
    if len(mask) != ACTION_DIM:
        raise ValueError(f"mask must have {ACTION_DIM} entries, got {len(mask)}")
    finite = np.isfinite(actions).all(axis=1) & np.isfinite(proprio).all(axis=1)
    if not finite.all():
        logger.warning("statistics skip %d of %d transitions with a NaN/Inf action or proprio value",
                       int((~finite).sum()), int(finite.size))
        if not finite.any():
            raise ValueError("every transition has a NaN/Inf action or proprio value")
        actions, proprio = actions[finite], proprio[finite]
    action_stats = _moments(actions)
    action_stats["mask"] = [bool(m) for m in mask]
    return {
        "action": action_stats,
        "proprio": _moments(proprio),
        "num_transitions": int(finite.size),
        "num_trajectories": int(num_trajectories),
    }


def _moments(x: np.ndarray) -> dict[str, list[float]]:
    return {
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "max": x.max(0).tolist(),
        "min": x.min(0).tolist(),
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
    }


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of one RLDS dataset plus the per-episode lengths computed in the same pass.

    Attributes:
        name: dataset name (folder name, e.g. ``libero_spatial_no_noops``).
        stats: OpenVLA per-dataset statistics (see module docstring).
        episode_lengths: int64 [num_episodes] steps per episode, in stored order.
        stats_file: path of the cached ``dataset_statistics_<hash>.json``.
        computed: True if this call computed them (False: read from the cache).
        instructions: language instruction of every episode (first step's), stored order.
        actions: float32 [num_transitions, 7] raw RLDS actions of all episodes concatenated in
            stored order (gripper -1 open / +1 close); episode ``i`` is rows
            ``episode_offsets[i]:episode_offsets[i + 1]``. Used by the action filters.
    """

    name: str
    stats: dict[str, Any]
    episode_lengths: np.ndarray
    stats_file: str
    computed: bool
    instructions: tuple[str, ...] = ()
    actions: np.ndarray | None = None

    @property
    def episode_offsets(self) -> np.ndarray:
        """int64 [num_episodes + 1]: row of each episode's first step in :attr:`actions` (and the end)."""
        return np.concatenate([[0], np.cumsum(self.episode_lengths)]).astype(np.int64)


def default_cache_dir() -> str:
    """Fallback cache folder for read-only data folders: ``$VLAMIX_CACHE_DIR`` or ``~/.cache/vlamix``."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "vlamix")


def dataset_stats(path: str | os.PathLike, name: str | None = None, *, cache_dir: str | None = None) -> DatasetStats:
    """Load the cached statistics of the RLDS dataset at ``path``, or compute and cache them.

    The cache key is a hash of the dataset's files (:meth:`vlamix.data.reader.RLDSDataset.files_hash`)
    and of :data:`STATS_RECIPE`, so a re-recorded dataset (or a new recipe) is never served stale
    statistics. Cache files: ``<version dir>/dataset_statistics_<key>.json`` (OpenVLA layout) and
    ``<version dir>/episodes_<key>.npz`` (episode lengths, instructions, raw actions); if the version folder is not writable they go to
    ``<cache_dir>/dataset_statistics/<name>_<key>/`` (default :func:`default_cache_dir`).

    Args:
        path: ``<root>/<name>/1.0.0`` (or ``<root>/<name>``).
        name: key of the statistics (default: the dataset folder name).
        cache_dir: fallback cache folder.
    Raises:
        FileNotFoundError: not an RLDS dataset folder.
        ValueError: the dataset has no episodes / no steps.
    """
    dataset = open_rlds(path)
    name = name or dataset.name
    key = _cache_key(dataset.files_hash())
    fallback = os.path.join(cache_dir or default_cache_dir(), "dataset_statistics", f"{name}_{key}")
    for folder in (dataset.path, fallback):
        stats_file = os.path.join(folder, f"dataset_statistics_{key}.json")
        table_file = os.path.join(folder, f"episodes_{key}.npz")
        if os.path.isfile(stats_file) and os.path.isfile(table_file):
            try:
                stats = _read_stats(stats_file, name)
                with np.load(table_file, allow_pickle=False) as table:
                    lengths = table["episode_lengths"].astype(np.int64)
                    instructions = tuple(str(x) for x in table["instructions"])
                    actions = table["actions"].astype(np.float32)
            except (OSError, ValueError, KeyError) as err:
                logger.warning("ignoring unreadable statistics cache %s: %s", stats_file, err)
                continue
            if (
                lengths.shape[0] == dataset.num_episodes == len(instructions)
                and int(lengths.sum()) == stats["num_transitions"] == actions.shape[0]
            ):
                logger.info("loaded dataset statistics of %s from %s", name, stats_file)
                return DatasetStats(name, stats, lengths, stats_file, False, instructions, actions)
            logger.warning("statistics cache %s does not match the dataset; recomputing", stats_file)

    stats, lengths, instructions, actions = _compute_dataset_stats(dataset)
    for folder in (dataset.path, fallback):
        stats_file = os.path.join(folder, f"dataset_statistics_{key}.json")
        try:
            if not _dir_writable(folder):
                raise PermissionError(f"{folder} is not writable")
            _write_npz_atomic(
                os.path.join(folder, f"episodes_{key}.npz"),
                episode_lengths=lengths, instructions=np.asarray(instructions, dtype=str), actions=actions,
            )
            _write_json_atomic(stats_file, {name: stats})
        except OSError as err:
            logger.info("cannot cache statistics in %s (%s); trying the fallback cache folder", folder, err)
            continue
        logger.info("computed dataset statistics of %s -> %s", name, stats_file)
        return DatasetStats(name, stats, lengths, stats_file, True, instructions, actions)
    raise OSError(f"could not write the statistics of {name} to {dataset.path} nor to {fallback}")


def load_or_compute_stats(path: str | os.PathLike, name: str | None = None, *, cache_dir: str | None = None) -> dict:
    """The OpenVLA per-dataset statistics of the RLDS dataset at ``path`` (see :func:`dataset_stats`)."""
    return dataset_stats(path, name, cache_dir=cache_dir).stats


def _compute_dataset_stats(dataset) -> tuple[dict[str, Any], np.ndarray, tuple[str, ...], np.ndarray]:
    """One pass over all episodes (images not decoded): statistics, lengths, instructions, raw actions."""
    if dataset.num_episodes == 0:
        raise ValueError(f"RLDS dataset {dataset.name} at {dataset.path} has no episodes")
    ds = dataset.trajectories().map(
        lambda ep: {
            "action": ep["steps"]["action"],
            "state": ep["steps"]["observation"]["state"],
            "instruction": ep["steps"]["language_instruction"][:1],
        }
    )
    actions, proprio, lengths, instructions = [], [], [], []
    for episode in ds.as_numpy_iterator():
        actions.append(episode["action"])
        proprio.append(episode["state"])
        lengths.append(episode["action"].shape[0])
        first = episode["instruction"]
        instructions.append(first[0].decode("utf-8").lower() if len(first) else "")
    if sum(lengths) == 0:
        raise ValueError(f"RLDS dataset {dataset.name} at {dataset.path} has no steps")
    raw = np.concatenate(actions).astype(np.float32)
    stats = compute_stats(libero_transform_actions(raw), np.concatenate(proprio), num_trajectories=len(lengths))
    return stats, np.asarray(lengths, dtype=np.int64), tuple(instructions), raw


def _cache_key(files_hash: str) -> str:
    return hashlib.sha256(f"{STATS_RECIPE}\0{files_hash}".encode()).hexdigest()[:16]


def _dir_writable(folder: str) -> bool:
    """True if ``folder`` exists (or can be created) and is writable by this process."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _write_json_atomic(path: str, payload: Any) -> None:
    atomic_write_json(path, payload)


def _write_npz_atomic(path: str, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _read_stats(path: str, name: str) -> dict[str, Any]:
    with open(path) as fh:
        data = json.load(fh)
    if name in data:
        return data[name]
    if len(data) == 1:  # dataset folder renamed since the cache was written
        return next(iter(data.values()))
    raise KeyError(f"{path} holds statistics for {sorted(data)}, not '{name}'")


def save_dataset_statistics(stats_by_name: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write ``{name: stats}`` as OpenVLA's ``dataset_statistics.json`` (e.g. into a checkpoint folder)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write_json_atomic(os.path.abspath(path), {k: dict(v) for k, v in stats_by_name.items()})
    return path


# ---------------------------------------------------------------------------------------- (un)normalise
def _action_stats(stats: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a per-dataset entry (with ``"action"``) or the action statistics themselves."""
    action = stats["action"] if "action" in stats else stats
    if "q01" not in action or "q99" not in action:
        raise ValueError(f"action statistics need 'q01' and 'q99' (and usually 'mask'); got keys {sorted(action)}")
    return action


def action_bounds(stats: Mapping[str, Any], dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The BOUNDS_Q99 parameters of a dataset's action statistics.

    Args:
        stats: per-dataset statistics (``{"action": {...}}``) or the action statistics themselves.
        dtype: dtype of the returned bounds.
    Returns:
        ``(q01, q99, mask, constant)``: bounds [7] of ``dtype``; ``mask`` bool [7] (default all true,
        as in OpenVLA); ``constant`` bool [7] = dims with ``min == max``, masked or not (normalised to 0:
        ``prismatic/vla/datasets/rlds/utils/data_utils.py::normalize_action_and_proprio``).
    Raises:
        ValueError: q01/q99 missing or not 7 entries.
    """
    action = _action_stats(stats)
    q01 = np.asarray(action["q01"], dtype=dtype)
    q99 = np.asarray(action["q99"], dtype=dtype)
    mask = np.asarray(action.get("mask", [True] * ACTION_DIM), dtype=bool)
    if not q01.shape == q99.shape == mask.shape == (ACTION_DIM,):
        raise ValueError(f"action statistics must have {ACTION_DIM} entries in q01, q99 and mask")
    constant = np.zeros(ACTION_DIM, dtype=bool)
    if "min" in action and "max" in action:
        constant = np.asarray(action["min"], dtype=np.float64) == np.asarray(action["max"], dtype=np.float64)
    return q01, q99, mask, constant


def normalize_actions(actions: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """BOUNDS_Q99-normalise model-space actions: ``clip(2 (a - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)``.

    Args:
        actions: float [..., 7] model-space actions (after :func:`libero_transform_actions`).
        stats: per-dataset statistics (``{"action": {...}}``) or action statistics
            (``q01``, ``q99``, optional ``mask``, optional ``min``/``max``).
    Returns:
        float32 (float64 for float64 input) [..., 7]; unmasked dims unchanged; then every dim with
        ``min == max`` (masked or not) set to 0 (OpenVLA).
    Raises:
        ValueError: last dim is not 7, or the statistics lack q01/q99.
    """
    a = np.asarray(actions)
    dtype = np.float64 if a.dtype == np.float64 else np.float32
    a = a.astype(dtype, copy=False)
    _check_action_dim(a)
    q01, q99, mask, constant = action_bounds(stats, dtype)
    normed = np.clip(2 * (a - q01) / (q99 - q01 + dtype(NORM_EPS)) - 1, -1, 1)
    out = np.where(mask, normed, a)
    return np.where(constant, dtype(0), out).astype(dtype, copy=False)


def unnormalize_actions(actions: np.ndarray, stats: Mapping[str, Any], eps: float = 0.0) -> np.ndarray:
    """Inverse of :func:`normalize_actions` on [-1, 1]: ``0.5 (a + 1) (q99 - q01 + eps) + q01`` on masked dims.

    Args:
        actions: float [..., 7] normalised actions (e.g. decoded action-token bin centres).
        stats: as for :func:`normalize_actions`.
        eps: 0 for OpenVLA's ``predict_action``; :data:`NORM_EPS` for OpenVLA-OFT's ``_unnormalize_actions``.
    Returns:
        float32 (float64 for float64 input) [..., 7] model-space actions (gripper 1 open / 0 close).
    """
    a = np.asarray(actions)
    dtype = np.float64 if a.dtype == np.float64 else np.float32
    a = a.astype(dtype, copy=False)
    _check_action_dim(a)
    q01, q99, mask, _ = action_bounds(stats, dtype)
    return np.where(mask, 0.5 * (a + 1) * (q99 - q01 + dtype(eps)) + q01, a).astype(dtype, copy=False)


def proprio_bounds(stats: Mapping[str, Any], dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The BOUNDS_Q99 parameters of a dataset's proprio statistics (``stats["proprio"]``).

    Returns:
        ``(q01, q99, mask, constant)`` [P]: bounds of ``dtype``; ``mask`` bool (all true unless the stats carry one,
        as OpenVLA-OFT: proprio stats have no mask); ``constant`` bool = dims with ``min == max``.
    Raises:
        ValueError: no proprio statistics, or q01/q99 of different lengths.
    """
    proprio = stats.get("proprio") if isinstance(stats, Mapping) else None
    if not proprio or "q01" not in proprio or "q99" not in proprio:
        raise ValueError(f"the statistics have no proprio q01/q99 (keys: {sorted(stats)})")
    q01 = np.asarray(proprio["q01"], dtype=dtype)
    q99 = np.asarray(proprio["q99"], dtype=dtype)
    mask = np.asarray(proprio.get("mask", [True] * q01.shape[0]), dtype=bool)
    if not q01.shape == q99.shape == mask.shape or q01.ndim != 1:
        raise ValueError(f"proprio statistics: q01 {q01.shape}, q99 {q99.shape} and mask {mask.shape} "
                         "must be equal 1-D")
    constant = np.zeros(q01.shape, dtype=bool)
    if "min" in proprio and "max" in proprio:
        constant = np.asarray(proprio["min"], dtype=np.float64) == np.asarray(proprio["max"], dtype=np.float64)
    return q01, q99, mask, constant


def normalize_proprio(state: np.ndarray, stats: Mapping[str, Any], *, zero_constant: bool) -> np.ndarray:
    """BOUNDS_Q99-normalise proprio: ``clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)`` on every (masked) dim.

    Args:
        state: float [..., P] raw proprio (``observation/state``: EEF pos, axis-angle, gripper qpos; P = 8).
        stats: per-dataset statistics with ``"proprio"`` (see the module docstring).
        zero_constant: set dims with ``min == max`` to 0 afterwards: True in training (OpenVLA-OFT
            ``normalize_action_and_proprio``), False at evaluation (OFT ``normalize_proprio`` has no such step).
    Returns:
        float32 (float64 for float64 input) [..., P].
    Raises:
        ValueError: the last dim differs from the statistics', or no proprio statistics.
    """
    x = np.asarray(state)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(dtype, copy=False)
    q01, q99, mask, constant = proprio_bounds(stats, dtype)
    if x.ndim == 0 or x.shape[-1] != q01.shape[0]:
        raise ValueError(f"proprio must have last dimension {q01.shape[0]}, got shape {list(x.shape)}")
    out = np.where(mask, np.clip(2 * (x - q01) / (q99 - q01 + dtype(NORM_EPS)) - 1, -1, 1), x)
    if zero_constant:
        out = np.where(constant, dtype(0), out)
    return out.astype(dtype, copy=False)


def _check_action_dim(a: np.ndarray) -> None:
    if a.ndim == 0 or a.shape[-1] != ACTION_DIM:
        raise ValueError(f"actions must have last dimension {ACTION_DIM} (xyz, rpy, gripper), got shape {list(a.shape)}")
