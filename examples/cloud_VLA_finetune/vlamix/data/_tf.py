"""Lazy, CPU-only import of TensorFlow and tensorflow-datasets.

Every module of :mod:`vlamix.data` imports TensorFlow through :func:`import_tf`, inside functions,
never at module level: ``import vlamix.data`` must stay TF-free, because processes that render
MuJoCo (scripted expert, rollouts) segfault once TensorFlow's LLVM is loaded next to Mesa's, and
because the action (un)normalisation helpers are used by those processes.

TensorFlow is kept off every GPU (``tf.config.set_visible_devices([], "GPU")``, as OpenVLA's
``prismatic/vla/datasets/rlds/dataset.py`` does): the GPU belongs to the PyTorch model.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

_configured = False


def import_tf():
    """Import and return ``(tensorflow, tensorflow_datasets)`` with TensorFlow hidden from GPUs.

    Raises:
        ImportError: TensorFlow or tensorflow-datasets is not installed (they are pinned in
            ``requirements.txt``).
    """
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # TF only where RLDS is read or written: MuJoCo EGL beside TF segfaults (module docstring)
    import tensorflow_datasets as tfds  # loads TensorFlow: as above

    if not _configured:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as err:  # devices already initialised by someone else's TF code
            logger.warning("could not hide GPUs from TensorFlow (already initialised): %s", err)
        tfds.disable_progress_bar()
        _configured = True
    return tf, tfds
