"""Drafts at a cursor: the first step (`Start`) in scratch slots after the live cache, then the
drafts decoded together (decode.py).

The cache stores K/V, not logits, so a draft first runs a short chunk in scratch: the token
before the cursor, or for fill-in-the-middle models `<suffix> window <middle>`, attending to the
cache before the cursor. The FIM suffix window is not re-encoded: its K/V are copied from the
live cache (the document after the cursor, already encoded in document order), keys rotated to
their scratch positions, and only the two sentinels (and the rest of a token the cursor splits)
are encoded, with the first `suffix_exact` suffix tokens (those nearest the cursor, whose stale
rows cost the most); `fim_suffix="encode"` encodes them all instead (exact, the reference). The
live cache is written only to encode rows that were pending anyway (a deferred edit's tokens,
rows of a lazy open, a stale tail being refreshed).

Token healing: the cursor backs off to the start of the token it ends in (`pri|` of `print`),
and the first generated tokens are constrained to reproduce the typed bytes, which the draft
then omits. So drafts never repeat what is already typed.
"""
from __future__ import annotations

import bisect
from typing import Callable

import torch

from .cache import HEAD
from .decode import SPECULATE, Stats, allowed, decode, pick
from .model import Copy, Segment
from .window import PREFILL_CHUNK, Window

SUFFIX_TOKENS = 512  # default FIM suffix window, in tokens
SUFFIX_EXACT = 0  # of which the ones nearest the cursor are encoded per request (cache mode)
FIM_SUFFIX = ("cache", "encode", "none")  # "none": no fill-in-the-middle (Session opens without it)


def line_stop(draft: str) -> int | None:
    """End at the first newline that follows some content; a leading newline starts the next line."""
    start = len(draft) - len(draft.lstrip("\r\n"))
    cut = draft.find("\n", start)
    if cut < 0:
        return None
    return cut - 1 if cut > 0 and draft[cut - 1] == "\r" else cut


def complete(window: Window, cursor: int, max_new_tokens: int = 48, n: int = 1,
             stop: str | Callable[[str], int | None] = "line", cancelled: Callable[[], bool] | None = None,
             fim_suffix: str = "cache", suffix_tokens: int = SUFFIX_TOKENS, speculate: int = SPECULATE,
             suffix_exact: int = SUFFIX_EXACT) -> list[str]:
    """Up to n distinct drafts at `cursor` (a code-point offset in the window's text), decoded as
    one batch: the best n first tokens (typed bytes respected), each continued greedily,
    `speculate` tokens proposed per step from the document (0: plain greedy; same output)."""
    if max_new_tokens < 1 or n < 1 or speculate < 0:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) and n ({n}) must be at least 1, "
                         f"speculate ({speculate}) at least 0")
    if stop == "line":
        stop = line_stop
    elif not callable(stop):
        raise ValueError(f"stop must be 'line' or a callable, not {stop!r}")
    start = Start(window, cursor, room=max_new_tokens + speculate + 1, drafts=n, fim_suffix=fim_suffix,
                  suffix_tokens=suffix_tokens, cancelled=cancelled, suffix_exact=suffix_exact)
    candidates = _ranked(start.logits, window.vocab, start.typed)
    drafts: list[str] = []
    window.decode_stats = Stats(forwards=1)  # the first step's
    while len(drafts) < n and candidates:
        batch, candidates = candidates[:n - len(drafts)], candidates[n - len(drafts):]
        texts, _ = decode(start, batch, max_new_tokens, stop, cancelled, speculate, window.decode_stats)
        for text in texts:
            if text and text not in drafts:
                drafts.append(text)
    return drafts


