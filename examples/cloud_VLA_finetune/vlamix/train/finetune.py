"""LoRA fine-tuning of an OpenVLA-architecture model on a mixture of LIBERO RLDS datasets.

Recipe: openvla/openvla ``vla-scripts/finetune.py`` (re-implemented, not copied): LoRA on all linear
layers (``vlamix.model.lora.apply_lora``, gaussian init), AdamW (torch defaults, constant learning
rate) on the LoRA parameters only, loss = mean cross-entropy on the 7 action tokens, loss divided by
``grad_accumulation_steps`` before ``backward``, bf16 autocast, DDP with ``find_unused_parameters``.
Logged like the reference: loss, action-token accuracy, L1 of the decoded (normalised) actions.

OpenVLA-OFT (``action_head: l1_regression``; moojink/openvla-oft ``vla-scripts/finetune.py``): the same LoRA on the
VLA, plus the action head (and proprio projector) trained in full by the same AdamW; the model predicts a chunk of
normalised actions in one bidirectional pass (``forward_actions``) and the loss is the mean absolute error over every
entry of the chunk (``torch.nn.L1Loss``); logged: ``loss`` = ``l1_loss`` and OFT's ``curr_action_l1_loss`` (step 0)
and ``next_actions_l1_loss`` (steps 1..). As OFT, the head keeps the training dtype and the proprio projector float32
weights (under bf16 autocast). OFT decays the learning rate 10x after 100k steps; here it stays constant.

Differences from the reference: the data come from :class:`vlamix.data.mixture.MixtureLoader`
(mixture weights are the sampling proportions); one optimiser step = ``grad_accumulation_steps``
micro-batches of ``batch_size`` frames per rank; training is deterministic for a fixed ``seed``
and resumable (optimizer state, data position and RNG states are checkpointed).

Usage::

    from vlamix.pipeline.config import BenchConfig
    from vlamix.train.finetune import finetune
    cfg = BenchConfig.from_dict({"mixture": {"libero_spatial_no_noops": 1}, "train_steps": 40})
    ckpt = finetune(cfg, "workspace/runs/spatial")          # -> workspace/runs/spatial/step_000040

    # command line (vlamix.cli), one process or data-parallel under torchrun
    vlamix finetune --config point.yaml --out workspace/runs/p0
    torchrun --standalone --nproc-per-node 2 -m vlamix.cli finetune --config point.yaml --out workspace/runs/p0

Output folder::

    <out_dir>/train_log.jsonl          one JSON object per optimiser step (rank 0)
    <out_dir>/step_<NNNNNN>/           checkpoint (see :meth:`FineTuner.save_checkpoint`)

Size: one file because the training loop, the checkpoint and the exact resume are one state machine
(:class:`FineTuner`); the state files, metrics and configuration are apart (``state.py``, ``metrics.py``, ``settings.py``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import time
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP

from vlamix.core.console import progress
from vlamix.core.constants import TRAIN_LOG_NAME
from vlamix.core.errors import ConfigError
from vlamix.core.io import atomic_dir, fault_point, filter_jsonl
from vlamix.core.settings import role, settings_of, yaml_name
from vlamix.data.mixture import MixtureLoader
from vlamix.data.settings import DataConfig
from vlamix.mixing.loss_weights import loss_weights
from vlamix.mixing.settings import MixingConfig
from vlamix.mixing.strategies.doremi import DRO_REFERENCE_INITIAL, reference_losses_from_run
from vlamix.mixing.trajectory import PLOT_FILE, SUMMARY_FILE, TRAJECTORY_FILE, plot_trajectory, write_trajectory
from vlamix.mixing.weights import group_frames
from vlamix.model.action_files import is_action_key, load_action_modules
from vlamix.model.checkpoint import ADAPTER_DIR, load_vla, save_vla
from vlamix.model.lora import apply_lora, base_model_of, merge_lora, set_adapter_state
from vlamix.model.memory import device_label
from vlamix.model.settings import ModelConfig
from vlamix.train.distributed import (
    DistContext,
    all_gather_objects,
    barrier,
    cleanup,
    init_distributed,
    mean_over_ranks,
)
from vlamix.train.loss_weighting import weighted_action_loss, weighted_frame_loss
from vlamix.train.metrics import action_token_metrics
from vlamix.train.settings import TrainConfig, resolve_precision
from vlamix.train.state import (
    TRAINING_STATE_FILE,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
    seed_everything,
)

if TYPE_CHECKING:  # annotations only: the point's configuration sits in the pipeline layer above
    from vlamix.pipeline.config import BenchConfig

logger = logging.getLogger(__name__)

BENCH_CONFIG_NAME = "bench_config.json"
#: Metrics of a step that are averaged over ranks and logged (those the head produces).
_LOGGED_METRICS = ("loss", "action_accuracy", "l1_loss", "weighted_loss", "curr_action_l1_loss", "next_actions_l1_loss")
MERGED_DIR = "merged"
_PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: Config fields that must match between a checkpoint and a resumed run for the continuation to be the same run:
#: the train-role fields of the sections the trainer reads, but those that may change on resume (the step budget,
#: where the data lives, how demonstrations were recorded, gradient checkpointing).
RESUME_FIELDS = tuple(
    yaml_name(f) for section in (DataConfig, MixingConfig, ModelConfig, TrainConfig) for f in settings_of(section)
    if role(f) == "train" and not f.metadata["may_change_on_resume"]
)


class BatchSource(Protocol):
    """What the trainer needs from a data loader (:class:`vlamix.data.mixture.MixtureLoader` has it).

    ``next_batch()`` returns ``{"image": uint8 [B, H, W, 3], "instruction": list[str],
    "action": float32 [B, 7] normalised, model space, ...}``; ``state_dict()`` /
    ``load_state_dict(state)`` save and restore the position in the stream (plain values);
    ``dataset_statistics`` is ``{dataset: stats}`` in OpenVLA's ``dataset_statistics.json`` layout.
    Loaders that also have ``group_names``, ``initial_weights``, ``set_weights(mapping)`` and put
    ``group_index`` int64 [B] into batches (as :class:`~vlamix.data.mixture.MixtureLoader` does)
    support the dynamic strategies and per-group loss logging.
    """

    dataset_statistics: Mapping[str, Any]

    def next_batch(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimiser steps: ``step_000040``."""
    return f"step_{int(step):06d}"


