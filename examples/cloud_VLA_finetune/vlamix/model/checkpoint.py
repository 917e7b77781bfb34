"""Load and save OpenVLA checkpoints without ``trust_remote_code`` and without pickles.

``load_vla(path_or_name)`` accepts:

- ``"tiny"``: the embedded CPU default (:meth:`VLAConfig.tiny`), random weights from a fixed seed
  (:data:`TINY_SEED`, :func:`vlamix.model.modeling.init_tiny_weights_`) and the tiny byte-level tokenizer;
  ``"tiny-p28"`` is the same with 28 px patches (:meth:`VLAConfig.tiny_p28`, 64 vision tokens, faster on a CPU);
- an official OpenVLA HF folder (e.g. ``openvla/openvla-7b`` downloaded by the user): ``config.json``,
  ``model.safetensors`` or shards ``model-0000x-of-0000y.safetensors`` + ``model.safetensors.index.json``,
  tokenizer files, ``preprocessor_config.json`` and, for fine-tuned checkpoints, ``dataset_statistics.json``
  (whose norm stats replace the config's, as openvla ``experiments/robot/openvla_utils.py`` ``get_vla`` does);
- a folder written by :func:`save_vla` (same layout, plus optionally a LoRA adapter in ``lora_adapter/`` and,
  instead of weights, a reference to the base model in ``vlamix_checkpoint.json``);
- the reference fixture folder (``tiny/config.json`` + ``tiny/model.safetensors``, no tokenizer);
- an official OpenVLA-OFT folder (e.g. moojink/openvla-7b-oft-finetuned-libero-spatial): the merged backbone as
  above plus ``action_head--*_checkpoint.pt`` / ``proprio_projector--*_checkpoint.pt``
  (:mod:`vlamix.model.action_files`: read with ``weights_only=True``, ``module.`` prefixes stripped).

``recipe`` (:meth:`VLAConfig.with_action_recipe` fields) turns a model into another action recipe, e.g. OpenVLA-7B
into OpenVLA-OFT for fine-tuning: the action head and proprio projector of such a model come from the folder when
it has them, else they are freshly initialised (PyTorch defaults, seeded with ``init_seed``).

Weights are read with ``safetensors`` into a skeleton built on the meta device, so a 7B checkpoint is held in
memory once, in the requested dtype.

Usage::

    from vlamix.model.checkpoint import load_vla, save_vla
    model, processor = load_vla("tiny")
    save_vla(model, processor, "out/ckpt", norm_stats={"libero_spatial_no_noops": {...}})
    model, processor = load_vla("out/ckpt", device="cuda", dtype=torch.bfloat16)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import torch
import torch.nn as nn

from vlamix.core.compat import ensure_torchvision_importable

ensure_torchvision_importable()

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from vlamix.model.settings import BUILTIN_MODELS  # noqa: E402
from vlamix.core.io import atomic_path, atomic_write_json, atomic_write_text  # noqa: E402
from vlamix.model.action_files import (  # noqa: E402
    has_action_files,
    init_action_modules_,
    is_action_key,
    is_official_oft_folder,
    load_action_modules,
    official_recipe,
    save_action_modules,
)
from vlamix.model.configuration import VLAConfig  # noqa: E402
from vlamix.model.lora import is_lora_model, load_lora_adapter, merge_lora, save_lora_adapter  # noqa: E402
from vlamix.model.modeling import OpenVLAForActionPrediction, init_tiny_weights_  # noqa: E402
from vlamix.model.processor import VLAProcessor  # noqa: E402
from vlamix.model.tokenizer import build_tiny_tokenizer  # noqa: E402

logger = logging.getLogger(__name__)

#: Seed of the tiny preset's random weights.
TINY_SEED = 0
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
STATS_NAME = "dataset_statistics.json"
ADAPTER_DIR = "lora_adapter"
CHECKPOINT_META_NAME = "vlamix_checkpoint.json"
#: Largest shard written by :func:`save_vla` (bytes), as transformers' default.
MAX_SHARD_BYTES = 5 * 1024**3
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}  # fmt: skip


#: Built-in presets (:data:`vlamix.model.settings.BUILTIN_MODELS`) -> their configuration.
TINY_PRESETS = {"tiny": VLAConfig.tiny, "tiny-p28": VLAConfig.tiny_p28}


def build_tiny(
    seed: int = TINY_SEED, norm_stats: dict | None = None, preset: str = "tiny", recipe: dict[str, Any] | None = None
) -> tuple[OpenVLAForActionPrediction, VLAProcessor]:
    """A tiny preset (``"tiny"`` or ``"tiny-p28"``) on the CPU in float32: fresh deterministic weights for
    ``seed`` and its tokenizer; ``recipe``: action-recipe fields (e.g. :data:`OFT_LIBERO_RECIPE`: the tiny
    OpenVLA-OFT, whose backbone equals the token model's of the same seed).

    Raises:
        ValueError: unknown preset (names the allowed ones), or an invalid recipe.
    """
    if preset not in TINY_PRESETS:
        raise ValueError(f"preset: got {preset!r}; allowed: {', '.join(TINY_PRESETS)}")
    config = TINY_PRESETS[preset](norm_stats=norm_stats)
    if recipe:
        config = config.with_action_recipe(**recipe)
    with torch.device("cpu"):
        model = OpenVLAForActionPrediction(config)
    init_tiny_weights_(model, seed)
    processor = VLAProcessor.from_config(config, build_tiny_tokenizer())
    return model.eval(), processor


def load_vla(
    path_or_name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    *,
    merge_adapter: bool = False,
    recipe: dict[str, Any] | None = None,
    init_seed: int = TINY_SEED,
) -> tuple[nn.Module, VLAProcessor]:
    """Load a model and its processor (model in eval mode, on ``device`` in ``dtype``).

    Args:
        path_or_name: "tiny" or a checkpoint folder (see the module docstring).
        device: torch device. dtype: torch dtype or "fp32"/"bf16"/"fp16" (weights are cast while reading).
        merge_adapter: for a folder with a LoRA adapter, fold it into the weights and return a plain model;
            otherwise a ``peft.PeftModel`` is returned (same outputs up to float rounding).
        recipe: action-recipe fields applied over the folder's (None: the folder's own; for an official OFT folder
            the recipe derived from its files, :func:`vlamix.model.action_files.official_recipe`).
        init_seed: seed of freshly initialised action modules (a recipe with a head on a folder without one).
    Returns:
        (model, processor): ``OpenVLAForActionPrediction`` (or a PeftModel wrapping one) and :class:`VLAProcessor`.
    Raises:
        FileNotFoundError: not a built-in name and not a folder with ``config.json``; or no weights found.
        ValueError: unknown dtype, a config that is not "openvla", or weights whose keys/shapes do not match the
            config (the message lists them).
    """
    dtype = _resolve_dtype(dtype)
    if path_or_name in BUILTIN_MODELS:
        model, processor = build_tiny(preset=path_or_name, recipe=recipe)
        return model.to(device=device, dtype=dtype).eval(), processor
    folder = str(path_or_name)
    config_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"model '{path_or_name}' is neither a built-in model {BUILTIN_MODELS} nor a folder with {CONFIG_NAME}"
        )
    config = VLAConfig.from_json_file(config_path)
    if is_official_oft_folder(folder) and not config.parallel_decoding:  # official OFT config.json: no recipe
        config = config.with_action_recipe(**official_recipe(folder))
    if recipe:
        config = config.with_action_recipe(**recipe)
    stats_path = os.path.join(folder, STATS_NAME)
    if os.path.isfile(stats_path):
        with open(stats_path, encoding="utf-8") as f:
            config.norm_stats = json.load(f)

    meta = _read_meta(folder)
    if _has_weights(folder):
        model = _load_weights(config, folder, device, dtype, init_seed)
    elif meta.get("base_model"):
        base, _ = load_vla(_resolve_base_model(meta, folder), device=device, dtype=dtype,
                           recipe=config.action_recipe(), init_seed=init_seed)
        base.config.norm_stats = config.norm_stats
        model = base
        if config.parallel_decoding:  # trained from scratch: always in the checkpoint, never in the base
            load_action_modules(model, folder, required=True)
    else:
        raise FileNotFoundError(
            f"no weights in {folder}: expected {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or a base_model reference in "
            f"{CHECKPOINT_META_NAME}"
        )

    adapter_dir = os.path.join(folder, ADAPTER_DIR)
    if os.path.isdir(adapter_dir):
        model = load_lora_adapter(model, adapter_dir)
        if merge_adapter:
            model = merge_lora(model)
    processor = VLAProcessor.from_pretrained(folder, config)
    return model.to(device=device, dtype=dtype).eval(), processor


def save_vla(
    model: nn.Module,
    processor: VLAProcessor,
    out_dir: str,
    norm_stats: dict | None = None,
    *,
    base_model: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    training: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint folder that :func:`load_vla` reads back to identical outputs.

    Contents: ``config.json`` (with the norm stats), ``dataset_statistics.json`` (OpenVLA layout, when there
    are norm stats), tokenizer files and ``preprocessor_config.json``; then
    - plain model: ``model.safetensors`` (or shards + index above ``max_shard_bytes``), official key names;
    - LoRA model (``apply_lora``): ``lora_adapter/`` (peft format) and either the base weights unmerged
      (``base_model`` None) or only a reference ``{"base_model": base_model}`` in ``vlamix_checkpoint.json``
      (``"tiny"`` or a folder path, stored absolute) to keep 7B checkpoints small;
    - OpenVLA-OFT model: also ``action_head.safetensors`` (and ``proprio_projector.safetensors``), always: they
      are trained from scratch, never part of a base model (:mod:`vlamix.model.action_files`).

    Args:
        model: ``OpenVLAForActionPrediction`` or a PeftModel wrapping one (a DDP wrapper is unwrapped).
        processor: its processor.
        out_dir: folder (created). norm_stats: ``{dataset: {"action": {...}, ...}}``; None = the model's.
        base_model: see above. max_shard_bytes: shard size limit of the weights.
        training: how the model was trained (JSON-able, e.g. ``{"image_aug": true, "precision": "bf16"}``), stored
            under ``"training"`` in ``vlamix_checkpoint.json``; evaluation reads ``image_aug`` from it
            (:func:`checkpoint_image_aug`).
    Returns:
        ``out_dir``.
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    os.makedirs(out_dir, exist_ok=True)
    core = model.get_base_model() if is_lora_model(model) else model
    if norm_stats is not None:
        core.norm_stats = norm_stats
    config: VLAConfig = core.config
    atomic_write_text(os.path.join(out_dir, CONFIG_NAME), config.to_json_string(use_diff=False))
    if config.norm_stats:
        atomic_write_json(os.path.join(out_dir, STATS_NAME), config.norm_stats)
    processor.save_pretrained(out_dir)

    meta: dict[str, Any] = {"format": "vlamix-openvla", "lora": is_lora_model(model)}
    if training is not None:
        meta["training"] = dict(training)
    if is_lora_model(model):
        save_lora_adapter(model, os.path.join(out_dir, ADAPTER_DIR))
        if base_model is not None:
            # as configured (relative to the working directory, like every config path), plus the
            # absolute path of this machine as a fallback for loads from another working directory
            meta["base_model"] = base_model
            if base_model not in BUILTIN_MODELS:
                meta["base_model_abspath"] = os.path.abspath(base_model)
        else:
            _save_weights(_base_state_dict(core), out_dir, max_shard_bytes)
    else:
        _save_weights({k: v for k, v in core.state_dict().items() if not is_action_key(k)}, out_dir, max_shard_bytes)
    save_action_modules(core, out_dir)
    atomic_write_json(os.path.join(out_dir, CHECKPOINT_META_NAME), meta)
    return out_dir


def checkpoint_image_aug(path_or_name: str) -> bool:
    """Whether the checkpoint was trained with image augmentation (so evaluation should centre-crop).

    Built-in presets: False. Our folders: ``training.image_aug`` of ``vlamix_checkpoint.json`` (False when absent:
    vlamix had no augmentation before it was recorded). Folders without ``vlamix_checkpoint.json`` (official
    OpenVLA checkpoints, e.g. ``openvla/openvla-7b-finetuned-libero-spatial``, fine-tuned with ``image_aug=True``,
    openvla ``experiments/robot/libero/run_libero_eval.py`` ``center_crop=True``): True.
    """
    if path_or_name in BUILTIN_MODELS:
        return False
    folder = str(path_or_name)
    if not os.path.isfile(os.path.join(folder, CHECKPOINT_META_NAME)):
        return True
    return bool(_read_meta(folder).get("training", {}).get("image_aug", False))


def checkpoint_action_chunk(path_or_name: str) -> int:
    """Actions one policy query of the checkpoint predicts: ``action_chunk`` of an L1-regression config (ours),
    8 for an official OpenVLA-OFT folder (:func:`vlamix.model.action_files.official_recipe`), else 1 (token head;
    built-in presets; a path without a readable ``config.json``, which the loader then reports).
    """
    if path_or_name in BUILTIN_MODELS:
        return 1
    folder = str(path_or_name)
    try:
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return 1
    if raw.get("action_head", "tokens") == "l1_regression":
        return int(raw.get("action_chunk", 1))
    return int(official_recipe(folder)["action_chunk"]) if is_official_oft_folder(folder) else 1


# ============================================================================ helpers
def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype: got {dtype!r}; allowed: a torch dtype or one of {', '.join(_DTYPES)}")


def _resolve_base_model(meta: dict[str, Any], folder: str) -> str:
    """The base model a LoRA checkpoint refers to: a built-in name, the configured path (relative to
    the working directory), or the absolute path recorded at save time.

    Raises:
        FileNotFoundError: none of them exists (names the checkpoint and the paths tried).
    """
    name = meta["base_model"]
    if name in BUILTIN_MODELS:
        return name
    candidates = [name, meta.get("base_model_abspath")]
    for path in candidates:
        if path and os.path.isdir(path):
            return path
    raise FileNotFoundError(
        f"the base model of LoRA checkpoint {folder} was not found (tried {[c for c in candidates if c]}); "
        f"run from the directory the job ran in, or edit base_model in {CHECKPOINT_META_NAME}"
    )


def _read_meta(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, CHECKPOINT_META_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _has_weights(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, WEIGHTS_NAME)) or os.path.isfile(os.path.join(folder, WEIGHTS_INDEX_NAME))


def _weight_files(folder: str) -> list[str]:
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        return [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
    return [os.path.join(folder, WEIGHTS_NAME)]


def _load_weights(
    config: VLAConfig, folder: str, device, dtype: torch.dtype, init_seed: int
) -> OpenVLAForActionPrediction:
    """Build the skeleton on the meta device and assign the checkpoint tensors, read straight onto ``device`` and
    cast to ``dtype`` (one copy of the weights in memory). Action modules (OFT) come from the folder's files, or
    are freshly initialised with ``init_seed`` when it has none (a token-head base turned into OFT)."""
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config)
    # the action head / proprio projector live in their own files (loaded below)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_action_key(k)}
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weight shard {path} listed in the index is missing")
        with safe_open(path, framework="pt", device=str(torch.device(device))) as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights in {folder} do not match its config: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} with other shapes "
            f"(e.g. {[(k, tuple(state[k].shape), expected[k]) for k in wrong[:3]]})"
        )
    model.load_state_dict(state, strict=False, assign=True)  # every backbone key checked above
    model.reset_rotary_buffers()
    if config.parallel_decoding:
        if has_action_files(folder):
            load_action_modules(model, folder, required=True)
        else:
            init_action_modules_(model, device, init_seed)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if leftover:
        raise RuntimeError(f"tensors left on the meta device after loading: {leftover[:5]}")
    return model


def _base_state_dict(core: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of a LoRA-wrapped model without the adapters, under the plain model's key names."""
    out = {}
    for key, value in core.state_dict().items():
        if "lora_" in key or is_action_key(key):
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


