"""Token splice fuzz: after any edit sequence the ids decode to the text exactly."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsplice.engine.tokens import Vocabulary
import argparse
import textwrap
from pathlib import Path

PIECES = ["def ", "x", " = ", "😀", "中文", "\t", "\r\n", "\n", "  ", "(", ")", "é", "'", "\"\"\"", "🇫🇷", "0"]
edit_text = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)


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
@given(st.text(alphabet=st.sampled_from("ab \t\n\r😀中é("), max_size=40),
       st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), edit_text), min_size=1, max_size=8))
def test_random_edit_sequences_keep_text_and_ids_consistent(vocab, start_text, edits):
    doc = Doc(vocab, start_text)
    for a, b, new in edits:
        n = len(doc.text)
        start, end = sorted((int(a * n), int(b * n)))
        doc.edit(start, end, new)
        assert vocab.to_bytes(doc.ids) == doc.text.encode("utf-8")


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
