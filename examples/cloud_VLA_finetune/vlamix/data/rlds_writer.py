"""Write episodes as an RLDS dataset in the layout of ``openvla/modified_libero_rlds``.

Usage::

    from vlamix.data.rlds_writer import write_rlds
    path = write_rlds(episodes, "workspace/data/libero_rlds", "libero_spatial_no_noops")
    # -> workspace/data/libero_rlds/libero_spatial_no_noops/1.0.0/
    #    {dataset_info.json, features.json, libero_spatial_no_noops-train.tfrecord-00000-of-0000N}

The dataset is built with tensorflow-datasets' ad-hoc ``GeneratorBasedBuilder``
(``tfds.dataset_builders.store_as_tfds_dataset``) and the feature spec of
:mod:`vlamix.data.rlds_spec`, so ``tfds.builder_from_directory(path)`` (and OpenVLA's
``tfds.builder(name, data_dir=root)``) read it exactly like the real data. As in the real data, tfds
orders the stored episodes by a hash of their keys, so the stored order mixes tasks even when the
episodes arrive task by task (the held-out slice of :mod:`vlamix.data.mixture` is the *stored* last
episodes).

The write is atomic: everything goes to a temporary folder under ``root`` and the finished version
folder is renamed into place, so an interrupted write never leaves a dataset that looks complete.
Imports TensorFlow (call it in a process that does not render MuJoCo).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from typing import Any, Iterable, Iterator, Mapping

from vlamix.core.io import atomic_write_json, fault_point
from vlamix.data._tf import import_tf
from vlamix.data.rlds_spec import VERSION, features, to_rlds_example, validate_episode

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def write_rlds(
    episodes: Iterable[Mapping[str, Any]],
    root: str | os.PathLike,
    name: str,
    *,
    overwrite: bool = False,
    description: str | None = None,
    num_shards: int | None = None,
    extra_json: Mapping[str, Any] | None = None,
) -> str:
    """Write ``episodes`` to ``<root>/<name>/1.0.0/`` as an RLDS (tfds) dataset; return that path.

    Args:
        episodes: iterable (streamed, not held in memory by us) of episodes in the format of
            :func:`vlamix.data.rlds_spec.validate_episode`: ``image``, ``wrist_image`` uint8
            [T, 256, 256, 3]; ``state`` float32 [T, 8]; ``joint_state`` float32 [T, 7]; ``action``
            float32 [T, 7] (gripper -1 open / +1 close); ``language_instruction`` str; ``file_path`` str.
            Reward (1 on the last step), discount (1) and the RLDS flags are derived.
        root: folder that holds datasets (``BenchConfig.data_dir``); created if missing.
        name: dataset name, e.g. ``libero_spatial_no_noops`` (lower-case letters, digits, ``_``).
        overwrite: replace an existing ``<root>/<name>/1.0.0``; otherwise that is an error.
        description: free text stored in ``dataset_info.json``.
        num_shards: number of tfrecord shards (default: tfds decides from the size, 64 MiB - 1 GiB
            per shard); more shards let readers interleave files in parallel.
        extra_json: file name -> JSON payload written into the version folder before it is renamed
            into place, so those files exist exactly when the dataset does (e.g. ``recording.json``).
    Returns:
        Absolute path of the version folder.
    Raises:
        ValueError: bad ``name``, no episodes, or an invalid episode (the message names the
            episode index and field).
        FileExistsError: the version folder exists and ``overwrite`` is False.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"dataset name must match {_NAME_RE.pattern} (e.g. 'libero_spatial_no_noops'), got {name!r}")
    if num_shards is not None and (isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1):
        raise ValueError(f"num_shards must be an integer >= 1 or None, got {num_shards!r}")
    root = os.path.abspath(os.fspath(root))
    target = os.path.join(root, name, VERSION)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"RLDS dataset already exists at {target}; pass overwrite=True to replace it")
    os.makedirs(os.path.join(root, name), exist_ok=True)

    _, tfds = import_tf()
    counter = {"episodes": 0, "steps": 0}
    tmp = tempfile.mkdtemp(prefix=f".{name}.{VERSION}.writing-", dir=os.path.join(root, name))
    try:
        tfds.dataset_builders.store_as_tfds_dataset(
            name=name,
            version=VERSION,
            features=features(),
            split_datasets={"train": _examples(episodes, counter)},
            data_dir=tmp,
            description=description or f"{name}: LIBERO demonstrations in the modified_libero_rlds format (vlamix).",
            release_notes={VERSION: "Written by vlamix.data.rlds_writer."},
            download_config=tfds.download.DownloadConfig(num_shards=num_shards),
        )
        built = os.path.join(tmp, name, VERSION)
        if not os.path.isfile(os.path.join(built, "dataset_info.json")):
            raise RuntimeError(f"tensorflow-datasets did not produce {built}/dataset_info.json")
        for file_name, payload in (extra_json or {}).items():
            atomic_write_json(os.path.join(built, file_name), payload, sort_keys=True)
        fault_point("rlds:built")  # tests: a kill here must leave no dataset that reads as finished
        if os.path.exists(target):  # overwrite: move the old version aside first, then swap
            os.rename(target, os.path.join(tmp, "replaced"))
        os.rename(built, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote RLDS dataset %s: %d episodes, %d steps -> %s", name, counter["episodes"], counter["steps"], target)
    return target


def _examples(episodes: Iterable[Mapping[str, Any]], counter: dict[str, int]) -> Iterator[tuple[str, dict]]:
    """Yield ``(key, RLDS example)`` pairs; keys are unique per call (index + source file)."""
    for index, episode in enumerate(episodes):
        clean = validate_episode(episode, index)
        counter["episodes"] += 1
        counter["steps"] += clean["action"].shape[0]
        yield f"{index:07d}:{clean['file_path']}", to_rlds_example(clean)
    if counter["episodes"] == 0:
        raise ValueError("no episodes to write; an RLDS dataset needs at least one episode")
