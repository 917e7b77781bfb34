"""The genuine Llama-2 tokenizer (OpenVLA-7B's), built from a package registry, for the CPU 7B route.

No machine of this project reaches the Hugging Face hub. The Llama-2 SentencePiece vocabulary (32,000 tokens,
identical to ``meta-llama/Llama-2-7b-hf``'s, which OpenVLA-7B uses) ships inside the source distribution of
``llama-cpp-python`` on PyPI as llama.cpp's ``vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf``, with test
vectors that llama.cpp produced with the Hugging Face tokenizer of Llama-2-7b-hf (``.gguf.inp`` / ``.gguf.out``).
This script downloads that pinned sdist (sha256-checked), converts the GGUF vocabulary with transformers' own
GGUF tokenizer converter (needs the ``gguf`` package), sets the normaliser of Llama-2-7b-hf's ``tokenizer.json``
(SentencePiece's dummy prefix: prepend "▁", spaces -> "▁"), saves it, and verifies it:

- the 46 reference vectors of llama.cpp (ids of Llama-2-7b-hf's tokenizer) with ``tokenizer.json`` as written;
- vocabulary 32,000, "▁" = 29871, BOS 1, EOS 2, UNK 0;
- the OpenVLA prompt "In: What action should the robot take to pick up the bowl?\\nOut:" ->
  ``bench_openvla7b_gpu.PROMPT_IDS`` without the trailing 29871 (which the processor appends).

Output: ``workspace/llama2_tokenizer/`` (git-ignored) with ``PROVENANCE.json``. The vocabulary is Meta's, under the
Llama 2 Community License, as in every OpenVLA-7B download; nothing of it is committed here.

Usage::

    .venv/bin/python benchmarks/llama_tokenizer.py            # then benchmarks/cpu_7b_route.py uses it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import urllib.request

SDIST = "llama_cpp_python-0.3.36.tar.gz"
SDIST_URL = ("https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
             + SDIST)
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
GGUF_MEMBER = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"
GGUF_SHA256 = "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
PROMPT = "In: What action should the robot take to pick up the bowl?\nOut:"


def fetch(cache: str) -> str:
    """The sdist, downloaded once into ``cache`` and sha256-checked. Raises RuntimeError on a mismatch."""
    path = os.path.join(cache, SDIST)
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        with urllib.request.urlopen(SDIST_URL, timeout=120) as resp, open(path + ".part", "wb") as fh:
            while chunk := resp.read(2**20):
                fh.write(chunk)
        os.replace(path + ".part", path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != SDIST_SHA256:
        os.remove(path)
        raise RuntimeError(f"{SDIST}: sha256 {digest} != the pinned {SDIST_SHA256}; download removed")
    return path


def build(out: str, cache: str) -> dict:
    """Convert, save and verify; returns the provenance record. Raises RuntimeError when a check fails."""
    sdist = fetch(cache)
    src = os.path.join(cache, "gguf")
    os.makedirs(src, exist_ok=True)
    with tarfile.open(sdist) as tar:
        files = {}
        for suffix in ("", ".inp", ".out"):
            data = tar.extractfile(GGUF_MEMBER + suffix).read()
            files[suffix] = data
        with open(os.path.join(src, os.path.basename(GGUF_MEMBER)), "wb") as fh:
            fh.write(files[""])
    if hashlib.sha256(files[""]).hexdigest() != GGUF_SHA256:
        raise RuntimeError("ggml-vocab-llama-spm.gguf: unexpected sha256")
    from tokenizers import Tokenizer, normalizers
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(src, gguf_file=os.path.basename(GGUF_MEMBER))
    backend = tok.backend_tokenizer  # Llama-2-7b-hf's tokenizer.json pipeline (SentencePiece add_dummy_prefix)
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(prepend="\u2581"),
                                               normalizers.Replace(pattern=" ", content="\u2581")])
    backend.pre_tokenizer = None
    backend.model.unk_token = "<unk>"
    os.makedirs(out, exist_ok=True)
    tok.save_pretrained(out)
    config_path = os.path.join(out, "tokenizer_config.json")
    config = json.load(open(config_path, encoding="utf-8"))
    for key in ("is_local", "local_files_only", "name_or_path"):
        config.pop(key, None)
    config.update(add_bos_token=True, add_eos_token=False, legacy=False, padding_side="right", bos_token="<s>",
                  eos_token="</s>", unk_token="<unk>", pad_token=None, tokenizer_class="LlamaTokenizer")
    json.dump(dict(sorted(config.items())), open(config_path, "w", encoding="utf-8"), indent=2)

    # verification
    texts = files[".inp"].decode("utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    expected = files[".out"].decode("utf-8").split("\n")[: len(texts)]
    raw = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    vectors_ok = sum(raw.encode(t, add_special_tokens=False).ids == [int(x) for x in e.split()]
                     for t, e in zip(texts, expected))
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(out)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_openvla7b_gpu import PROMPT_IDS

    prompt_ids = loaded(PROMPT, add_special_tokens=True).input_ids
    checks = {"reference_vectors": f"{vectors_ok}/{len(texts)}", "vocab": len(loaded),
              "space_id": loaded.convert_tokens_to_ids("\u2581"),
              "special_ids": [loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id],
              "openvla_prompt_ids": prompt_ids == PROMPT_IDS[:-1]}
    ok = vectors_ok == len(texts) and checks["vocab"] == 32000 and checks["space_id"] == 29871 and \
        checks["special_ids"] == [1, 2, 0] and checks["openvla_prompt_ids"]
    record = {"source": {"registry": "PyPI", "sdist": SDIST, "url": SDIST_URL, "sha256": SDIST_SHA256,
                         "member": GGUF_MEMBER, "member_sha256": GGUF_SHA256},
              "license": "Llama 2 Community License (Meta) for the vocabulary; the packages state MIT for their code",
              "checks": checks, "ok": ok,
              "files": {n: hashlib.sha256(open(os.path.join(out, n), "rb").read()).hexdigest()[:16]
                        for n in sorted(os.listdir(out)) if n.endswith(".json")}}
    json.dump(record, open(os.path.join(out, "PROVENANCE.json"), "w", encoding="utf-8"), indent=1)
    if not ok:
        raise RuntimeError(f"the converted tokenizer failed its checks: {checks}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("workspace", "llama2_tokenizer"))
    parser.add_argument("--cache", default=os.path.join("workspace", "downloads"))
    args = parser.parse_args(argv)
    try:
        record = build(args.out, args.cache)
    except (OSError, RuntimeError, KeyError) as err:
        print(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}))
        return 1
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
