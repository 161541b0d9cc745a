"""Where a document's window sits, and when it moves.

The window holds at most `context_tokens` tokens around the cursor of the latest request: most
before it, a share after it (`after_tokens`: the suffix a fill-in-the-middle draft reads, or room
to move down), less `slack` tokens of room to type into. It starts and ends at line boundaries
(inside one huge line, at token boundaries). It moves only when the cursor leaves it, gets within
half the share of an edge that has more text beyond, or typing overfills it: a slide costs
rotations and encodes, so small cursor moves cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from .tokens import Vocabulary


@dataclass(frozen=True)
class Placement:
    vocab: Vocabulary
    context_tokens: int
    after_tokens: int

    @property
    def slack(self) -> int:
        return self.context_tokens // 8

    @property
    def before_tokens(self) -> int:
        return max(1, self.context_tokens - self.slack - self.after_tokens)

    def target(self, text: str, cursor: int) -> tuple[int, int]:
        """Character span [start, end) of the window for a cursor in text."""
        room = self.context_tokens - self.slack
        start = self.start_before(text, cursor, self.before_tokens)
        used = len(self.vocab.encode(text[start:cursor]))
        end = self.end_after(text, cursor, room - used)
        if end == len(text) and start > 0:  # the document ends early: give the prefix the rest
            start = self.start_before(text, cursor, room - len(self.vocab.encode(text[cursor:end])))
        return start, end

    def must_move(self, start: int, end: int, doc_len: int, cursor: int, before: int, after: int) -> bool:
        """Whether the window [start, end) with `before` tokens before the cursor and `after`
        after it should move for this cursor."""
        return (not start <= cursor <= end
                or before + after > self.context_tokens
                or (start > 0 and before < self.before_tokens // 2)
                or (end < doc_len and after < self.after_tokens // 2))

    def start_before(self, text: str, cursor: int, budget: int) -> int:
        """The earliest line start (or token start, inside a huge line) such that at most
        `budget` tokens lie between it and the cursor."""
        budget = max(0, budget)
        span = 4 * budget + 64
        while True:
            lo = max(0, cursor - span)
            ids = self.vocab.encode(text[lo:cursor])
            if len(ids) > budget or lo == 0:
                break
            span *= 2
        if len(ids) <= budget:
            return lo
        cut = lo + self._chars(text[lo:cursor], ids, len(ids) - budget)
        line = text.find("\n", cut - 1, cursor) + 1 if cut > 0 else 0
        return line if 0 < line < cursor else cut

    def end_after(self, text: str, cursor: int, budget: int) -> int:
        """The latest line end (or token end, inside a huge line) such that at most `budget`
        tokens lie between the cursor and it."""
        budget = max(0, budget)
        span = 4 * budget + 64
        while True:
            hi = min(len(text), cursor + span)
            ids = self.vocab.encode(text[cursor:hi])
            if len(ids) > budget or hi == len(text):
                break
            span *= 2
        if len(ids) <= budget:
            return hi
        cut = cursor + self._chars(text[cursor:hi], ids, budget)
        line = text.rfind("\n", cursor, cut) + 1
        return line if line > cursor else cut

    def _chars(self, piece: str, ids: list[int], tokens: int) -> int:
        """Characters of `piece` in its first `tokens` tokens, rounded up to a whole character
        (byte-level tokens may split one)."""
        data = piece.encode("utf-8")
        cut = self.vocab.starts(ids)[tokens]
        while cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut += 1
        return len(data[:cut].decode("utf-8"))
