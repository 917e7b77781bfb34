"""OpenVLA-OFT's parallel-decoding modules: the L1-regression action head and the proprio projector.

Architecture (moojink/openvla-oft @ 213c5ff, re-implemented, not copied; the module tree and parameter names are the
official ones so that released ``action_head--*_checkpoint.pt`` / ``proprio_projector--*_checkpoint.pt`` load):

- ``prismatic/models/action_heads.py`` ``L1RegressionActionHead(input_dim=llm_dim, hidden_dim=llm_dim,
  action_dim)``: its ``model`` is an ``MLPResNet(num_blocks=2, input_dim=llm_dim * ACTION_DIM, hidden_dim=llm_dim,
  output_dim=action_dim)``: LayerNorm -> Linear -> ReLU -> 2 pre-LN residual blocks (``ffn`` = LayerNorm, Linear,
  ReLU; ``x + ffn(x)``) -> LayerNorm -> Linear. ``predict_action`` reshapes the ``chunk * action_dim`` hidden states
  of the action slots, step-major, to ``[B, chunk, action_dim * llm_dim]``: step t reads the hidden states of slots
  ``t * action_dim ... t * action_dim + action_dim - 1`` concatenated.
- ``prismatic/models/projectors.py`` ``ProprioProjector(llm_dim, proprio_dim)``: fc1 (proprio_dim -> llm_dim), exact
  GELU, fc2 (llm_dim -> llm_dim); one token ``[B, 1, llm_dim]`` placed after the image patches.

Official checkpoint files were saved from DDP-wrapped modules (``vla-scripts/finetune.py``
``save_training_checkpoint``: ``torch.save(action_head.state_dict(), ...)`` of ``DDP(action_head)``), so every key
has a ``module.`` prefix, which the official loaders strip (``experiments/robot/openvla_utils.py``
``load_component_state_dict``); the head is stored in bfloat16, the projector in float32.
:func:`strip_ddp_prefix` does the same.

Sizes for OpenVLA-7B (llm_dim 4096, action_dim 7): head 151,117,831 parameters (fc1 [4096, 28672]), projector
16,818,176 (proprio_dim 8). Initialisation: PyTorch's defaults (OFT adds none).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

#: Prefix of the keys of a state dict saved from a ``DistributedDataParallel`` wrapper.
DDP_PREFIX = "module."
#: Residual blocks of OFT's MLPResNet head.
NUM_HEAD_BLOCKS = 2
#: Attribute names of the parallel-decoding submodules of the VLA (their state-dict key prefixes).
ACTION_MODULES = ("action_head", "proprio_projector")


class MLPResNetBlock(nn.Module):
    """Pre-LayerNorm residual MLP block: ``x + ReLU(Linear(LayerNorm(x)))`` (``ffn`` = Sequential of the three).

    Args:
        dim: width (input = output).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [..., dim] -> float [..., dim]."""
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm, Linear, ReLU, ``num_blocks`` :class:`MLPResNetBlock`, LayerNorm, Linear (OFT's ``MLPResNet``).

    Args:
        num_blocks: residual blocks. input_dim, hidden_dim, output_dim: widths.
    """

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [..., input_dim] -> float [..., output_dim]."""
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Continuous actions from the LLM's hidden states at the action slots (OFT's ``L1RegressionActionHead``).

    Args:
        llm_dim: hidden size of the LLM (4096 for Llama-2-7B). action_dim: dimensions of one action (7).
        chunk: actions per chunk (8 on LIBERO).
    Attributes:
        model: the :class:`MLPResNet` (official parameter names ``model.*``).
    """

    def __init__(self, llm_dim: int, action_dim: int, chunk: int) -> None:
        super().__init__()
        self.llm_dim, self.action_dim, self.chunk = int(llm_dim), int(action_dim), int(chunk)
        self.model = MLPResNet(
            NUM_HEAD_BLOCKS, input_dim=llm_dim * action_dim, hidden_dim=llm_dim, output_dim=action_dim
        )

    @property
    def num_slots(self) -> int:
        """Action slots read from the sequence: ``chunk * action_dim`` (56 on LIBERO)."""
        return self.chunk * self.action_dim

    def forward(self, action_hidden_states: torch.Tensor) -> torch.Tensor:
        """Normalised actions of the chunk.

        Args:
            action_hidden_states: float [B, chunk * action_dim, llm_dim], slot-major as in the sequence.
        Returns:
            float [B, chunk, action_dim] in the head's dtype (normalised action space).
        Raises:
            ValueError: the input is not [B, chunk * action_dim, llm_dim].
        """
        if action_hidden_states.dim() != 3 or tuple(action_hidden_states.shape[1:]) != (self.num_slots, self.llm_dim):
            raise ValueError(
                f"expected hidden states [B, {self.num_slots}, {self.llm_dim}], got {tuple(action_hidden_states.shape)}"
            )
        B = action_hidden_states.shape[0]
        x = action_hidden_states.to(self.model.fc1.weight.dtype).reshape(B, self.chunk, self.action_dim * self.llm_dim)
        return self.model(x)


class ProprioProjector(nn.Module):
    """Proprio state -> one LLM embedding: fc1, exact GELU, fc2 (OFT's ``ProprioProjector``).

    Args:
        llm_dim: LLM hidden size. proprio_dim: state dimensions (8).
    """

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.llm_dim, self.proprio_dim = int(llm_dim), int(proprio_dim)
        self.fc1 = nn.Linear(proprio_dim, llm_dim, bias=True)
        self.fc2 = nn.Linear(llm_dim, llm_dim, bias=True)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """float [B, proprio_dim] (normalised) -> float [B, llm_dim] in the projector's dtype.

        Raises:
            ValueError: ``proprio`` is not [B, proprio_dim].
        """
        if proprio.dim() != 2 or proprio.shape[1] != self.proprio_dim:
            raise ValueError(f"expected proprio [B, {self.proprio_dim}], got {tuple(proprio.shape)}")
        x = proprio.to(self.fc1.weight.dtype)
        return self.fc2(self.act_fn1(self.fc1(x)))


def strip_ddp_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with a leading ``module.`` removed from every key that has it (others unchanged), as
    OFT's ``load_component_state_dict`` / ``remove_ddp_in_checkpoint`` do."""
    return {(k[len(DDP_PREFIX) :] if k.startswith(DDP_PREFIX) else k): v for k, v in state.items()}
