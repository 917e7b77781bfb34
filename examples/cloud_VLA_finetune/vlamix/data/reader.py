"""Open an RLDS dataset folder (ours or the real ``modified_libero_rlds``), count and iterate episodes.

Usage::

    from vlamix.data.reader import open_rlds
    ds = open_rlds("workspace/data/libero_rlds/libero_spatial_no_noops/1.0.0")
    ds.num_episodes, ds.num_frames            # frames need one pass without image decoding
    for episode in ds.episodes(stop=2):       # numpy, same keys as the writer's input
        episode["image"].shape                # uint8 [T, 256, 256, 3]

The folder is read with ``tfds.builder_from_directory``; nothing here depends on how it was written,
so the real dataset (whose tfds name, e.g. ``libero_spatial``, differs from its folder name
``libero_spatial_no_noops``) works unchanged. The dataset *name* used everywhere in vlamix (norm
stats keys, mixture weights) is the folder name, as in OpenVLA.

TensorFlow is imported lazily and kept off the GPU (:func:`vlamix.data._tf.import_tf`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Iterator

import numpy as np

from vlamix.data._tf import import_tf
from vlamix.data.rlds_spec import VERSION

logger = logging.getLogger(__name__)

#: Files of the version folder that are not part of the dataset (caches written beside it).
CACHE_FILE_PREFIXES = ("dataset_statistics_", "episodes_", ".")
_HASH_CHUNK = 1 << 16


def resolve_version_dir(path: str | os.PathLike) -> str:
    """Return the version folder for ``path`` = ``<root>/<name>/1.0.0`` or ``<root>/<name>``.

    Raises:
        FileNotFoundError: the folder does not exist, or holds no ``dataset_info.json`` (also not
            in a ``1.0.0`` sub-folder).
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"RLDS dataset folder not found: {path}")
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        return path
    candidate = os.path.join(path, VERSION)
    if os.path.isfile(os.path.join(candidate, "dataset_info.json")):
        return candidate
    raise FileNotFoundError(
        f"{path} is not an RLDS dataset: no dataset_info.json in it or in {VERSION}/ "
        f"(expected layout <data_dir>/<name>/{VERSION}/dataset_info.json)"
    )


