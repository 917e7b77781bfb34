"""Files of OpenVLA-OFT's action head and proprio projector: ours (safetensors) and the official ones (``.pt``).

An official OpenVLA-OFT checkpoint folder (moojink/openvla-7b-oft-finetuned-libero-{spatial,object,goal,10} and
``-libero-spatial-object-goal-10``) holds the merged backbone in the OpenVLA layout (``config.json``, sharded
safetensors, tokenizer, ``dataset_statistics.json``) plus two pickles written by ``vla-scripts/finetune.py``
``save_training_checkpoint``::

    action_head--<step>_checkpoint.pt        torch.save(DDP(action_head).state_dict()): keys "module.model.*", bfloat16
    proprio_projector--<step>_checkpoint.pt  same for the projector: keys "module.fc1.*", "module.fc2.*", float32

(<step> = 150000 for spatial/object/10, 50000 for goal, 300000 for the four-suite policy; ``latest_checkpoint.pt``
for a run saved with that suffix). They are read with ``torch.load(weights_only=True)`` (tensors and plain
containers only, no code), the ``module.`` prefix is stripped (``experiments/robot/openvla_utils.py``
``load_component_state_dict``) and the keys and shapes are checked against our modules before loading.
Nothing else of the folder needs remote code: :func:`vlamix.model.checkpoint.load_vla` reads the rest.

The official folders do not record the action recipe (OFT keeps it in constants and script flags), so it is
derived: ``action_dim`` from the head's ``fc2`` rows, ``proprio_dim`` from the projector's ``fc1`` columns,
``use_proprio`` from the projector file's presence, and the LIBERO values for the rest (8-step chunks, two images:
``LIBERO.md``, ``prismatic/vla/constants.py``); a ``recipe`` given to the loader overrides them.

Our checkpoints store the two modules as ``action_head.safetensors`` / ``proprio_projector.safetensors`` (keys
without prefix, the training dtype) beside the backbone or the LoRA adapter.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from vlamix.core.io import atomic_path
from vlamix.model.action_head import ACTION_MODULES, strip_ddp_prefix
from vlamix.model.configuration import OFT_LIBERO_RECIPE

logger = logging.getLogger(__name__)

#: Our file of each module (safetensors, keys without prefix).
OURS = {name: f"{name}.safetensors" for name in ACTION_MODULES}
#: Glob of the official file of each module (``find_checkpoint_file``: the name holds the module and "checkpoint").
OFFICIAL_GLOBS = {name: f"{name}--*checkpoint.pt" for name in ACTION_MODULES}


def official_file(folder: str, name: str) -> str | None:
    """The official ``<name>--*checkpoint.pt`` of ``folder``, or None.

    Raises:
        ValueError: several match (the official loader also requires exactly one; the message lists them).
    """
    found = sorted(glob.glob(os.path.join(glob.escape(folder), OFFICIAL_GLOBS[name])))
    if len(found) > 1:
        raise ValueError(
            f"{folder} holds several {OFFICIAL_GLOBS[name]} files {[os.path.basename(f) for f in found]}; "
            "keep exactly one (the step to evaluate)"
        )
    return found[0] if found else None


def is_official_oft_folder(folder: str) -> bool:
    """True when ``folder`` holds an official ``action_head--*checkpoint.pt``."""
    return official_file(folder, "action_head") is not None


def read_official_state(path: str) -> dict[str, torch.Tensor]:
    """An official ``.pt`` state dict, read without unpickling code (``weights_only=True``), ``module.`` stripped.

    Raises:
        ValueError: the file is not a mapping of names to tensors.
    """
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    return strip_ddp_prefix(state)


def official_recipe(folder: str) -> dict[str, Any]:
    """The action recipe of an official OFT folder (see the module docstring): dims from the tensors' shapes.

    Raises:
        ValueError: the head file lacks ``model.fc2.weight`` or the projector file ``fc1.weight``.
    """
    head = read_official_state(official_file(folder, "action_head"))
    if "model.fc2.weight" not in head:
        raise ValueError(f"{official_file(folder, 'action_head')} has no model.fc2.weight: not an L1-regression head")
    recipe = dict(OFT_LIBERO_RECIPE, action_dim=int(head["model.fc2.weight"].shape[0]), use_proprio=False)
    projector_path = official_file(folder, "proprio_projector")
    if projector_path is not None:
        projector = read_official_state(projector_path)
        if "fc1.weight" not in projector:
            raise ValueError(f"{projector_path} has no fc1.weight: not a proprio projector")
        recipe.update(use_proprio=True, proprio_dim=int(projector["fc1.weight"].shape[1]))
    return recipe


def module_file(folder: str, name: str) -> str | None:
    """Our ``<name>.safetensors`` of ``folder`` if present, else the official ``.pt``, else None."""
    ours = os.path.join(folder, OURS[name])
    return ours if os.path.isfile(ours) else official_file(folder, name)


def has_action_files(folder: str) -> bool:
    """True when ``folder`` holds an action-head file (ours or official)."""
    return module_file(folder, "action_head") is not None


def load_action_modules(model: nn.Module, folder: str, *, required: bool) -> list[str]:
    """Load the action head (and proprio projector) of ``model`` from ``folder``, strictly.

    Args:
        model: ``OpenVLAForActionPrediction`` with ``action_head`` (its modules may be on the meta device: the
            tensors are then assigned).
        folder: checkpoint folder. required: raise when a module's file is missing (else it is left as is).
    Returns:
        the paths read.
    Raises:
        FileNotFoundError: a required file is missing. ValueError: keys or shapes differ from the module's (the
            message lists them).
    """
    read = []
    for name in ACTION_MODULES:
        module = getattr(model, name, None)
        if module is None:
            continue
        path = module_file(folder, name)
        if path is None:
            if required:
                raise FileNotFoundError(
                    f"{folder} has no {OURS[name]} nor {OFFICIAL_GLOBS[name]} for the model's {name}"
                )
            continue
        state = load_file(path) if path.endswith(".safetensors") else read_official_state(path)
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            wrong = sorted((k, got[k], expected[k]) for k in set(expected) & set(got) if got[k] != expected[k])
            raise ValueError(
                f"{path} does not fit the model's {name}: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                f"other shapes {wrong[:4]} (file, model)"
            )
        device = next(iter(module.state_dict().values())).device
        if device.type == "meta":
            module.load_state_dict(state, strict=True, assign=True)
        else:
            module.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
        read.append(path)
    return read


def init_action_modules_(model: nn.Module, device: str | torch.device, seed: int) -> None:
    """Fresh weights for the model's action modules (e.g. on a base model that has none), in place: materialised
    on ``device`` in float32 and initialised with PyTorch's defaults (OFT adds no custom init) from a generator
    seeded ``seed`` (the global RNG state is restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))  # the CPU generator only: modules are built on the CPU
        for name in ACTION_MODULES:
            module = getattr(model, name, None)
            if module is None:
                continue
            module.to_empty(device="cpu")
            module.float()
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
            module.to(device)


def save_action_modules(core: nn.Module, out_dir: str) -> list[str]:
    """Write our ``<name>.safetensors`` for each action module of ``core`` (atomic); returns the paths."""
    paths = []
    for name in ACTION_MODULES:
        module = getattr(core, name, None)
        if module is None:
            continue
        path = os.path.join(out_dir, OURS[name])
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})
        paths.append(path)
    return paths


def is_action_key(key: str) -> bool:
    """True for a state-dict key of the action head or proprio projector (stored apart from the backbone)."""
    return key.split(".", 1)[0] in ACTION_MODULES
