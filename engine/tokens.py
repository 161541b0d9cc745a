"""Token splice: keep a document's ids in step with its text by re-tokenizing a window only.

Token ids are mapped to their exact bytes, so byte offsets in the text and token boundaries line
up even where a token holds part of a multi-byte character. The invariant after every splice:
the ids' bytes joined are exactly the document's UTF-8 bytes.

Choice: the spliced ids are *not* required to equal a fresh tokenization of the whole text.
The window is widened until its re-tokenization agrees with the old ids at both ends, which in
practice gives the fresh tokenization; where BPE pre-tokenization depends on text beyond the
window it may differ in segmentation, never in text.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import accumulate

from transformers.convert_slow_tokenizer import bytes_to_unicode

from .errors import ModelLoadError


@dataclass(frozen=True)
class Splice:
    """Old ids [start, end) are replaced by `ids` (in document token indices)."""

    start: int
    end: int
    ids: list[int]


class Vocabulary:
    """A tokenizer plus the exact bytes of every token id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = tokenizer.backend_tokenizer
        backend.encode_special_tokens = True  # document text never turns into control tokens
        self._backend = backend
        self.special_ids = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        self.table = self._byte_table(tokenizer)
        by_first: dict[int, list[int]] = {}
        for i, b in enumerate(self.table):
            if b and i not in self.special_ids:
                by_first.setdefault(b[0], []).append(i)
        self.by_first_byte = by_first
        sample = "def f(x):\n\treturn x  # café 😀 中文\r\n"
        if self.to_bytes(self.encode(sample)) != sample.encode():
            raise ModelLoadError("tokenizer does not round-trip text through its byte table; only "
                                 "byte-level BPE and SentencePiece-style tokenizers are supported")

    @staticmethod
    def _byte_table(tokenizer) -> list[bytes]:
        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        table = []
        for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if i in added:
                table.append(added[i].encode())
            elif tok is None:
                table.append(b"")
            elif tok.startswith("<0x") and tok.endswith(">") and len(tok) == 6:
                table.append(bytes([int(tok[3:5], 16)]))  # SentencePiece byte fallback
            elif all(ch in byte_of for ch in tok):
                table.append(bytes(byte_of[ch] for ch in tok))
            else:
                table.append(tok.replace("\u2581", " ").encode())
        return table

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def to_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.table[i] for i in ids)

    def token_id(self, text: str) -> int | None:
        return self.tokenizer.convert_tokens_to_ids(text) if text in self.tokenizer.get_vocab() else None

    def starts(self, ids: list[int]) -> list[int]:
        """Byte offset where each token starts, plus the total length at the end."""
        return [0, *accumulate(len(self.table[i]) for i in ids)]

    def splice(self, ids: list[int], new_bytes: bytes, b0: int, b1: int, delta: int,
               window: int = 4) -> Splice:
        """The minimal token span that changes when old bytes [b0, b1) become new_bytes[b0:b1+delta].

        new_bytes is the whole new document. Starts from `window` tokens either side of the edit
        and widens until the re-tokenized window agrees with the old ids at both of its ends.
        """
        starts = self.starts(ids)
        n = len(ids)
        first = bisect.bisect_right(starts, b0) - 1 if n else 0
        last = bisect.bisect_left(starts, b1)
        while True:
            ta, tb = max(0, first - window), min(n, last + window)
            while ta > 0 and _continuation(new_bytes, starts[ta]):
                ta -= 1
            while tb < n and _continuation(new_bytes, starts[tb] + delta):
                tb += 1
            text = new_bytes[starts[ta]:starts[tb] + delta].decode("utf-8")
            fresh, old = self.encode(text), ids[ta:tb]
            p = _common_prefix(fresh, old)
            s = _common_prefix(fresh[p:][::-1], old[p:][::-1])
            if (ta == 0 or p > 0) and (tb == n or s > 0) or (ta == 0 and tb == n):
                return Splice(ta + p, tb - s, fresh[p:len(fresh) - s])
            window *= 4


def _continuation(data: bytes, offset: int) -> bool:
    return offset < len(data) and data[offset] & 0xC0 == 0x80


def _common_prefix(a: list[int], b: list[int]) -> int:
    k = 0
    for x, y in zip(a, b):
        if x != y:
            break
        k += 1
    return k
