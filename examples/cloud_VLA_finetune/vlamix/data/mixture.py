"""Weighted mixture of LIBERO RLDS datasets: the frame stream that fine-tuning reads.

Usage::

    from vlamix.config import BenchConfig
    from vlamix.data.mixture import MixtureLoader

    cfg = BenchConfig.from_dict({"mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1},
                                 "demos": "none", "data_dir": "data/modified_libero_rlds"})
    loader = MixtureLoader(cfg)                  # split="train": endless, shuffled
    batch = loader.next_batch()                  # image uint8 [B,224,224,3], instruction list[str], action float32 [B,7]
    loader.realised_proportions()                # {"libero_spatial_no_noops": 0.667, ...}
    loader.set_weights({"libero_spatial_no_noops": 1, "libero_object_no_noops": 1})   # between batches
    state = loader.state_dict()                  # resume: MixtureLoader(cfg).load_state_dict(state)
    for batch in MixtureLoader(cfg, split="heldout"):   # one pass over the held-out episodes
        ...

Per dataset (OpenVLA's ``make_dataset_from_rlds`` + ``apply_trajectory_transforms`` +
``apply_frame_transforms``, ``prismatic/vla/datasets/rlds/dataset.py``): episodes (tfrecord shards
read in a seeded random order) -> ``libero_dataset_transform`` -> BOUNDS_Q99 normalisation with *that
dataset's* statistics -> frames -> shuffle buffer (``shuffle_buffer_size`` encoded frames, seeded,
reshuffled every epoch) -> repeat -> JPEG decode + resize 256 -> 224 with ``tf.image.resize(lanczos3,
antialias=True)``, rounded and clipped to uint8 (dlimp ``resize_image``), ``AUTOTUNE`` parallel.
Images stay JPEG-encoded until after the shuffle buffer, so memory does not grow with the dataset.

Mixing: the mixture weights of :class:`vlamix.config.BenchConfig` are normalised and used *as the
frame sampling proportions* (OpenVLA's ``balance_weights`` would multiply them by the dataset sizes
and turn 2:1 into e.g. 0.61:0.39; that is ``balance_by_size=True`` here). :class:`MixtureSampler`
decides the source dataset of every frame in NumPy, so weights can be changed between batches
without rebuilding the tf.data pipelines, and the position in the stream is a small state dict.

Held-out split: the last ``heldout_fraction`` of each dataset's episodes in stored order (at least
one when the fraction is > 0 and the dataset has >= 2 episodes) never enter training; with
``split="heldout"`` they are iterated once, unshuffled, dataset after dataset.

Batches (numpy)::

    image          uint8   [B, S, S, 3]   agent-view RGB (rotated 180 deg as stored), S = image_size (224)
    instruction    list[str] (B)          lower-cased language instruction
    action         float32 [B, 7]         model space (gripper 1 open / 0 close), BOUNDS_Q99-normalised
    dataset_index  int64   [B]            index into ``loader.dataset_names``
    episode_index  int64   [B]            episode position in its dataset's stored order
    step_index     int64   [B]            step within the episode

Imports TensorFlow (kept off the GPU) when a loader is built; never import it in a MuJoCo process.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from vlamix.config import BenchConfig, ConfigError
from vlamix.constants import DATASET_TO_SUITE
from vlamix.data.normalization import NORM_EPS, action_bounds, dataset_stats

logger = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
#: Image side of the model input (pixels); RLDS stores 256.
DEFAULT_IMAGE_SIZE = 224
_STATE_FORMAT = "vlamix.data.MixtureLoader/1"


# ------------------------------------------------------------------------------------------ weights
def heldout_count(num_episodes: int, fraction: float) -> int:
    """Episodes held out of a dataset of ``num_episodes``: ``floor(fraction * n)``, at least 1 when
    ``fraction > 0`` and ``n >= 2``, and always leaving at least one training episode."""
    if fraction <= 0 or num_episodes < 2:
        return 0
    return int(min(max(1, math.floor(fraction * num_episodes + 1e-9)), num_episodes - 1))


def _checked_mixture(mixture: Any) -> dict[str, float]:
    """Validate ``cfg.mixture`` (also for configs built without :meth:`BenchConfig.validate`)."""
    allowed = ", ".join(DATASET_TO_SUITE)
    if not isinstance(mixture, Mapping) or not mixture:
        raise ConfigError("mixture", f"must be a non-empty mapping dataset -> weight; datasets: {allowed}")
    out: dict[str, float] = {}
    for name, weight in mixture.items():
        if name not in DATASET_TO_SUITE:
            raise ConfigError("mixture", f"unknown dataset '{name}'; allowed: {allowed}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError("mixture", f"weight of '{name}' must be a finite number >= 0, got {weight!r}")
        out[name] = float(weight)
    if sum(out.values()) <= 0:
        raise ConfigError("mixture", "all weights are zero; at least one weight must be > 0")
    return out


def mixture_weights(cfg: BenchConfig, frame_counts: Mapping[str, int] | None = None) -> dict[str, float]:
    """Normalised frame sampling proportions of the datasets with non-zero weight (config order).

    With ``cfg.balance_by_size`` each weight is first multiplied by the dataset's number of training
    frames (OpenVLA's ``balance_weights``); ``frame_counts`` supplies them, otherwise they are read
    from the datasets' cached statistics (computed on first use).

    Raises:
        ConfigError: field ``mixture`` (unknown name, bad weight) or ``data_dir`` (missing dataset,
            only when frame counts have to be read).
    """
    raw = {n: w for n, w in _checked_mixture(cfg.mixture).items() if w > 0}
    if cfg.balance_by_size:
        if frame_counts is None:
            frame_counts = {n: _open_split(cfg, n, i)[0].train_frames for i, n in enumerate(raw)}
        missing = [n for n in raw if n not in frame_counts]
        if missing:
            raise ValueError(f"frame_counts lacks datasets {missing}")
        raw = {n: w * float(frame_counts[n]) for n, w in raw.items()}
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError("mixture", "weights times frame counts sum to zero (empty datasets?)")
    return {n: w / total for n, w in raw.items()}


# ------------------------------------------------------------------------------------------ sampler
class MixtureSampler:
    """Deterministic low-discrepancy sampler of source datasets (smooth weighted round robin).

    Every draw adds each dataset's weight to its credit, picks the dataset with the largest credit
    (ties broken by the seeded generator) and takes 1 from its credit. The count of every dataset
    therefore stays within about one frame of ``weight * draws`` at all times (i.i.d. multinomial
    sampling, as in ``tf.data.Dataset.sample_from_datasets``, drifts by ~sqrt(draws)); the order of
    the frames inside each batch is then shuffled with the generator. Changing the weights resets
    the credits, so the new proportions apply from the next draw.

    Args:
        weights: non-negative, not all zero, one per dataset (normalised internally).
        seed: generator seed.
    """

    def __init__(self, weights: Sequence[float], seed: int):
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._weights = self._check(weights)
        self._credit = np.zeros_like(self._weights)
        self._counts = np.zeros(len(self._weights), dtype=np.int64)

    @staticmethod
    def _check(weights: Sequence[float]) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ConfigError("mixture", f"weights must be finite, >= 0 and not all zero, got {list(np.atleast_1d(w))}")
        return w / w.sum()

    @property
    def weights(self) -> np.ndarray:
        """Current normalised weights, float64 [D]."""
        return self._weights.copy()

    @property
    def counts(self) -> np.ndarray:
        """Frames drawn from each dataset so far, int64 [D]."""
        return self._counts.copy()

    def set_weights(self, weights: Sequence[float]) -> None:
        """Use new weights (same number of datasets) from the next draw on."""
        w = self._check(weights)
        if w.shape != self._weights.shape:
            raise ConfigError("mixture", f"expected {self._weights.size} weights, got {w.size}")
        self._weights = w
        self._credit = np.zeros_like(w)

    def draw(self, n: int) -> np.ndarray:
        """Source dataset indices of the next ``n`` frames: int64 [n] (in shuffled order)."""
        out = np.empty(n, dtype=np.int64)
        for i in range(n):
            self._credit += self._weights
            best = np.flatnonzero(self._credit >= self._credit.max() - 1e-12)
            pick = int(best[0]) if best.size == 1 else int(self._rng.choice(best))
            self._credit[pick] -= 1.0
            out[i] = pick
        self._rng.shuffle(out)
        np.add.at(self._counts, out, 1)
        return out

    def realised_proportions(self) -> np.ndarray:
        """Fraction of all drawn frames that came from each dataset, float64 [D] (zeros before any draw)."""
        total = self._counts.sum()
        return self._counts / total if total else np.zeros_like(self._weights)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (generator, weights, credits, counts)."""
        return {
            "rng": self._rng.bit_generator.state,
            "weights": self._weights.tolist(),
            "credit": self._credit.tolist(),
            "counts": self._counts.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a sampler over the same number of datasets."""
        weights = np.asarray(state["weights"], dtype=np.float64)
        if weights.shape != self._weights.shape:
            raise ValueError(f"sampler state has {weights.size} datasets, this sampler {self._weights.size}")
        self._rng.bit_generator.state = state["rng"]
        self._weights = weights
        self._credit = np.asarray(state["credit"], dtype=np.float64)
        self._counts = np.asarray(state["counts"], dtype=np.int64)


# ------------------------------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class DatasetSplit:
    """One dataset of a mixture and its train / held-out partition (episodes in stored order)."""

    name: str
    index: int
    path: str
    num_episodes: int
    train_episodes: int
    heldout_episodes: int
    train_frames: int
    heldout_frames: int
    stats_file: str


def _open_split(cfg: BenchConfig, name: str, index: int, cache_dir: str | None = None) -> tuple[DatasetSplit, dict]:
    """Open dataset ``name`` under ``cfg.data_dir``: its train/held-out partition and its statistics.

    Raises:
        ConfigError: field ``data_dir``: folder missing, not an RLDS dataset, or empty.
    """
    path = cfg.dataset_path(name)
    if not os.path.isdir(path):
        raise cfg.missing_dataset_error(name)
    try:
        summary = dataset_stats(path, name, cache_dir=cache_dir)
    except FileNotFoundError as err:
        raise ConfigError("data_dir", f"dataset '{name}' at {path} is not a readable RLDS dataset: {err}") from err
    except ValueError as err:
        raise ConfigError("data_dir", f"dataset '{name}' at {path} is empty or invalid: {err}") from err
    lengths = summary.episode_lengths
    n = int(lengths.shape[0])
    if n == 0 or int(lengths.sum()) == 0:
        raise ConfigError("data_dir", f"dataset '{name}' at {path} is empty (no episodes)")
    held = heldout_count(n, cfg.heldout_fraction)
    split = DatasetSplit(
        name=name,
        index=index,
        path=path,
        num_episodes=n,
        train_episodes=n - held,
        heldout_episodes=held,
        train_frames=int(lengths[: n - held].sum()),
        heldout_frames=int(lengths[n - held :].sum()),
        stats_file=summary.stats_file,
    )
    return split, summary.stats


def _derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (tf.data seeds are int64)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]) >> 1


# ------------------------------------------------------------------------------------------ loader
class MixtureLoader:
    """Numpy batches from a weighted mixture of RLDS datasets (see the module docstring).

    Args:
        cfg: benchmark config; uses ``mixture``, ``balance_by_size``, ``data_dir``,
            ``heldout_fraction``, ``batch_size``, ``shuffle_buffer_size`` and ``seed``.
        split: ``"train"`` (endless, shuffled, weighted) or ``"heldout"`` (one ordered pass).
        batch_size: frames per batch (default ``cfg.batch_size``).
        seed: data seed (default ``cfg.seed``); the sampler and every dataset pipeline derive their
            seeds from ``(seed, rank)``.
        rank: data-parallel rank; each rank reads a different, still deterministic, stream.
        image_size: side of the output images in pixels (default 224).
        cache_dir: fallback folder for norm statistics when a data folder is read-only.
    Raises:
        ConfigError: field ``mixture`` (unknown dataset name, bad weights), ``data_dir`` (dataset
            folder missing, unreadable or empty) or ``split``.

    Attributes:
        dataset_names: datasets with non-zero weight, in config order (``dataset_index`` order).
        datasets: :class:`DatasetSplit` per dataset (episode and frame counts of both splits).
        dataset_statistics: ``{name: stats}`` in OpenVLA's ``dataset_statistics.json`` layout (the
            statistics used to normalise each dataset's actions; save them with the checkpoint).
    """

    def __init__(
        self,
        cfg: BenchConfig,
        split: str = "train",
        *,
        batch_size: int | None = None,
        seed: int | None = None,
        rank: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        cache_dir: str | None = None,
    ):
        if split not in SPLITS:
            raise ConfigError("split", f"got {split!r}; allowed: {', '.join(SPLITS)}")
        self.split = split
        self.batch_size = int(cfg.batch_size if batch_size is None else batch_size)
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be an integer >= 1, got {self.batch_size}")
        self.seed = int(cfg.seed if seed is None else seed)
        self.rank = int(rank)
        self.image_size = int(image_size)
        self.shuffle_buffer_size = int(cfg.shuffle_buffer_size)
        raw = _checked_mixture(cfg.mixture)
        self.dataset_names: tuple[str, ...] = tuple(n for n, w in raw.items() if w > 0)
        opened = [_open_split(cfg, name, i, cache_dir) for i, name in enumerate(self.dataset_names)]
        self.datasets: tuple[DatasetSplit, ...] = tuple(split_ for split_, _ in opened)
        self.dataset_statistics: dict[str, dict] = {split_.name: stats for split_, stats in opened}
        weights = mixture_weights(cfg, {d.name: d.train_frames for d in self.datasets})
        self._sampler = MixtureSampler([weights[n] for n in self.dataset_names], _derive_seed(self.seed, self.rank, 0))
        self._iterators: dict[int, Iterator] = {}
        self._frames_pulled = [0] * len(self.datasets)
        self._batches = 0
        for d in self.datasets:
            logger.info(
                "mixture %s: %s weight %.4f, train %d episodes / %d frames, held-out %d / %d",
                split, d.name, weights[d.name], d.train_episodes, d.train_frames, d.heldout_episodes, d.heldout_frames,
            )

    # -------------------------------------------------------------------- public info
    @property
    def weights(self) -> dict[str, float]:
        """Current normalised sampling weights (train split)."""
        return dict(zip(self.dataset_names, self._sampler.weights.tolist()))

    @property
    def num_frames(self) -> dict[str, int]:
        """Frames per dataset in this loader's split."""
        return {d.name: d.train_frames if self.split == "train" else d.heldout_frames for d in self.datasets}

    @property
    def num_episodes(self) -> dict[str, int]:
        """Episodes per dataset in this loader's split."""
        return {d.name: d.train_episodes if self.split == "train" else d.heldout_episodes for d in self.datasets}

    @property
    def batches_consumed(self) -> int:
        """Training batches returned so far (restored by :meth:`load_state_dict`)."""
        return self._batches

    def realised_proportions(self) -> dict[str, float]:
        """Fraction of the training frames returned so far that came from each dataset."""
        return dict(zip(self.dataset_names, self._sampler.realised_proportions().tolist()))

    def summary(self) -> dict[str, Any]:
        """JSON-able description: split, weights, realised proportions, per-dataset counts."""
        return {
            "split": self.split,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "weights": self.weights,
            "realised_proportions": self.realised_proportions(),
            "datasets": [asdict(d) for d in self.datasets],
        }

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Change the sampling weights from the next batch on (pipelines are kept).

        Args:
            weights: dataset name -> weight >= 0 (normalised here); names of this loader only,
                missing names get 0.
        Raises:
            ConfigError: field ``mixture``: unknown name, negative weight or all zero.
        """
        unknown = [n for n in weights if n not in self.dataset_names]
        if unknown:
            raise ConfigError("mixture", f"datasets {unknown} are not in this loader; loaded: {', '.join(self.dataset_names)}")
        self._sampler.set_weights([float(weights.get(n, 0.0)) for n in self.dataset_names])
        logger.info("mixture weights set to %s", self.weights)

    # -------------------------------------------------------------------- iteration
    def next_batch(self) -> dict[str, Any]:
        """The next training batch (split ``train`` only); see the module docstring for the keys."""
        if self.split != "train":
            raise ValueError("next_batch() is for split='train'; iterate the loader for the held-out pass")
        sources = self._sampler.draw(self.batch_size)
        frames = []
        for d in sources:
            it = self._iterators.get(int(d))
            if it is None:
                it = self._iterators[int(d)] = self._make_train_iterator(int(d))
            frames.append(next(it))
            self._frames_pulled[int(d)] += 1
        self._batches += 1
        return _collate(frames)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Train: endless stream of :meth:`next_batch`. Held-out: one pass, last batch may be smaller."""
        if self.split == "train":
            return self._train_stream()
        return self._heldout_stream()

    def _train_stream(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_batch()

    def _heldout_stream(self) -> Iterator[dict[str, Any]]:
        tf, _ = _tf()
        parts = [self._frames(d.index, train=False) for d in self.datasets if d.heldout_episodes > 0]
        if not parts:
            logger.warning("no held-out episodes (heldout_fraction = 0 or datasets with < 2 episodes)")
            return
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
        ds = ds.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
        for batch in ds.as_numpy_iterator():
            yield {
                "image": batch["image"],
                "instruction": [s.decode("utf-8").lower() for s in batch["instruction"]],
                "action": batch["action"],
                "dataset_index": batch["dataset_index"],
                "episode_index": batch["episode_index"],
                "step_index": batch["step_index"],
            }

    # -------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """JSON-able position in the training stream (seed, batches, frames read per dataset, sampler)."""
        return {
            "format": _STATE_FORMAT,
            "datasets": list(self.dataset_names),
            "seed": self.seed,
            "rank": self.rank,
            "batches": self._batches,
            "frames_per_dataset": list(self._frames_pulled),
            "sampler": self._sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> "MixtureLoader":
        """Continue from a :meth:`state_dict`: the following batches equal those the saving loader
        would have returned next. Each dataset pipeline is rebuilt and fast-forwarded over the frames
        already read (before image decoding, so skipping is cheap).

        Raises:
            ValueError: the state is of another format, another dataset list, seed or rank.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a MixtureLoader state (format {state.get('format')!r}, expected {_STATE_FORMAT!r})")
        for key, mine in (("datasets", list(self.dataset_names)), ("seed", self.seed), ("rank", self.rank)):
            if state[key] != mine:
                raise ValueError(f"state was saved with {key}={state[key]!r}, this loader has {key}={mine!r}")
        self._sampler.load_state_dict(state["sampler"])
        self._frames_pulled = [int(n) for n in state["frames_per_dataset"]]
        self._batches = int(state["batches"])
        self._iterators = {}
        return self

    # -------------------------------------------------------------------- tf.data pipelines
    def _make_train_iterator(self, index: int) -> Iterator[dict[str, Any]]:
        ds = self._frames(index, train=True, skip=self._frames_pulled[index])
        return iter(ds.as_numpy_iterator())

    def _frames(self, index: int, *, train: bool, skip: int = 0):
        """Frame dataset of one source: decoded, resized, normalised (see the module docstring)."""
        tf, _ = _tf()
        from vlamix.data.reader import open_rlds

        info = self.datasets[index]
        stats = self.dataset_statistics[info.name]
        seed = _derive_seed(self.seed, self.rank, index + 1)
        reader = open_rlds(info.path)
        if train:
            episodes = reader.trajectories(
                0, info.train_episodes, shuffle_files=True, seed=seed, with_episode_index=True
            )
        else:
            episodes = reader.trajectories(info.train_episodes, info.num_episodes, with_episode_index=True)
        to_frames = _trajectory_transform(tf, stats, index)
        frames = episodes.map(to_frames, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        if train:
            frames = frames.shuffle(self.shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True).repeat()
            if skip:
                frames = frames.skip(skip)
        frames = frames.map(_frame_transform(tf, self.image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.deterministic = True
        return frames.with_options(options).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------ transforms
def _tf():
    from vlamix.data._tf import import_tf

    return import_tf()


def _trajectory_transform(tf, stats: Mapping[str, Any], dataset_index: int):
    """Episode -> per-step tensors: LIBERO gripper transform, BOUNDS_Q99 normalisation.

    Mirrors :func:`vlamix.data.normalization.libero_transform_actions` and
    :func:`~vlamix.data.normalization.normalize_actions` in float32 TensorFlow ops.
    """
    q01, q99, mask, constant = (tf.constant(x) for x in action_bounds(stats, np.float32))

    def fn(episode):
        steps = episode["steps"]
        raw = tf.cast(steps["action"], tf.float32)
        gripper = 1.0 - tf.clip_by_value(raw[:, -1:], 0.0, 1.0)
        action = tf.concat([raw[:, :6], gripper], axis=1)
        normed = tf.clip_by_value(2.0 * (action - q01) / (q99 - q01 + NORM_EPS) - 1.0, -1.0, 1.0)
        action = tf.where(mask, normed, action)
        action = tf.where(constant, tf.zeros_like(action), action)
        length = tf.shape(action)[0]
        return {
            "image": steps["observation"]["image"],
            "instruction": steps["language_instruction"],
            "action": action,
            "dataset_index": tf.fill([length], tf.constant(dataset_index, tf.int64)),
            "episode_index": tf.fill([length], tf.cast(episode["episode_index"], tf.int64)),
            "step_index": tf.range(length, dtype=tf.int64),
        }

    return fn


def _frame_transform(tf, size: int):
    """Decode the JPEG and resize with Lanczos-3 + antialias, round, clip, uint8 (dlimp resize_image)."""

    def fn(frame):
        image = tf.io.decode_image(frame["image"], channels=3, expand_animations=False, dtype=tf.uint8)
        image = tf.image.resize(image, (size, size), method="lanczos3", antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        image.set_shape((size, size, 3))
        return {**frame, "image": image}

    return fn


def _collate(frames: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": np.stack([f["image"] for f in frames]),
        "instruction": [f["instruction"].decode("utf-8").lower() for f in frames],
        "action": np.stack([f["action"] for f in frames]).astype(np.float32, copy=False),
        "dataset_index": np.asarray([f["dataset_index"] for f in frames], dtype=np.int64),
        "episode_index": np.asarray([f["episode_index"] for f in frames], dtype=np.int64),
        "step_index": np.asarray([f["step_index"] for f in frames], dtype=np.int64),
    }
