"""Weighted mixture of LIBERO RLDS datasets: the frame stream that fine-tuning reads.

Usage::

    from vlamix.pipeline.config import BenchConfig
    from vlamix.data.mixture import MixtureLoader

    cfg = BenchConfig.from_dict({"mixture": {"libero_spatial_no_noops": 2, "libero_object_no_noops": 1},
                                 "demos": "none", "data_dir": "data/modified_libero_rlds"})
    loader = MixtureLoader(cfg.data, cfg.mixing, batch_size=8, seed=7)   # split="train": endless, shuffled
    batch = loader.next_batch()                  # image uint8 [B,224,224,3], instruction list[str], action float32 [B,7]
    loader.realised_proportions()                # {"libero_spatial_no_noops": 0.667, ...}
    loader.set_weights({"libero_spatial_no_noops": 1, "libero_object_no_noops": 1})   # group weights, between batches
    state = loader.state_dict()                  # resume: MixtureLoader(...same...).load_state_dict(state)
    for batch in MixtureLoader(cfg.data, cfg.mixing, "heldout", batch_size=8, seed=7):   # one pass over the held-out episodes
        ...

Per dataset (OpenVLA's ``make_dataset_from_rlds`` + ``apply_trajectory_transforms`` +
``apply_frame_transforms``, ``prismatic/vla/datasets/rlds/dataset.py``): episodes (tfrecord shards
read in a seeded random order) -> ``libero_dataset_transform`` -> BOUNDS_Q99 normalisation with *that
dataset's* statistics -> frames -> shuffle buffer (``shuffle_buffer_size`` encoded frames, seeded,
reshuffled every epoch) -> repeat -> JPEG decode + resize 256 -> 224 with ``tf.image.resize(lanczos3,
antialias=True)``, rounded and clipped to uint8 (dlimp ``resize_image``), ``AUTOTUNE`` parallel.
Images stay JPEG-encoded until after the shuffle buffer, so memory does not grow with the dataset.

Mixing: the mixture weights of :class:`vlamix.data.settings.DataConfig` are normalised and used *as the
frame sampling proportions* (OpenVLA's ``balance_weights`` would multiply them by the dataset sizes
and turn 2:1 into e.g. 0.61:0.39; that is ``balance_by_size=True`` here). :class:`MixtureSampler`
decides the source dataset of every frame in NumPy, so weights can be changed between batches
without rebuilding the tf.data pipelines, and the position in the stream is a small state dict.

Strategies and filters (:mod:`vlamix.mixing`, :mod:`vlamix.data.filters`): the sampler draws from
*sources*, a dataset or (``mixing_level`` task/skill) one task's training episodes of a dataset, and
weights are given to *groups* (dataset, task or skill) and split over their sources by kept frames.
The strategy sets the initial group weights (static mixture, full_dataset, task_balanced,
temperature, or a dynamic strategy's start); :meth:`MixtureLoader.set_weights` changes them during
training. Training steps dropped by the action filters are removed inside each episode
(``tf.boolean_mask``) before the shuffle buffer; ``filter_counts`` has the per-dataset counts.

Held-out split: the last ``heldout_fraction`` of each dataset's episodes in stored order (at least
one when the fraction is > 0 and the dataset has >= 2 episodes) never enter training; with
``split="heldout"`` they are iterated once, unshuffled, dataset after dataset.

Action chunks (``action_chunk=C``, OpenVLA-OFT): as moojink/openvla-oft's ``chunk_act_obs``
(``prismatic/vla/datasets/rlds/traj_transforms.py``, called with ``window_size=1``,
``future_action_window_size=C - 1``), the frame of step t carries the normalised actions of steps t .. t + C - 1,
and only the steps from which a whole chunk fits in the episode are frames: the last C - 1 steps of every
episode are never an anchor (OFT never pads past the end; upstream OpenVLA's version repeated the last step).
Chunks are cut from the stored episode before the action filters pick anchors, so a chunk holds the actions
that followed its step in the demonstration even when some of those steps are filtered out as anchors. Episodes
shorter than C give no frame. With ``wrist_image`` the frame also has the wrist camera (decoded, resized and
augmented like the primary image, with its own augmentation seed: OFT augments each image independently), with
``proprio`` the 8-D ``observation/state`` BOUNDS_Q99-normalised with the dataset's proprio statistics on every dim,
constant dims (min == max) set to 0 (OFT ``normalize_action_and_proprio``).

Batches (numpy)::

    image          uint8   [B, S, S, 3]   agent-view RGB (rotated 180 deg as stored), S = image_size (224)
    instruction    list[str] (B)          lower-cased language instruction
    action         float32 [B, 7]         model space (gripper 1 open / 0 close), BOUNDS_Q99-normalised;
                                          [B, C, 7] with ``action_chunk=C`` (step-major)
    wrist_image    uint8   [B, S, S, 3]   wrist camera (``wrist_image=True`` only)
    proprio        float32 [B, 8]         normalised state (``proprio=True`` only)
    dataset_index  int64   [B]            index into ``loader.dataset_names``
    episode_index  int64   [B]            episode position in its dataset's stored order
    step_index     int64   [B]            step within the episode (stored index, before filtering)
    group_index    int64   [B]            index into ``loader.group_names`` (train batches only)

Imports TensorFlow (kept off the GPU) when a loader is built; never import it in a MuJoCo process.

Size: one file because the loader's resumable state (per-source iterators, sampler RNG, weights) ties the
sources, the sampler and the held-out split together; reading, writing, filters and augmentation are apart.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from vlamix.core.constants import DATASET_TO_SUITE
from vlamix.core.errors import ConfigError
from vlamix.core.suites import suite_info
from vlamix.data._tf import import_tf
from vlamix.data.augment import augment_image
from vlamix.data.filters import ActionFilter, empty_counts, excluded_counts, selected_datasets
from vlamix.data.normalization import NORM_EPS, DatasetStats, action_bounds, dataset_stats, proprio_bounds
from vlamix.data.reader import open_rlds
from vlamix.data.settings import DataConfig
from vlamix.mixing.settings import MixingConfig
from vlamix.mixing.skills import skill_table
from vlamix.mixing.weights import (
    Source,
    build_sources,
    collapse,
    group_names,
    normalised_phase,
    spread,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
#: Image side of the model input (pixels); RLDS stores 256.
DEFAULT_IMAGE_SIZE = 224
_STATE_FORMAT = "vlamix.data.MixtureLoader/2"


# ------------------------------------------------------------------------------------------ weights
def heldout_count(num_episodes: int, fraction: float) -> int:
    """Episodes held out of a dataset of ``num_episodes``: ``floor(fraction * n)``, at least 1 when
    ``fraction > 0`` and ``n >= 2``, and always leaving at least one training episode."""
    if fraction <= 0 or num_episodes < 2:
        return 0
    return int(min(max(1, math.floor(fraction * num_episodes + 1e-9)), num_episodes - 1))


def _checked_mixture(mixture: Any) -> dict[str, float]:
    """Validate ``data.mixture`` (also for sections built without :meth:`DataConfig.check`)."""
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


def mixture_weights(data: DataConfig, frame_counts: Mapping[str, int] | None = None) -> dict[str, float]:
    """Normalised frame sampling proportions of the datasets with non-zero weight (config order).

    With ``data.balance_by_size`` each weight is first multiplied by the dataset's number of training
    frames (OpenVLA's ``balance_weights``); ``frame_counts`` supplies them, otherwise they are read
    from the datasets' cached statistics (computed on first use).

    Raises:
        ConfigError: field ``mixture`` (unknown name, bad weight) or ``data_dir`` (missing dataset,
            only when frame counts have to be read).
    """
    raw = {n: w for n, w in _checked_mixture(data.mixture).items() if w > 0}
    if data.balance_by_size:
        if frame_counts is None:
            frame_counts = {n: _open_split(data, n, i)[0].train_frames for i, n in enumerate(raw)}
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


def _open_split(data: DataConfig, name: str, index: int, cache_dir: str | None = None) -> tuple[DatasetSplit, DatasetStats]:
    """Open dataset ``name`` under ``data.data_dir``: its train/held-out partition and its statistics
    (with the episode table: instructions and raw actions).

    Raises:
        ConfigError: field ``data_dir``: folder missing, not an RLDS dataset, or empty.
    """
    path = data.dataset_path(name)
    if not os.path.isdir(path):
        raise data.missing_dataset_error(name)
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
    held = heldout_count(n, data.heldout_fraction)
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
    return split, summary


def _derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (tf.data seeds are int64)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]) >> 1


# ------------------------------------------------------------------------------------------ loader
class MixtureLoader:
    """Numpy batches from a weighted mixture of RLDS datasets (see the module docstring).

    Args:
        data: the data section (mixture, data_dir, held-out split, filters, shuffle buffer, image_aug).
        mixing: the strategy section (strategy, mixing_level, its parameters): the initial group weights.
        split: ``"train"`` (endless, shuffled, weighted, filtered) or ``"heldout"`` (one ordered,
            unfiltered pass).
        batch_size: frames per batch (the point's ``batch_size``).
        seed: data seed (the point's ``seed``); the sampler and every source pipeline derive their
            seeds from ``(seed, rank)``.
        rank: data-parallel rank; each rank reads a different, still deterministic, stream.
        image_size: side of the output images in pixels (default 224).
        cache_dir: fallback folder for norm statistics when a data folder is read-only.
        action_chunk: None = one action per frame ([B, 7]); C >= 1 = OpenVLA-OFT chunks ([B, C, 7], see the
            module docstring: the last C - 1 steps of every episode are no frames).
        wrist_image, proprio: add ``wrist_image`` / ``proprio`` to the batches.
    Raises:
        ConfigError: field ``mixture`` (unknown dataset name, bad weights), ``data_dir`` (dataset
            folder missing, unreadable or empty), ``split``, ``dataset_whitelist`` /
            ``dataset_blacklist`` (no dataset left), ``filter_min_motion`` (filters drop every
            training step), ``curriculum`` (names that are no group) or ``strategy``.

    Attributes:
        dataset_names: datasets read (non-zero weight, passing the white/blacklist), in config order
            (``dataset_index`` order).
        datasets: :class:`DatasetSplit` per dataset (episode and frame counts of both splits).
        dataset_statistics: ``{name: stats}`` in OpenVLA's ``dataset_statistics.json`` layout (the
            statistics used to normalise each dataset's actions; save them with the checkpoint).
        mixing_level: "dataset", "task" or "skill". sources: :class:`vlamix.mixing.weights.Source`
            per sampler stream. group_names: the groups weights are given to (``group_index`` order).
        initial_weights: the strategy's group weights at step 0.
        filter_counts: ``{dataset: {"total", "kept", "nonfinite", "out_of_range",
            "near_zero_motion", "dataset_list"}}``: training steps kept and dropped per reason
            (datasets removed by the white/blacklist count under ``dataset_list``).
        skill_table: ``{instruction: skill}`` at the skill level, else ``{}``.
    """

    def __init__(
        self,
        data: DataConfig,
        mixing: MixingConfig,
        split: str = "train",
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        cache_dir: str | None = None,
        action_chunk: int | None = None,
        wrist_image: bool = False,
        proprio: bool = False,
    ):
        if split not in SPLITS:
            raise ConfigError("split", f"got {split!r}; allowed: {', '.join(SPLITS)}")
        self.split = split
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be an integer >= 1, got {self.batch_size}")
        self.seed = int(seed)
        self.rank = int(rank)
        self.image_size = int(image_size)
        if action_chunk is not None and (isinstance(action_chunk, bool) or not isinstance(action_chunk, int)
                                         or action_chunk < 1):
            raise ConfigError("action_chunk", f"must be null or an integer >= 1, got {action_chunk!r}")
        self.action_chunk = action_chunk
        self.wrist_image = bool(wrist_image)
        self.proprio = bool(proprio)
        self.shuffle_buffer_size = int(data.shuffle_buffer_size)
        #: OpenVLA's training image augmentation on the train split (:mod:`vlamix.data.augment`).
        self.image_aug = bool(data.image_aug) and split == "train"
        raw = _checked_mixture(data.mixture)
        chosen, removed = selected_datasets([n for n, w in raw.items() if w > 0], data.dataset_whitelist, data.dataset_blacklist)
        if not chosen:
            raise ConfigError("dataset_whitelist", f"no dataset of the mixture {list(raw)} passes the white/blacklist")
        self.dataset_names: tuple[str, ...] = tuple(chosen)
        opened = [_open_split(data, name, i, cache_dir) for i, name in enumerate(self.dataset_names)]
        self.datasets: tuple[DatasetSplit, ...] = tuple(split_ for split_, _ in opened)
        self.dataset_statistics: dict[str, dict] = {split_.name: table.stats for split_, table in opened}

        # Action filtering of the training episodes: per-dataset keep masks and counts.
        self.action_filter = ActionFilter.from_config(data)
        self.filter_counts: dict[str, dict[str, int]] = {}
        self._keep: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        per_dataset: dict[str, tuple[list[str], list[int]]] = {}
        for split_, table in opened:
            keep, frames, counts = _filter_training_steps(self.action_filter, split_, table)
            keep, frames = _exclude_heldout_tasks(data, split_, table, keep, frames)  # evaluation kit
            if (action_chunk or 1) > 1:
                keep, frames = _chunk_anchors(split_, table, keep, action_chunk)
            self.filter_counts[split_.name] = counts
            if keep is not None:
                self._keep[split_.index] = keep
            per_dataset[split_.name] = (list(table.instructions[: split_.train_episodes]), frames)
        for name in removed:
            self.filter_counts[name] = _removed_counts(data, name, cache_dir)
        _log_filter_counts(self.filter_counts)

        # Sources, groups and the strategy's initial weights.
        self.strategy = mixing.strategy
        self.mixing_level = mixing.resolved_level()
        self.sources: tuple[Source, ...] = tuple(build_sources(self.mixing_level, per_dataset, mixing.skill_map))
        if not self.sources:
            raise ConfigError("filter_min_motion", f"the action filters drop every training step of {list(self.dataset_names)}: {self.filter_counts}")
        self.group_names: tuple[str, ...] = tuple(group_names(self.sources))
        self.skill_table = (
            skill_table([s.instruction for s in self.sources], mixing.skill_map) if self.mixing_level == "skill" else {}
        )
        self._source_group = np.array([self.group_names.index(s.group) for s in self.sources], dtype=np.int64)
        self._source_dataset = {i: self.dataset_names.index(s.dataset) for i, s in enumerate(self.sources)}
        try:
            self.initial_weights = mixing.strategy_class().initial_weights(mixing, data, self.sources)
            if mixing.strategy == "curriculum":  # every phase must name groups of this mixture
                for phase in mixing.curriculum:
                    normalised_phase(phase["weights"], list(self.group_names))
        except ValueError as err:
            raise ConfigError("curriculum" if mixing.strategy == "curriculum" else "strategy", str(err)) from err
        self._sampler = MixtureSampler(spread(self.initial_weights, self.sources), _derive_seed(self.seed, self.rank, 0))
        self._iterators: dict[int, Iterator] = {}
        self._frames_pulled = [0] * len(self.sources)
        self._batches = 0
        for d in self.datasets:
            logger.info(
                "mixture %s: %s train %d episodes / %d frames (%d kept), held-out %d / %d",
                split, d.name, d.train_episodes, d.train_frames, self.filter_counts[d.name]["kept"],
                d.heldout_episodes, d.heldout_frames,
            )
        logger.info("strategy %s at %s level: %d sources, initial group weights %s",
                    mixing.strategy, self.mixing_level, len(self.sources), _rounded(self.initial_weights))

    @classmethod
    def for_point(cls, cfg: Any, split: str = "train", **kwargs: Any) -> "MixtureLoader":
        """The loader of a benchmark point (:class:`vlamix.pipeline.config.BenchConfig`: its ``data`` and ``mixing``
        sections, ``batch_size`` and ``seed`` of its ``train`` section unless given)."""
        kwargs.setdefault("batch_size", cfg.train.batch_size)
        kwargs.setdefault("seed", cfg.train.seed)
        return cls(cfg.data, cfg.mixing, split, **kwargs)

    # -------------------------------------------------------------------- public info
    @property
    def weights(self) -> dict[str, float]:
        """Current normalised sampling weight per group (train split)."""
        return collapse(self._sampler.weights, self.sources)

    @property
    def num_frames(self) -> dict[str, int]:
        """Frames per dataset in this loader's split (training frames before filtering)."""
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
        """Fraction of the training frames returned so far that came from each group."""
        return collapse(self._sampler.realised_proportions(), self.sources)

    def summary(self) -> dict[str, Any]:
        """JSON-able description: split, strategy, groups, weights, realised proportions, sources,
        per-dataset counts and filter counts."""
        return {
            "split": self.split,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "strategy": self.strategy,
            "mixing_level": self.mixing_level,
            "groups": list(self.group_names),
            "initial_weights": dict(self.initial_weights),
            "weights": self.weights,
            "realised_proportions": self.realised_proportions(),
            "sources": [{"name": s.name, "dataset": s.dataset, "group": s.group, "frames": s.frames} for s in self.sources],
            "skill_table": dict(self.skill_table),
            "filter_counts": {k: dict(v) for k, v in self.filter_counts.items()},
            "datasets": [asdict(d) for d in self.datasets],
        }

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Change the sampling weights from the next batch on (pipelines are kept).

        Args:
            weights: group name (a dataset name at the dataset level) -> weight >= 0, normalised
                here; missing groups get 0. Each group's weight is split over its sources by frames.
        Raises:
            ConfigError: field ``mixture``: unknown name, negative weight or all zero.
        """
        unknown = [n for n in weights if n not in self.group_names]
        if unknown:
            raise ConfigError("mixture", f"{unknown} are not groups of this loader; groups: {', '.join(self.group_names)}")
        values = [float(weights.get(g, 0.0)) for g in self.group_names]
        if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
            raise ConfigError("mixture", f"weights must be finite, >= 0 and not all zero, got {dict(weights)}")
        self._sampler.set_weights(spread(dict(zip(self.group_names, values)), self.sources))
        logger.info("mixture weights set to %s", _rounded(self.weights))

    # -------------------------------------------------------------------- iteration
    def next_batch(self) -> dict[str, Any]:
        """The next training batch (split ``train`` only); see the module docstring for the keys."""
        if self.split != "train":
            raise ValueError("next_batch() is for split='train'; iterate the loader for the held-out pass")
        sources = self._sampler.draw(self.batch_size)
        frames = []
        for src in sources:
            it = self._iterators.get(int(src))
            if it is None:
                it = self._iterators[int(src)] = self._make_train_iterator(int(src))
            frames.append(next(it))
            self._frames_pulled[int(src)] += 1
        self._batches += 1
        batch = _collate(frames)
        batch["group_index"] = self._source_group[sources]
        return batch

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
        parts = [self._heldout_frames(d.index) for d in self.datasets if d.heldout_episodes > 0]
        if not parts:
            logger.warning("no held-out episodes (heldout_fraction = 0 or datasets with < 2 episodes)")
            return
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
        ds = ds.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
        for batch in ds.as_numpy_iterator():
            out = {
                "image": batch["image"],
                "instruction": [s.decode("utf-8").lower() for s in batch["instruction"]],
                "action": batch["action"],
                "dataset_index": batch["dataset_index"],
                "episode_index": batch["episode_index"],
                "step_index": batch["step_index"],
            }
            out.update({k: batch[k] for k in _OPTIONAL_KEYS if k in batch})
            yield out

    # -------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """JSON-able position in the training stream (seed, batches, frames read per source, sampler)."""
        return {
            "format": _STATE_FORMAT,
            "datasets": list(self.dataset_names),
            "sources": [s.name for s in self.sources],
            "seed": self.seed,
            "rank": self.rank,
            "batches": self._batches,
            "frames_per_source": list(self._frames_pulled),
            "sampler": self._sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> "MixtureLoader":
        """Continue from a :meth:`state_dict`: the following batches equal those the saving loader
        would have returned next. Each source pipeline is rebuilt and fast-forwarded over the frames
        already read (before image decoding, so skipping is cheap).

        Raises:
            ValueError: the state is of another format, dataset or source list, seed or rank.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a MixtureLoader state (format {state.get('format')!r}, expected {_STATE_FORMAT!r})")
        mine = {"datasets": list(self.dataset_names), "sources": [s.name for s in self.sources], "seed": self.seed, "rank": self.rank}
        for key, value in mine.items():
            if state[key] != value:
                raise ValueError(f"state was saved with {key}={state[key]!r}, this loader has {key}={value!r}")
        self._sampler.load_state_dict(state["sampler"])
        self._frames_pulled = [int(n) for n in state["frames_per_source"]]
        self._batches = int(state["batches"])
        self._iterators = {}
        return self

    # -------------------------------------------------------------------- tf.data pipelines
    def _make_train_iterator(self, index: int) -> Iterator[dict[str, Any]]:
        return iter(self._train_frames(index, skip=self._frames_pulled[index]).as_numpy_iterator())

    def _train_frames(self, index: int, skip: int = 0):
        """Frame dataset of source ``index``: its episodes, filtered steps, shuffled, repeated, decoded."""
        tf, _ = _tf()
        source = self.sources[index]
        info = self.datasets[self._source_dataset[index]]
        seed = _derive_seed(self.seed, self.rank, index + 1)
        episodes = open_rlds(info.path).trajectories(
            0, info.train_episodes, shuffle_files=True, seed=seed, with_episode_index=True
        )
        if source.episodes is not None:  # one task of the dataset
            member = np.zeros(info.train_episodes, dtype=bool)
            member[list(source.episodes)] = True
            member_t = tf.constant(member)
            episodes = episodes.filter(_plain_tf(tf, lambda ep: tf.gather(member_t, ep["episode_index"])))
        to_frames = _trajectory_transform(tf, self.dataset_statistics[info.name], info.index,
                                          self._keep.get(info.index), **self._frame_options())
        frames = episodes.map(to_frames, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        frames = frames.shuffle(self.shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True).repeat()
        if self.image_aug:  # the frame's ordinal in this stream seeds its augmentation (a resumed run skips to it)
            frames = frames.enumerate().map(_plain_tf(tf, lambda i, frame: {**frame, "_ordinal": i}))
        if skip:
            frames = frames.skip(skip)
        return self._decoded(tf, frames, aug_seed=_derive_seed(self.seed, self.rank, index + 1, 1) if self.image_aug else None)

    def _heldout_frames(self, index: int):
        """Frame dataset of the held-out episodes of dataset ``index`` (stored order, unfiltered)."""
        tf, _ = _tf()
        info = self.datasets[index]
        episodes = open_rlds(info.path).trajectories(info.train_episodes, info.num_episodes, with_episode_index=True)
        to_frames = _trajectory_transform(tf, self.dataset_statistics[info.name], index, None, **self._frame_options())
        frames = episodes.map(to_frames, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        return self._decoded(tf, frames)

    def _frame_options(self) -> dict[str, Any]:
        return {"chunk": self.action_chunk, "wrist_image": self.wrist_image, "proprio": self.proprio}

    def _decoded(self, tf, frames, aug_seed: int | None = None):
        frames = frames.map(_frame_transform(tf, self.image_size, aug_seed, self.wrist_image),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.deterministic = True
        return frames.with_options(options).prefetch(tf.data.AUTOTUNE)


def _filter_training_steps(
    action_filter: ActionFilter, split: DatasetSplit, table: DatasetStats
) -> tuple[tuple[np.ndarray, np.ndarray] | None, list[int], dict[str, int]]:
    """Keep masks of a dataset's training episodes.

    Returns:
        (``(keep bool [train steps], offsets int64 [train episodes + 1])`` or None when every step is
        kept, kept frames per training episode, counts record).
    """
    lengths = table.episode_lengths[: split.train_episodes]
    counts = empty_counts()
    if not action_filter.active or table.actions is None:
        counts["total"] = counts["kept"] = int(lengths.sum())
        return None, [int(n) for n in lengths], counts
    offsets = table.episode_offsets[: split.train_episodes + 1]
    keep, counts = action_filter.masks(table.actions[: int(offsets[-1])], lengths)
    frames = [int(keep[offsets[e] : offsets[e + 1]].sum()) for e in range(split.train_episodes)]
    return (None if keep.all() else (keep, offsets.astype(np.int64))), frames, counts


def _chunk_anchors(
    split: DatasetSplit, table: DatasetStats, keep: tuple[np.ndarray, np.ndarray] | None, chunk: int
) -> tuple[tuple[np.ndarray, np.ndarray], list[int]]:
    """Remove the last ``chunk - 1`` steps of every training episode from the anchors (OFT's ``chunk_act_obs``:
    a frame needs a whole chunk inside its episode), on top of the filters' keep mask.

    Returns:
        (``(keep bool [train steps], offsets int64 [train episodes + 1])``, anchors per training episode).
    """
    lengths = table.episode_lengths[: split.train_episodes].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    mask = keep[0].copy() if keep is not None else np.ones(int(offsets[-1]), dtype=bool)
    for e, length in enumerate(lengths):
        mask[offsets[e] + max(int(length) - chunk + 1, 0) : offsets[e + 1]] = False
    frames = [int(mask[offsets[e] : offsets[e + 1]].sum()) for e in range(len(lengths))]
    logger.info("%s: %d chunk anchors of %d training steps (chunk %d: the last %d steps of each episode are none)",
                split.name, sum(frames), int(offsets[-1]), chunk, chunk - 1)
    return (mask, offsets), frames


def heldout_task_instructions(data: DataConfig, name: str) -> set[str]:
    """Lower-cased LIBERO instructions of the ``heldout_tasks`` of dataset ``name`` (task ids of its
    suite, resolved in the installed LIBERO registry); empty when none are held out.

    Raises:
        ConfigError: a task id outside the suite (field ``heldout_tasks``).
    """
    ids = tuple((data.heldout_tasks or {}).get(name, ()))
    if not ids:
        return set()
    bench = suite_info(DATASET_TO_SUITE[name])
    bad = [t for t in ids if not 0 <= t < bench.n_tasks]
    if bad:
        raise ConfigError("heldout_tasks", f"'{name}': task ids {bad} outside [0, {bench.n_tasks}) of {DATASET_TO_SUITE[name]}")
    return {bench.get_task(t).language.lower() for t in ids}


def _exclude_heldout_tasks(
    data: DataConfig, split: DatasetSplit, table: DatasetStats, keep: tuple[np.ndarray, np.ndarray] | None, frames: list[int]
) -> tuple[tuple[np.ndarray, np.ndarray] | None, list[int]]:
    """Drop every training step of the episodes whose instruction is a held-out task
    (``heldout_tasks``, generalisation split): their keep mask becomes False and their kept frames 0.
    The held-out split (offline metrics) is not changed."""
    tasks = heldout_task_instructions(data, split.name)
    if not tasks:
        return keep, frames
    episodes = [e for e, text in enumerate(table.instructions[: split.train_episodes]) if str(text).lower() in tasks]
    if not episodes:
        logger.warning("%s: no training episode of the held-out tasks %s", split.name, sorted(tasks))
        return keep, frames
    offsets = table.episode_offsets[: split.train_episodes + 1].astype(np.int64)
    mask = keep[0].copy() if keep is not None else np.ones(int(offsets[-1]), dtype=bool)
    frames = list(frames)
    for e in episodes:
        mask[offsets[e] : offsets[e + 1]] = False
        frames[e] = 0
    logger.info("%s: %d training episodes of held-out tasks excluded", split.name, len(episodes))
    return (mask, offsets), frames


def _removed_counts(data: DataConfig, name: str, cache_dir: str | None) -> dict[str, int]:
    """Counts of a white/blacklisted dataset: all its training steps under ``dataset_list`` (0 if absent)."""
    if not os.path.isdir(data.dataset_path(name)):
        logger.info("dataset %s is removed by the white/blacklist and not on disk: its steps are not counted", name)
        return excluded_counts(0)
    split, _ = _open_split(data, name, -1, cache_dir)
    return excluded_counts(split.train_frames)


def _log_filter_counts(counts: Mapping[str, Mapping[str, int]]) -> None:
    for name, c in counts.items():
        dropped = {k: v for k, v in c.items() if k not in ("total", "kept") and v}
        logger.info("filter %s: kept %d of %d training steps%s", name, c["kept"], c["total"], f", dropped {dropped}" if dropped else "")


def _rounded(weights: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in weights.items()}


# ------------------------------------------------------------------------------------------ transforms
def _tf():
    return import_tf()


#: Batch keys present only with ``wrist_image`` / ``proprio``.
_OPTIONAL_KEYS = ("wrist_image", "proprio")


def _trajectory_transform(
    tf,
    stats: Mapping[str, Any],
    dataset_index: int,
    keep: tuple[np.ndarray, np.ndarray] | None,
    *,
    chunk: int | None = None,
    wrist_image: bool = False,
    proprio: bool = False,
):
    """Episode -> per-step tensors: LIBERO gripper transform, BOUNDS_Q99 normalisation, step filter.

    Mirrors :func:`vlamix.data.normalization.libero_transform_actions` and
    :func:`~vlamix.data.normalization.normalize_actions` in float32 TensorFlow ops. With ``keep =
    (mask bool [steps], offsets int64 [episodes + 1])`` (:mod:`vlamix.data.filters`), the steps of
    episode ``e`` are ``mask[offsets[e]:offsets[e + 1]]``-selected (``step_index`` stays the stored one).
    With ``chunk`` C the action of step t is the [C, 7] chunk of steps t .. t + C - 1, and only steps
    t <= T - C are kept (OFT ``chunk_act_obs``); ``wrist_image`` adds the encoded wrist image, ``proprio``
    the normalised state (:func:`vlamix.data.normalization.normalize_proprio`, ``zero_constant=True``).
    """
    q01, q99, mask, constant = (tf.constant(x) for x in action_bounds(stats, np.float32))
    keep_t = None if keep is None else (tf.constant(keep[0]), tf.constant(keep[1]))
    if proprio:
        p_q01, p_q99, p_mask, p_constant = (tf.constant(x) for x in proprio_bounds(stats, np.float32))

    def fn(episode):
        steps = episode["steps"]
        raw = tf.cast(steps["action"], tf.float32)
        gripper = 1.0 - tf.clip_by_value(raw[:, -1:], 0.0, 1.0)
        action = tf.concat([raw[:, :6], gripper], axis=1)
        normed = tf.clip_by_value(2.0 * (action - q01) / (q99 - q01 + NORM_EPS) - 1.0, -1.0, 1.0)
        action = tf.where(mask, normed, action)
        action = tf.where(constant, tf.zeros_like(action), action)
        length = tf.shape(action)[0]
        if chunk is not None:  # [T, C, 7]: steps t .. t + C - 1 (indices past the end only on dropped anchors)
            future = tf.range(length)[:, None] + tf.range(chunk)[None, :]
            action = tf.gather(action, tf.minimum(future, length - 1))
        out = {
            "image": steps["observation"]["image"],
            "instruction": steps["language_instruction"],
            "action": action,
            "dataset_index": tf.fill([length], tf.constant(dataset_index, tf.int64)),
            "episode_index": tf.fill([length], tf.cast(episode["episode_index"], tf.int64)),
            "step_index": tf.range(length, dtype=tf.int64),
        }
        if wrist_image:
            out["wrist_image"] = steps["observation"]["wrist_image"]
        if proprio:
            state = tf.cast(steps["observation"]["state"], tf.float32)
            normed = tf.clip_by_value(2.0 * (state - p_q01) / (p_q99 - p_q01 + NORM_EPS) - 1.0, -1.0, 1.0)
            state = tf.where(p_mask, normed, state)
            out["proprio"] = tf.where(p_constant, tf.zeros_like(state), state)
        step_mask = None
        if keep_t is not None:
            index = tf.cast(episode["episode_index"], tf.int64)
            step_mask = keep_t[0][keep_t[1][index] : keep_t[1][index + 1]]
            check = tf.debugging.assert_equal(tf.size(step_mask), length, message="keep mask length")
            with tf.control_dependencies([check]):
                step_mask = tf.identity(step_mask)
        if chunk is not None and chunk > 1:  # no anchor without a whole chunk (also on held-out episodes)
            anchors = tf.range(length) <= length - chunk
            step_mask = anchors if step_mask is None else step_mask & anchors
        if step_mask is None:
            return out
        return {k: tf.boolean_mask(v, step_mask) for k, v in out.items()}

    return _plain_tf(tf, fn)


def _frame_transform(tf, size: int, aug_seed: int | None = None, wrist_image: bool = False):
    """Decode the JPEG and resize with Lanczos-3 + antialias, round, clip, uint8 (dlimp resize_image); with
    ``aug_seed``, then OpenVLA's image augmentation seeded by ``(aug_seed, frame["_ordinal"])``
    (:func:`vlamix.data.augment.augment_image`; the ordinal is dropped from the frame). With ``wrist_image`` the
    wrist camera goes through the same steps, its augmentation seeded by ``(aug_seed ^ 1, ordinal)`` (each image
    independently, as OFT's ``apply_frame_transforms``)."""
    def decode(encoded, seed):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
        image = tf.image.resize(image, (size, size), method="lanczos3", antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        image.set_shape((size, size, 3))
        if seed is not None:
            image = augment_image(tf, image, seed)
            image.set_shape((size, size, 3))
        return image

    def fn(frame):
        frame = dict(frame)
        seed = wrist_seed = None
        if aug_seed is not None:
            ordinal = tf.cast(frame.pop("_ordinal"), tf.int64)
            seed = tf.stack([tf.constant(aug_seed, tf.int64), ordinal])
            wrist_seed = tf.stack([tf.constant(aug_seed ^ 1, tf.int64), ordinal])
        frame["image"] = decode(frame["image"], seed)
        if wrist_image:
            frame["wrist_image"] = decode(frame["wrist_image"], wrist_seed)
        return frame

    return _plain_tf(tf, fn)


def _plain_tf(tf, fn):
    """``fn`` marked for tf.data to trace as written: it is TensorFlow ops with Python branches on Python values
    only, so AutoGraph has nothing to convert (and its failed attempts on closures print warnings)."""
    return tf.autograph.experimental.do_not_convert(fn)


def _collate(frames: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "image": np.stack([f["image"] for f in frames]),
        "instruction": [f["instruction"].decode("utf-8").lower() for f in frames],
        "action": np.stack([f["action"] for f in frames]).astype(np.float32, copy=False),
        "dataset_index": np.asarray([f["dataset_index"] for f in frames], dtype=np.int64),
        "episode_index": np.asarray([f["episode_index"] for f in frames], dtype=np.int64),
        "step_index": np.asarray([f["step_index"] for f in frames], dtype=np.int64),
    }
    if "wrist_image" in frames[0]:
        out["wrist_image"] = np.stack([f["wrist_image"] for f in frames])
    if "proprio" in frames[0]:
        out["proprio"] = np.stack([f["proprio"] for f in frames]).astype(np.float32, copy=False)
    return out
