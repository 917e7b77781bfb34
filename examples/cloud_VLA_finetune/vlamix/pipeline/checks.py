"""Whether this machine can run a benchmark point: the environment checks, apart from the checks of values.

:func:`check_environment` reads the disk (datasets, the model folder), LIBERO's registry and task files, the
scripted expert's supported tasks, a DoReMi reference run's log, CUDA, and estimates the memory the point
needs (:mod:`vlamix.model.memory`). ``vlamix check`` and ``vlamix run`` run it for every point of a job before
the first one starts; under Ianvs the first construction of the basemodel does (:mod:`vlamix.bench.ianvs`).
Results are cached per config, so a point checked by the job is not checked again when it runs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
from typing import Any

import torch

from vlamix.core.constants import DATASET_TO_SUITE, TRAIN_LOG_NAME
from vlamix.core.errors import ConfigError
from vlamix.core.io import find_train_log
from vlamix.core.suites import check_suites, suite_info
from vlamix.eval.policy import dtype_name
from vlamix.mixing.strategies.doremi import DRO_REFERENCE_AUTO, DRO_REFERENCE_INITIAL
from vlamix.model.action_files import is_official_oft_folder
from vlamix.model.memory import GIB, MemoryEstimate, available_bytes, estimate_policy, estimate_training, model_shape
from vlamix.model.settings import BUILTIN_MODELS
from vlamix.pipeline.config import BenchConfig
from vlamix.sim.expert import supported_summary, supported_tasks

#: Files of which a model folder needs at least one (tokenizer) besides ``config.json``.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_checked: set[str] = set()  # json of BenchConfig.to_dict(): configs hold dicts, so are not hashable


def check_environment(cfg: BenchConfig, *, cached: bool = True) -> BenchConfig:
    """Check that this machine can run ``cfg``; returns ``cfg``. Cached: a config passes once per process
    (``cached=False`` checks again, as tests that change the machine do).

    Raises:
        ConfigError: naming the field: ``data_dir`` (a dataset of ``demos: none`` missing), ``demos`` /
            ``demo_tasks`` (the scripted expert cannot record it), ``model`` (not a folder with config.json and
            tokenizer files), ``dro_reference`` (no run log), ``eval_device`` (CUDA absent), ``eval_suites`` /
            ``eval_tasks`` / ``trials_per_task`` (not installed, or beyond the suite's tasks and init states),
            ``precision`` / ``gradient_checkpointing`` / ``batch_size`` / ``eval_dtype`` (does not fit the memory).
    """
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if cached and key in _checked:
        return cfg
    data = cfg.data
    if data.demos == "none":
        for name in data.selected_datasets():
            if not os.path.isdir(data.dataset_path(name)):
                raise data.missing_dataset_error(name)
    else:
        check_scripted_demos(cfg)
    if not cfg.model.builtin and not os.path.isdir(cfg.model.path):
        raise ConfigError("model", f"'{cfg.model.path}' is neither a built-in model {BUILTIN_MODELS} nor an existing folder")
    mixing = cfg.mixing
    if mixing.strategy in ("doremi", "doremi_transfer") and mixing.dro_reference not in (DRO_REFERENCE_INITIAL, DRO_REFERENCE_AUTO):
        if find_train_log(mixing.dro_reference) is None:
            raise ConfigError("dro_reference", f"must be '{DRO_REFERENCE_INITIAL}', '{DRO_REFERENCE_AUTO}' or a run folder (or its "
                              f"step_* checkpoint) with {TRAIN_LOG_NAME}, got {mixing.dro_reference!r}")
    check_eval_device(cfg.rollout.eval_device)
    suites = cfg.resolved_eval_suites()
    try:
        check_suites(tuple(suites))
    except ValueError as err:
        raise ConfigError("eval_suites", str(err)) from err
    if not cfg.model.builtin:
        check_model_folder(cfg.model.path)
        check_action_head(cfg)
        check_memory(cfg)  # the tiny presets fit anywhere; a checkpoint folder may be OpenVLA-7B
    if importlib.util.find_spec("libero") is not None:
        check_suite_sizes(cfg, suites)
    _checked.add(key)
    return cfg


def check_scripted_demos(cfg: BenchConfig) -> None:
    """``demos: scripted`` must be able to record every missing dataset of the mixture.

    Raises:
        ConfigError: ``demos`` for a suite without a scripted expert, ``demo_tasks`` above the number of supported
            tasks of a suite (both list the supported suites and tasks).
    """
    data = cfg.data
    for name in data.selected_datasets():
        if os.path.isfile(os.path.join(data.dataset_path(name), "dataset_info.json")):
            continue  # present on disk: reused, nothing to record
        suite = DATASET_TO_SUITE.get(name)
        ids = supported_tasks(suite) if suite else frozenset()
        if not ids:
            raise ConfigError("demos", f"'scripted' cannot record dataset '{name}': no scripted expert for suite "
                              f"'{suite}'; supported suites: {supported_summary()}. Provide the dataset in "
                              f"data_dir and set demos: none, or remove it from the mixture")
        if data.demo_tasks > len(ids):
            raise ConfigError("demo_tasks", f"{data.demo_tasks} tasks requested but the scripted expert supports "
                              f"{len(ids)} task(s) of {suite}: {sorted(ids)}; supported suites: {supported_summary()}")


def check_model_folder(path: str) -> None:
    """A ``model`` folder must hold ``config.json`` and tokenizer files (else training fails at the first batch).

    Raises:
        ConfigError: field ``model``.
    """
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError("model", f"folder '{path}' has no config.json; it must be an OpenVLA checkpoint folder "
                          f"(e.g. openvla/openvla-7b) or one of {BUILTIN_MODELS}")
    if not any(os.path.isfile(os.path.join(path, n)) for n in TOKENIZER_FILES):
        raise ConfigError(
            "model", f"folder '{path}' has no tokenizer files ({', '.join(TOKENIZER_FILES)}); download the whole checkpoint "
            f"(openvla/openvla-7b ships tokenizer.model and tokenizer_config.json)")


def check_action_head(cfg: BenchConfig) -> None:
    """An OpenVLA-OFT folder (official files, or our checkpoint of an L1 head) fine-tunes only with
    ``action_head: l1_regression``: with ``tokens`` its trained head would be dropped silently.

    Raises:
        ConfigError: field ``action_head``.
    """
    path = cfg.model.path
    if cfg.model.parallel_decoding:
        return
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
            head = json.load(fh).get("action_head", "tokens")
    except (OSError, ValueError):
        return  # check_model_folder reports a missing or broken config.json
    if head == "l1_regression" or is_official_oft_folder(path):
        raise ConfigError("action_head", f"model '{path}' is an OpenVLA-OFT checkpoint (L1-regression head); set "
                          "action_head: l1_regression (with its action_chunk, use_wrist_image, use_proprio), or use "
                          "an OpenVLA folder")


def check_eval_device(value: str) -> None:
    """CUDA values of ``eval_device`` need a visible CUDA device. Raises ConfigError (field ``eval_device``)."""
    if not value.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError("eval_device", f"{value!r} requested but CUDA is not available on this machine; allowed here: auto, cpu")
    if value != "cuda" and int(value[5:]) >= torch.cuda.device_count():
        raise ConfigError("eval_device", f"{value!r}: only {torch.cuda.device_count()} CUDA device(s) visible")


def check_suite_sizes(cfg: BenchConfig, suites: tuple[str, ...]) -> None:
    """``eval_tasks`` and ``trials_per_task`` within the suites' tasks and init states (LIBERO's registry)."""
    ev = cfg.eval
    for suite in suites:
        n_tasks = suite_sizes(suite, 0)[0]
        if ev.eval_tasks is not None and ev.eval_tasks > n_tasks:
            raise ConfigError("eval_tasks", f"{ev.eval_tasks} tasks requested but suite '{suite}' has {n_tasks}; "
                              f"allowed: 1..{n_tasks} or null (all)")
        for task_id in range(n_tasks if ev.eval_tasks is None else ev.eval_tasks):
            n_init = suite_sizes(suite, task_id)[1]
            if ev.trials_per_task > n_init:
                raise ConfigError("trials_per_task", f"{ev.trials_per_task} exceeds the {n_init} init states of {suite} task "
                                  f"{task_id}; allowed: 1..{n_init}")


@functools.lru_cache(maxsize=None)
def suite_sizes(suite: str, task_id: int) -> tuple[int, int]:
    """(tasks in ``suite``, init states of its task ``task_id``) from LIBERO's registry (cached)."""
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints "[info] Applying task order ..."
        bench = suite_info(suite)
        return int(bench.n_tasks), len(bench.get_task_init_states(task_id))