class RLDSDataset:
    """One RLDS dataset on disk (a tfds version folder).

    Attributes:
        path: absolute version folder ``<root>/<name>/1.0.0``.
        name: dataset name = the folder above the version folder (``libero_spatial_no_noops``).
        builder: the ``tfds`` read-only builder.
        num_episodes: episodes in the ``train`` split (the only split of these datasets).
    """

    def __init__(self, path: str | os.PathLike):
        _, tfds = import_tf()
        self.path = resolve_version_dir(path)
        self.name = os.path.basename(os.path.dirname(self.path))
        self.builder = tfds.builder_from_directory(self.path)
        splits = self.builder.info.splits
        if "train" not in splits:
            raise ValueError(f"RLDS dataset {self.path} has no 'train' split (splits: {list(splits)})")
        self.num_episodes = int(splits["train"].num_examples)
        self._episode_lengths: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"RLDSDataset(name={self.name!r}, episodes={self.num_episodes}, path={self.path!r})"

    # ------------------------------------------------------------------ tf.data access
    def trajectories(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        shuffle_files: bool = False,
        seed: int | None = None,
        decode_images: bool = False,
        with_episode_index: bool = False,
    ):
        """``tf.data.Dataset`` of episodes ``[start, stop)`` in stored order, one element per episode.

        Each element is the RLDS episode with its steps as batched tensors (dlimp-style trajectory):
        ``steps/observation/image`` string [T] (JPEG bytes) or uint8 [T, 256, 256, 3] with
        ``decode_images``; ``steps/action`` float32 [T, 7]; ...; ``episode_metadata/file_path`` string [].
        With ``with_episode_index`` an int64 ``episode_index`` (position in the stored order) is added.

        Args:
            start, stop: episode slice of the stored order (``stop`` None = to the end).
            shuffle_files: read the tfrecord shards in a random order (seeded; reshuffled each
                epoch when the dataset is repeated).
            seed: file-shuffle seed.
        Raises:
            ValueError: an empty or out-of-range slice.
        """
        tf, tfds = _tf()
        stop = self.num_episodes if stop is None else stop
        if not 0 <= start < stop <= self.num_episodes:
            raise ValueError(f"episode slice [{start}, {stop}) is empty or outside [0, {self.num_episodes}] of {self.name}")
        decoders = None if decode_images else {"steps": tfds.decode.SkipDecoding()}
        read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=with_episode_index)
        ds = self.builder.as_dataset(
            split=f"train[{start}:{stop}]", shuffle_files=shuffle_files, decoders=decoders, read_config=read_config
        )
        if decode_images:

            def steps_to_trajectory(episode):  # nested steps Dataset -> batched [T, ...] tensors
                batched = episode["steps"].batch(2**31 - 1)
                return {**episode, "steps": tf.data.Dataset.get_single_element(batched)}

            ds = ds.map(steps_to_trajectory)
        if with_episode_index:
            ds = ds.map(self._episode_index_fn())
        return ds

    def _episode_index_fn(self):
        """Map ``tfds_id`` (``<shard file>__<index in shard>``) to the episode's stored position."""
        tf, _ = _tf()
        split = self.builder.info.splits["train"]
        offsets, names = [], []
        offset = 0
        for filename, length in zip(split.filenames, split.shard_lengths):
            names.append(os.path.basename(filename))
            offsets.append(offset)
            offset += int(length)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.constant(offsets, tf.int64)), default_value=-1
        )

        def fn(episode):
            episode = dict(episode)
            parts = tf.strings.split(episode.pop("tfds_id"), "__")
            index = table.lookup(parts[0]) + tf.strings.to_number(parts[1], tf.int64)
            episode["episode_index"] = index
            return episode

        return tf.autograph.experimental.do_not_convert(fn)  # TF ops only: nothing for AutoGraph to convert

    # ------------------------------------------------------------------ numpy access
    def episodes(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Iterate episodes ``[start, stop)`` in stored order as numpy dicts (images decoded).

        Yields:
            ``image``, ``wrist_image`` uint8 [T, 256, 256, 3]; ``state`` float32 [T, 8];
            ``joint_state`` float32 [T, 7]; ``action`` float32 [T, 7] (raw, gripper -1 open / +1 close);
            ``discount``, ``reward`` float32 [T]; ``is_first``, ``is_last``, ``is_terminal`` bool [T];
            ``language_instruction`` str (first step's); ``file_path`` str; ``episode_index`` int.
        """
        if self.num_episodes == 0:
            return
        ds = self.trajectories(start, stop, decode_images=True)
        for index, episode in enumerate(ds.as_numpy_iterator(), start=start):
            steps = episode["steps"]
            obs = steps["observation"]
            instructions = steps["language_instruction"]
            yield {
                "image": obs["image"],
                "wrist_image": obs["wrist_image"],
                "state": obs["state"],
                "joint_state": obs["joint_state"],
                "action": steps["action"],
                "discount": steps["discount"],
                "reward": steps["reward"],
                "is_first": steps["is_first"],
                "is_last": steps["is_last"],
                "is_terminal": steps["is_terminal"],
                "language_instruction": instructions[0].decode("utf-8") if len(instructions) else "",
                "file_path": episode["episode_metadata"]["file_path"].decode("utf-8"),
                "episode_index": index,
            }

    def episode_lengths(self) -> np.ndarray:
        """Steps per episode in stored order: int64 [num_episodes]. One pass without image decoding."""
        if self._episode_lengths is None:
            if self.num_episodes == 0:
                self._episode_lengths = np.zeros(0, np.int64)
            else:
                tf, _ = _tf()
                ds = self.trajectories().map(tf.autograph.experimental.do_not_convert(
                    lambda ep: tf.shape(ep["steps"]["action"], out_type=tf.int64)[0]))
                self._episode_lengths = np.fromiter(ds.as_numpy_iterator(), dtype=np.int64, count=self.num_episodes)
        return self._episode_lengths

    @property
    def num_frames(self) -> int:
        """Total steps over all episodes (one pass without image decoding; cached on the object)."""
        return int(self.episode_lengths().sum())

    def files_hash(self) -> str:
        """Fingerprint of the dataset's files (names, sizes, first and last 64 KiB of each).

        Cheap even for multi-GB datasets, unchanged by copying, and different for a re-recorded
        dataset (new JPEG bytes). Cache files written beside the data are excluded.
        """
        digest = hashlib.sha256()
        for entry in sorted(os.listdir(self.path)):
            full = os.path.join(self.path, entry)
            if entry.startswith(CACHE_FILE_PREFIXES) or not os.path.isfile(full):
                continue
            size = os.path.getsize(full)
            digest.update(f"{entry}\0{size}\0".encode())
            with open(full, "rb") as fh:
                digest.update(fh.read(_HASH_CHUNK))
                if size > _HASH_CHUNK:
                    fh.seek(max(_HASH_CHUNK, size - _HASH_CHUNK))
                    digest.update(fh.read(_HASH_CHUNK))
        return digest.hexdigest()[:20]

    def info(self) -> dict[str, Any]:
        """Small JSON-able summary from ``dataset_info.json`` (no data pass)."""
        with open(os.path.join(self.path, "dataset_info.json")) as fh:
            raw = json.load(fh)
        return {
            "name": self.name,
            "tfds_name": raw.get("name"),
            "version": raw.get("version"),
            "path": self.path,
            "num_episodes": self.num_episodes,
            "num_shards": len(self.builder.info.splits["train"].shard_lengths),
        }


def open_rlds(path: str | os.PathLike) -> RLDSDataset:
    """Open ``<root>/<name>/1.0.0`` (or ``<root>/<name>``) as an :class:`RLDSDataset`.

    Raises:
        FileNotFoundError: missing folder or not an RLDS dataset.
        ValueError: the dataset has no ``train`` split.
    """
    return RLDSDataset(path)


def _tf():
    return import_tf()