class Start:
    """The first step of every draft at a cursor: back off to a token boundary (healing), lay out
    the scratch chunk, run it with any pending rows in one forward, and keep the next-token
    logits. Room is reserved for `drafts` regions of `room` draft slots each (region i > 0 gets
    a copy of the scratch when a batch needs it: `region`).

    Pending rows (a deferred edit's tokens, a lazy open's, and with `tail_tokens` the stale tail
    before the prefix end) are encoded in place in the same forward: within each layer every row
    writes its K/V before any row attends (and before the suffix rows are copied), so the scratch
    rows read them fresh. Beyond PREFILL_CHUNK of them, the earlier ones are encoded first.
    """

    def __init__(self, window: Window, cursor: int, room: int = 0, drafts: int = 1, fim_suffix: str = "cache",
                 suffix_tokens: int = SUFFIX_TOKENS, cancelled: Callable[[], bool] | None = None,
                 suffix_exact: int = SUFFIX_EXACT):
        if not isinstance(cursor, int) or not 0 <= cursor <= len(window.text):
            raise ValueError(f"cursor {cursor} is out of bounds for a text of {len(window.text)} characters")
        if fim_suffix not in FIM_SUFFIX:
            raise ValueError(f"fim_suffix must be one of {', '.join(FIM_SUFFIX)}, not {fim_suffix!r}")
        self.vocab, self.model, self.cache = window.vocab, window.runtime.model, window.cache
        self.window = window
        live = window.slot_ids
        cursor_b = len(window.text[:cursor].encode("utf-8"))
        starts = self.vocab.starts(window.token_ids)
        boundary = max(bisect.bisect_left(starts, cursor_b) - 1, 0) if cursor_b else 0
        self.typed = window.bytes[starts[boundary]:cursor_b]
        copies: tuple[Copy, ...] = ()
        if window.fim:
            self.prefix_len = HEAD + boundary
            after = _first_token_at(window.bytes, starts, cursor_b)
            end = after + _suffix_length(window, after, suffix_tokens)
            rest = window.bytes[cursor_b:starts[after]].decode("utf-8")  # of a token the cursor splits
            head = [window.fim[1], *(self.vocab.encode(rest) if rest else [])]
            suffix = live[HEAD + after:HEAD + end]
            if fim_suffix == "cache" and len(suffix) > suffix_exact:
                exact = suffix[:suffix_exact]
                scratch = [*head, *exact, *[None] * (len(suffix) - len(exact)), window.fim[2]]
                copies = (Copy(HEAD + after + len(exact), HEAD + end, self.cache.length + len(head) + len(exact),
                               self.prefix_len + len(head) - (HEAD + after)),)
                read_end = HEAD + end
            else:
                scratch, read_end = [*head, *suffix, window.fim[2]], self.prefix_len
        else:
            self.prefix_len = HEAD + boundary - 1
            scratch, read_end = [live[self.prefix_len]], self.prefix_len
        self.base = self.cache.length
        self.scratch = len(scratch)
        self.room = room
        self.cache.reserve(self.base + drafts * (self.scratch + room) + 1)
        window.runtime.memory.touch(window)
        pending = self._pending(read_end, cancelled)
        ids = [t for a, b in pending for t in live[a:b]]
        positions = [p for a, b in pending for p in range(a, b)]
        segments = [Segment.in_place(a, b) for a, b in pending]
        for a, b in _encoded_runs(scratch):  # the scratch's own rows, around the copied suffix
            ids += scratch[a:b]
            positions += range(self.prefix_len + a, self.prefix_len + b)
            segments.append(Segment(self.prefix_len, self.base, self.base + b, b - a))
        self.logits = self.model.forward(torch.tensor(ids), torch.tensor(positions), segments,
                                         self.cache.k, self.cache.v, logits_rows=1, interrupt=cancelled,
                                         copies=copies)[0]
        for a, b in pending:
            self.cache.mark_encoded(a, b)
        self._regions = 1

    def _pending(self, read_end: int, cancelled) -> list[tuple[int, int]]:
        """Rows to encode in the first forward; when there are many, all but the last
        PREFILL_CHUNK are encoded first (in chunks), so one forward's memory stays bounded."""
        window = self.window
        pending = self.cache.pending(read_end, window.tail_tokens, self.prefix_len)
        extra = sum(b - a for a, b in pending) - PREFILL_CHUNK
        if extra > 0:
            ids = window.slot_ids
            for a, b in pending:
                take = min(b - a, extra)
                if take <= 0:
                    break
                window._encode(ids, a, a + take, cancelled)
                extra -= take
            pending = self.cache.pending(read_end, window.tail_tokens, self.prefix_len)
        return pending

    def region(self, i: int) -> int:
        """First slot of draft i's region; its scratch rows are copied there on first use."""
        base = self.base + i * (self.scratch + self.room)
        while self._regions <= i:
            to = self.base + self._regions * (self.scratch + self.room)
            self.cache.move(self.base, self.base + self.scratch, to - self.base, 0, self.model.inv_freq)
            self._regions += 1
        return base

    def region_end(self, base: int) -> int:
        """End of the region starting at base: decode steps read its keys up to there."""
        return base + self.scratch + self.room

    def position(self, slot: int, base: int) -> int:
        """RoPE position of a draft slot in the region starting at base."""
        return self.prefix_len + (slot - base)


def _first_token_at(data: bytes, starts: list[int], at: int) -> int:
    """Index of the first token that starts at or after byte `at` on a character boundary."""
    i = bisect.bisect_left(starts, at)
    while i < len(starts) - 1 and data[starts[i]] & 0xC0 == 0x80:
        i += 1
    return i


def _suffix_length(window: Window, after: int, budget: int) -> int:
    """How many tokens from token `after` on the FIM suffix window takes: at most `budget`,
    ending after a newline when one falls in the last quarter (a whole last line)."""
    ids = window.token_ids[after:after + budget]
    if len(ids) < budget:
        return len(ids)
    table = window.vocab.table
    for k in range(len(ids), budget * 3 // 4, -1):
        if table[ids[k - 1]].endswith(b"\n"):
            return k
    return len(ids)


def _encoded_runs(scratch: list[int | None]) -> list[tuple[int, int]]:
    """Runs of scratch rows to encode (None marks a row copied from the live cache)."""
    runs, a = [], None
    for i, token in enumerate([*scratch, None]):
        if token is not None and a is None:
            a = i
        elif token is None and a is not None:
            runs.append((a, i))
            a = None
    return runs


def _ranked(logits: torch.Tensor, vocab, typed: bytes, width: int = 16) -> list[int]:
    """First tokens to branch on, best first (typed bytes respected; ends-of-text dropped)."""
    return [t for t in pick(logits, allowed(vocab, typed), width) if t not in vocab.special_ids]
