"""The SmolLM2 tokenizer rebuilt from the GGUF behaves as upstream SmolLM2's (properties).

No upstream tokenizer file is available offline, so these check the properties
that define it: byte-level round trips, one token per digit, GPT-2 style words,
atomic special tokens, the chat template, and eos handling through mlx-lm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, TokenizerWrapper
from mlx_lm.tokenizer_utils import load as load_wrapped_tokenizer

from tokenizers.pre_tokenizers import ByteLevel

from engine.loading.gguf_header import read_header
from engine.loading.gguf_tokenizer import build_tokenizer, write_tokenizer_files
from engine.loading.loader import embedded_gguf_path

CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
PIECES = ["12345", " hello", "\n", "\n\n", "  ", "\t", "日本語", "😀", "🇫🇷", "café", "'s", "don't", "x=1+2;"]


@pytest.fixture(scope="module")
def header():
    return read_header(embedded_gguf_path())


@pytest.fixture(scope="module")
def raw(header):
    return build_tokenizer(header)


@pytest.fixture(scope="module")
def wrapped(header, tmp_path_factory) -> TokenizerWrapper:
    """Loaded from written files exactly as `mlx_lm.load` loads a tokenizer."""
    folder: Path = tmp_path_factory.mktemp("smollm2-tokenizer")
    write_tokenizer_files(header, folder)
    return load_wrapped_tokenizer(folder)


def _missing_bytes() -> set[int]:
    """Bytes without a byte-level token in SmolLM2's vocab (upstream's vocab is the same):
    six control characters, bytes UTF-8 never uses, and the lead bytes of the
    unassigned planes 4-11. Text containing them cannot round trip."""
    vocab = set(read_header(embedded_gguf_path()).metadata["tokenizer.ggml.tokens"])
    alphabet = {char: byte for byte, char in _byte_to_char().items()}
    return {byte for char, byte in alphabet.items() if char not in vocab}


def _byte_to_char() -> dict[int, str]:
    # ByteLevel.alphabet() is GPT-2's byte->char table; rebuild the byte order from it.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {b: chr(b) for b in printable}, 0
    for byte in range(256):
        if byte not in table:
            table[byte], shift = chr(256 + shift), shift + 1
    assert set(table.values()) == set(ByteLevel.alphabet())
    return table


MISSING_BYTES = _missing_bytes()


def _representable(text: str) -> str:
    return "".join(c for c in text if not set(c.encode()) & MISSING_BYTES)


mixed_text = st.lists(
    st.one_of(st.text(max_size=20), st.sampled_from(PIECES + CHAT_SPECIALS)), max_size=12
).map("".join).map(_representable)
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fast
@given(text=mixed_text)
def test_encode_decode_round_trips_any_text(raw, wrapped, text):
    ids = raw.encode(text).ids
    assert raw.decode(ids, skip_special_tokens=False) == text
    assert wrapped.decode(wrapped.encode(text, add_special_tokens=False)) == text


@fast
@given(text=mixed_text)
def test_the_transformers_tokenizer_splits_exactly_as_the_rebuilt_one(raw, wrapped, text):
    assert wrapped.encode(text, add_special_tokens=False) == raw.encode(text).ids


@fast
@given(text=mixed_text)
def test_every_digit_is_its_own_token(raw, text):
    for token in raw.encode(text).tokens:
        if any(c.isdigit() and c.isascii() for c in token):
            assert len(token) == 1, token


@given(number=st.integers(min_value=0, max_value=10**30))
def test_a_number_is_one_token_per_digit(raw, number):
    digits = str(number)
    assert raw.encode(digits).tokens == list(digits)


def test_only_unusable_bytes_lack_a_token():
    controls = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D}
    never_in_utf8 = {0xC0, 0xC1, *range(0xF5, 0x100)}
    assert MISSING_BYTES == controls | never_in_utf8 | {0xF1, 0xF2}


def test_gpt2_style_words(raw):
    assert raw.encode(" hello").tokens == ["Ġhello"]
    assert raw.encode("Hello world").tokens == ["Hello", "Ġworld"]
    assert raw.encode("12345").ids == [raw.token_to_id(d) for d in "12345"]


def test_special_tokens_are_single_ids(raw, header):
    tokens = header.metadata["tokenizer.ggml.tokens"]
    control_ids = [i for i, t in enumerate(header.metadata["tokenizer.ggml.token_type"]) if t == 3]
    assert control_ids == list(range(17))
    for token_id in control_ids:
        assert raw.encode(tokens[token_id]).ids == [token_id]
    assert raw.encode("<|im_start|>user\nhi<|im_end|>").ids == [1, 4093, 198, 6004, 2]


def test_transformers_sees_upstream_special_tokens(wrapped):
    hf = wrapped._tokenizer
    assert isinstance(hf, transformers.PreTrainedTokenizerFast)
    assert (hf.bos_token, hf.eos_token, hf.pad_token, hf.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert wrapped.eos_token_ids == {2}
    assert isinstance(wrapped.detokenizer, BPEStreamingDetokenizer)
    assert wrapped.encode("The quick", add_special_tokens=True) == wrapped.encode("The quick", add_special_tokens=False)


def test_chat_template_has_the_chatml_shape(wrapped):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = wrapped.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = wrapped.apply_chat_template(messages, add_generation_prompt=True)
    assert ids[0] == 1 and ids[-4:] == wrapped.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert ids.count(2) == 2  # one <|im_end|> per message, the system one included


def test_streaming_detokenizer_reproduces_decode(wrapped):
    text = "Numbers 2024, emoji 😀 and 日本語.\n<|im_end|>"
    ids = wrapped.encode(text, add_special_tokens=False)
    detokenizer = wrapped.detokenizer
    detokenizer.reset()
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == wrapped.decode(ids)
