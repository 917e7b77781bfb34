"""Action tokenizer, tiny tokenizer and VLAProcessor (no model needed)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vlamix.core.constants import IGNORE_INDEX
from vlamix.model.action_tokenizer import ActionTokenizer
from vlamix.model.configuration import VLAConfig
from vlamix.model.processor import VLAProcessor
from vlamix.model.tokenizer import LIBERO_WORDS, build_tiny_tokenizer


@pytest.fixture(scope="module")
def processor():
    return VLAProcessor.from_config(VLAConfig.tiny(), build_tiny_tokenizer())


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    images[:, 40:120, 60:200] = [200, 30, 40]
    return images


# ---------------------------------------------------------------------------- action tokenizer
def test_action_tokenizer_ids_and_round_trip():
    tok = ActionTokenizer()
    assert (tok.first_action_id, tok.last_action_id, tok.action_token_begin_idx) == (31744, 31999, 31743)
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (1000, 7))
    ids = tok.encode(actions)
    assert ids.dtype == np.int64 and ids.min() >= 31744 and ids.max() <= 31999
    decoded = tok.decode(ids)
    err = np.abs(decoded - np.clip(actions, -1, 1))
    assert err.max() <= tok.bin_width / 2 + 1e-12
    # Official conventions: -1 -> id 31999, +1 -> id 31744 (bin 255 clipped to the last centre), 0 -> 31872.
    np.testing.assert_array_equal(tok.encode(np.array([-1.0, 1.0, 0.0])), [31999, 31744, 31872])
    np.testing.assert_allclose(tok.decode(np.array([31999, 31744])), [-1 + 1 / 255, 1 - 1 / 255])
    # Ids outside the action range clip onto the extreme bins.
    np.testing.assert_allclose(tok.decode(np.array([100, 32010])), [1 - 1 / 255, -1 + 1 / 255])
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(np.array([np.nan]))


# ---------------------------------------------------------------------------- tiny tokenizer
def test_tiny_tokenizer_is_deterministic_and_llama_like(tmp_path):
    tok = build_tiny_tokenizer()
    assert tok.backend_tokenizer.to_str() == build_tiny_tokenizer().backend_tokenizer.to_str()
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    assert len(tok) < 1024  # far below the action ids 31744..31999
    ids = tok("In: What action should the robot take to open the microwave?\nOut:").input_ids
    assert ids[0] == 1 and ids[-1] != 2  # BOS prepended, no EOS, as Llama
    for word in LIBERO_WORDS:
        assert len(tok(" " + word, add_special_tokens=False).input_ids) == 1, word
    assert tok.decode(tok("zebra, ünïcode!", add_special_tokens=False).input_ids) == "zebra, ünïcode!"
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("put the bowl on the plate").input_ids == tok("put the bowl on the plate").input_ids
    assert again.pad_token_id == 3


def test_libero_words_cover_the_benchmark_instructions():
    benchmark = pytest.importorskip("libero.libero.benchmark")
    suites = benchmark.get_benchmark_dict()
    words = set()
    for name in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
        suite = suites[name]()
        for i in range(suite.n_tasks):
            words.update(suite.get_task(i).language.lower().split())
    assert words == set(LIBERO_WORDS)


# ---------------------------------------------------------------------------- processor
def test_training_batch_layout(processor):
    images = _images(2)
    instructions = ["Pick up the black bowl and place it on the plate", "open the microwave"]
    actions = np.array([[0.1, -0.5, 1.0, -1.0, 0.0, 0.3, 0.9], [0.0] * 7], dtype=np.float32)
    batch = processor.training_batch(images, instructions, actions)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert batch["pixel_values"].shape == (2, 6, 224, 224) and ids.dtype == labels.dtype == torch.int64
    expected_actions = processor.action_tokenizer.encode(actions)
    for i, instruction in enumerate(instructions):
        prompt = processor.prompt_ids(instruction)
        n = len(prompt)
        assert ids[i, :n].tolist() == prompt
        assert ids[i, n : n + 7].tolist() == expected_actions[i].tolist()
        assert ids[i, n + 7] == processor.tokenizer.eos_token_id
        assert mask[i].sum() == n + 8
        assert (ids[i, n + 8 :] == processor.pad_token_id).all()  # right padding
        # Labels only on the 7 action tokens.
        assert labels[i, n : n + 7].tolist() == expected_actions[i].tolist()
        assert (labels[i, :n] == IGNORE_INDEX).all() and (labels[i, n + 7 :] == IGNORE_INDEX).all()
    # The instruction is lower-cased.
    assert processor.prompt_ids(instructions[0]) == processor.prompt_ids(instructions[0].lower())
    with_eos = processor.training_batch(images, instructions, actions, predict_stop_token=True)["labels"]
    assert (with_eos == processor.tokenizer.eos_token_id).sum() == 2


def test_inference_inputs_left_padded_and_consistent_with_training(processor):
    images = _images(2)
    instructions = ["pick up the alphabet soup and place it in the basket", "turn on the stove"]
    inputs = processor.inference_inputs(images, instructions)
    train = processor.training_batch(images, instructions, np.zeros((2, 7), np.float32))
    for i, instruction in enumerate(instructions):
        n = int(inputs["attention_mask"][i].sum())
        assert (inputs["attention_mask"][i, -n:] == 1).all() and (inputs["attention_mask"][i, :-n] == 0).all()
        assert (inputs["input_ids"][i, :-n] == processor.pad_token_id).all()
        first_action = int(torch.nonzero(train["labels"][i] != IGNORE_INDEX)[0])
        assert inputs["input_ids"][i, -n:].tolist() == train["input_ids"][i, :first_action].tolist()
    torch.testing.assert_close(inputs["pixel_values"], train["pixel_values"], rtol=0, atol=0)


def test_action_prefix_is_the_sentencepiece_empty_token():
    """With a Llama-style (SentencePiece) vocabulary the empty token "▁" goes before the actions (29871 in Llama-2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "\u2581open": 4, "Out": 5, ":": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert VLAProcessor(tok).action_prefix_ids == [3]
    assert VLAProcessor(build_tiny_tokenizer()).action_prefix_ids == []


def test_image_transform_resizes_and_normalises(processor):
    image = np.zeros((256, 256, 3), np.uint8)
    image[:, :128] = 255
    pixel_values = processor.image_transform(image)
    assert pixel_values.shape == (1, 6, 224, 224)
    # Left half white, right half black; DINOv2 channels use ImageNet mean/std, SigLIP channels (x - .5) / .5.
    assert pixel_values[0, 0, 100, 10].item() == pytest.approx((1 - 0.485) / 0.229, abs=1e-5)
    assert pixel_values[0, 3, 100, 200].item() == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        processor.image_transform(np.zeros((224, 224, 3), np.float32))


def test_center_crop_matches_tensorflow(tmp_path):
    pytest.importorskip("tensorflow")
    images = _images(2, seed=3)
    ours = VLAProcessor.center_crop(images, crop_scale=0.9)
    assert ours.shape == images.shape and ours.dtype == np.uint8
    assert not np.array_equal(ours, images)
    np.save(tmp_path / "in.npy", images)
    # TensorFlow runs in a subprocess (never in a process that may render MuJoCo); openvla_utils.crop_and_resize.
    code = """
import sys, numpy as np, tensorflow as tf
images = np.load(sys.argv[1]); out = []
for im in images:
    x = tf.image.convert_image_dtype(tf.convert_to_tensor(im), tf.float32)[None]
    s = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), (1,)); o = (1 - s) / 2
    x = tf.image.crop_and_resize(x, tf.stack([o, o, o + s, o + s], axis=1), tf.range(1), (224, 224))[0]
    out.append(tf.image.convert_image_dtype(tf.clip_by_value(x, 0, 1), tf.uint8, saturate=True).numpy())
np.save(sys.argv[2], np.stack(out))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.npy"), str(tmp_path / "tf.npy")], check=True,
                   env=env, timeout=300)
    reference = np.load(tmp_path / "tf.npy")
    diff = np.abs(reference.astype(int) - ours.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
def test_resize_strategies_match_official_torchvision_pipeline(strategy):
    """Official ``PrismaticImageProcessor.apply_transform``: [letterbox pad] -> TVF.resize -> TVF.center_crop -> to_tensor
    -> normalize, on PIL images (SigLIP tower: mean = std = 0.5)."""
    from vlamix.core.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torchvision.transforms.functional as TVF
    from PIL import Image

    image = np.random.default_rng(1).integers(0, 256, (301, 200, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    if strategy == "letterbox":
        (w, h), side = pil.size, max(pil.size)
        hpad, vpad = int((side - w) / 2), int((side - h) / 2)
        pil = TVF.pad(pil, (hpad, vpad, hpad, vpad), fill=(127, 127, 127), padding_mode="constant")
    size = (224, 224) if strategy == "resize-naive" else 224
    pil = TVF.center_crop(TVF.resize(pil, size, interpolation=TVF.InterpolationMode.BICUBIC, antialias=True), 224)
    reference = TVF.normalize(TVF.to_tensor(pil), [0.5] * 3, [0.5] * 3)
    ours = VLAProcessor(None, image_resize_strategy=strategy).image_transform(image)[0, 3:]
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- instruction variants (evaluation kit)
def test_instruction_variants_build_the_expected_token_ids(processor):
    from vlamix.core.suites import INSTRUCTION_VARIANTS
    from vlamix.model import processor as proc

    assert proc.INSTRUCTION_VARIANTS == INSTRUCTION_VARIANTS
    p = processor
    tok = p.tokenizer
    text = "Pick up the Black Bowl"
    expected_text = {
        "original": "In: What action should the robot take to pick up the black bowl?\nOut:",
        "empty": "In: What action should the robot take to ?\nOut:",
        "unwrapped": "pick up the black bowl",
        "empty_unwrapped": "",
    }
    for variant, want in expected_text.items():
        assert p.prompt(text, variant) == want
        assert p.prompt_ids(text, variant) == list(tok(want, add_special_tokens=True).input_ids) + p.action_prefix_ids
    bos = tok.bos_token_id
    assert p.prompt_ids(text, "empty_unwrapped") == [bos] + p.action_prefix_ids
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    out = p.inference_inputs(images, [text] * 4, variants=list(INSTRUCTION_VARIANTS))
    for i, variant in enumerate(INSTRUCTION_VARIANTS):
        ids = out["input_ids"][i][out["attention_mask"][i].bool()].tolist()
        assert ids == p.prompt_ids(text, variant)
    assert len({tuple(p.prompt_ids(text, v)) for v in INSTRUCTION_VARIANTS}) == 4
    default = p.inference_inputs(images[:1], [text])
    assert default["input_ids"][0].tolist() == p.prompt_ids(text)
    with pytest.raises(ValueError, match="one per instruction"):
        p.inference_inputs(images[:2], [text] * 2, variants=["empty"])
    with pytest.raises(ValueError, match="allowed: original"):
        p.prompt(text, "none")
