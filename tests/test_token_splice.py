"""Token splice fuzz: after any edit sequence the ids decode to the text exactly, for any text,
with tokenizers that drop characters (SmolLM2's) or normalize them (NFC, as Qwen2's)."""
import argparse
import textwrap
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from kvsplice.engine.packaged import prepare
from kvsplice.engine.tokens import Vocabulary

PIECES = ["def ", "x", " = ", "😀", "中文", "\t", "\r\n", "\n", "  ", "(", ")", "é", "'", "\"\"\"", "🇫🇷", "0"]
edit_text = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)

CONTROLS = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]  # C0 and C1
ODD = ["e\u0301", "\u212b", "\U00040000", "\U000bffff", "\U0010ffff", "\ufffd", "\r\n"]  # NFC changes; planes 4-11
any_text = st.lists(st.one_of(st.sampled_from(CONTROLS), st.sampled_from(ODD), st.characters(codec="utf-8")),
                    max_size=24).map("".join)


def with_nfc(tokenizer) -> PreTrainedTokenizerFast:
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.normalizer = normalizers.NFC()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


@pytest.fixture(scope="module", params=["tiny", "tiny+nfc", pytest.param("smollm2", marks=pytest.mark.real_model)])
def any_vocab(request, tiny_tokenizer):
    if request.param == "smollm2":
        return Vocabulary(AutoTokenizer.from_pretrained(prepare("smollm2-135m")))
    return Vocabulary(with_nfc(tiny_tokenizer) if request.param == "tiny+nfc" else tiny_tokenizer)


@pytest.fixture(scope="module")
def vocab(tiny_tokenizer):
    return Vocabulary(tiny_tokenizer)


class Doc:
    def __init__(self, vocab, text):
        self.vocab, self.text = vocab, text
        self.ids = vocab.encode(text)

    def edit(self, start, end, new):
        old_b = self.text.encode()
        text = self.text[:start] + new + self.text[end:]
        b0 = len(self.text[:start].encode())
        b1 = b0 + len(self.text[start:end].encode())
        new_b = text.encode()
        sp = self.vocab.splice(self.ids, new_b, b0, b1, len(new_b) - len(old_b))
        self.ids = self.ids[:sp.start] + sp.ids + self.ids[sp.end:]
        self.text = text
        return sp


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(alphabet=st.sampled_from("ab \t\n\r😀中é("), max_size=40), any_text),
       st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.one_of(edit_text, any_text)), min_size=1, max_size=8))
def test_random_edit_sequences_keep_text_and_ids_consistent(any_vocab, start_text, edits):
    doc = Doc(any_vocab, start_text)
    for a, b, new in edits:
        n = len(doc.text)
        start, end = sorted((int(a * n), int(b * n)))
        doc.edit(start, end, new)
        assert any_vocab.to_bytes(doc.ids) == doc.text.encode("utf-8")


def test_splice_is_minimal_and_equals_fresh_tokenization_for_line_edits(vocab):
    text = Path(argparse.__file__).read_text()[:4000]
    doc = Doc(vocab, text)
    line = text.index("\n", 1000) + 1
    sp = doc.edit(line, line, "    value = compute(a, b)\n")
    assert sp.end - sp.start <= 2 and len(sp.ids) <= 12
    assert doc.ids == vocab.encode(doc.text)


def test_typing_a_line_character_by_character_tracks_fresh_tokenization(vocab):
    text = Path(textwrap.__file__).read_text()[:3000]
    doc = Doc(vocab, text)
    at = text.index("\n", 500) + 1
    for k, ch in enumerate("    result = self._helper(value, 'x')\n"):
        doc.edit(at + k, at + k, ch)
    assert doc.ids == vocab.encode(doc.text)


@settings(max_examples=150, deadline=None)
@given(text=any_text)
@example(text="a\x1d")
@example(text="café\u0301 \u212b")
@example(text="\x04\x06\x13\x14\x16\x1d\U00040000\U000bffff")
def test_any_text_encodes_to_ids_that_spell_it(any_vocab, text):
    assert any_vocab.to_bytes(any_vocab.encode(text)) == text.encode()


@pytest.mark.real_model
def test_bytes_without_a_token_get_unused_special_tokens_that_drafts_never_write():
    tokenizer = AutoTokenizer.from_pretrained(prepare("smollm2-135m"))
    named = {i: tokenizer.convert_ids_to_tokens(i) for i in (0, 1, 2)}  # <|endoftext|>, <|im_start|>, <|im_end|>
    vocab = Vocabulary(tokenizer)
    for byte in (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2):
        stand_in = vocab.byte_ids[byte]
        assert vocab.table[stand_in] == bytes([byte])
        assert stand_in in vocab.special_ids and stand_in not in named
        assert stand_in in vocab.by_first_byte[byte]  # a cursor right after it can heal
    assert {i: vocab.table[i].decode() for i in named} == named
    assert vocab.encode("a\x1db") == [*vocab.encode("a"), vocab.byte_ids[0x1D], *vocab.encode("b")]
