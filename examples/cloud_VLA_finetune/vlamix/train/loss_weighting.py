"""The per-group weighted action-token loss (``loss_weighting``; weights from :mod:`vlamix.mixing.loss_weights`).

For a micro-batch of B frames, each with D action tokens::

    l_b  = (1/D) sum_d CE(logits_{b,d}, target_{b,d})      per-frame mean cross-entropy (nats)
    loss = (1/B) sum_b w[g_b] * l_b                         g_b = the frame's group (``group_index``)

For OpenVLA-OFT's L1 head ``l_b`` is the frame's mean absolute error over its action chunk
(:func:`weighted_frame_loss`).
With all weights 1 this is the model's own loss (mean over the B*D label tokens). The trainer divides
each micro-batch's loss by ``grad_accumulation_steps`` and DDP averages gradients over ranks; every
micro-batch has the same B frames on every rank, so the optimiser step's gradient is that of the mean
of ``w[g] * l`` over all ``B * accumulation * world_size`` frames of the step, the same estimator as
one large batch. The weights are normalised to an expected value of 1 per sampled frame, so the
expectation of this loss is on the scale of the unweighted loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


def per_frame_loss(logits: torch.Tensor, targets: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Mean action-token cross-entropy per frame: float32 [B] (nats).

    Args:
        logits: [B * D, V] label-token logits, row-major over frames (``forward(..., logits="labeled")``).
        targets: int64 [B * D] label token ids.
        num_frames: B.
    Raises:
        ValueError: ``B * D`` rows do not split into ``num_frames`` equal frames.
    """
    if num_frames < 1 or targets.numel() % num_frames != 0 or logits.shape[0] != targets.numel():
        raise ValueError(
            f"{logits.shape[0]} logit rows / {targets.numel()} targets do not split into {num_frames} frames of equal token count"
        )
    per_token = F.cross_entropy(logits.float(), targets, reduction="none")
    return per_token.view(num_frames, -1).mean(dim=1)


def weighted_action_loss(
    logits: torch.Tensor, targets: torch.Tensor, group_index: Any, weights: Sequence[float] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean_b(w[g_b] * l_b)`` (see the module docstring), differentiable in ``logits``.

    Args:
        logits: float [B * D, V]; targets: int64 [B * D] (as :func:`per_frame_loss`).
        group_index: int [B] group of each frame (array-like or tensor; index into ``weights``).
        weights: float [G] per-group loss weights.
    Returns:
        ``(loss, per_frame)``: float32 scalar and float32 [B] unweighted per-frame losses.
    Raises:
        ValueError: see :func:`per_frame_loss`; a group index outside ``[0, G)``.
    """
    index = torch.as_tensor(group_index, dtype=torch.int64, device=logits.device).reshape(-1)
    per_frame = per_frame_loss(logits, targets, index.numel())
    return weighted_frame_loss(per_frame, index, weights), per_frame


def weighted_frame_loss(
    per_frame: torch.Tensor, group_index: Any, weights: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``mean_b(w[g_b] * l_b)`` for given per-frame losses, differentiable in ``per_frame``.

    Args:
        per_frame: float [B] per-frame losses (cross-entropy, or the L1 head's mean absolute error over the chunk).
        group_index: int [B] group of each frame. weights: float [G] per-group loss weights.
    Returns:
        float32 scalar.
    Raises:
        ValueError: a group index outside ``[0, G)``, or ``B`` indices for another number of frames.
    """
    index = torch.as_tensor(group_index, dtype=torch.int64, device=per_frame.device).reshape(-1)
    w = torch.as_tensor(weights, dtype=torch.float32, device=per_frame.device)
    if index.numel() != per_frame.numel():
        raise ValueError(f"{index.numel()} group indices for {per_frame.numel()} frames")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= w.numel()):
        raise ValueError(f"group_index values {index.tolist()} outside [0, {w.numel()})")
    return (w[index] * per_frame.float()).mean()
