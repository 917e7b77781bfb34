"""The tiny preset's tokenizer: a small byte-level BPE built deterministically, without any download.

The official OpenVLA tokenizer is Llama-2's SentencePiece model (32,000 ids + ``<PAD>`` = 32000), which cannot be
downloaded here. The tiny preset (:meth:`vlamix.model.configuration.VLAConfig.tiny`) uses this stand-in instead:

- byte-level BPE (GPT-2 style byte alphabet, so any text is encodable, no unknown characters) trained with the
  ``tokenizers`` library on the OpenVLA prompt and the vocabulary of all LIBERO task instructions (the 79 words
  of libero_spatial/object/goal/10/90, embedded below), so every LIBERO word is one token;
- ids 0/1/2 = ``<unk>``/``<s>``/``</s>`` as in Llama, 3 = ``<pad>``; BOS is prepended by the post-processor
  (``add_special_tokens=True``), no EOS is appended, as Llama;
- a few hundred ids in all, far below the action ids 31744..31999 of the 32,064-row model vocabulary.

Saved as ``tokenizer.json`` + ``tokenizer_config.json`` (+ ``special_tokens_map.json``), it loads with
``AutoTokenizer.from_pretrained(folder)`` like the official one.

Usage::

    from vlamix.model.tokenizer import build_tiny_tokenizer
    tok = build_tiny_tokenizer()
    tok("In: What action should the robot take to open the microwave?\\nOut:").input_ids
"""

from __future__ import annotations

import logging

from vlamix.core.compat import ensure_torchvision_importable
from vlamix.core.constants import PROMPT_TEMPLATE

ensure_torchvision_importable()

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

logger = logging.getLogger(__name__)

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
#: Special tokens in id order: 0, 1, 2, 3.
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD)
#: Target vocabulary size of the BPE trainer (it stops earlier when nothing is left to merge).
TINY_VOCAB_SIZE = 1024

#: Every word of the LIBERO task instructions of libero_spatial, libero_object, libero_goal, libero_10 and
#: libero_90 (lower case; collected from ``libero.libero.benchmark`` task languages).
LIBERO_WORDS = (
    "alphabet and at back basket bbq between black book both bottle bottom bowl box butter cabinet caddy center "
    "cheese chocolate close compartment cookie cream drawer dressing from front frying in inside it juice ketchup "
    "left microwave middle milk moka mug next of off on open orange pan pick place plate pot pots pudding push put "
    "rack ramekin red right salad sauce shelf soup stack stove table the them to tomato top tray turn under up "
    "white wine wooden yellow"
).split()


def training_corpus() -> list[str]:
    """The text the BPE is trained on: the prompt with an empty instruction, each LIBERO word as it appears
    inside an instruction (with a leading space), and the same at the start of a text (no space)."""
    prompt = PROMPT_TEMPLATE.format(instruction="")
    corpus = [prompt] * 8
    corpus += [" " + w for w in LIBERO_WORDS] + list(LIBERO_WORDS)
    return corpus


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Build the tiny preset's tokenizer (deterministic: same corpus, same merges, same ids).

    Returns:
        ``PreTrainedTokenizerFast`` with bos/eos/unk/pad tokens set, ``padding_side="right"``.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [0, 1, 2, 3]:
        raise RuntimeError(f"special token ids are {ids}, expected [0, 1, 2, 3]")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        padding_side="right",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