def _save_weights(state: dict[str, torch.Tensor], out_dir: str, max_shard_bytes: int) -> None:
    """safetensors file(s) with an index when sharded (transformers' naming), each written atomically.

    The new files are complete before any old weight file is removed, so a kill leaves the old
    weights or the new ones loadable (the index, written after its shards, says which shards count).
    Only when new shards would overwrite old shards of the same name is the old index removed first:
    a kill then leaves a folder without weights (``load_vla`` fails loudly), never a mix of old and
    new shards. (:class:`vlamix.train.finetune.FineTuner` writes every checkpoint into a fresh folder.)
    """
    old = {n for n in os.listdir(out_dir) if n == WEIGHTS_INDEX_NAME or (n.startswith("model") and n.endswith(".safetensors"))}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        with atomic_path(os.path.join(out_dir, WEIGHTS_NAME)) as tmp:
            save_file(shards[0], tmp, metadata=metadata)
        new = {WEIGHTS_NAME}
    else:
        names = {f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)}
        if WEIGHTS_INDEX_NAME in old and names & old:
            os.remove(os.path.join(out_dir, WEIGHTS_INDEX_NAME))
        weight_map = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            with atomic_path(os.path.join(out_dir, name)) as tmp:
                save_file(shard, tmp, metadata=metadata)
            for key, tensor in shard.items():
                weight_map[key] = name
                total += tensor.numel() * tensor.element_size()
        atomic_write_json(os.path.join(out_dir, WEIGHTS_INDEX_NAME), {"metadata": {"total_size": total}, "weight_map": weight_map})
        new = {WEIGHTS_INDEX_NAME, *weight_map.values()}
    for name in sorted(old - new, key=lambda n: n != WEIGHTS_INDEX_NAME):  # the index before the shards it names
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))
