"""Feature spec of ``openvla/modified_libero_rlds``: the single source of truth for our RLDS data.

Source: the LIBERO builders of ``moojink/rlds_dataset_builder`` (``LIBERO_Spatial_dataset_builder.py``
and its siblings), which wrote the RLDS datasets that OpenVLA was fine-tuned on. One episode is::

    steps: Dataset of
        observation/image        uint8 [256, 256, 3], JPEG   agent-view camera, rotated 180 degrees
        observation/wrist_image  uint8 [256, 256, 3], JPEG   wrist camera, rotated 180 degrees
        observation/state        float32 [8]   EEF position (3) + axis-angle (3) + gripper qpos (2)
        observation/joint_state  float32 [7]   arm joint angles (rad)
        action                   float32 [7]   EEF delta xyz (3) + delta roll-pitch-yaw (3) + gripper
                                               (1; -1 open, +1 close)
        discount                 float32 []    1
        reward                   float32 []    1 on the last step, else 0
        is_first / is_last / is_terminal  bool []   RLDS flags (terminal = last for demos)
        language_instruction     Text          task instruction
    episode_metadata/file_path   Text          source file of the episode

Datasets are named ``<suite>_no_noops`` (:data:`vlamix.core.constants.DATASET_TO_SUITE`), version
``1.0.0``, stored as ``<root>/<name>/1.0.0/{dataset_info.json, features.json, *.tfrecord-*}``.

This module imports TensorFlow only inside :func:`features`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vlamix.core.constants import ACTION_DIM, DATASET_TO_SUITE, RLDS_IMAGE_SIZE, RLDS_VERSION
from vlamix.data._tf import import_tf

#: Shape of both camera images in the RLDS data (pixels, RGB).
IMAGE_SHAPE = (RLDS_IMAGE_SIZE, RLDS_IMAGE_SIZE, 3)
#: ``observation/state``: EEF position (3) + axis-angle (3) + gripper joint positions (2).
STATE_DIM = 8
#: ``observation/joint_state``: the 7 arm joint angles.
JOINT_STATE_DIM = 7
#: Name suffix of the LIBERO datasets with no-op actions removed.
NAME_SUFFIX = "_no_noops"
#: Version folder of every dataset.
VERSION = RLDS_VERSION

#: Per-step array fields of the writer's episode format: key -> (RLDS feature path, dtype, shape per step).
EPISODE_ARRAYS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "image": ("observation/image", "uint8", IMAGE_SHAPE),
    "wrist_image": ("observation/wrist_image", "uint8", IMAGE_SHAPE),
    "state": ("observation/state", "float32", (STATE_DIM,)),
    "joint_state": ("observation/joint_state", "float32", (JOINT_STATE_DIM,)),
    "action": ("action", "float32", (ACTION_DIM,)),
}
#: Per-episode text fields of the writer's episode format: key -> RLDS feature path.
EPISODE_TEXTS: dict[str, str] = {
    "language_instruction": "steps/language_instruction",
    "file_path": "episode_metadata/file_path",
}
#: Per-step fields derived by the writer (not part of its input): key -> (dtype, meaning).
DERIVED_STEP_FIELDS: dict[str, tuple[str, str]] = {
    "discount": ("float32", "1 on every step"),
    "reward": ("float32", "1 on the last step, else 0"),
    "is_first": ("bool", "True on the first step"),
    "is_last": ("bool", "True on the last step"),
    "is_terminal": ("bool", "True on the last step (demonstrations end in success)"),
}


def dataset_name(suite: str) -> str:
    """RLDS dataset name of a LIBERO task suite: ``libero_spatial`` -> ``libero_spatial_no_noops``."""
    return f"{suite}{NAME_SUFFIX}"


def suite_of(name: str) -> str:
    """LIBERO task suite of a dataset name.

    Raises:
        ValueError: ``name`` is not one of :data:`vlamix.core.constants.DATASET_TO_SUITE`.
    """
    if name not in DATASET_TO_SUITE:
        raise ValueError(f"unknown dataset '{name}'; allowed: {', '.join(DATASET_TO_SUITE)}")
    return DATASET_TO_SUITE[name]


def features():
    """The ``tfds.features.FeaturesDict`` of ``modified_libero_rlds`` (same keys, dtypes, docs)."""
    _, tfds = import_tf()
    F = tfds.features
    return F.FeaturesDict(
        {
            "steps": F.Dataset(
                {
                    "observation": F.FeaturesDict(
                        {
                            "image": F.Image(
                                shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg", doc="Main camera RGB observation."
                            ),
                            "wrist_image": F.Image(
                                shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg", doc="Wrist camera RGB observation."
                            ),
                            "state": F.Tensor(
                                shape=(STATE_DIM,), dtype=np.float32, doc="Robot EEF state (6D pose, 2D gripper)."
                            ),
                            "joint_state": F.Tensor(shape=(JOINT_STATE_DIM,), dtype=np.float32, doc="Robot joint angles."),
                        }
                    ),
                    "action": F.Tensor(shape=(ACTION_DIM,), dtype=np.float32, doc="Robot EEF action."),
                    "discount": F.Scalar(dtype=np.float32, doc="Discount if provided, default to 1."),
                    "reward": F.Scalar(dtype=np.float32, doc="Reward if provided, 1 on final step for demos."),
                    "is_first": F.Scalar(dtype=np.bool_, doc="True on first step of the episode."),
                    "is_last": F.Scalar(dtype=np.bool_, doc="True on last step of the episode."),
                    "is_terminal": F.Scalar(
                        dtype=np.bool_, doc="True on last step of the episode if it is a terminal step, True for demos."
                    ),
                    "language_instruction": F.Text(doc="Language Instruction."),
                }
            ),
            "episode_metadata": F.FeaturesDict({"file_path": F.Text(doc="Path to the original data file.")}),
        }
    )


def validate_episode(episode: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """Check one episode of the writer's input format and return it with exact dtypes.

    Args:
        episode: ``image``/``wrist_image`` uint8 [T, 256, 256, 3], ``state`` float32 [T, 8],
            ``joint_state`` float32 [T, 7], ``action`` float32 [T, 7] (gripper -1 open / +1 close),
            ``language_instruction`` str, ``file_path`` str. Float arrays of another float dtype are
            cast to float32; images must already be uint8.
        index: position of the episode in its stream, used in error messages.
    Returns:
        A new dict with the same keys, arrays as contiguous numpy arrays of the spec dtypes.
    Raises:
        ValueError: a key is missing, a shape/dtype is wrong, lengths differ, T == 0, a float is
            not finite, or a text field is empty / not a string. The message names the field.
    """
    where = f"episode {index}"
    if not isinstance(episode, Mapping):
        keys = sorted([*EPISODE_ARRAYS, *EPISODE_TEXTS])
        raise ValueError(f"{where}: must be a mapping with keys {keys}, got {type(episode).__name__}")
    missing = [k for k in (*EPISODE_ARRAYS, *EPISODE_TEXTS) if k not in episode]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    out: dict[str, Any] = {}
    length = None
    for key, (_, dtype, shape) in EPISODE_ARRAYS.items():
        arr = np.asarray(episode[key])
        if dtype == "uint8":
            if arr.dtype != np.uint8:
                raise ValueError(f"{where}: field '{key}' must be uint8, got {arr.dtype}")
        else:
            if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{where}: field '{key}' must be a float array, got {arr.dtype}")
            arr = arr.astype(np.float32)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{where}: field '{key}' has non-finite values")
        if arr.ndim != 1 + len(shape) or tuple(arr.shape[1:]) != shape:
            raise ValueError(f"{where}: field '{key}' must have shape [T, {', '.join(map(str, shape))}], got {list(arr.shape)}")
        if length is None:
            length = arr.shape[0]
        elif arr.shape[0] != length:
            raise ValueError(f"{where}: field '{key}' has {arr.shape[0]} steps, 'image' has {length}")
        out[key] = np.ascontiguousarray(arr)
    if length == 0:
        raise ValueError(f"{where}: has 0 steps; an episode needs at least one step")
    for key in EPISODE_TEXTS:
        value = episode[key]
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: field '{key}' must be a non-empty str, got {value!r}")
        out[key] = value
    return out


def to_rlds_example(episode: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a validated episode (see :func:`validate_episode`) to the nested RLDS example dict.

    Adds the derived per-step fields: discount 1, reward 1 on the last step, is_first, is_last and
    is_terminal (= is_last), as ``moojink/rlds_dataset_builder`` does for demonstrations.
    """
    length = episode["action"].shape[0]
    last = np.arange(length) == length - 1
    return {
        "steps": {
            "observation": {
                "image": episode["image"],
                "wrist_image": episode["wrist_image"],
                "state": episode["state"],
                "joint_state": episode["joint_state"],
            },
            "action": episode["action"],
            "discount": np.ones(length, np.float32),
            "reward": last.astype(np.float32),
            "is_first": np.arange(length) == 0,
            "is_last": last,
            "is_terminal": last.copy(),
            "language_instruction": [episode["language_instruction"]] * length,
        },
        "episode_metadata": {"file_path": episode["file_path"]},
    }
