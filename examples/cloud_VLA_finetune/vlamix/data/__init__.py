"""vlamix.data: LIBERO RLDS datasets (``openvla/modified_libero_rlds`` layout), norm stats, mixtures.

Modules:
    rlds_spec      feature spec of ``modified_libero_rlds`` (single source of truth)
    rlds_writer    ``write_rlds(episodes, root, name)`` -> ``<root>/<name>/1.0.0/``
    reader         ``open_rlds(path)``: counts, numpy episodes, tf.data trajectories
    normalization  LIBERO gripper transform, dataset statistics (cached), BOUNDS_Q99 (un)normalisation
    mixture        ``MixtureLoader(cfg, split)``: weighted, resumable frame batches; held-out split

Importing this package does not import TensorFlow (rollout workers use the normalisation helpers);
TensorFlow is loaded, CPU-only, when a dataset is opened, written or mixed.
"""

from vlamix.data.mixture import MixtureLoader, MixtureSampler, heldout_count, mixture_weights
from vlamix.data.normalization import (
    ACTION_NORMALIZATION_MASK,
    dataset_stats,
    libero_transform_actions,
    load_or_compute_stats,
    normalize_actions,
    save_dataset_statistics,
    unnormalize_actions,
)
from vlamix.data.reader import RLDSDataset, open_rlds
from vlamix.data.rlds_writer import write_rlds

__all__ = [
    "ACTION_NORMALIZATION_MASK",
    "MixtureLoader",
    "MixtureSampler",
    "RLDSDataset",
    "dataset_stats",
    "heldout_count",
    "libero_transform_actions",
    "load_or_compute_stats",
    "mixture_weights",
    "normalize_actions",
    "open_rlds",
    "save_dataset_statistics",
    "unnormalize_actions",
    "write_rlds",
]
