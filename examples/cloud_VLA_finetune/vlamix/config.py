"""The benchmark configuration: one flat, validated record of every hyperparameter.

Every field can be a grid axis in ``vla_algorithm.yaml`` (Ianvs takes the Cartesian product of the
value lists and passes one value per field to the basemodel). The record is validated once, at the
edge (:meth:`BenchConfig.from_dict`), before any data is recorded or any model is built; each error
is a :class:`ConfigError` that names the field and the allowed values.

Relative paths (``data_dir``, ``model``) are resolved against the current working directory, which
is the Ianvs root under ``ianvs -f`` and the repository root for ``vlamix run``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vlamix.constants import DATASET_TO_SUITE, LIBERO_SUITES, TRAIN_LOG_NAME
from vlamix.mixing.loss_weights import LOSS_WEIGHTINGS
from vlamix.mixing.weights import DYNAMIC_STRATEGIES, MIXING_LEVELS, STRATEGIES, default_level

#: Built-in model configurations (no download); anything else is a checkpoint folder path.
BUILTIN_MODELS = ("tiny", "tiny-p28")
DEMO_SOURCES = ("scripted", "none")
#: ``dro_reference`` value that measures the reference losses with the initial model.
DRO_REFERENCE_INITIAL = "initial"
#: ``dro_reference`` value that trains a reference run on the initial weights first (vlamix.mixing.reference).
DRO_REFERENCE_AUTO = "auto"
#: Parameters that matter only for some strategies (the rest are reset to defaults in train keys).
STRATEGY_PARAMS = {
    "static": ("balance_by_size",),
    "full_dataset": (),
    "task_balanced": ("mixing_level", "skill_map"),
    "temperature": ("mixing_level", "skill_map", "temperature"),
    "doremi": ("balance_by_size", "mixing_level", "skill_map", "mixing_update_every", "dro_eta", "dro_smoothing",
               "dro_reference", "dro_reference_batches"),
    "exp3": ("balance_by_size", "mixing_level", "skill_map", "mixing_update_every", "exp3_smoothing"),
    "curriculum": ("mixing_level", "skill_map", "curriculum"),
    # DoReMi step 3 (vlamix.mixing.reference): a DoReMi run's time-averaged weights as a static mixture
    "doremi_transfer": ("balance_by_size", "mixing_update_every", "dro_eta", "dro_smoothing", "dro_reference",
                        "dro_reference_batches"),
}  # fmt: skip
#: Training precision: "auto" = fp32 for the built-in tiny presets on a machine without CUDA, else bf16
#: (OpenVLA-7B in fp32 needs 30 GB for its weights alone; :meth:`BenchConfig.resolved_precision`).
PRECISIONS = ("auto", "fp32", "bf16")
#: Rollout runtime choices (eval_dtype, eval_videos).
EVAL_DTYPES = ("auto", "fp32", "bf16", "fp16")
EVAL_VIDEOS = ("none", "failures", "all")
FINETUNE_MODES = ("lora", "full")


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"config field '{field_name}': {message}")


@dataclass(frozen=True)
class BenchConfig:
    """All hyperparameters of one benchmark point (one row of the leaderboard).

    Data
        mixture: dataset name -> non-negative weight. Weights are normalised to sum 1 and are the
            frame sampling proportions (``{"libero_spatial_no_noops": 2, "libero_object_no_noops": 1}``
            samples 2/3 of frames from spatial). Names are RLDS dataset names of
            ``openvla/modified_libero_rlds`` (:data:`vlamix.constants.DATASET_TO_SUITE`).
        balance_by_size: multiply the weights by the datasets' frame counts before normalising
            (OpenVLA's ``balance_weights``). Off by default, so "2:1" is what is sampled.
        data_dir: folder holding ``<name>/1.0.0/`` RLDS datasets.
        heldout_fraction: fraction of each dataset's episodes (the last ones) kept out of training
            for offline metrics, in [0, 0.5].
        demos: "scripted" records missing datasets with the scripted expert in LIBERO (the embedded
            default); "none" requires the datasets to exist (real data).
        demo_tasks: tasks per suite to record (first N task ids) when ``demos == "scripted"``.
        demo_episodes_per_task: successful episodes to keep per task.
    Data-ratio strategy (:mod:`vlamix.mixing`)
        strategy: "static" (the mixture weights), "full_dataset" (natural proportions of the chosen
            datasets), "task_balanced" (equal per task or skill), "temperature" (n^(1/T)),
            "doremi" (excess-loss group DRO), "exp3" (online data mixing), "curriculum" (schedule),
            "doremi_transfer" (a DoReMi run's time-averaged weights, then a fresh static run on them).
        mixing_level: what weights are assigned to: "dataset", "task" (language instruction) or
            "skill" (verb of the instruction); None = "task" for task_balanced, else "dataset".
            static supports "dataset" only.
        temperature: T > 0 of the temperature strategy (1 = natural, .inf = uniform).
        skill_map: overrides of the instruction -> skill mapping (verb or whole instruction -> skill).
        mixing_update_every: K, optimiser steps between weight updates (doremi, exp3).
        dro_eta: step size of the exponentiated-gradient update (> 0). dro_smoothing: c in [0, 1],
            mix of the initial weights kept in every update (each weight >= c * initial).
        dro_reference: "initial" (the initial model's per-group loss), "auto" (a reference run trained
            first on the initial weights with the same budget, shared by every point with the same
            training key; :mod:`vlamix.mixing.reference`) or a saved run folder whose
            logged per-group loss is the reference. dro_reference_batches: batches per reference.
        exp3_smoothing: a in [0, 1), moving-average factor of EXP3's reward estimates.
        curriculum: ``[{step: 0, weights: {...}}, {step: N, weights: {...}}, ...]`` (group names ->
            weights; steps strictly increasing from 0).
    Per-group loss weighting (:mod:`vlamix.mixing.loss_weights`; with any strategy)
        loss_weighting: "none", "inverse_frequency" (w_g ~ 1/n_g) or "inverse_sqrt_frequency"
            (w_g ~ 1/sqrt(n_g)) over the mixing level's groups (n_g = kept training frames), each
            frame's action-token loss times w_g, normalised so that sum_g p_g w_g = 1 under the
            current sampling weights p (renormalised at every weight change of a dynamic strategy).
    Action filtering (:mod:`vlamix.data.filters`; training steps only)
        filter_nonfinite: drop steps with a NaN/Inf action value.
        filter_action_limit: drop steps with any |raw action value| above this; None = off.
        filter_min_motion: drop steps whose windowed max ||a[:6]|| is below this (raw units; 0 = off),
            except around gripper changes. filter_motion_window: window length in steps (>= 1).
        dataset_whitelist / dataset_blacklist: dataset names to keep / remove from the mixture.
    Model
        model: "tiny" or "tiny-p28" (built-in, random init; see ``VLAConfig.tiny_p28``) or a path to an
            OpenVLA checkpoint folder.
        lora_rank, lora_alpha, lora_dropout: peft LoRA on all linear layers (OpenVLA recipe:
            rank 32, alpha min(rank, 16), dropout 0).
        finetune_mode: "lora" (only the adapters train) or "full" (the base weights train too; the
            checkpoint then stores the base weights, also for a checkpoint-folder model).
    Training
        train_steps: optimiser steps. batch_size: frames per micro-batch.
        grad_accumulation_steps: micro-batches per optimiser step. learning_rate: AdamW lr.
        precision: "auto" (default: fp32 for the built-in tiny presets on a machine without CUDA, bf16
            otherwise: OpenVLA-7B in fp32 needs 30 GB for its weights alone), "fp32" or "bf16" (weights in
            bf16 and bf16 autocast). gradient_checkpointing: recompute activations.
        shuffle_buffer_size: frames in each dataset's shuffle buffer. seed: data and init seed.
        image_aug: OpenVLA's training image augmentation (random 90%-area crop, brightness, contrast,
            saturation, hue; :mod:`vlamix.data.augment`), seeded per frame; recorded in the checkpoint,
            and evaluation centre-crops when it is on (``center_crop: null``).
    Evaluation
        eval_suites: LIBERO task suites to roll out in (default: the suites of the datasets trained
            on: non-zero weight, through dataset_whitelist / dataset_blacklist). A listed suite whose
            dataset is not trained on is refused when two or more datasets are (no action norm stats). eval_tasks: first N task ids of each suite (None = all).
        trials_per_task: episodes per task, each from the next init state of the suite.
        eval_max_steps: episode step limit (None = the suite's reference limit).
        num_steps_wait: dummy-action steps before the policy acts (reference: 10).
        eval_workers: parallel rollout processes. eval_seed: seed of the environments.
        offline_max_frames: held-out frames the offline metrics (action-token accuracy, L1) use at most;
            null = every held-out frame (the same frames for every point of a job either way).
        center_crop: centre-crop the camera image (90% of the area, resized back) as OpenVLA's LIBERO
            evaluation does for checkpoints trained with image augmentation: true, false, or null
            ("auto", the default) = follow the checkpoint (``image_aug`` of the run that trained it;
            official OpenVLA folders, trained with augmentation, crop).
    Rollout runtime (:mod:`vlamix.eval.server`, :mod:`vlamix.eval.envs`)
        eval_device: where the rollout policy runs: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
        eval_dtype: policy dtype: "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16" (CUDA only).
        envs_per_worker: LIBERO environments per env-worker process, 1 or an even number. The policy
            batch (images per policy call, :meth:`policy_batch_size`) is ``eval_workers`` with 1 (lock-step),
            ``eval_workers * envs_per_worker / 2`` with 2 or more (double buffering: the policy acts on
            one half of the slots while the workers step the other half); batch 16 = 8 workers x 4 envs.
        eval_episode_timeout_s: seconds of an episode's environment work before its worker is
            replaced and the episode rerun (None = no limit).
        eval_max_attempts: runs of an episode after worker deaths, timeouts or env errors before it is
            recorded as an error (errors are not failures: they are left out of the success rate).
        eval_max_error_fraction: a point whose share of error episodes exceeds this is flagged.
        eval_videos: "none", "failures" or "all": MP4s of the policy camera next to the episode rows;
            eval_videos_per_task: at most this many per task.
    Evaluation kit (robustness, generalisation; :mod:`vlamix.eval.plan`)
        eval_instruction: instruction ablations, each a separate set of episodes on the same init
            states: "original", "empty" (template around an empty instruction), "unwrapped" (raw
            instruction, no template), "empty_unwrapped" (:data:`vlamix.eval.plan.INSTRUCTION_VARIANTS`).
        heldout_tasks: ``{dataset: [task id, ...]}`` LIBERO task ids of the dataset's suite whose
            episodes are excluded from training (generalisation split); evaluated episodes of them
            are tagged ``unseen``.
        eval_instruction_suites: the evaluation suites on which the variants other than "original"
            run (None = every evaluation suite).
    Racing for the evaluation budget (:mod:`vlamix.search.racing`; Maron & Moore 1994)
        racing: evaluate the planned episodes in rounds and stop after a round when the point's
            Wilson 95% upper bound on its success rate falls below the lower bound of the best point
            of the same job that has already finished on the same episode plan. Changes neither the
            training key nor the eval key: a raced point's episodes are a prefix of the plan, shared
            with any later evaluation of the same checkpoint.
        racing_round_trials: trials (episodes) per planned task in one round (>= 1); with racing on it
            must be below ``trials_per_task`` (otherwise there is a single round and nothing to stop).
            Round r holds trials ``r * racing_round_trials .. (r + 1) * racing_round_trials - 1`` of
            every planned task (and instruction variant), so a stopped point stays balanced over tasks.
    """

    mixture: Mapping[str, float]
    balance_by_size: bool = False
    data_dir: str = "workspace/data/libero_rlds"
    heldout_fraction: float = 0.1
    demos: str = "scripted"
    demo_tasks: int = 2
    demo_episodes_per_task: int = 4

    strategy: str = "static"
    mixing_level: str | None = None
    temperature: float = 2.0
    skill_map: Mapping[str, str] | None = None
    mixing_update_every: int = 10
    dro_eta: float = 1.0
    dro_smoothing: float = 0.05
    dro_reference: str = DRO_REFERENCE_INITIAL
    dro_reference_batches: int = 4
    exp3_smoothing: float = 0.9
    curriculum: tuple[Mapping[str, Any], ...] | None = None

    # per-group loss weighting (issue 14; vlamix.mixing.loss_weights)
    loss_weighting: str = "none"

    filter_nonfinite: bool = True
    filter_action_limit: float | None = None
    filter_min_motion: float = 0.0
    filter_motion_window: int = 1
    dataset_whitelist: tuple[str, ...] | None = None
    dataset_blacklist: tuple[str, ...] | None = None

    model: str = "tiny"
    lora_rank: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    # fine-tuning mode (issue 13, learnability study): "lora" trains only the LoRA adapters
    # (OpenVLA's recipe, the default); "full" also trains every base weight (OpenVLA finetune.py's
    # use_lora=False counterpart), for a randomly initialised base such as the tiny model
    finetune_mode: str = "lora"

    train_steps: int = 40
    batch_size: int = 8
    grad_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    precision: str = "auto"
    gradient_checkpointing: bool = False
    shuffle_buffer_size: int = 1000
    seed: int = 7
    # OpenVLA's training image augmentation (vlamix.data.augment; finetune.py image_aug); evaluation
    # centre-crops when it is on (center_crop null = follow the checkpoint)
    image_aug: bool = False

    eval_suites: tuple[str, ...] | None = None
    eval_tasks: int | None = 2
    trials_per_task: int = 1
    eval_max_steps: int | None = None
    num_steps_wait: int = 10
    eval_workers: int = 2
    eval_seed: int = 7
    center_crop: bool | None = None
    # held-out frames of the offline metrics at most (null = all); the CPU 7B route takes a few
    offline_max_frames: int | None = None

    # Rollout runtime (vlamix.eval.server / envs: one batched policy, env workers, faults, videos)
    eval_device: str = "auto"
    eval_dtype: str = "auto"
    envs_per_worker: int = 1
    eval_episode_timeout_s: float | None = 1800.0
    eval_max_attempts: int = 2
    eval_max_error_fraction: float = 0.1
    eval_videos: str = "none"
    eval_videos_per_task: int = 2
    # Evaluation kit (issue 10): instruction ablations and held-out tasks.
    eval_instruction: tuple[str, ...] = ("original",)
    heldout_tasks: Mapping[str, tuple[int, ...]] | None = None
    eval_instruction_suites: tuple[str, ...] | None = None
    # Racing for the evaluation budget (issue 12; vlamix.search.racing)
    racing: bool = False
    racing_round_trials: int = 10

    extra: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, allow_extra: bool = False) -> "BenchConfig":
        """Build and validate a config from flat hyperparameters (as Ianvs passes them).

        Args:
            values: field name -> value; unknown names raise unless ``allow_extra``, in which case
                they are kept in ``extra`` (Ianvs adds its own keys).
        Raises:
            ConfigError: naming the first invalid field.
        """
        known = set(cls.field_names())
        unknown = sorted(k for k in values if k not in known)
        if unknown and not allow_extra:
            raise ConfigError(unknown[0], f"unknown field; allowed fields: {', '.join(sorted(known))}")
        kwargs = {k: v for k, v in values.items() if k in known}
        if "mixture" not in kwargs:
            raise ConfigError("mixture", "required: a mapping from dataset name to weight")
        for name in ("eval_suites", "curriculum", "dataset_whitelist", "dataset_blacklist"):
            if isinstance(kwargs.get(name), (list, tuple)):
                kwargs[name] = tuple(kwargs[name])
        # Evaluation kit: a single instruction variant may be given as a string; task lists as tuples.
        if isinstance(kwargs.get("eval_instruction"), (str, list)):
            value = kwargs["eval_instruction"]
            kwargs["eval_instruction"] = (value,) if isinstance(value, str) else tuple(value)
        if kwargs.get("center_crop") == "auto":  # YAML users may write auto for null (follow the checkpoint)
            kwargs["center_crop"] = None
        if isinstance(kwargs.get("eval_instruction_suites"), list):
            kwargs["eval_instruction_suites"] = tuple(kwargs["eval_instruction_suites"])
        if isinstance(kwargs.get("heldout_tasks"), Mapping):
            kwargs["heldout_tasks"] = {
                k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in kwargs["heldout_tasks"].items()
            }
        cfg = cls(**kwargs, extra={k: values[k] for k in unknown})
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "BenchConfig":
        """A validated copy with some fields changed."""
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.field_names()}
        out["mixture"] = dict(self.mixture)
        out["eval_suites"] = list(self.resolved_eval_suites())
        for name in ("dataset_whitelist", "dataset_blacklist"):
            out[name] = None if out[name] is None else list(out[name])
        out["skill_map"] = None if self.skill_map is None else dict(self.skill_map)
        out["eval_instruction"] = list(self.eval_instruction)
        out["eval_instruction_suites"] = None if self.eval_instruction_suites is None else list(self.eval_instruction_suites)
        out["heldout_tasks"] = None if self.heldout_tasks is None else {
            k: [int(t) for t in v] for k, v in self.heldout_tasks.items()
        }
        out["curriculum"] = None if self.curriculum is None else [
            {"step": int(p["step"]), "weights": dict(p["weights"])} for p in self.curriculum
        ]
        return out

    def training_signature(self) -> dict[str, Any]:
        """:meth:`to_dict` with the parameters the strategy ignores reset to their defaults.

        Two configs with equal signatures train the same model, so grids that cross strategies with
        other strategies' parameters (e.g. ``temperature`` under ``task_balanced``) reuse one run. For
        full_dataset / task_balanced / temperature only the set of datasets of the mixture matters.
        """
        out = self.to_dict()
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.default is not dataclasses.MISSING}
        keep = set(STRATEGY_PARAMS[self.strategy])
        for params in STRATEGY_PARAMS.values():
            for name in params:
                if name not in keep:
                    out[name] = defaults[name]
        out["mixing_level"] = self.resolved_mixing_level()
        if self.strategy in ("full_dataset", "task_balanced", "temperature", "curriculum"):
            out["mixture"] = {name: 1 for name in self.mixture_weights()}
        if self.resolved_mixing_level() != "skill":
            out["skill_map"] = None
        elif self.loss_weighting != "none":  # the loss weights' skill groups depend on it
            out["skill_map"] = None if self.skill_map is None else dict(self.skill_map)
        if out.get("heldout_tasks") is None:  # evaluation kit: runs without held-out tasks keep their keys
            out.pop("heldout_tasks", None)
        if out.get("finetune_mode") == "lora":  # the default: train keys of earlier runs stay valid
            del out["finetune_mode"]
        if not out.get("image_aug"):  # off by default: train keys of earlier runs stay valid
            out.pop("image_aug", None)
        out["precision"] = self.resolved_precision()  # "auto" trains what it resolves to
        return out

    # ------------------------------------------------------------------ derived values
    def mixture_weights(self) -> dict[str, float]:
        """Normalised mixture weights (sum 1) of the datasets with non-zero weight, in config order."""
        total = float(sum(self.mixture.values()))
        return {name: float(w) / total for name, w in self.mixture.items() if w > 0}

    def resolved_mixing_level(self) -> str:
        """``mixing_level``, or the strategy's default when it is None."""
        return self.mixing_level if self.mixing_level is not None else default_level(self.strategy)

    def selected_datasets(self) -> list[str]:
        """Datasets with non-zero mixture weight that pass ``dataset_whitelist`` / ``dataset_blacklist``."""
        from vlamix.data.filters import selected_datasets

        return selected_datasets(list(self.mixture_weights()), self.dataset_whitelist, self.dataset_blacklist)[0]

    def strategy_label(self) -> str:
        """Short label of the strategy and the parameters it uses, e.g. ``temperature T=2 by task``,
        ``doremi eta=1 c=0.05 K=10 ref=initial``, with `` | filter ...`` when steps are filtered."""
        s, level = self.strategy, self.resolved_mixing_level()
        by = "" if level == default_level(s) else f" by {level}"
        if s == "static":
            label = f"static {self.mixture_label()}" + (" x size" if self.balance_by_size else "")
        elif s == "full_dataset":
            label = "full_dataset"
        elif s == "task_balanced":
            label = f"task_balanced by {level}"
        elif s == "temperature":
            label = f"temperature T={self.temperature:g}{by}"
        elif s == "doremi":
            ref = self.dro_reference if self.dro_reference in (DRO_REFERENCE_INITIAL, DRO_REFERENCE_AUTO) else os.path.basename(os.path.normpath(self.dro_reference))
            label = f"doremi eta={self.dro_eta:g} c={self.dro_smoothing:g} K={self.mixing_update_every} ref={ref}{by}"
        elif s == "doremi_transfer":
            ref = self.dro_reference if self.dro_reference in (DRO_REFERENCE_INITIAL, DRO_REFERENCE_AUTO) else os.path.basename(os.path.normpath(self.dro_reference))
            label = f"doremi_transfer eta={self.dro_eta:g} c={self.dro_smoothing:g} K={self.mixing_update_every} ref={ref}"
        elif s == "exp3":
            label = f"exp3 a={self.exp3_smoothing:g} K={self.mixing_update_every}{by}"
        else:
            phases = " -> ".join(
                f"@{int(p['step'])} {':'.join(_short(n) for n in p['weights'])}={':'.join(_fmt_weight(w) for w in p['weights'].values())}"
                for p in self.curriculum or ()
            )
            label = f"curriculum {phases}{by}"
        if self.loss_weighting != "none":  # per-group loss weighting (issue 14)
            label += f" + loss {self.loss_weighting}" + ("" if by or s == "task_balanced" else f" by {level}")
        filters = []
        if self.filter_min_motion > 0:
            filters.append(f"motion<{self.filter_min_motion:g} w{self.filter_motion_window}")
        if self.filter_action_limit is not None:
            filters.append(f"|a|<={self.filter_action_limit:g}")
        if not self.filter_nonfinite:
            filters.append("keep NaN/Inf")
        if self.dataset_whitelist is not None:
            filters.append("only " + ",".join(_short(n) for n in self.dataset_whitelist))
        if self.dataset_blacklist is not None:
            filters.append("without " + ",".join(_short(n) for n in self.dataset_blacklist))
        return label + (f" | filter {'; '.join(filters)}" if filters else "")

    def _validate_unnorm_sources(self, suites: Sequence[str]) -> None:
        """Every evaluated suite must have action statistics to un-normalise with.

        The fine-tuned checkpoint holds the norm stats of the datasets it trained on
        (:meth:`selected_datasets`); a suite uses those of ``<base suite>_no_noops`` (or
        ``<base suite>``), else the only dataset's when exactly one was trained
        (:func:`vlamix.eval.policy.resolve_unnorm_key`, OpenVLA's ``unnorm_key`` rule). A suite
        without its dataset in a mixture of two or more datasets would fail at its first rollout,
        after training, so it is refused here.

        Raises:
            ConfigError: field ``eval_suites``, naming the suite and the trained datasets.
        """
        from vlamix.eval.plan import base_suite

        trained = self.selected_datasets()
        if len(trained) < 2:
            return
        for suite in suites:
            try:
                base = base_suite(suite)
            except ValueError:
                continue  # reported with the allowed suites by the suite checks
            if f"{base}_no_noops" not in trained and base not in trained:
                raise ConfigError(
                    "eval_suites",
                    f"suite '{suite}' has no action norm stats: its dataset {base}_no_noops is not trained on (trained: "
                    f"{', '.join(trained)}), and with two or more datasets no single statistics un-normalise its "
                    f"actions; give {base}_no_noops a weight > 0 in the mixture or leave '{suite}' out of eval_suites",
                )

    def resolved_precision(self) -> str:
        """``precision``, with "auto" resolved: "fp32" for a built-in tiny preset on a machine without CUDA
        (the embedded default, unchanged), "bf16" otherwise (a checkpoint folder such as OpenVLA-7B, or CUDA)."""
        return resolve_precision(self.precision, self.model)

    def check_memory(self, available: dict[str, float] | None = None) -> list[Any]:
        """Refuse a point whose training or rollouts cannot fit this machine's memory, before any work.

        Training runs on CUDA when available, else the CPU; rollouts on ``eval_device`` in ``eval_dtype``
        ("auto": bf16 on CUDA, fp32 on the CPU), with ``eval_workers`` env workers in CPU RAM. Estimates:
        :mod:`vlamix.model.memory`.

        Args:
            available: device -> free bytes (tests); default :func:`vlamix.model.memory.available_bytes`.
        Returns:
            the :class:`vlamix.model.memory.MemoryEstimate` of each stage (training, rollouts).
        Raises:
            ConfigError: naming the field to change first (``precision`` when it is fp32, else
                ``gradient_checkpointing`` when it is off, else ``batch_size``; ``eval_dtype`` for rollouts),
                with the estimate, what is available, and the fields that lower it.
        """
        import torch

        from vlamix.eval.policy import dtype_name
        from vlamix.model.memory import GIB, available_bytes, estimate_policy, estimate_training, model_shape

        shape = model_shape(self.model)
        cuda = torch.cuda.is_available()
        train_device = "cuda" if cuda else "cpu"
        eval_device = ("cuda" if cuda else "cpu") if self.eval_device == "auto" else self.eval_device
        precision = self.resolved_precision()
        estimates = [
            estimate_training(shape, precision=precision, finetune_mode=self.finetune_mode, lora_rank=self.lora_rank,
                              batch_size=self.batch_size, gradient_checkpointing=self.gradient_checkpointing,
                              device=train_device),
            estimate_policy(shape, dtype=dtype_name(self.eval_dtype, eval_device), batch=self.policy_batch_size(),
                            device=eval_device, env_workers=self.eval_workers),
        ]
        for est in estimates:
            free = (available or {}).get(est.device)
            free = available_bytes(est.device) if free is None else free
            if est.total <= free:
                continue
            if est.stage == "rollouts":
                field_name, fix = "eval_dtype", "eval_dtype bf16 (half the weights), fewer eval_workers or envs_per_worker"
            elif precision == "fp32":
                field_name, fix = "precision", "precision bf16 (or auto: half the weights), gradient_checkpointing true, a smaller batch_size"
            elif not self.gradient_checkpointing:
                field_name, fix = "gradient_checkpointing", "gradient_checkpointing true, a smaller batch_size with grad_accumulation_steps"
            else:
                field_name, fix = "batch_size", "a smaller batch_size with grad_accumulation_steps, lora_rank"
            raise ConfigError(
                field_name, f"model '{self.model}' ({shape.n_params / 1e9:.2f} B parameters) does not fit: estimated peak "
                f"{est.describe()} > {free / GIB:.1f} GiB available on {est.device}; lower it with {fix} "
                f"(estimate: vlamix.model.memory)",
            )
        return estimates

    def resolved_center_crop(self) -> bool:
        """``center_crop``, with null (auto) resolved for the checkpoint this config trains: ``image_aug``."""
        return bool(self.image_aug) if self.center_crop is None else bool(self.center_crop)

    def policy_batch_size(self) -> int:
        """Images per policy call in rollouts (:func:`vlamix.eval.server.policy_batch_size` of
        ``eval_workers`` and ``envs_per_worker``); every episode row records the batch it was served in."""
        return self.eval_workers * self.envs_per_worker // (2 if self.envs_per_worker >= 2 else 1)

    def resolved_eval_suites(self) -> tuple[str, ...]:
        if self.eval_suites is not None:
            return tuple(self.eval_suites)
        return tuple(dict.fromkeys(DATASET_TO_SUITE[name] for name in self.selected_datasets()))

    def dataset_path(self, name: str) -> str:
        """Absolute path of dataset ``name``'s RLDS version folder ``<data_dir>/<name>/1.0.0``."""
        from vlamix.constants import RLDS_VERSION

        return os.path.join(os.path.abspath(self.data_dir), name, RLDS_VERSION)

    def missing_dataset_error(self, name: str) -> ConfigError:
        """The error for dataset ``name`` absent from ``data_dir`` (field ``data_dir``), with the remedies."""
        return ConfigError(
            "data_dir",
            f"dataset '{name}' not found at {self.dataset_path(name)}; download openvla/modified_libero_rlds "
            f"into data_dir, or set demos: scripted to record it with the scripted expert",
        )

    def mixture_label(self) -> str:
        """Short human label such as ``spatial:object=2:1`` (weights as given, not normalised)."""
        names = [_short(n) for n in self.mixture]
        weights = [_fmt_weight(w) for w in self.mixture.values()]
        return f"{':'.join(names)}={':'.join(weights)}"

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` naming the first invalid one.

        Checks nothing on disk except that, with ``demos == "none"``, each dataset with non-zero
        weight exists under ``data_dir`` (and, for a path ``model``, that the folder exists).
        Then the checks of :meth:`_validate_before_work` (suite sizes, expert support, model files).
        """
        _check_yaml_pitfalls(self)
        _check_mixture(self.mixture)
        _check_bool("balance_by_size", self.balance_by_size)
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("data_dir", "must be a non-empty path string")
        _check_range("heldout_fraction", self.heldout_fraction, 0.0, 0.5)
        _check_choice("demos", self.demos, DEMO_SOURCES)
        _check_choice("finetune_mode", self.finetune_mode, FINETUNE_MODES)
        _check_int("demo_tasks", self.demo_tasks, 1)
        _check_int("demo_episodes_per_task", self.demo_episodes_per_task, 1)
        self._validate_strategy()
        _check_choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        self._validate_filters()
        if self.demos == "none":
            for name in self.selected_datasets():
                if not os.path.isdir(self.dataset_path(name)):
                    raise self.missing_dataset_error(name)
        # scripted demonstrations (issue 13): only suites / task counts the expert supports
        if self.demos == "scripted":
            self._validate_scripted_demos()
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model", f"must be one of {BUILTIN_MODELS} or a checkpoint folder path")
        if self.model not in BUILTIN_MODELS and not os.path.isdir(self.model):
            raise ConfigError("model", f"'{self.model}' is neither a built-in model {BUILTIN_MODELS} nor an existing folder")
        _check_int("lora_rank", self.lora_rank, 1)
        _check_int("lora_alpha", self.lora_alpha, 1)
        _check_range("lora_dropout", self.lora_dropout, 0.0, 1.0)
        _check_int("train_steps", self.train_steps, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("grad_accumulation_steps", self.grad_accumulation_steps, 1)
        _check_positive("learning_rate", self.learning_rate)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_bool("gradient_checkpointing", self.gradient_checkpointing)
        _check_bool("image_aug", self.image_aug)
        _check_int("shuffle_buffer_size", self.shuffle_buffer_size, 1)
        _check_int("seed", self.seed, 0)
        suites = self.resolved_eval_suites()
        if not suites:
            raise ConfigError("eval_suites", f"no suite to evaluate; allowed: {', '.join(LIBERO_SUITES)} and their perturbations")
        self._validate_eval_kit(suites)
        if self.eval_tasks is not None:
            _check_int("eval_tasks", self.eval_tasks, 1)
        _check_int("trials_per_task", self.trials_per_task, 1)
        if self.eval_max_steps is not None:
            _check_int("eval_max_steps", self.eval_max_steps, 1)
        _check_int("num_steps_wait", self.num_steps_wait, 0)
        _check_int("eval_workers", self.eval_workers, 1)
        _check_int("eval_seed", self.eval_seed, 0)
        if self.offline_max_frames is not None:
            _check_int("offline_max_frames", self.offline_max_frames, 1)
        if self.center_crop is not None:
            _check_bool("center_crop", self.center_crop)
        self._validate_racing()
        self._validate_rollout_runtime()
        self._validate_before_work()

    def _validate_racing(self) -> None:
        """``racing`` (bool; true needs ``trials_per_task`` >= 2) and ``racing_round_trials`` (int >= 1; with
        racing on, < ``trials_per_task``)."""
        _check_bool("racing", self.racing)
        _check_int("racing_round_trials", self.racing_round_trials, 1)
        if self.racing and self.trials_per_task < 2:
            raise ConfigError("racing", f"true needs at least two rounds, so trials_per_task >= 2 (got {self.trials_per_task}); "
                              f"allowed here: false")
        if self.racing and self.racing_round_trials >= self.trials_per_task:
            raise ConfigError(
                "racing_round_trials",
                f"{self.racing_round_trials} trials per round with trials_per_task {self.trials_per_task} leaves a single "
                f"round, so racing can stop nothing; allowed with racing: true: 1..{self.trials_per_task - 1} "
                f"(or racing: false)",
            )

    def _validate_rollout_runtime(self) -> None:
        """Fields of the rollout runtime (device, dtype, env workers, faults, videos)."""
        _check_eval_device(self.eval_device)
        _check_choice("eval_dtype", self.eval_dtype, EVAL_DTYPES)
        if self.eval_dtype == "fp16" and self.eval_device == "cpu":
            raise ConfigError("eval_dtype", "fp16 needs a CUDA eval_device; allowed on the CPU: auto, fp32, bf16")
        _check_int("envs_per_worker", self.envs_per_worker, 1)
        if self.envs_per_worker > 1 and self.envs_per_worker % 2:
            raise ConfigError("envs_per_worker", f"must be 1 (lock-step) or an even number (double buffering: two equal "
                              f"slot groups), got {self.envs_per_worker}")
        if self.eval_episode_timeout_s is not None:
            _check_positive("eval_episode_timeout_s", self.eval_episode_timeout_s)
        _check_int("eval_max_attempts", self.eval_max_attempts, 1)
        _check_range("eval_max_error_fraction", self.eval_max_error_fraction, 0.0, 1.0)
        _check_choice("eval_videos", self.eval_videos, EVAL_VIDEOS)
        _check_int("eval_videos_per_task", self.eval_videos_per_task, 0)


    def _validate_eval_kit(self, suites: tuple[str, ...]) -> None:
        """Evaluation kit (issue 10): suites (any registered LIBERO/LIBERO-PRO suite whose files are
        installed), instruction variants, held-out tasks."""
        from vlamix.eval.plan import INSTRUCTION_VARIANTS, check_suites

        try:
            check_suites(tuple(suites))
        except ValueError as err:
            raise ConfigError("eval_suites", str(err)) from err
        variants = self.eval_instruction
        if not isinstance(variants, tuple) or not variants or len(set(variants)) != len(variants) or any(
            v not in INSTRUCTION_VARIANTS for v in variants
        ):
            raise ConfigError("eval_instruction", f"got {variants!r}; allowed: a non-empty list of distinct values from {', '.join(INSTRUCTION_VARIANTS)}")
        only = self.eval_instruction_suites
        if only is not None and (not isinstance(only, tuple) or not only or not set(only) <= set(suites)):
            raise ConfigError("eval_instruction_suites", f"got {only!r}; allowed: null or a non-empty list of evaluation suites ({', '.join(suites)})")
        if self.heldout_tasks is not None:
            if not isinstance(self.heldout_tasks, Mapping):
                raise ConfigError("heldout_tasks", f"must be a mapping dataset -> list of task ids, got {self.heldout_tasks!r}")
            for name, ids in self.heldout_tasks.items():
                if name not in DATASET_TO_SUITE:
                    raise ConfigError("heldout_tasks", f"unknown dataset '{name}'; allowed: {', '.join(DATASET_TO_SUITE)}")
                if not isinstance(ids, tuple) or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids):
                    raise ConfigError("heldout_tasks", f"'{name}': must be a list of task ids (integers >= 0), got {ids!r}")

    # -- reliability (issue 11): values that used to pass here and fail only after recording or training
    def _validate_before_work(self) -> None:
        """Range and cross-field checks that need the suite sizes, the scripted expert's task list or
        the model folder; every value that would fail later in recording, training or rollout fails here.

        Suite sizes come from LIBERO's benchmark registry (:func:`vlamix.eval.plan.suite_info`, no
        simulator); without LIBERO installed those two checks are left to :func:`plan_episodes`.
        """
        if not self.lora_dropout < 1.0:
            raise ConfigError("lora_dropout", f"must be a number in [0, 1) (1 drops every LoRA input), got {self.lora_dropout!r}")
        for name in ("seed", "eval_seed"):
            if getattr(self, name) >= 2**32:
                raise ConfigError(name, f"must be an integer in [0, 2**32) (NumPy's seed range), got {getattr(self, name)!r}")
        if self.curriculum is not None and self.strategy != "curriculum":
            self._validate_curriculum()  # ignored by this strategy, but part of the train key: must be well formed
        suites = self.resolved_eval_suites()
        if len(set(suites)) != len(suites):
            raise ConfigError("eval_suites", f"lists a suite twice: {list(suites)}; list each suite once")
        self._validate_unnorm_sources(suites)
        if self.model not in BUILTIN_MODELS:
            _check_model_folder(self.model)
            self.check_memory()  # the tiny presets fit anywhere; a checkpoint folder may be OpenVLA-7B
        if importlib.util.find_spec("libero") is None:
            return
        for suite in suites:
            n_tasks = _suite_sizes(suite, 0)[0]
            if self.eval_tasks is not None and self.eval_tasks > n_tasks:
                raise ConfigError("eval_tasks", f"{self.eval_tasks} tasks requested but suite '{suite}' has {n_tasks}; allowed: 1..{n_tasks} or null (all)")
            for task_id in range(n_tasks if self.eval_tasks is None else self.eval_tasks):
                n_init = _suite_sizes(suite, task_id)[1]
                if self.trials_per_task > n_init:
                    raise ConfigError(
                        "trials_per_task", f"{self.trials_per_task} exceeds the {n_init} init states of {suite} task {task_id}; allowed: 1..{n_init}"
                    )

    def _validate_scripted_demos(self) -> None:
        """``demos: scripted`` must be able to record every missing dataset of the mixture.

        Raises:
            ConfigError: ``demos`` for a suite without a scripted expert, ``demo_tasks`` above the
                number of supported tasks of a suite (both list the supported suites and tasks).
        """
        from vlamix.sim.expert import supported_summary, supported_tasks

        for name in self.selected_datasets():
            if os.path.isfile(os.path.join(self.dataset_path(name), "dataset_info.json")):
                continue  # present on disk: reused, nothing to record
            suite = DATASET_TO_SUITE.get(name)
            ids = supported_tasks(suite) if suite else frozenset()
            if not ids:
                raise ConfigError("demos", f"'scripted' cannot record dataset '{name}': no scripted expert for suite "
                                  f"'{suite}'; supported suites: {supported_summary()}. Provide the dataset in "
                                  f"data_dir and set demos: none, or remove it from the mixture")
            if self.demo_tasks > len(ids):
                raise ConfigError("demo_tasks", f"{self.demo_tasks} tasks requested but the scripted expert supports "
                                  f"{len(ids)} task(s) of {suite}: {sorted(ids)}; supported suites: {supported_summary()}")

    def _validate_strategy(self) -> None:
        _check_choice("strategy", self.strategy, STRATEGIES)
        if self.mixing_level is not None:
            _check_choice("mixing_level", self.mixing_level, MIXING_LEVELS)
        if self.strategy == "static" and self.resolved_mixing_level() != "dataset":
            raise ConfigError("mixing_level", f"strategy static weights datasets; got {self.mixing_level!r}, allowed: dataset")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError("temperature", f"must be a number > 0 (1 = natural proportions, .inf = uniform), got {self.temperature!r}")
        if self.skill_map is not None:
            if not isinstance(self.skill_map, Mapping) or not all(
                isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip() for k, v in self.skill_map.items()
            ):
                raise ConfigError("skill_map", f"must be null or a mapping verb-or-instruction -> skill name, got {self.skill_map!r}")
        _check_int("mixing_update_every", self.mixing_update_every, 1)
        _check_positive("dro_eta", self.dro_eta)
        _check_range("dro_smoothing", self.dro_smoothing, 0.0, 1.0)
        _check_int("dro_reference_batches", self.dro_reference_batches, 1)
        uses_doremi = self.strategy in ("doremi", "doremi_transfer")
        if uses_doremi and (self.dro_reference == DRO_REFERENCE_AUTO or self.strategy == "doremi_transfer"):
            if self.resolved_mixing_level() != "dataset":  # the reference / final run is a static (dataset-level) mixture
                raise ConfigError("mixing_level", f"dro_reference auto and doremi_transfer weight datasets; got {self.mixing_level!r}, allowed: dataset")
        if uses_doremi and self.dro_reference not in (DRO_REFERENCE_INITIAL, DRO_REFERENCE_AUTO):
            from vlamix.mixing.dynamic import find_train_log

            ref = self.dro_reference
            if not isinstance(ref, str) or find_train_log(ref) is None:
                raise ConfigError(
                    "dro_reference", f"must be '{DRO_REFERENCE_INITIAL}', '{DRO_REFERENCE_AUTO}' or a run folder (or its step_* checkpoint) with {TRAIN_LOG_NAME}, got {ref!r}"
                )
        if isinstance(self.exp3_smoothing, bool) or not isinstance(self.exp3_smoothing, (int, float)) or not 0 <= self.exp3_smoothing < 1:
            raise ConfigError("exp3_smoothing", f"must be a number in [0, 1), got {self.exp3_smoothing!r}")
        if self.strategy == "curriculum":
            self._validate_curriculum()

    def _validate_curriculum(self) -> None:
        phases = self.curriculum
        form = "a list of {step: int, weights: {name: weight}} starting at step 0"
        if not isinstance(phases, (list, tuple)) or not phases:
            raise ConfigError("curriculum", f"strategy curriculum needs {form}, got {phases!r}")
        previous = -1
        for i, phase in enumerate(phases):
            if not isinstance(phase, Mapping) or set(phase) != {"step", "weights"}:
                raise ConfigError("curriculum", f"phase {i} must be {{step, weights}}, got {phase!r}")
            step, weights = phase["step"], phase["weights"]
            if isinstance(step, bool) or not isinstance(step, int) or step <= previous or (i == 0 and step != 0):
                raise ConfigError("curriculum", f"phase {i}: step must be an integer, 0 for the first phase and increasing, got {step!r}")
            previous = step
            if not isinstance(weights, Mapping) or not weights or not all(
                not isinstance(w, bool) and isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights.values()
            ) or sum(weights.values()) <= 0:
                raise ConfigError("curriculum", f"phase {i}: weights must map names to numbers >= 0, not all 0, got {weights!r}")
            if self.resolved_mixing_level() == "dataset":
                unknown = [n for n in weights if n not in self.selected_datasets()]
                if unknown:
                    raise ConfigError(
                        "curriculum", f"phase {i}: {unknown} are not datasets of the mixture; allowed: {', '.join(self.selected_datasets())}"
                    )

    def _validate_filters(self) -> None:
        _check_bool("filter_nonfinite", self.filter_nonfinite)
        if self.filter_action_limit is not None:
            _check_positive("filter_action_limit", self.filter_action_limit)
        if isinstance(self.filter_min_motion, bool) or not isinstance(self.filter_min_motion, (int, float)) or not (
            0 <= self.filter_min_motion < math.inf
        ):
            raise ConfigError("filter_min_motion", f"must be a finite number >= 0 (0 = off), got {self.filter_min_motion!r}")
        _check_int("filter_motion_window", self.filter_motion_window, 1)
        allowed = ", ".join(DATASET_TO_SUITE)
        for name in ("dataset_whitelist", "dataset_blacklist"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(name, f"must be null or a list of dataset names ({allowed}), got {value!r}")
            unknown = [v for v in value if v not in DATASET_TO_SUITE]
            if unknown:
                raise ConfigError(name, f"unknown datasets {unknown}; allowed: {allowed}")
        if not self.selected_datasets():
            field_name = "dataset_whitelist" if self.dataset_whitelist is not None else "dataset_blacklist"
            raise ConfigError(
                field_name,
                f"removes every dataset of the mixture {list(self.mixture_weights())}; at least one must remain",
            )


# -- reliability (issue 11): YAML pitfalls, model folder and suite sizes
#: Fields that hold a list and are often written as a bare string in YAML.
_LIST_FIELDS = ("eval_suites", "dataset_whitelist", "dataset_blacklist")
#: Files of which a model folder needs at least one (tokenizer) besides ``config.json``.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _number_string_fix(value: Any) -> str | None:
    """For a string YAML 1.1 did not read as a number (``"5e-4"``), the message with the fix; else None."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    text = value.strip()
    mantissa, _, exponent = text.lower().partition("e")
    if not exponent or not math.isfinite(number):
        return None  # a quoted plain number: the field's own message applies
    fixed = f"{mantissa}.0e{exponent}" if "." not in mantissa else text
    return (
        f"got the string {value!r}: YAML 1.1 (PyYAML) reads a number with an exponent but no '.' as text; "
        f"write {fixed} or {number!r}"
    )


def _check_yaml_pitfalls(cfg: "BenchConfig") -> None:
    """Numbers that YAML read as strings, and bare strings where a list is expected (before the other checks,
    whose messages would not say why)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in _LIST_FIELDS and isinstance(value, str):
            raise ConfigError(f.name, f"got the string {value!r}, a list is expected; write [{value}] (a YAML list)")
        if f.name == "mixture" and isinstance(value, Mapping):
            for name, weight in value.items():
                fix = _number_string_fix(weight)
                if fix:
                    raise ConfigError("mixture", f"weight of '{name}': {fix}")
        elif str(f.type).split(" |")[0] in ("int", "float"):
            fix = _number_string_fix(value)
            if fix:
                raise ConfigError(f.name, fix)


def _check_model_folder(path: str) -> None:
    """A ``model`` folder must hold ``config.json`` and tokenizer files (else training fails at the first batch)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError("model", f"folder '{path}' has no config.json; it must be an OpenVLA checkpoint folder (e.g. openvla/openvla-7b) or one of {BUILTIN_MODELS}")
    if not any(os.path.isfile(os.path.join(path, n)) for n in _TOKENIZER_FILES):
        raise ConfigError(
            "model", f"folder '{path}' has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); download the whole checkpoint "
            f"(openvla/openvla-7b ships tokenizer.model and tokenizer_config.json)"
        )


@functools.lru_cache(maxsize=None)
def _suite_sizes(suite: str, task_id: int) -> tuple[int, int]:
    """(tasks in ``suite``, init states of its task ``task_id``) from LIBERO's registry (cached)."""
    import contextlib
    import io

    from vlamix.eval.plan import suite_info

    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints "[info] Applying task order ..."
        bench = suite_info(suite)
        return int(bench.n_tasks), len(bench.get_task_init_states(task_id))


def _short(name: str) -> str:
    return name.replace("libero_", "").replace("_no_noops", "")


def _fmt_weight(w: float) -> str:
    return str(int(w)) if float(w).is_integer() else f"{w:g}"


def _check_mixture(mixture: Any) -> None:
    allowed = ", ".join(DATASET_TO_SUITE)
    if not isinstance(mixture, Mapping) or not mixture:
        raise ConfigError("mixture", f"must be a non-empty mapping dataset -> weight; datasets: {allowed}")
    for name, weight in mixture.items():
        if name not in DATASET_TO_SUITE:
            raise ConfigError("mixture", f"unknown dataset '{name}'; allowed: {allowed}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError("mixture", f"weight of '{name}' must be a finite number >= 0, got {weight!r}")
        if weight < 0:
            raise ConfigError("mixture", f"weight of '{name}' is negative ({weight}); weights must be >= 0")
    if sum(mixture.values()) <= 0:
        raise ConfigError("mixture", "all weights are zero; at least one weight must be > 0")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"got {value!r}; allowed: {', '.join(allowed)}")


def _check_eval_device(value: Any) -> None:
    """``eval_device``: auto, cpu, cuda or cuda:N; CUDA values need a visible CUDA device."""
    allowed = "auto, cpu, cuda, cuda:N"
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
        raise ConfigError("eval_device", f"got {value!r}; allowed: {allowed}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("eval_device", f"{value!r} requested but CUDA is not available on this machine; allowed here: auto, cpu")
        if value != "cuda" and int(value[5:]) >= torch.cuda.device_count():
            raise ConfigError("eval_device", f"{value!r}: only {torch.cuda.device_count()} CUDA device(s) visible")


def resolve_precision(precision: str, model: str) -> str:
    """``precision`` with "auto" resolved for ``model``: "fp32" for a built-in tiny preset on a machine
    without CUDA, "bf16" otherwise (see :data:`PRECISIONS`)."""
    if precision != "auto":
        return precision
    import torch

    return "fp32" if model in BUILTIN_MODELS and not torch.cuda.is_available() else "bf16"


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number > 0, got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(name, f"must be a number in [{lo}, {hi}], got {value!r}")
