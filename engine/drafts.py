"""Drafts at a cursor, decoded into scratch slots after the live cache.

The cache stores K/V, not logits, so a draft first runs one short chunk in scratch: the token
before the cursor (or, for fill-in-the-middle models, `<suffix> window <middle>`), attending to
the cache before the cursor. Draft tokens follow in scratch. The live cache is written only to
encode rows that were pending anyway (a deferred edit's tokens, a stale tail being refreshed).

Token healing: the cursor backs off to the start of the token it ends in (`pri|` of `print`),
and the first generated tokens are constrained to reproduce the typed bytes, which the draft
then omits. So drafts never repeat what is already typed.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Callable

import torch

from .cache import HEAD
from .errors import Cancelled
from .model import Segment

if TYPE_CHECKING:
    from .session import Session

SUFFIX_WINDOW_CHARS = 2000


def line_stop(draft: str) -> int | None:
    """End at the first newline that follows some content; a leading newline starts the next line."""
    start = len(draft) - len(draft.lstrip("\r\n"))
    cut = draft.find("\n", start)
    if cut < 0:
        return None
    return cut - 1 if cut > 0 and draft[cut - 1] == "\r" else cut


def complete(session: "Session", cursor: int, max_new_tokens: int, n: int,
             stop: str | Callable[[str], int | None], cancelled: Callable[[], bool] | None) -> list[str]:
    if max_new_tokens < 1 or n < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) and n ({n}) must be at least 1")
    if stop == "line":
        stop = line_stop
    elif not callable(stop):
        raise ValueError(f"stop must be 'line' or a callable, not {stop!r}")
    start = Start(session, cursor, max_new_tokens)
    drafts: list[str] = []
    for candidate in _ranked(start.logits, session.vocab, start.typed):
        if len(drafts) == n:
            break
        if cancelled and cancelled():
            raise Cancelled()
        text = _decode(candidate, start, max_new_tokens, stop, cancelled)
        if text and text not in drafts:
            drafts.append(text)
    return drafts


class Start:
    """The first step of every draft at a cursor: back off to a token boundary (healing), run
    the scratch chunk, and keep the next-token logits. Later steps append rows via `run`.

    Pending rows (a deferred edit's tokens, and with `tail_tokens` the stale tail before the
    prefix end) are encoded in place in the same forward: within each layer every row writes
    its K/V before any row attends, so the scratch rows read them fresh.
    """

    def __init__(self, session: "Session", cursor: int, room: int = 0):
        if not isinstance(cursor, int) or not 0 <= cursor <= len(session.text):
            raise ValueError(f"cursor {cursor} is out of bounds for a document of {len(session.text)} characters")
        self.vocab, self.model, self.cache = session.vocab, session.engine.model, session.cache
        live = session.slot_ids
        cursor_b = len(session.text[:cursor].encode("utf-8"))
        starts = self.vocab.starts(session.token_ids)
        boundary = max(bisect.bisect_left(starts, cursor_b) - 1, 0) if cursor_b else 0
        self.typed = session._bytes[starts[boundary]:cursor_b]
        if session.fim:
            self.prefix_len = HEAD + boundary
            suffix = session.text[cursor:cursor + SUFFIX_WINDOW_CHARS]
            scratch = [session.fim[1], *self.vocab.encode(suffix), session.fim[2]]
        else:
            self.prefix_len = HEAD + boundary - 1
            scratch = [live[self.prefix_len]]
        self.base = self.cache.length
        self.cache.reserve(self.base + len(scratch) + room + 1)
        pending = self.cache.pending(self.prefix_len, session.tail_tokens)
        ids = [t for a, b in pending for t in live[a:b]] + scratch
        positions = [p for a, b in pending for p in range(a, b)]
        positions += range(self.prefix_len, self.prefix_len + len(scratch))
        segments = [Segment.in_place(a, b) for a, b in pending]
        segments.append(Segment(self.prefix_len, self.base, self.base + len(scratch), len(scratch)))
        self.logits = self.model.forward(torch.tensor(ids), torch.tensor(positions), segments,
                                         self.cache.k, self.cache.v, logits_rows=1)[0]
        for a, b in pending:
            self.cache.mark_encoded(a, b)
        self.next_slot = self.base + len(scratch)

    def run(self, ids: list[int], at: int) -> torch.Tensor:
        """Rows ids in scratch slots from `at` on; positions continue from the prefix."""
        pos = self.prefix_len + (at - self.base)
        logits = self.model.forward(torch.tensor(ids), torch.arange(pos, pos + len(ids)),
                                    [Segment(self.prefix_len, self.base, at + len(ids), len(ids))],
                                    self.cache.k, self.cache.v, logits_rows=1)
        return logits[0]


def _allowed(vocab, typed: bytes) -> list[int] | None:
    """Token ids consistent with the still-untyped bytes `typed` (None: anything goes)."""
    if not typed:
        return None
    table = vocab.table
    return [i for i in vocab.by_first_byte.get(typed[0], ())
            if table[i].startswith(typed) or typed.startswith(table[i])]


def _pick(logits: torch.Tensor, allowed: list[int] | None, k: int = 1) -> list[int]:
    if allowed is None:
        return logits.topk(k).indices.tolist()
    idx = torch.tensor(allowed)
    order = logits[idx].topk(min(k, len(allowed))).indices
    return idx[order].tolist()


def _ranked(logits: torch.Tensor, vocab, typed: bytes, width: int = 16) -> list[int]:
    """First tokens to branch on, best first (typed bytes respected; ends-of-text dropped)."""
    return [t for t in _pick(logits, _allowed(vocab, typed), width) if t not in vocab.special_ids]


def _decode(first: int, start: Start, max_new_tokens: int,
            stop: Callable[[str], int | None], cancelled) -> str:
    """Greedy continuation of one first token; returns the draft without the typed bytes."""
    vocab = start.vocab
    out = bytearray()
    remaining = start.typed
    token = first
    for step in range(max_new_tokens):
        piece = vocab.table[token]
        if remaining:
            used = min(len(remaining), len(piece))
            remaining, piece = remaining[used:], piece[used:]
        out += piece
        text = out.decode("utf-8", errors="ignore")
        cut = stop(text)
        if cut is not None:
            return text[:cut]
        if step + 1 == max_new_tokens:
            break
        if cancelled and cancelled():
            raise Cancelled()
        logits = start.run([token], start.next_slot + step)
        allowed = _allowed(vocab, remaining)
        token = _pick(logits, allowed)[0]
        if token in vocab.special_ids:
            break
    return out.decode("utf-8", errors="ignore")
