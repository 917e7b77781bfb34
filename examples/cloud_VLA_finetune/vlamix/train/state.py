"""Seeding and the resumable training state (``training_state.pt``).

``training_state.pt`` holds only tensors and plain Python values (dicts, lists, tuples, numbers,
strings), so it is read with ``torch.load(weights_only=True)``: no arbitrary pickles. Contents::

    format          "vlamix.train/1"
    step            int, optimiser steps completed
    world_size      int, data-parallel ranks of the run that saved it
    optimizer       AdamW state_dict (identical on every rank under DDP, saved once)
    data            list (one per rank) of the data loader's state_dict() (None if it has none)
    rng             list (one per rank) of RNG states: python, numpy, torch CPU, CUDA (all devices)
    mixing          (optional) the mixing controller's state (vlamix.mixing.strategies: the strategy controller)
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch

from vlamix.core.io import atomic_path

logger = logging.getLogger(__name__)

TRAINING_STATE_FILE = "training_state.pt"
_FORMAT = "vlamix.train/1"


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Raises:
        ValueError: ``seed`` is not an integer in [0, 2**32).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def capture_rng_state() -> dict[str, Any]:
    """RNG states of this process as plain values (see the module docstring)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only if the device count matches.

    Raises:
        KeyError: a required entry is missing.
    """
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("CUDA RNG state saved for %d devices, %d present: not restored", len(cuda), torch.cuda.device_count())


def _as_tuple(value: Any) -> Any:
    """Lists back to tuples, recursively (``random.setstate`` needs tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def save_training_state(
    path: str,
    *,
    step: int,
    optimizer: torch.optim.Optimizer,
    data_states: list[Any],
    rng_states: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``training_state.pt`` atomically (temporary file, then rename).

    Args:
        path: file path. step: optimiser steps done. optimizer: the AdamW optimiser.
        data_states: one data-loader ``state_dict()`` per rank (plain values). rng_states: one
            :func:`capture_rng_state` per rank.
        extra: more plain-value entries (e.g. ``{"mixing": controller state}``).
    """
    state = {
        "format": _FORMAT,
        "step": int(step),
        "world_size": len(rng_states),
        "optimizer": optimizer.state_dict(),
        "data": list(data_states),
        "rng": list(rng_states),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str) -> dict[str, Any]:
    """Read a ``training_state.pt`` written by :func:`save_training_state` (``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a vlamix training state.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training state at {path}; resume_from must be a checkpoint folder written by finetune()")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises several types for a foreign file
        raise ValueError(f"{path} is not a readable vlamix training state: {err}") from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a vlamix training state (format {_FORMAT!r} expected)")
    return state
