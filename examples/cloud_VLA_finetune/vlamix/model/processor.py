"""Inputs of the OpenVLA model: images -> ``pixel_values``, instructions (+ actions) -> token ids and labels.

Sources (openvla/openvla, re-implemented):
    ``prismatic/extern/hf/processing_prismatic.py``  image pipeline (resize strategy, per-tower mean/std, stacking)
    ``prismatic/vla/datasets/datasets.py``            ``RLDSBatchTransform`` (prompt, labels on the action tokens)
    ``prismatic/models/backbones/llm/prompting/base_prompter.py``  ``PurePromptBuilder`` ("In: ...\\nOut: ")
    ``prismatic/extern/hf/modeling_prismatic.py``     ``predict_action`` (empty token 29871 before the actions)
    ``experiments/robot/openvla_utils.py``           ``crop_and_resize`` (evaluation centre crop)

Token layout (Llama tokenizer), identical for training and inference up to the first action token::

    training : <s> In: What action should the robot take to {instruction}?\\nOut: [29871] a1 ... a7 </s>  (+ right padding)
    inference: (left padding) <s> In: What action should the robot take to {instruction}?\\nOut: [29871]

The official training code tokenises the string "...Out: " + action characters + "</s>"; with the Llama tokenizer
the space becomes the empty token 29871 in front of the action tokens, and ``predict_action`` appends that token at
inference. Here the ids are assembled directly: prompt ids + the *action prefix* (``[29871]`` when the tokenizer
has the SentencePiece word-boundary token "▁", else nothing, e.g. for the tiny byte-level tokenizer) + action ids.
Labels are set on the 7 action tokens only (``predict_stop_token=False``; the official default also trains EOS).

OpenVLA-OFT (parallel decoding; moojink/openvla-oft ``prismatic/vla/datasets/datasets.py``,
``prismatic/util/data_utils.py`` ``PaddedCollatorForActionPrediction``, ``modeling_prismatic.py`` ``predict_action``)::

    <s> In: What action should the robot take to {instruction}?\nOut: [29871] s1 ... s56 </s>  (+ padding)

The 56 = chunk x action_dim slots have their embeddings zeroed by the model, so their ids never matter (OFT
trains with the discretised action ids there and infers with id 1); we put OFT's arbitrary action id 31744
(``ACTION_TOKEN_BEGIN_IDX + 1``) in both cases. Training batches are right-padded (OFT's collator), inference
batches left-padded; with positions from the attention mask and a key-padding mask the padding side does not
change a row's result. Two images (primary, wrist) are stacked on channels: ``pixel_values`` [B, 12, 224, 224].
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vlamix.core.compat import ensure_torchvision_importable, import_timm
from vlamix.core.constants import IGNORE_INDEX, PROMPT_TEMPLATE
from vlamix.model.action_tokenizer import ActionTokenizer
from vlamix.model.configuration import VLAConfig

ensure_torchvision_importable()

from transformers import AutoTokenizer  # noqa: E402

logger = logging.getLogger(__name__)

#: Instruction ablations of :meth:`VLAProcessor.prompt` (same tuple as :data:`vlamix.core.suites.INSTRUCTION_VARIANTS`).
INSTRUCTION_VARIANTS = ("original", "empty", "unwrapped", "empty_unwrapped")

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
#: SentencePiece word-boundary token; its id (29871 in Llama-2) is the "empty token" placed before the actions.
SENTENCEPIECE_SPACE = "\u2581"
_PIL_INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


class VLAProcessor:
    """Image transform + prompt builder + tokenizer of an OpenVLA checkpoint.

    Args:
        tokenizer: a ``transformers`` tokenizer (AutoTokenizer of the checkpoint folder) or None (image-only use;
            the text methods then raise ``RuntimeError``).
        input_sizes: per tower (C, H, W), e.g. [(3, 224, 224), (3, 224, 224)].
        means, stds: per tower RGB normalisation constants (DINOv2: ImageNet, SigLIP: 0.5).
        interpolations: per tower resize filter ("bicubic").
        image_resize_strategy: "resize-naive" (OpenVLA: stretch to H x W), "resize-crop" (shorter side to H, centre
            crop) or "letterbox" (pad to square with the mean colour, then resize).
        action_tokenizer: :class:`ActionTokenizer` (256 bins on ids 31744..31999 by default).
        pad_token_id: id used for padding when the tokenizer defines none (the config's 32000).
    Raises:
        ValueError: inconsistent per-tower lists or an unknown strategy / interpolation.
    """

    def __init__(
        self,
        tokenizer: Any | None,
        input_sizes: Sequence[Sequence[int]] = ((3, 224, 224), (3, 224, 224)),
        means: Sequence[Sequence[float]] = ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5)),
        stds: Sequence[Sequence[float]] = ((0.229, 0.224, 0.225), (0.5, 0.5, 0.5)),
        interpolations: Sequence[str] = ("bicubic", "bicubic"),
        image_resize_strategy: str = "resize-naive",
        action_tokenizer: ActionTokenizer | None = None,
        pad_token_id: int = 32000,
    ) -> None:
        n = len(input_sizes)
        if not (len(means) == len(stds) == len(interpolations) == n) or n not in (1, 2):
            raise ValueError(
                f"input_sizes, means, stds, interpolations must list the same 1 or 2 towers, got lengths "
                f"{len(input_sizes)}, {len(means)}, {len(stds)}, {len(interpolations)}"
            )
        if image_resize_strategy not in ("resize-naive", "resize-crop", "letterbox"):
            raise ValueError(
                f"image_resize_strategy: got {image_resize_strategy!r}; allowed: resize-naive, resize-crop, letterbox"
            )
        for interp in interpolations:
            if interp not in _PIL_INTERPOLATION:
                raise ValueError(f"interpolations: got {interp!r}; allowed: {', '.join(_PIL_INTERPOLATION)}")
        self.tokenizer = tokenizer
        self.input_sizes = [tuple(int(v) for v in s) for s in input_sizes]
        # float32 constants, as the official processor stores them (``tensor.float().numpy().tolist()``).
        self.means = [np.asarray(m, dtype=np.float32) for m in means]
        self.stds = [np.asarray(s, dtype=np.float32) for s in stds]
        self.interpolations = list(interpolations)
        self.image_resize_strategy = image_resize_strategy
        self.action_tokenizer = action_tokenizer or ActionTokenizer()
        self._pad_token_id = int(pad_token_id)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: VLAConfig, tokenizer: Any | None) -> "VLAProcessor":
        """Image constants from timm's pretrained configs of the config's tower ids (as the official
        ``PrismaticImageProcessor`` gets them via timm's data config), action bins from the config."""
        timm = import_timm()
        means, stds, interps = [], [], []
        for model_id in config.timm_model_ids:
            cfg = timm.get_pretrained_cfg(model_id)
            if cfg is None:
                raise ValueError(f"timm has no pretrained config for {model_id!r}; cannot derive image normalisation")
            means.append(cfg.mean)
            stds.append(cfg.std)
            interps.append(cfg.interpolation or "bicubic")
        return cls(
            tokenizer,
            input_sizes=[(3, s, s) for s in config.image_sizes],
            means=means,
            stds=stds,
            interpolations=interps,
            image_resize_strategy=config.image_resize_strategy,
            action_tokenizer=ActionTokenizer(n_bins=config.n_action_bins, vocab_size=config.action_vocab_size),
            pad_token_id=config.pad_token_id if config.pad_token_id is not None else 32000,
        )

    @classmethod
    def from_pretrained(cls, folder: str, config: VLAConfig, tokenizer: Any | None = None) -> "VLAProcessor":
        """Processor of a checkpoint folder: ``preprocessor_config.json`` when present (official or ours), else
        the config's timm defaults; ``tokenizer`` or AutoTokenizer of the folder when it has tokenizer files.

        Raises:
            ValueError: a malformed ``preprocessor_config.json``.
        """
        if tokenizer is None:
            tokenizer = load_tokenizer(folder, config)
        base = cls.from_config(config, tokenizer)
        path = os.path.join(folder, PREPROCESSOR_CONFIG_NAME)
        if not os.path.isfile(path):
            return base
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        try:
            return cls(
                tokenizer,
                input_sizes=values.get("input_sizes", base.input_sizes),
                means=values.get("means", [m.tolist() for m in base.means]),
                stds=values.get("stds", [s.tolist() for s in base.stds]),
                interpolations=values.get("interpolations", base.interpolations),
                image_resize_strategy=values.get("image_resize_strategy", base.image_resize_strategy),
                action_tokenizer=base.action_tokenizer,
                pad_token_id=base._pad_token_id,
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: malformed preprocessor config: {err}") from err

    def save_pretrained(self, folder: str) -> None:
        """Write the tokenizer files and ``preprocessor_config.json`` (the official processor's field names)."""
        os.makedirs(folder, exist_ok=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        values = {
            "image_processor_type": "PrismaticImageProcessor",
            "processor_class": "PrismaticProcessor",
            "use_fused_vision_backbone": len(self.input_sizes) == 2,
            "image_resize_strategy": self.image_resize_strategy,
            "input_sizes": [list(s) for s in self.input_sizes],
            "interpolations": self.interpolations,
            "means": [m.tolist() for m in self.means],
            "stds": [s.tolist() for s in self.stds],
        }
        with open(os.path.join(folder, PREPROCESSOR_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(values, f, indent=2)

    # ------------------------------------------------------------------ images
    def image_transform(self, images: Any) -> torch.Tensor:
        """RGB images -> ``pixel_values`` float32 [B, 3 * n_towers, H, W].

        Per tower: resize (strategy, PIL filter), to [0, 1] (x / 255), normalise (x - mean) / std, all float32; the
        towers' 3-channel results are stacked on channels (DINOv2 first). At 224 px input with "resize-naive" the
        resize is the identity, as in the official pipeline.

        Args:
            images: uint8 [B, H, W, 3] or [H, W, 3] array, or a list of such arrays / PIL images.
        Raises:
            ValueError: not uint8 RGB images.
        """
        arrays = _as_uint8_list(images)
        out = np.empty((len(arrays), 3 * len(self.input_sizes), *self.input_sizes[0][1:]), dtype=np.float32)
        for b, arr in enumerate(arrays):
            img = Image.fromarray(arr)
            resized_by_key: dict[tuple, np.ndarray] = {}  # towers with the same size and filter share the resize
            for i, size in enumerate(self.input_sizes):
                fill_key = i if self.image_resize_strategy == "letterbox" else -1  # letterbox fill = tower mean
                key = (tuple(size[1:]), self.interpolations[i], fill_key)
                if key not in resized_by_key:
                    resized_by_key[key] = np.asarray(self._resize(img, i, size[1:]), dtype=np.float32)  # [H, W, 3]
                x = resized_by_key[key] / np.float32(255.0)
                x = (x - self.means[i]) / self.stds[i]
                out[b, 3 * i : 3 * i + 3] = x.transpose(2, 0, 1)
        return torch.from_numpy(out)

    def _resize(self, img: Image.Image, tower: int, size: tuple[int, int]) -> Image.Image:
        h, w = size
        resample = _PIL_INTERPOLATION[self.interpolations[tower]]
        if self.image_resize_strategy == "letterbox":
            # Symmetric border of int((max - side) / 2) pixels (official ``letterbox_pad_transform``).
            fill = tuple(int(v * 255) for v in self.means[tower])
            (iw, ih), side = img.size, max(img.size)
            hpad, vpad = int((side - iw) / 2), int((side - ih) / 2)
            padded = Image.new("RGB", (iw + 2 * hpad, ih + 2 * vpad), fill)
            padded.paste(img, (hpad, vpad))
            img = padded
        if self.image_resize_strategy == "resize-naive" or img.size[0] == img.size[1]:
            return img if img.size == (w, h) else img.resize((w, h), resample)
        # resize-crop: shorter side to h (torchvision Resize(int)), then centre crop (torchvision CenterCrop).
        iw, ih = img.size
        short, long = (iw, ih) if iw <= ih else (ih, iw)
        new_short, new_long = h, int(h * long / short)
        new_w, new_h = (new_short, new_long) if iw <= ih else (new_long, new_short)
        img = img.resize((new_w, new_h), resample)
        top, left = int(round((new_h - h) / 2.0)), int(round((new_w - w) / 2.0))
        return img.crop((left, top, left + w, top + h))

    @staticmethod
    def center_crop(images: Any, crop_scale: float = 0.9, size: tuple[int, int] | None = None) -> np.ndarray:
        """OpenVLA's evaluation centre crop: keep the central ``crop_scale`` of the image *area* (side factor
        sqrt(0.9) = 0.949) and resize it back, for models trained with random-crop augmentation.

        Re-implements ``crop_and_resize`` of ``experiments/robot/openvla_utils.py`` without TensorFlow, with
        ``tf.image.crop_and_resize``'s sampling (bilinear, box corners on pixel centres: source coordinate
        ``y1 (H - 1) + y (y2 - y1) (H - 1) / (h - 1)``) and ``tf.image.convert_image_dtype``'s conversions
        (uint8 -> x * (1/255); float -> uint8 by truncating x * 255.5), all in float32. Remaining difference: TF's
        kernel may order float operations differently, so a pixel can rarely differ by 1 level.

        Args:
            images: uint8 [B, H, W, 3] or [H, W, 3] (or a list of them).
            crop_scale: area fraction in (0, 1]. size: output (h, w); None = input size (the official code
                resizes to 224 x 224, its input size).
        Returns:
            uint8 array of the input's rank: [B, h, w, 3] or [h, w, 3].
        Raises:
            ValueError: ``crop_scale`` outside (0, 1] or images not uint8 RGB.
        """
        if not 0.0 < float(crop_scale) <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
        single = isinstance(images, np.ndarray) and images.ndim == 3
        arrays = _as_uint8_list(images)
        side = np.clip(np.sqrt(np.float32(crop_scale)), np.float32(0.0), np.float32(1.0))
        offset = (np.float32(1.0) - side) / np.float32(2.0)
        y1 = x1 = offset
        y2 = x2 = offset + side
        out = []
        for arr in arrays:
            H, W = arr.shape[:2]
            oh, ow = size if size is not None else (H, W)
            x = arr.astype(np.float32) * np.float32(1.0 / 255.0)
            ys = _tf_sample_coords(y1, y2, H, oh)
            xs = _tf_sample_coords(x1, x2, W, ow)
            crop = _bilinear(x, ys, xs)
            crop = np.clip(crop, np.float32(0.0), np.float32(1.0))
            out.append(np.clip(np.trunc(crop * np.float32(255.5)), 0, 255).astype(np.uint8))
        result = np.stack(out)
        return result[0] if single else result

    # ------------------------------------------------------------------ text
    @staticmethod
    def prompt(instruction: str, variant: str = "original") -> str:
        """OpenVLA's prompt (``PurePromptBuilder``, eval ``get_vla_action``); the instruction is lower-cased.

        ``variant`` (instruction ablations, :data:`INSTRUCTION_VARIANTS`): "original" = the template
        around the instruction; "empty" = the template around an empty instruction
        (``"In: What action should the robot take to ?\\nOut:"``); "unwrapped" = the lower-cased
        instruction alone; "empty_unwrapped" = the empty string (the sequence is then BOS + action prefix).

        Raises:
            ValueError: unknown variant.
        """
        if variant not in INSTRUCTION_VARIANTS:
            raise ValueError(f"instruction variant: got {variant!r}; allowed: {', '.join(INSTRUCTION_VARIANTS)}")
        text = "" if variant.startswith("empty") else instruction.lower()
        return text if variant.endswith("unwrapped") else PROMPT_TEMPLATE.format(instruction=text)

    @property
    def pad_token_id(self) -> int:
        """Padding id: the tokenizer's pad token, else the config's pad id (32000)."""
        tok_pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(tok_pad) if tok_pad is not None else self._pad_token_id

    @property
    def action_prefix_ids(self) -> list[int]:
        """Ids between the prompt and the first action token: ``[29871]`` (the "empty" token "▁") for
        SentencePiece/Llama tokenizers, ``[]`` for tokenizers without that token (the tiny byte-level BPE)."""
        tok = self._require_tokenizer()
        tid = tok.convert_tokens_to_ids(SENTENCEPIECE_SPACE)
        if tid is None or tid == tok.unk_token_id:
            return []
        return [int(tid)]

    def prompt_ids(self, instruction: str, variant: str = "original") -> list[int]:
        """BOS + prompt + action prefix: the ids every training and inference sequence starts with
        (``variant``: see :meth:`prompt`)."""
        tok = self._require_tokenizer()
        ids = list(tok(self.prompt(instruction, variant), add_special_tokens=True).input_ids)
        return ids + self.action_prefix_ids

    def training_batch(
        self,
        images: Any,
        instructions: Sequence[str],
        actions: np.ndarray,
        *,
        predict_stop_token: bool = False,
    ) -> dict[str, torch.Tensor]:
        """A teacher-forcing batch (``RLDSBatchTransform`` + the collator's right padding).

        Args:
            images: uint8 [B, H, W, 3] RGB. instructions: B strings. actions: float [B, D] normalised actions in
                model space (values outside [-1, 1] are clipped by the action tokenizer).
            predict_stop_token: also put a label on EOS (the official default; off here: loss on the D action
                tokens only).
        Returns:
            dict(pixel_values float32 [B, 6, 224, 224], input_ids int64 [B, L], attention_mask int64 [B, L],
            labels int64 [B, L]); sequences are prompt ids + action ids + EOS, right-padded with the pad id;
            labels are IGNORE_INDEX (-100) except on the action tokens (and EOS if ``predict_stop_token``).
        Raises:
            ValueError: batch sizes differ or ``actions`` is not 2-D. RuntimeError: no tokenizer.
        """
        tok = self._require_tokenizer()
        actions = np.asarray(actions)
        if actions.ndim != 2:
            raise ValueError(f"actions must be [B, D], got shape {actions.shape}")
        pixel_values = self.image_transform(images)
        if not (len(instructions) == actions.shape[0] == pixel_values.shape[0]):
            raise ValueError(
                f"batch sizes differ: {pixel_values.shape[0]} images, {len(instructions)} instructions, "
                f"{actions.shape[0]} actions"
            )
        action_ids = self.action_tokenizer.encode(actions)  # [B, D]
        eos = tok.eos_token_id
        seqs, labs = [], []
        for instruction, act in zip(instructions, action_ids):
            prompt = self.prompt_ids(instruction)
            act = [int(a) for a in act]
            seqs.append(prompt + act + [eos])
            labs.append([IGNORE_INDEX] * len(prompt) + act + [eos if predict_stop_token else IGNORE_INDEX])
        input_ids, attention_mask = _pad(seqs, self.pad_token_id, side="right")
        labels, _ = _pad(labs, IGNORE_INDEX, side="right")
        return {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
        }

    def multi_image_transform(self, images: Any, wrist_images: Any | None = None) -> torch.Tensor:
        """``pixel_values`` of one or two views: [B, 3 * n_towers, H, W], or with ``wrist_images`` the primary's
        channels then the wrist's: [B, 6 * n_towers, H, W] (OFT ``get_vla_action``: each image processed alone,
        concatenated on dim 1).

        Raises:
            ValueError: not uint8 RGB images, or a different number of wrist images.
        """
        pixel_values = self.image_transform(images)
        if wrist_images is None:
            return pixel_values
        wrist = self.image_transform(wrist_images)
        if wrist.shape != pixel_values.shape:
            raise ValueError(f"wrist images give {tuple(wrist.shape)} pixel values, primary images "
                             f"{tuple(pixel_values.shape)}")
        return torch.cat([pixel_values, wrist], dim=1)

    def action_chunk_inputs(
        self,
        images: Any,
        instructions: Sequence[str],
        *,
        num_slots: int,
        wrist_images: Any | None = None,
        side: str = "left",
        variants: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Inputs of ``forward_actions`` / ``predict_action_chunk`` (OpenVLA-OFT, see the module docstring).

        Args:
            images: uint8 [B, H, W, 3] primary RGB. instructions: B strings.
            num_slots: action slots = chunk x action_dim (``model.action_head.num_slots``; 56 on LIBERO).
            wrist_images: uint8 [B, H, W, 3] wrist RGB, or None (one image).
            side: padding side, "left" (inference) or "right" (training, OFT's collator).
            variants: B instruction variants (:meth:`prompt`), None = all "original".
        Returns:
            dict(pixel_values float32 [B, 6 or 12, 224, 224], input_ids int64 [B, L], attention_mask int64 [B, L],
            action_mask bool [B, L] true on the ``num_slots`` slots of each row).
        Raises:
            ValueError: batch sizes differ, ``num_slots < 1``, an unknown side or variant. RuntimeError: no tokenizer.
        """
        tok = self._require_tokenizer()
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be an integer >= 1, got {num_slots!r}")
        if side not in ("left", "right"):
            raise ValueError(f"side: got {side!r}; allowed: left, right")
        pixel_values = self.multi_image_transform(images, wrist_images)
        if isinstance(instructions, str) or len(instructions) != pixel_values.shape[0]:
            raise ValueError(f"batch sizes differ: {pixel_values.shape[0]} images, instructions {instructions!r}")
        if variants is None:
            variants = ["original"] * len(instructions)
        elif isinstance(variants, str) or len(variants) != len(instructions):
            raise ValueError(f"variants: need one per instruction ({len(instructions)}), got {variants!r}")
        slot_id = self.action_tokenizer.action_token_begin_idx + 1
        seqs, slot_rows = [], []
        for instruction, variant in zip(instructions, variants):
            prompt = self.prompt_ids(instruction, variant)
            seqs.append(prompt + [slot_id] * num_slots + [tok.eos_token_id])
            slot_rows.append([0] * len(prompt) + [1] * num_slots + [0])
        input_ids, attention_mask = _pad(seqs, self.pad_token_id, side=side)
        slots, _ = _pad(slot_rows, 0, side=side)
        return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
                "action_mask": slots.to(torch.bool)}

    def chunk_training_batch(
        self,
        images: Any,
        instructions: Sequence[str],
        actions: np.ndarray,
        *,
        wrist_images: Any | None = None,
        proprio: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """An OpenVLA-OFT training batch: :meth:`action_chunk_inputs` right-padded, plus the targets.

        Args:
            images, instructions, wrist_images: as :meth:`action_chunk_inputs`.
            actions: float [B, chunk, action_dim] normalised model-space action chunks (the loss targets).
            proprio: float [B, P] normalised proprio, or None.
        Returns:
            the inputs plus ``target_actions`` float32 [B, chunk, action_dim] and, with ``proprio``, ``proprio``
            float32 [B, P].
        Raises:
            ValueError: ``actions`` not 3-D, or batch sizes differ.
        """
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3:
            raise ValueError(f"actions must be [B, chunk, action_dim], got shape {actions.shape}")
        out = self.action_chunk_inputs(images, instructions, num_slots=actions.shape[1] * actions.shape[2],
                                       wrist_images=wrist_images, side="right")
        if actions.shape[0] != out["input_ids"].shape[0]:
            raise ValueError(
                f"batch sizes differ: {out['input_ids'].shape[0]} images, {actions.shape[0]} action chunks")
        out["target_actions"] = torch.from_numpy(np.ascontiguousarray(actions))
        if proprio is not None:
            proprio = np.asarray(proprio, dtype=np.float32)
            if proprio.ndim != 2 or proprio.shape[0] != actions.shape[0]:
                raise ValueError(f"proprio must be [B={actions.shape[0]}, P], got shape {proprio.shape}")
            out["proprio"] = torch.from_numpy(np.ascontiguousarray(proprio))
        return out

    def inference_inputs(
        self, images: Any, instructions: Sequence[str], variants: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Inputs of ``predict_action`` / ``predict_action_ids``: prompt ids + action prefix, LEFT-padded.

        Args:
            images: uint8 [B, H, W, 3] RGB. instructions: B strings.
            variants: B instruction variants (:meth:`prompt`), None = all "original".
        Returns:
            dict(pixel_values float32 [B, 6, 224, 224], input_ids int64 [B, L], attention_mask int64 [B, L]).
        Raises:
            ValueError: batch sizes differ, or an unknown variant. RuntimeError: no tokenizer.
        """
        self._require_tokenizer()
        pixel_values = self.image_transform(images)
        if len(instructions) != pixel_values.shape[0]:
            raise ValueError(f"batch sizes differ: {pixel_values.shape[0]} images, {len(instructions)} instructions")
        if variants is None:
            variants = ["original"] * len(instructions)
        elif isinstance(variants, str) or len(variants) != len(instructions):
            raise ValueError(f"variants: need one per instruction ({len(instructions)}), got {variants!r}")
        seqs = [self.prompt_ids(instruction, variant) for instruction, variant in zip(instructions, variants)]
        input_ids, attention_mask = _pad(seqs, self.pad_token_id, side="left")
        return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError(
                "this processor has no tokenizer (the checkpoint folder has no tokenizer files); "
                "only image_transform/center_crop are available"
            )
        return self.tokenizer


def load_tokenizer(folder: str, config: VLAConfig | None = None):
    """AutoTokenizer of ``folder`` when it holds tokenizer files, else None (logged).

    ``config`` is handed to AutoTokenizer so that it does not try to resolve the folder's "openvla" config.json
    itself (transformers does not know that model type; official folders would ask for remote code).
    """
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    if not any(os.path.isfile(os.path.join(folder, n)) for n in names):
        logger.warning("no tokenizer files in %s; the processor can only transform images", folder)
        return None
    return AutoTokenizer.from_pretrained(folder, config=config) if config is not None else AutoTokenizer.from_pretrained(folder)


def _as_uint8_list(images: Any) -> list[np.ndarray]:
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, 3] or [H, W, 3], got shape {images.shape}")
        images = list(images)
    arrays = []
    for img in images:
        arr = np.asarray(img.convert("RGB")) if isinstance(img, Image.Image) else np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"each image must be uint8 [H, W, 3] RGB, got {arr.dtype} {arr.shape}")
        arrays.append(np.ascontiguousarray(arr))
    if not arrays:
        raise ValueError("no images given")
    return arrays


def _pad(seqs: list[list[int]], value: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad int lists to one length: (int64 [B, L] values, int64 [B, L] mask of real entries)."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), int(value), dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        else:
            ids[i, length - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, length - len(s) :] = 1
    return ids, mask


def _tf_sample_coords(c1: np.float32, c2: np.float32, in_size: int, out_size: int) -> np.ndarray:
    """Source coordinates float32 [out_size] of ``tf.image.crop_and_resize`` for one axis of one box."""
    if out_size > 1:
        scale = (c2 - c1) * np.float32(in_size - 1) / np.float32(out_size - 1)
        return c1 * np.float32(in_size - 1) + np.arange(out_size, dtype=np.float32) * scale
    return np.full((1,), np.float32(0.5) * (c1 + c2) * np.float32(in_size - 1), dtype=np.float32)


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear sampling of float32 [H, W, C] at float32 coordinates (TF's formula: lerp along x, then y)."""
    top = np.floor(ys).astype(np.int64)
    bottom = np.ceil(ys).astype(np.int64)
    y_lerp = (ys - top.astype(np.float32))[:, None, None]
    left = np.floor(xs).astype(np.int64)
    right = np.ceil(xs).astype(np.int64)
    x_lerp = (xs - left.astype(np.float32))[None, :, None]
    tl, tr = img[top][:, left], img[top][:, right]
    bl, br = img[bottom][:, left], img[bottom][:, right]
    top_row = tl + (tr - tl) * x_lerp
    bottom_row = bl + (br - bl) * x_lerp
    return (top_row + (bottom_row - top_row) * y_lerp).astype(np.float32)
