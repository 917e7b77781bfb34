"""Data-parallel context for ``torchrun``: process group, device, rank-aware helpers.

Under ``torchrun`` (environment ``WORLD_SIZE`` > 1) :func:`init_distributed` initialises the default
process group: NCCL when CUDA is available, gloo otherwise. Each rank uses ``cuda:LOCAL_RANK`` (or
the CPU). Without ``torchrun`` everything degrades to a single process (rank 0 of 1).

Usage::

    torchrun --standalone --nproc-per-node 2 -m vlamix.train.finetune --config point.yaml --out runs/p0
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: global rank in [0, world_size). local_rank: rank on this node (selects the GPU).
        world_size: number of processes. device: torch device this rank trains on.
        initialized_here: True when :func:`init_distributed` created the process group (and
            :func:`cleanup` should destroy it).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from err


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Initialise data parallelism from the ``torchrun`` environment (or reuse an existing group).

    Args:
        device: force a device type ("cpu" or "cuda"); None = CUDA when available.
    Returns:
        :class:`DistContext`. Single process when ``WORLD_SIZE`` is unset or 1 and no group exists.
    Raises:
        ValueError: malformed ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``.
        RuntimeError: ``device`` is "cuda" but CUDA is unavailable.
    """
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    initialized_here = False
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
    else:
        world_size = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", rank)
        if world_size > 1:
            backend = "nccl" if use_cuda else "gloo"
            if use_cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
            initialized_here = True
            logger.info("process group initialised: backend %s, rank %d of %d", backend, rank, world_size)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistContext(rank, local_rank, world_size, dev, initialized_here)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for all ranks (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank; ``[obj]`` in a single process."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise mean of float ``values`` over ranks (for logging); identity in a single process."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / ctx.world_size).tolist()
