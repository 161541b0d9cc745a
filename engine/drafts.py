"""Drafts at a cursor, decoded into scratch slots after the live cache.

The cache stores K/V, not logits, so a draft first runs one short chunk in scratch: the token
before the cursor (or, for fill-in-the-middle models, `<suffix> window <middle>`), attending to
the cache before the cursor. Draft tokens follow in scratch; the live cache is never written.

Token healing: the cursor backs off to the start of the token it ends in (`pri|` of `print`),
and the first generated tokens are constrained to reproduce the typed bytes, which the draft
then omits. So drafts never repeat what is already typed.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Callable

import torch

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
    from .session import HEAD

    if not isinstance(cursor, int) or not 0 <= cursor <= len(session.text):
        raise ValueError(f"cursor {cursor} is out of bounds for a document of {len(session.text)} characters")
    if max_new_tokens < 1 or n < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) and n ({n}) must be at least 1")
    if stop == "line":
        stop = line_stop
    elif not callable(stop):
        raise ValueError(f"stop must be 'line' or a callable, not {stop!r}")
    vocab, model, cache = session.vocab, session.engine.model, session.cache

    cursor_b = len(session.text[:cursor].encode("utf-8"))
    starts = vocab.starts(session.token_ids)
    boundary = bisect.bisect_left(starts, cursor_b) - 1 if cursor_b else 0
    boundary = max(boundary, 0)
    typed = session._bytes[starts[boundary]:cursor_b]
    if session.fim:
        prefix_len = HEAD + boundary
        suffix = session.text[cursor:cursor + SUFFIX_WINDOW_CHARS]
        scratch = [session.fim[1], *vocab.encode(suffix), session.fim[2]]
    else:
        prefix_len = HEAD + boundary - 1
        scratch = [([session.head_id, *session.token_ids])[prefix_len]]
    base = cache.length
    cache.reserve(base + len(scratch) + max_new_tokens + 1)

    def run(ids: list[int], at: int) -> torch.Tensor:
        """Rows ids in scratch slots from `at` on; positions continue from the prefix."""
        pos = prefix_len + (at - base)
        logits = model.forward(torch.tensor(ids), torch.arange(pos, pos + len(ids)),
                               [Segment(prefix_len, base, at + len(ids), len(ids))],
                               cache.k, cache.v, logits_rows=1)
        return logits[0]

    first = run(scratch, base)
    at = base + len(scratch)
    drafts: list[str] = []
    for candidate in _ranked(first, vocab, typed):
        if len(drafts) == n:
            break
        if cancelled and cancelled():
            raise Cancelled()
        text = _decode(candidate, at, run, vocab, typed, max_new_tokens, stop, cancelled)
        if text and text not in drafts:
            drafts.append(text)
    return drafts


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


def _decode(first: int, at: int, run, vocab, typed: bytes, max_new_tokens: int,
            stop: Callable[[str], int | None], cancelled) -> str:
    """Greedy continuation of one first token; returns the draft without the typed bytes."""
    out = bytearray()
    remaining = typed
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
        logits = run([token], at + step)
        allowed = _allowed(vocab, remaining)
        token = _pick(logits, allowed)[0]
        if token in vocab.special_ids:
            break
    return out.decode("utf-8", errors="ignore")