class FineTuner:
    """One fine-tuning run: model + LoRA + AdamW + data, resumable and data-parallel.

    Args:
        cfg: validated :class:`vlamix.pipeline.config.BenchConfig` (its data, mixing, model and train sections).
            Uses ``model``, ``lora_rank``, ``lora_alpha``,
            ``lora_dropout``, ``train_steps``, ``batch_size``, ``grad_accumulation_steps``,
            ``learning_rate``, ``precision``, ``gradient_checkpointing``, ``seed`` and, through the
            data loader, the data fields.
        out_dir: run folder (rank 0 creates it).
        resume_from: a checkpoint folder written by this class; training continues at its step with
            its LoRA weights, optimizer state, data position and RNG states.
        loader: batch source; default ``MixtureLoader(cfg, "train", rank=rank)``.
        log_every: log to the console every this many steps (``train_log.jsonl`` gets every step).
        save_every: also checkpoint every this many steps (None: only at the end).
        save_merged: also write the LoRA-merged plain model into ``<checkpoint>/merged/`` at the end.
        ctx: data-parallel context (default: :func:`init_distributed` from the environment).
        device: force "cpu" or "cuda" (default: CUDA when available).
    Raises:
        ConfigError: naming the field, for values the trainer cannot use.
        FileNotFoundError / ValueError: ``resume_from`` is not a checkpoint of a compatible run.

    Determinism: every rank seeds Python, NumPy and torch with ``seed`` before building the model
    (identical base weights and LoRA init), then with a seed derived from ``(seed, rank)``; the data
    loader derives its streams from ``(seed, rank)``. On the CPU a run (and its resumption) repeats
    bit for bit; CUDA kernels with atomic reductions make GPU runs repeat up to float rounding.
    """

    def __init__(
        self,
        cfg: "BenchConfig",
        out_dir: str,
        *,
        resume_from: str | None = None,
        loader: BatchSource | None = None,
        log_every: int = 10,
        save_every: int | None = None,
        save_merged: bool = False,
        ctx: DistContext | None = None,
        device: str | None = None,
    ) -> None:
        if not all(hasattr(cfg, section) for section in ("data", "mixing", "model", "train", "to_dict")):
            raise TypeError(f"cfg must be a vlamix.pipeline.config.BenchConfig, got {type(cfg).__name__}")
        cfg.validate()
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ConfigError("log_every", f"must be an integer >= 1, got {log_every!r}")
        if save_every is not None and (isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1):
            raise ConfigError("save_every", f"must be None or an integer >= 1, got {save_every!r}")
        self.cfg = cfg
        self.out_dir = os.path.abspath(out_dir)
        self.log_every = log_every
        self.save_every = save_every
        self.save_merged = bool(save_merged)
        self.ctx = ctx if ctx is not None else init_distributed(device)
        self._owns_ctx = ctx is None
        self.precision = cfg.resolved_precision()  # "auto": fp32 for the tiny presets without CUDA, else bf16
        self.dtype = _PRECISION_DTYPES[self.precision]
        #: OpenVLA-OFT's parallel decoding (L1 head) instead of action tokens
        self.parallel = cfg.model.parallel_decoding
        self.step = 0
        try:
            self._setup(resume_from, loader)
        except BaseException:
            if self._owns_ctx:
                cleanup(self.ctx)
            raise

    def _setup(self, resume_from: str | None, loader: BatchSource | None) -> None:
        cfg = self.cfg
        resume_state = None
        if resume_from is not None:  # cheap checks before the model is built
            _check_resume_config(cfg, resume_from)
            resume_state = load_training_state(os.path.join(resume_from, TRAINING_STATE_FILE))
            if resume_state["world_size"] != self.ctx.world_size:
                raise ValueError(
                    f"{resume_from} was saved by {resume_state['world_size']} data-parallel ranks, this run has "
                    f"{self.ctx.world_size}; resume with the same number of processes"
                )

        # Same seed on every rank: identical base weights and LoRA init (DDP also broadcasts rank 0's).
        seed_everything(cfg.train.seed)
        self.model, self.processor = self._build_model()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise RuntimeError("the LoRA-wrapped model has no trainable parameter")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.train.learning_rate)
        self.loader = loader if loader is not None else self._build_loader()
        self.mixing = self._build_mixing()
        self.norm_stats = dict(getattr(self.loader, "dataset_statistics", None) or {})
        if not self.norm_stats:
            logger.warning("the data loader provides no dataset_statistics; the checkpoint will have no norm stats")
        self.train_model: nn.Module = self.model
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            # LoRA layers on the towers' unused last block (and SigLIP's attention pool) get no gradient.
            self.train_model = DDP(self.model, device_ids=device_ids, find_unused_parameters=True)
        # Per-rank stream for dropout etc., derived from (seed, rank).
        seed_everything(_derive_seed(cfg.train.seed, self.ctx.rank))
        if resume_from is not None:
            self._resume(resume_from, resume_state)
        if self.mixing is not None and self.mixing.needs_reference:
            self.mixing.set_reference(self._reference_losses())
        self._refresh_loss_weights()

    # ------------------------------------------------------------------ construction
    def _build_model(self) -> tuple[nn.Module, Any]:
        cfg = self.cfg
        recipe = cfg.model.action_recipe() if self.parallel else None
        base, processor = load_vla(cfg.model.path, device=self.ctx.device, dtype=self.dtype, recipe=recipe,
                                   init_seed=cfg.train.seed)
        if self.parallel and base.proprio_projector is not None:
            base.proprio_projector.float()  # OFT trains it in float32 weights (init_module to_bf16=False)
        if cfg.train.gradient_checkpointing:
            if not hasattr(base, "gradient_checkpointing_enable"):
                raise ConfigError("gradient_checkpointing", f"{type(base).__name__} has no gradient checkpointing switch")
            base.gradient_checkpointing_enable()
        model = apply_lora(base, rank=cfg.model.lora_rank, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout)
        if cfg.model.finetune_mode == "full":  # same LoRA-wrapped model; the base weights train as well
            for param in model.parameters():
                param.requires_grad_(True)
        model.to(self.ctx.device)
        model.train()
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("model %s (%s) with LoRA rank %d, finetune_mode %s: %d trainable parameters on %s",
                    cfg.model.path, self.precision, cfg.model.lora_rank, cfg.model.finetune_mode, n_train, self.ctx.device)
        return model, processor

    def _build_loader(self) -> BatchSource:
        cfg = self.cfg
        return MixtureLoader(cfg.data, cfg.mixing, "train", batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                             rank=self.ctx.rank, **self.loader_options())

    def loader_options(self) -> dict[str, Any]:
        """What the model reads from the data (:class:`MixtureLoader` keywords): chunks, wrist image, proprio."""
        m = self.cfg.model
        return {"action_chunk": m.action_chunk if self.parallel else None, "wrist_image": m.use_wrist_image,
                "proprio": m.use_proprio}

    def _build_mixing(self):
        """The run's strategy controller (:mod:`vlamix.mixing.strategies`; None for a loader without groups)."""
        groups = getattr(self.loader, "group_names", None)
        initial = getattr(self.loader, "initial_weights", None)
        if groups is None or initial is None:
            if self.cfg.mixing.strategy != "static":
                raise ConfigError(
                    "strategy",
                    f"{self.cfg.mixing.strategy!r} needs a loader with groups (vlamix MixtureLoader); "
                    f"{type(self.loader).__name__} has none, so only 'static' can be used",
                )
            return None
        return self.cfg.mixing.strategy_class()(self.cfg.mixing, groups, initial)

    def _refresh_loss_weights(self) -> None:
        """Per-group loss weights (``loss_weighting``) against the current sampling weights, float64 [G]
        in ``group_names`` order in ``self.loss_weights`` (None for ``none``); called at setup (after a
        resume) and after every weight change (:mod:`vlamix.mixing.loss_weights`).

        Raises:
            ConfigError: field ``loss_weighting``, for a loader without groups or group frame counts.
        """
        self.loss_weights: np.ndarray | None = None
        if self.cfg.mixing.loss_weighting == "none":
            return
        sources = getattr(self.loader, "sources", None)
        if self.mixing is None or sources is None:
            raise ConfigError(
                "loss_weighting",
                f"{self.cfg.mixing.loss_weighting!r} needs a loader with groups and sources (vlamix MixtureLoader); "
                f"{type(self.loader).__name__} has none, so only 'none' can be used",
            )
        counts = group_frames(sources)
        n = [counts.get(g, 0) for g in self.mixing.groups]
        weighting = self.cfg.mixing.loss_weighting
        self.loss_weights = loss_weights(n, self.mixing.weights, weighting)
        self.initial_loss_weights = dict(zip(self.mixing.groups, loss_weights(n, self.mixing.initial, weighting).tolist()))
        logger.info("loss weights (%s, per group): %s", weighting,
                    dict(zip(self.mixing.groups, np.round(self.loss_weights, 4).tolist())))

    def named_loss_weights(self) -> dict[str, float] | None:
        """Current loss weight per group (None for ``loss_weighting: none``)."""
        if self.loss_weights is None:
            return None
        return dict(zip(self.mixing.groups, self.loss_weights.tolist()))

    def _reference_losses(self) -> np.ndarray:
        """DoReMi reference: per-group loss (nats) of a saved run, or of the initial model on
        ``dro_reference_batches`` batches drawn uniformly over groups from a second loader (seeded
        apart from the training stream, so training batches are unchanged)."""
        groups = list(self.mixing.groups)
        cfg = self.cfg
        if cfg.mixing.dro_reference != DRO_REFERENCE_INITIAL:
            try:
                ref = reference_losses_from_run(cfg.mixing.dro_reference, groups)
            except (FileNotFoundError, ValueError) as err:
                raise ConfigError("dro_reference", str(err)) from err
        else:
            loader = MixtureLoader(cfg.data, cfg.mixing, "train", batch_size=cfg.train.batch_size,
                                   seed=_derive_seed(cfg.train.seed, 1, 0x5EF), rank=self.ctx.rank,
                                   **self.loader_options())
            loader.set_weights({g: 1.0 for g in groups})
            sums, counts = np.zeros(len(groups)), np.zeros(len(groups))
            self.model.eval()
            with torch.no_grad():
                for _ in range(cfg.mixing.dro_reference_batches):
                    batch = loader.next_batch()
                    inputs = self._micro_batch(batch)
                    with self._autocast():
                        out = self._model_forward(self.model, inputs)
                    _add_frame_losses(sums, counts, self._per_frame_loss(out, inputs), batch["group_index"])
            self.model.train()
            sums, counts = _sum_over_ranks(self.ctx, sums, counts)
            with np.errstate(invalid="ignore", divide="ignore"):
                ref = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        logger.info("doremi reference loss per group: %s", dict(zip(groups, np.round(ref, 4).tolist())))
        return ref

    @property
    def action_tokenizer(self):
        return self.processor.action_tokenizer

    # ------------------------------------------------------------------ resume
    def _resume(self, ckpt_dir: str, state: dict[str, Any]) -> None:
        adapter_file = os.path.join(ckpt_dir, ADAPTER_DIR, "adapter_model.safetensors")
        if not os.path.isfile(adapter_file):
            raise FileNotFoundError(f"no LoRA adapter weights at {adapter_file}")
        adapter = load_file(adapter_file, device=str(self.ctx.device))
        result = set_adapter_state(self.model, adapter)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        missing_lora = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
        if unexpected or missing_lora:
            raise ValueError(
                f"adapter in {ckpt_dir} does not fit this model (lora_rank/model differ?): "
                f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), {len(missing_lora)} missing LoRA keys "
                f"(e.g. {missing_lora[:3]})"
            )
        if self.cfg.model.finetune_mode == "full":
            self._resume_base_weights(ckpt_dir)
        if self.parallel:  # trained in full: restore the head (and projector) of the checkpoint in place
            load_action_modules(base_model_of(self.model), ckpt_dir, required=True)
        self.optimizer.load_state_dict(state["optimizer"])
        data = state["data"][self.ctx.rank]
        if data is not None:
            if not hasattr(self.loader, "load_state_dict"):
                raise TypeError(f"the data loader {type(self.loader).__name__} cannot restore its position (no load_state_dict)")
            self.loader.load_state_dict(data)
        restore_rng_state(state["rng"][self.ctx.rank])
        if self.mixing is not None and state.get("mixing") is not None:
            self.mixing.load_state_dict(state["mixing"])
        self.step = int(state["step"])
        logger.info("resumed from %s at step %d", ckpt_dir, self.step)

    def _resume_base_weights(self, ckpt_dir: str) -> None:
        """finetune_mode "full": load the checkpoint's trained base weights (``model*.safetensors``)."""
        files = sorted(f for f in os.listdir(ckpt_dir) if f.startswith("model") and f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no base weights (model*.safetensors) in {ckpt_dir} to resume full fine-tuning")
        saved: dict[str, torch.Tensor] = {}
        for name in files:
            saved.update(load_file(os.path.join(ckpt_dir, name), device=str(self.ctx.device)))
        core = self.model.get_base_model()
        with torch.no_grad():
            for key, param in core.state_dict(keep_vars=True).items():
                if "lora_" in key or is_action_key(key):  # action modules: their own files (_resume)
                    continue
                plain = key.replace(".base_layer.", ".")
                if plain not in saved:
                    raise ValueError(f"base weight {plain} missing from {ckpt_dir}")
                param.copy_(saved[plain])

    # ------------------------------------------------------------------ training
    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.ctx.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _micro_batch(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.parallel:
            m = self.cfg.model
            for key, field_name in (("wrist_image", "use_wrist_image"), ("proprio", "use_proprio")):
                if getattr(m, field_name) and key not in batch:
                    raise ValueError(f"the training batches carry no {key!r}, which the model reads "
                                     f"({field_name}: true); the loader must provide it")
            inputs = self.processor.chunk_training_batch(
                batch["image"], batch["instruction"], batch["action"],
                wrist_images=batch["wrist_image"] if m.use_wrist_image else None,
                proprio=batch["proprio"] if m.use_proprio else None,
            )
        else:
            inputs = self.processor.training_batch(batch["image"], batch["instruction"], batch["action"])
        out = {k: v.to(self.ctx.device, non_blocking=True) for k, v in inputs.items()}
        out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out

    def _model_forward(self, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
        """The training forward: ``forward(..., logits="labeled")`` (tokens) or the chunk forward (L1 head)."""
        return model(**inputs) if self.parallel else model(**inputs, logits="labeled")

    def _per_frame_loss(self, out: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """float32 [B] (detached): each frame's mean action-token cross-entropy (nats), or its mean absolute
        error over the chunk (normalised units) for the L1 head."""
        with torch.no_grad():
            if self.parallel:
                return (out.actions.detach().float() - inputs["target_actions"].float()).abs().mean(dim=(1, 2))
            per_token = F.cross_entropy(out.logits.detach().float(), out.targets, reduction="none")
            return per_token.view(inputs["input_ids"].shape[0], -1).mean(dim=1)

    def forward_backward(self) -> dict[str, float]:
        """Accumulate the gradients of one optimiser step: ``grad_accumulation_steps`` micro-batches,
        each loss divided by that number (DDP all-reduces on the last micro-batch only).

        Returns:
            this rank's metrics averaged over the micro-batches: ``loss`` (mean cross-entropy on the
            action tokens, nats), ``action_accuracy`` (fraction), ``l1_loss`` (normalised action units)
            and, with ``loss_weighting``, ``weighted_loss`` (the loss that was back-propagated:
            :func:`vlamix.train.loss_weighting.weighted_action_loss`). L1 head: ``loss`` = ``l1_loss`` (mean
            absolute error over the chunk, normalised units), ``curr_action_l1_loss`` (step 0),
            ``next_actions_l1_loss`` (steps 1..; NaN for chunks of 1), no ``action_accuracy``.
            The per-group sums of the frames' losses and the frame counts are left in
            ``group_loss_sums`` / ``group_counts`` (float64 [G]).
        Raises:
            FloatingPointError: a loss is not finite.
        """
        accum = self.cfg.train.grad_accumulation_steps
        values: dict[str, list[float]] = {}
        groups = len(self.mixing.groups) if self.mixing is not None else 0
        self.group_loss_sums, self.group_counts = np.zeros(groups), np.zeros(groups)
        self.train_model.train()
        for micro in range(accum):
            batch = self.loader.next_batch()
            inputs = self._micro_batch(batch)
            last = micro == accum - 1
            sync = contextlib.nullcontext() if (last or not self.ctx.distributed) else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    out = self._model_forward(self.train_model, inputs)
                loss = out.loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step + 1}")
                objective = loss
                if self.loss_weights is not None:  # per-group loss weighting (vlamix.train.loss_weighting)
                    if "group_index" not in batch:
                        raise ConfigError("loss_weighting", "the training batches carry no group_index")
                    if self.parallel:
                        per_frame = (out.actions.float() - inputs["target_actions"].float()).abs().mean(dim=(1, 2))
                        objective = weighted_frame_loss(per_frame, batch["group_index"], self.loss_weights)
                    else:
                        objective, _ = weighted_action_loss(out.logits, out.targets, batch["group_index"],
                                                            self.loss_weights)
                    values.setdefault("weighted_loss", []).append(float(objective.detach()))
                (objective / accum).backward()
            if groups and "group_index" in batch:
                _add_frame_losses(self.group_loss_sums, self.group_counts, self._per_frame_loss(out, inputs),
                                  batch["group_index"])
            for key, value in self._step_metrics(out, inputs, loss).items():
                values.setdefault(key, []).append(value)
        return {key: float(np.mean(v)) for key, v in values.items()}

    def _step_metrics(self, out: Any, inputs: Mapping[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
        """One micro-batch's logged metrics (see :meth:`forward_backward`)."""
        if not self.parallel:
            metrics = action_token_metrics(out.logits.detach(), out.targets, self.action_tokenizer)
            return {"loss": float(loss.detach()), "action_accuracy": metrics.accuracy, "l1_loss": metrics.l1}
        error = (out.actions.detach().float() - inputs["target_actions"].float()).abs()  # [B, chunk, D]
        next_l1 = float(error[:, 1:].mean()) if error.shape[1] > 1 else float("nan")
        return {"loss": float(loss.detach()), "l1_loss": float(loss.detach()),
                "curr_action_l1_loss": float(error[:, 0].mean()), "next_actions_l1_loss": next_l1}

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients (AdamW), clear them and count the step."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def train_step(self) -> dict[str, float]:
        """One optimiser step: :meth:`forward_backward` then :meth:`optimizer_step`; returns the metrics."""
        metrics = self.forward_backward()
        self.optimizer_step()
        return metrics

    def train(self) -> str:
        """Train until ``cfg.train.train_steps`` optimiser steps; return the final checkpoint folder.

        Rank 0 appends one JSON object per step to ``<out_dir>/train_log.jsonl``: ``step``, ``loss``,
        ``action_accuracy``, ``l1_loss`` (means over micro-batches and ranks), ``lr``,
        ``step_time_s`` (wall seconds of the step, data loading included), ``frames`` (seen so far,
        all ranks), ``group_loss`` (mean loss per group that drew frames, all ranks) and, on steps
        where a dynamic strategy changed them, ``mixture_weights`` and ``mixing_update_s`` (wall
        seconds of the update); with ``loss_weighting``, ``weighted_loss`` (the optimised loss, mean
        over micro-batches and ranks) every step and ``loss_weights`` on weight changes. The weight trajectory goes to ``<out_dir>/mixing_weights.jsonl``.
        """
        cfg = self.cfg
        if self.ctx.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
        log_path = os.path.join(self.out_dir, TRAIN_LOG_NAME)
        steps = cfg.train.train_steps
        frames_per_step = cfg.train.batch_size * cfg.train.grad_accumulation_steps * self.ctx.world_size
        if self.step >= steps:
            logger.info("checkpoint is at step %d >= train_steps %d: nothing to train", self.step, steps)
        bar = _progress_bar(steps, self.step, enabled=self.ctx.is_main)
        if self.ctx.is_main:  # a resumed run logs each step once: drop rows past the checkpoint (and a torn last line)
            dropped = filter_jsonl(log_path, lambda row: isinstance(row, dict) and int(row.get("step", 0)) <= self.step)
            if dropped:
                logger.info("%s: dropped %d rows after step %d (they are trained again)", log_path, dropped, self.step)
        try:
            while self.step < steps:
                start = time.perf_counter()
                metrics = self.train_step()
                names = [k for k in _LOGGED_METRICS if k in metrics]
                means = dict(zip(names, mean_over_ranks(self.ctx, [metrics[k] for k in names])))
                loss, acc, l1 = means["loss"], means.get("action_accuracy"), means["l1_loss"]
                record = {
                    "step": self.step,
                    "loss": loss,
                    "action_accuracy": acc,  # None for the L1 head (no tokens)
                    "l1_loss": l1,
                    "lr": float(self.optimizer.param_groups[0]["lr"]),
                    "step_time_s": time.perf_counter() - start,
                    "frames": self.step * frames_per_step,
                }
                record.update({k: (None if np.isnan(v) else v) for k, v in means.items() if k not in record})
                if self.mixing is not None:
                    record.update(self._update_mixing())
                bar.set_postfix(loss=f"{loss:.4f}", steps_per_s=f"{1.0 / max(record['step_time_s'], 1e-9):.2f}",
                                refresh=False)
                bar.update(1)
                if self.ctx.is_main:
                    with open(log_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    if self.step % self.log_every == 0 or self.step == steps:
                        logger.info("step %d/%d loss %.4f acc %s l1 %.4f (%.2fs)", self.step, steps,
                                    loss, "-" if acc is None else f"{acc:.3f}", l1, record["step_time_s"])
                if self.save_every and self.step % self.save_every == 0 and self.step < steps:
                    self.save_checkpoint()
            return self.save_checkpoint(final=True)
        finally:
            bar.close()
            if self._owns_ctx:
                cleanup(self.ctx)

    def release_memory(self) -> None:
        """Drop the model, optimiser and loader and return their (GPU) memory, so that rollouts
        started after training find the device empty: ``gc.collect()`` then, on CUDA,
        ``torch.cuda.empty_cache()``. The tuner cannot train afterwards."""
        for name in ("train_model", "model", "optimizer", "trainable", "loader", "mixing"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()
        if torch.cuda.is_available() and self.ctx.device.type == "cuda":
            torch.cuda.empty_cache()
            logger.info("released training memory: %.2f GiB still allocated on %s",
                        torch.cuda.memory_allocated(self.ctx.device) / 2**30, self.ctx.device)

    def _update_mixing(self) -> dict[str, Any]:
        """Feed this step's per-group losses (all ranks) to the controller; apply new weights."""
        start = time.perf_counter()
        sums, counts = _sum_over_ranks(self.ctx, self.group_loss_sums, self.group_counts)
        self.mixing.observe(sums, counts)
        out: dict[str, Any] = {
            "group_loss": {g: float(sums[i] / counts[i]) for i, g in enumerate(self.mixing.groups) if counts[i] > 0}
        }
        new = self.mixing.after_step(self.step)
        if new is not None:
            self.loader.set_weights(new)
            if self.loss_weights is not None:  # renormalise against the new sampling weights
                self._refresh_loss_weights()
                out["loss_weights"] = self.named_loss_weights()
            if self.ctx.is_main:
                write_trajectory(self.mixing.history, os.path.join(self.out_dir, TRAJECTORY_FILE))
            out["mixture_weights"] = new
            out["mixing_update_s"] = time.perf_counter() - start
        return out

    def _write_mixing_files(self, ckpt: str, final: bool) -> None:
        """Trajectory (+ plot at the end) in the run folder; trajectory, plot and summary in ``ckpt``."""
        run_traj = write_trajectory(self.mixing.history, os.path.join(self.out_dir, TRAJECTORY_FILE))
        shutil.copyfile(run_traj, os.path.join(ckpt, TRAJECTORY_FILE))
        if final:
            plot = plot_trajectory(self.mixing.history, os.path.join(self.out_dir, PLOT_FILE),
                                   total_steps=self.cfg.train.train_steps, title=self.cfg.strategy_label())
            shutil.copyfile(plot, os.path.join(ckpt, PLOT_FILE))
        summary = {"strategy_label": self.cfg.strategy_label(), "step": self.step, **self.mixing.summary(self.step)}
        summary["loss_weighting"] = self.cfg.mixing.loss_weighting
        summary["loss_weights"] = self.named_loss_weights()  # current (final) weights; None for "none"
        summary["initial_loss_weights"] = getattr(self, "initial_loss_weights", None) if self.loss_weights is not None else None
        loader_summary = self.loader.summary() if hasattr(self.loader, "summary") else {}
        for key in ("mixing_level", "realised_proportions", "sources", "skill_table", "filter_counts"):
            if key in loader_summary:
                summary[key] = loader_summary[key]
        with open(os.path.join(ckpt, SUMMARY_FILE), "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, final: bool = False) -> str:
        """Write ``<out_dir>/step_<NNNNNN>/`` (rank 0; all ranks must call it) and return its path.

        Contents:
            ``config.json``, tokenizer files, ``preprocessor_config.json``,
            ``dataset_statistics.json`` (norm stats of the mixture's datasets, OpenVLA layout) and
            ``lora_adapter/`` (peft) via :func:`vlamix.model.checkpoint.save_vla`; the base weights
            (``model.safetensors``) for a built-in base model, else a reference to the base folder
            in ``vlamix_checkpoint.json``; ``bench_config.json`` (:meth:`BenchConfig.to_dict`);
            ``training_state.pt`` (optimizer, step, data loader state and RNG states of every rank,
            mixing controller state); ``mixing_summary.json``, ``mixing_weights.jsonl`` and, with
            ``final``, ``mixing_weights.png`` (:mod:`vlamix.mixing.trajectory`);
            with ``save_merged`` and ``final``: ``merged/``, a plain model with LoRA folded in.
        ``load_vla(<folder>)`` returns the fine-tuned model (a PeftModel; ``merge_adapter=True`` for
        a plain one).
        """
        ckpt = os.path.join(self.out_dir, checkpoint_name(self.step))
        # Collectives first (every rank), then rank 0 writes.
        data_states = all_gather_objects(self.ctx, self.loader.state_dict() if hasattr(self.loader, "state_dict") else None)
        rng_states = all_gather_objects(self.ctx, capture_rng_state())
        if self.ctx.is_main:
            # written in a temporary folder renamed to step_<N> when complete: a kill never leaves a partial checkpoint
            with atomic_dir(ckpt) as stage:
                # full fine-tuning changed the base weights: store them instead of a reference to the base
                m = self.cfg.model
                keep_base = m.builtin or m.finetune_mode == "full"
                base_model = None if keep_base else m.path
                training = {"image_aug": bool(self.cfg.data.image_aug), "precision": self.precision,
                            "device": self.ctx.device.type, "device_name": device_label(str(self.ctx.device)),
                            "finetune_mode": m.finetune_mode, "lora_rank": m.lora_rank, "action_head": m.action_head}
                save_vla(self.model, self.processor, stage, norm_stats=self.norm_stats or None, base_model=base_model,
                         training=training)
                with open(os.path.join(stage, BENCH_CONFIG_NAME), "w", encoding="utf-8") as f:
                    json.dump(self.cfg.to_dict(), f, indent=2)
                fault_point("checkpoint:weights_written")
                save_training_state(
                    os.path.join(stage, TRAINING_STATE_FILE),
                    step=self.step,
                    optimizer=self.optimizer,
                    data_states=data_states,
                    rng_states=rng_states,
                    extra={"mixing": self.mixing.state_dict()} if self.mixing is not None else None,
                )
                if self.mixing is not None:
                    self._write_mixing_files(stage, final)
                if final and self.save_merged:
                    # Training is over: fold LoRA into the weights in place (no copy of a 7B model).
                    merged = merge_lora(self.model)
                    save_vla(merged, self.processor, os.path.join(stage, MERGED_DIR), norm_stats=self.norm_stats or None,
                             training=training)
                    logger.info("saved merged model %s", os.path.join(ckpt, MERGED_DIR))
            logger.info("saved checkpoint %s", ckpt)
            fault_point("checkpoint:saved")
        barrier(self.ctx)
        return ckpt


def _progress_bar(total: int, initial: int, enabled: bool = True):
    """Progress over optimiser steps (loss, steps/s; :func:`vlamix.core.console.progress`: a bar on a terminal,
    a line per quarter elsewhere), on rank 0 only."""
    return progress(total, "training", "steps", initial=min(initial, total), enabled=enabled)


def finetune(
    cfg: "BenchConfig",
    out_dir: str,
    *,
    resume_from: str | None = None,
    loader: BatchSource | None = None,
    log_every: int = 10,
    save_every: int | None = None,
    save_merged: bool = False,
) -> str:
    """LoRA-fine-tune ``cfg.model`` on ``cfg.data.mixture`` for ``cfg.train.train_steps`` steps (see :class:`FineTuner`).

    Returns:
        the final checkpoint folder ``<out_dir>/step_<train_steps>``.
    Raises:
        ConfigError, FileNotFoundError, ValueError: see :class:`FineTuner`.
    """
    tuner = FineTuner(
        cfg, out_dir, resume_from=resume_from, loader=loader, log_every=log_every,
        save_every=save_every, save_merged=save_merged,
    )  # fmt: skip
    try:
        return tuner.train()
    finally:
        tuner.release_memory()  # rollouts come next and need the GPU


def _check_resume_config(cfg: "BenchConfig", ckpt_dir: str) -> None:
    """Raise :class:`ConfigError` if a field in :data:`RESUME_FIELDS` differs from the checkpoint's config."""
    path = os.path.join(ckpt_dir, BENCH_CONFIG_NAME)
    if not os.path.isfile(path):
        logger.warning("%s has no %s; cannot check that the resumed run uses the same config", ckpt_dir, BENCH_CONFIG_NAME)
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    mine = cfg.to_dict()
    mine["precision"] = cfg.resolved_precision()
    if saved.get("precision") == "auto":  # compare what each run trains in
        saved["precision"] = resolve_precision("auto", saved.get("model", cfg.model.path))
    for name in RESUME_FIELDS:
        if name in saved and saved[name] != mine[name]:
            raise ConfigError(
                name,
                f"differs from the checkpoint being resumed ({saved[name]!r} in {path}, {mine[name]!r} now); "
                f"only train_steps and evaluation fields may change on resume",
            )


def _add_frame_losses(sums: np.ndarray, counts: np.ndarray, per_frame: torch.Tensor, group_index: Any) -> None:
    """Add each frame's loss (:meth:`FineTuner._per_frame_loss`, float [B]) to its group: ``sums``/``counts``
    float64 [G]."""
    index = np.asarray(group_index, dtype=np.int64)
    np.add.at(sums, index, per_frame.detach().cpu().numpy().astype(np.float64))
    np.add.at(counts, index, 1.0)


def _sum_over_ranks(ctx: DistContext, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group loss sums and counts added over all data-parallel ranks (identical on every rank)."""
    gathered = all_gather_objects(ctx, (np.asarray(sums).tolist(), np.asarray(counts).tolist()))
    return np.sum([g[0] for g in gathered], axis=0), np.sum([g[1] for g in gathered], axis=0)


def _derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (per-rank streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0])
