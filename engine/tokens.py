"""Token splice: keep a document's ids in step with its text by re-tokenizing a window only.

Token ids are mapped to their exact bytes, so byte offsets in the text and token boundaries line
up even where a token holds part of a multi-byte character. The invariant after every splice:
the ids' bytes joined are exactly the document's UTF-8 bytes.

Choice: the spliced ids are *not* required to equal a fresh tokenization of the whole text.
The window is widened until its re-tokenization agrees with the old ids at both ends, which in
practice gives the fresh tokenization; where BPE pre-tokenization depends on text beyond the
window it may differ in segmentation, never in text.

The invariant holds for any text, also where the tokenizer alone would break it: a character it
drops (SmolLM2's vocabulary has no token for the bytes 0x04, 0x06, 0x13, 0x14, 0x16 and 0x1d, nor
for 0xf1 and 0xf2, which lead the UTF-8 of planes 4 to 11) or normalizes (Qwen2's NFC turns
"e" + U+0301 into "é") is written one token per byte instead. A byte without a token of its own
gets a stand-in: a special token that neither the engine nor the tokenizer (which encodes
document text with `encode_special_tokens`) ever uses otherwise, whose table entry becomes that
byte. The model never saw such a token in text, which is as close to the meaning of a stray
control character as the vocabulary allows.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import accumulate

from transformers.convert_slow_tokenizer import bytes_to_unicode

from .errors import ModelLoadError

UTF8_BYTES = [b for b in range(256) if b not in (0xC0, 0xC1) and b < 0xF5]  # all that UTF-8 text can hold
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
# Special tokens the engine finds by name (runtime.py): never made byte stand-ins.
ENGINE_TOKENS = ("<|endoftext|>", *FIM_TOKENS)


@dataclass(frozen=True)
class Splice:
    """Old ids [start, end) are replaced by `ids` (in document token indices)."""

    start: int
    end: int
    ids: list[int]


class Vocabulary:
    """A tokenizer plus the exact bytes of every token id.

    `special_ids` are the ids a draft never writes (byte stand-ins among them); `by_first_byte`
    lists every id that can spell document text, by its first byte (stand-ins included).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = tokenizer.backend_tokenizer
        backend.encode_special_tokens = True  # document text never turns into control tokens
        self._backend = backend
        self.special_ids = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        self.table = self._byte_table(tokenizer)
        sample = "def f(x):\n\treturn x  # café 😀 中文\r\n"
        if self.to_bytes(self._tokenize(sample)) != sample.encode():
            raise ModelLoadError("tokenizer does not round-trip text through its byte table; only "
                                 "byte-level BPE and SentencePiece-style tokenizers are supported")
        self.byte_ids = self._byte_ids(tokenizer)
        stand_ins = set(self.byte_ids) & self.special_ids
        by_first: dict[int, list[int]] = {}
        for i, b in enumerate(self.table):
            if b and (i not in self.special_ids or i in stand_ins):
                by_first.setdefault(b[0], []).append(i)
        self.by_first_byte = by_first

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

    def _byte_ids(self, tokenizer) -> dict[int, int]:
        """For each byte that UTF-8 uses, a token id whose bytes are exactly that byte: the
        vocabulary's own single-byte token, else a stand-in (see the module docstring), taken
        from the highest-numbered unused special tokens down."""
        single: dict[int, int] = {}
        for i, b in enumerate(self.table):
            if len(b) == 1 and i not in self.special_ids:
                single.setdefault(b[0], i)
        named = set(tokenizer.all_special_ids) | {tokenizer.convert_tokens_to_ids(t) for t in ENGINE_TOKENS
                                                 if t in tokenizer.get_vocab()}
        spare = sorted(set(tokenizer.added_tokens_decoder) - named, reverse=True)
        missing = [b for b in UTF8_BYTES if b not in single]
        if len(missing) > len(spare):
            raise ModelLoadError(f"the vocabulary has no token for {len(missing)} bytes (0x{missing[0]:02x}, "
                                 f"...) and only {len(spare)} unused special tokens to stand in for them")
        for b, i in zip(missing, spare):
            single[b] = i
            self.table[i] = bytes([b])
        return single

    def encode(self, text: str) -> list[int]:
        """Ids whose bytes are exactly text's UTF-8 bytes: the tokenizer's own where they spell
        the text (nearly always), else those of the two halves, down to one token per byte for a
        character the tokenizer drops or normalizes."""
        ids = self._tokenize(text)
        if self.to_bytes(ids) == text.encode():
            return ids
        if len(text) == 1:
            return [self.byte_ids[b] for b in text.encode()]
        half = len(text) // 2
        return self.encode(text[:half]) + self.encode(text[half:])

    def _tokenize(self, text: str) -> list[int]:
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