def check_memory(cfg: BenchConfig, available: dict[str, float] | None = None) -> list[MemoryEstimate]:
    """Refuse a point whose training or rollouts cannot fit this machine's memory, before any work.

    Training runs on CUDA when available, else the CPU; rollouts on ``eval_device`` in ``eval_dtype`` ("auto":
    bf16 on CUDA, fp32 on the CPU), with ``eval_workers`` env workers in CPU RAM. Estimates: :mod:`vlamix.model.memory`.

    Args:
        available: device -> free bytes (tests); default :func:`vlamix.model.memory.available_bytes`.
    Returns:
        the estimate of each stage (training, rollouts).
    Raises:
        ConfigError: naming the field to change first (``precision`` when it is fp32, else ``gradient_checkpointing``
            when it is off, else ``batch_size``; ``eval_dtype`` for rollouts), with the estimate, what is available,
            and the fields that lower it.
    """
    shape = model_shape(cfg.model.path, cfg.model.action_recipe() if cfg.model.parallel_decoding else None)
    cuda = torch.cuda.is_available()
    train_device = "cuda" if cuda else "cpu"
    ro = cfg.rollout
    eval_device = ("cuda" if cuda else "cpu") if ro.eval_device == "auto" else ro.eval_device
    precision = cfg.resolved_precision()
    tr = cfg.train
    estimates = [
        estimate_training(shape, precision=precision, finetune_mode=cfg.model.finetune_mode, lora_rank=cfg.model.lora_rank,
                          batch_size=tr.batch_size, gradient_checkpointing=tr.gradient_checkpointing, device=train_device),
        estimate_policy(shape, dtype=dtype_name(ro.eval_dtype, eval_device), batch=cfg.policy_batch_size(),
                        device=eval_device, env_workers=ro.eval_workers),
    ]
    for est in estimates:
        free: Any = (available or {}).get(est.device)
        free = available_bytes(est.device) if free is None else free
        if est.total <= free:
            continue
        if est.stage == "rollouts":
            field_name, fix = "eval_dtype", "eval_dtype bf16 (half the weights), fewer eval_workers or envs_per_worker"
        elif precision == "fp32":
            field_name, fix = "precision", "precision bf16 (or auto: half the weights), gradient_checkpointing true, a smaller batch_size"
        elif not tr.gradient_checkpointing:
            field_name, fix = "gradient_checkpointing", "gradient_checkpointing true, a smaller batch_size with grad_accumulation_steps"
        else:
            field_name, fix = "batch_size", "a smaller batch_size with grad_accumulation_steps, lora_rank"
        raise ConfigError(
            field_name, f"model '{cfg.model.path}' ({shape.n_params / 1e9:.2f} B parameters) does not fit: estimated peak "
            f"{est.describe()} > {free / GIB:.1f} GiB available on {est.device}; lower it with {fix} "
            f"(estimate: vlamix.model.memory)")
    return estimates
