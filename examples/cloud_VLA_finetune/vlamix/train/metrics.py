"""Teacher-forced action-token metrics: token accuracy and L1 of the decoded (continuous) actions.

Source: openvla/openvla ``vla-scripts/finetune.py`` (the "action_accuracy" and "l1_loss" it logs):
the argmax of the logits at every position that predicts an action token is compared with the
ground-truth token; both id sequences are decoded to bin centres (normalised actions in [-1, 1])
and their mean absolute difference is the L1. Positions are selected as there: ground-truth ids
strictly greater than ``ActionTokenizer.action_token_begin_idx`` (31743 for Llama-2).

The model's ``forward(..., logits="labeled")`` returns the logits only at label positions ([N, V],
aligned with ``targets`` [N]); with ``logits="all"`` ([B, 1 + P + (L - 1), V]) use
:func:`labeled_rows` first to pick the rows that predict ``labels[:, 1:]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlamix.core.constants import IGNORE_INDEX
from vlamix.model.action_tokenizer import ActionTokenizer


@dataclass(frozen=True)
class ActionTokenMetrics:
    """Metrics of one batch.

    Attributes:
        accuracy: fraction of action tokens whose argmax prediction equals the label, in [0, 1].
        l1: mean |decode(pred) - decode(label)| over action tokens, normalised action units ([-1, 1] scale).
        n_tokens: number of action tokens counted.
        pred_ids: int64 numpy [n_tokens] predicted ids (row-major over batch and position).
        target_ids: int64 numpy [n_tokens] ground-truth ids.
    """

    accuracy: float
    l1: float
    n_tokens: int
    pred_ids: np.ndarray
    target_ids: np.ndarray


def labeled_rows(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Select, from full-sequence logits, the rows that predict a label.

    Args:
        logits: float [B, S, V] with S = P + L (BOS, P patches, L - 1 text tokens; position t predicts
            token t + 1), as ``forward(..., logits="all")`` returns.
        labels: int64 [B, L] text labels, ``IGNORE_INDEX`` where no loss is taken.
    Returns:
        (logits [N, V], targets int64 [N]) for the N label positions, row-major over batch and position.
    Raises:
        ValueError: shapes do not line up.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[0] != labels.shape[0] or logits.shape[1] < labels.shape[1]:
        raise ValueError(f"expected logits [B, P + L, V] and labels [B, L], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    seq, length = logits.shape[1], labels.shape[1]
    # Rows S - L .. S - 2 predict labels[:, 1:] (official: logits[:, num_patches:-1] vs labels[:, 1:]).
    shifted = logits[:, seq - length : seq - 1]
    targets = labels[:, 1:].to(logits.device)
    select = targets != IGNORE_INDEX
    return shifted[select], targets[select]


@torch.no_grad()
def action_token_metrics(logits: torch.Tensor, targets: torch.Tensor, tokenizer: ActionTokenizer) -> ActionTokenMetrics:
    """Accuracy and L1 of the argmax action tokens (see the module docstring).

    Args:
        logits: float [N, V] logits at the label positions. targets: int64 [N] label ids.
        tokenizer: the model's :class:`ActionTokenizer` (``model.action_tokenizer``).
    Returns:
        :class:`ActionTokenMetrics`; accuracy and l1 are NaN when there is no action token.
    Raises:
        ValueError: ``logits`` is not [N, V] with N = len(targets).
    """
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits [N, V] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    mask = targets > tokenizer.action_token_begin_idx
    preds = logits[mask].argmax(dim=-1).cpu().numpy().astype(np.int64)
    gold = targets[mask].cpu().numpy().astype(np.int64)
    if gold.size == 0:
        return ActionTokenMetrics(float("nan"), float("nan"), 0, preds, gold)
    accuracy = float((preds == gold).mean())
    l1 = float(np.abs(tokenizer.decode(preds) - tokenizer.decode(gold)).mean())
    return ActionTokenMetrics(accuracy, l1, int(gold.size), preds, gold)
