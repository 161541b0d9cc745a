"""Speculative tokens proposed from the document itself (prompt lookup).

Code repeats its own names and shapes, and an edit often re-types text that was just deleted, so
the tokens that followed the last occurrence of the draft's latest n-gram are a good guess of what
comes next. A guess costs one more row in a forward that reads the weights anyway; the decoder
keeps the longest run the model agrees with, so greedy output never changes.
"""
from __future__ import annotations

NGRAM = 3  # longest n-gram matched; shorter ones are tried when it has no match
SEPARATOR = -1  # between sources, so that no n-gram spans two


class Lookup:
    """An n-gram index over the sources (later sources win ties: pass the most relevant last),
    extended with a draft's own tokens as it grows."""

    def __init__(self, sources: list[list[int]], context: list[int]):
        self.seq: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> where the token after it sits
        for source in sources:
            self._extend(source)
            self.seq.append(SEPARATOR)
        self._extend(context)

    def _extend(self, ids: list[int]) -> None:
        seq, index = self.seq, self.index
        for token in ids:
            seq.append(token)
            end = len(seq) - 1  # the n-grams ending just before `token` now have a continuation
            for n in range(1, NGRAM + 1):
                gram = tuple(seq[end - n:end])
                if len(gram) == n and SEPARATOR not in gram:
                    index[gram] = end

    def fork(self) -> "Lookup":
        """An independent copy (one per draft), so drafts index only their own tokens."""
        clone = Lookup.__new__(Lookup)
        clone.seq, clone.index = list(self.seq), dict(self.index)
        return clone

    def push(self, token: int) -> None:
        self._extend([token])

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest occurrence of the longest matching n-gram
        that ends the sequence (none when nothing matches)."""
        if k <= 0:
            return []
        seq = self.seq
        for n in range(NGRAM, 0, -1):
            at = self.index.get(tuple(seq[-n:]))
            if at is not None:
                out = []
                for token in seq[at:at + k]:
                    if token == SEPARATOR:
                        break
                    out.append(token)
                return out
        return []
