"""Rebuild a Hugging Face `tokenizers` tokenizer from a GGUF's vocabulary.

Two GGUF tokenizer kinds are handled, following llama.cpp's own tokenizers:
- `gpt2`: byte-level BPE with explicit merges (SmolLM2, StarCoder, GPT-2).
- `llama`: SentencePiece BPE with scores and byte fallback (Gemma).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors

from .gguf_header import GGUFHeader, UnsupportedGGUF

# llama.cpp token types (llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer names (`tokenizer.ggml.pre`) whose llama.cpp regex we reproduce.
# smollm/starcoder/refact share: "\p{N}" then the GPT-2 regex.
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}
_GPT2_PRE = {"gpt-2", "gpt2", "default"}
SUPPORTED_PRE_TOKENIZERS = sorted(_DIGIT_SPLIT_PRE | _GPT2_PRE)
SPM_SPACE = "\u2581"  # "▁", SentencePiece's visible space


class UnsupportedTokenizer(UnsupportedGGUF):
    """The GGUF's tokenizer is of a kind we cannot rebuild faithfully."""


def build_tokenizer(header: GGUFHeader) -> Tokenizer:
    """A `tokenizers.Tokenizer` that splits text as llama.cpp does for this file."""
    kind = header.metadata.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(header)
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(header)
    else:
        raise UnsupportedTokenizer(
            f"{header.path}: tokenizer model {kind!r} is not supported; "
            "supported: 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)"
        )
    _add_special_tokens(tokenizer, header)
    return tokenizer


def _token_types(header: GGUFHeader) -> list[int]:
    tokens = header.metadata["tokenizer.ggml.tokens"]
    types = header.metadata.get("tokenizer.ggml.token_type")
    return [NORMAL] * len(tokens) if types is None else [int(t) for t in types]


def _byte_level_bpe(header: GGUFHeader) -> Tokenizer:
    tokens: list[str] = header.metadata["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in header.metadata.get("tokenizer.ggml.merges", [])]
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(header)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _byte_level_pre_tokenizer(header: GGUFHeader) -> pre_tokenizers.PreTokenizer:
    name = header.metadata.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name in _DIGIT_SPLIT_PRE:
        # llama.cpp splits every digit first ("\p{N}"), like upstream's Digits(individual).
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if name in _GPT2_PRE:
        return byte_level
    raise UnsupportedTokenizer(
        f"{header.path}: pre-tokenizer {name!r} is not supported; "
        f"supported: {', '.join(SUPPORTED_PRE_TOKENIZERS)}"
    )


def _sentencepiece_bpe(header: GGUFHeader) -> Tokenizer:
    meta = header.metadata
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    scores = [float(s) for s in meta["tokenizer.ggml.scores"]]
    types = _token_types(header)
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    merges = _merges_from_scores(tokens, scores, types, vocab)
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(bpe)
    steps = [normalizers.Replace(" ", SPM_SPACE)]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend(SPM_SPACE))
    tokenizer.normalizer = normalizers.Sequence(steps)
    decode_steps = [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        decode_steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode_steps)
    if meta.get("tokenizer.ggml.add_bos_token", False):
        bos = tokens[meta["tokenizer.ggml.bos_token_id"]]
        bos_pair = (bos, meta["tokenizer.ggml.bos_token_id"])
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[bos_pair]
        )
    return tokenizer


def _merges_from_scores(
    tokens: list[str], scores: list[float], types: list[int], vocab: dict[str, int]
) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-ordered merging.

    SentencePiece merges the adjacent pair whose joined piece scores highest;
    a BPE merge list ranked by that score does the same (as HF's own converter does).
    """
    ranked: list[tuple[float, int, int, str, str]] = []
    for token_id, piece in enumerate(tokens):
        if types[token_id] != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[token_id], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def _add_special_tokens(tokenizer: Tokenizer, header: GGUFHeader) -> None:
    tokens: list[str] = header.metadata["tokenizer.ggml.tokens"]
    added = []
    for token_id, token_type in enumerate(_token_types(header)):
        if token_type in (CONTROL, UNKNOWN):
            added.append(AddedToken(tokens[token_id], special=True, normalized=False))
        elif token_type == USER_DEFINED:
            # llama.cpp matches user-defined pieces on the raw text, never splitting them.
            added.append(AddedToken(tokens[token_id], special=False, normalized=False))
    tokenizer.add_tokens([t for t in added if not t.special])
    tokenizer.add_special_tokens([t for t in added if t.special])


def special_tokens(header: GGUFHeader) -> dict[str, str]:
    """bos/eos/unk/pad token strings named by the GGUF's `tokenizer.ggml.*_token_id`."""
    tokens: list[str] = header.metadata["tokenizer.ggml.tokens"]
    found = {}
    for role, key in (("bos_token", "bos"), ("eos_token", "eos"),
                      ("unk_token", "unknown"), ("pad_token", "padding")):
        token_id = header.metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            found[role] = tokens[int(token_id)]
    return found


def stop_token_ids(header: GGUFHeader) -> list[int]:
    """Ids that end generation: eos, plus end-of-turn/message ids when the GGUF names them."""
    ids = []
    for key in ("eos", "eot", "eom"):
        token_id = header.metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


def write_tokenizer_files(header: GGUFHeader, out_dir: Path) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json for AutoTokenizer."""
    tokenizer = build_tokenizer(header)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    specials = special_tokens(header)
    config: dict[str, Any] = {
        # The generic fast class keeps our tokenizer.json as is; GPT2Tokenizer
        # would rebuild its own pre-tokenizer and drop the digit split.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": bool(header.metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(header.metadata.get("tokenizer.ggml.add_eos_token", False)),
        "model_max_length": int(header.arch_value("context_length", 2048)),
        **specials,
    }
    if template := header.metadata.get("tokenizer.chat_template"):
        config["chat_template"] = template
    _write_json(out_dir / "tokenizer_config.json", config)
    _write_json(out_dir / "special_tokens_map.json", specials)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
