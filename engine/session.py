"""A Session is one document: its whole text, and the window of it that the KV cache holds.

The window (window.py) is at most `context_tokens` tokens, placed around the cursor of the latest
request (placement.py), so a file's size does not set what it costs. Positions inside the window
start at the window's start (the head token stays at 0). The window moves by splicing: text that
leaves it is a deletion (PIE: a rotation, nearly free), text that enters it an insertion at an
edge; a jump to a place it does not overlap much re-encodes it whole (exactly). Edits outside the
window change only the text and where the window starts.

Invariants after every public call: `text` is the document, `window.text` is
`text[start:start + len(window.text)]`, and the window's own invariants hold (window.py).
"""
from __future__ import annotations

import bisect
import copy
import dataclasses
import time
from typing import Callable

import torch

from . import drafts
from .decode import SPECULATE
from .placement import Placement
from .runtime import Runtime
from .window import EditReport, Window

WINDOW_OPTIONS = ("strategy", "min_chunk", "refresh_tokens", "tail_tokens", "defer")


class Session:
    """Window options (window.py): strategy, fim, min_chunk, refresh_tokens, tail_tokens, defer.
    Document options: `context_tokens` (the window's size; default per device, never past the
    model's trained context), `fim_suffix` ("cache": the FIM suffix window's K/V come from the
    cache; "encode": encoded per request, exact; "none": drafts continue the prefix, as with
    fim=False), `suffix_tokens` (that window's length),
    `suffix_exact` (of which the tokens nearest the cursor encoded per request in "cache" mode),
    `encode` (False: the window is tokenized only, its rows encoded by `encode_missing` in slices
    or by the first draft)."""

    def __init__(self, runtime: Runtime, text: str, strategy: str = "pie", fim: bool | None = None,
                 context_tokens: int | None = None, fim_suffix: str = "cache",
                 suffix_tokens: int = drafts.SUFFIX_TOKENS, suffix_exact: int = drafts.SUFFIX_EXACT,
                 encode: bool = True, **window_options):
        if not isinstance(text, str):
            raise ValueError(f"text must be str, not {type(text).__name__}")
        if fim_suffix not in drafts.FIM_SUFFIX:
            raise ValueError(f"fim_suffix must be one of {', '.join(drafts.FIM_SUFFIX)}, not {fim_suffix!r}")
        if suffix_tokens < 0 or suffix_exact < 0:
            raise ValueError(f"suffix_tokens and suffix_exact must be >= 0, got {suffix_tokens}, {suffix_exact}")
        if fim_suffix == "none":
            fim = False
        self.runtime = runtime
        self.text = text
        self.context_tokens = runtime.context_tokens(context_tokens)
        self.fim_suffix, self.suffix_tokens, self.suffix_exact = fim_suffix, suffix_tokens, suffix_exact
        uses_fim = runtime.fim_ids is not None and fim is not False
        after = min(suffix_tokens, self.context_tokens // 4) if uses_fim else self.context_tokens // 8
        self.placement = Placement(runtime.vocab, self.context_tokens, after)
        self.start, end = self.placement.target(text, 0)
        self.window = Window(runtime, text[self.start:end], strategy, fim, encode=encode, **window_options)
        # The window, a draft's scratch (FIM suffix, draft tokens) and typing headroom.
        self.window.cache.growth_cap = self.context_tokens + 2 * suffix_tokens + 256
        self.last_draft_ms: float | None = None  # of the latest draft that finished
        self.loading = not encode  # until the window's first encode is done (see `stats`)

    # -- the window's state, for callers that look inside ---------------------------------------

    @property
    def end(self) -> int:
        return self.start + len(self.window.text)

    @property
    def token_ids(self) -> list[int]:
        return self.window.token_ids

    @property
    def slot_ids(self) -> list[int]:
        return self.window.slot_ids

    @property
    def head_id(self) -> int:
        return self.window.head_id

    @property
    def cache(self):
        return self.window.cache

    @property
    def vocab(self):
        return self.window.vocab

    @property
    def strategy(self) -> str:
        return self.window.strategy

    @property
    def stale(self) -> int:
        return self.window.stale

    @property
    def last_report(self) -> EditReport | None:
        return self.window.last_report

    @property
    def progress(self) -> tuple[int, int]:
        """Window rows encoded so far, and all of them (the head included)."""
        return self.window.cache.length - self.window.missing, self.window.cache.length

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.window.kv(layer)

    def fork(self, **options) -> "Session":
        """An independent copy with its own cache and some options changed (strategy,
        min_chunk, refresh_tokens, tail_tokens, defer, fim_suffix, suffix_exact): strategies can then be
        compared from one encoded document without paying for its prefill again."""
        unknown = set(options) - set(WINDOW_OPTIONS) - {"fim_suffix", "suffix_exact"}
        if unknown:
            raise ValueError(f"fork cannot change {', '.join(sorted(unknown))}; it takes "
                             f"{', '.join(WINDOW_OPTIONS)}, fim_suffix, suffix_exact")
        fim_suffix = options.get("fim_suffix", self.fim_suffix)
        if "none" in (fim_suffix, self.fim_suffix) and fim_suffix != self.fim_suffix:
            raise ValueError("fork cannot turn fill-in-the-middle on or off (fim_suffix 'none'): "
                             "the window's head token differs; open a new session")
        clone = copy.copy(self)
        clone.window = self.window.fork()
        clone.window.configure(**{**self.window.options, **{k: v for k, v in options.items() if k in WINDOW_OPTIONS}})
        clone.fim_suffix = fim_suffix
        clone.suffix_exact = options.get("suffix_exact", self.suffix_exact)
        return clone

    # -- edits -----------------------------------------------------------------------------------

    def edit(self, start: int, end: int, new_text: str) -> EditReport:
        """Replace text[start:end] (code-point offsets, half-open) by new_text; the window's part
        of it is spliced into the cache (see the module docstring for edits at its edges)."""
        if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start <= end <= len(self.text):
            raise ValueError(f"edit range [{start}, {end}) is out of bounds for a document of "
                             f"{len(self.text)} characters (need 0 <= start <= end <= length)")
        if not isinstance(new_text, str):
            raise ValueError(f"new_text must be str, not {type(new_text).__name__}")
        t0 = time.perf_counter()
        a, b, w = self.start, self.end, self.window
        text = self.text[:start] + new_text + self.text[end:]
        inside = a <= start and end <= b and not (start == end == a > 0)
        rotated, span = 0, (0, 0, 0)
        if inside and len(new_text) > self.context_tokens:  # more than any window holds: place anew
            self.text = text
            self._replace(*self.placement.target(text, start + len(new_text)))
        else:
            if inside:
                rotated, span = w.splice(start - a, end - a, new_text)
            elif end <= a:  # before the window (an insertion at its start included): it only moves
                self.start += len(new_text) - (end - start)
            elif start < b:  # over an edge: the window loses its overlapped part, new text stays out
                rotated, span = w.splice(max(start, a) - a, min(end, b) - a, "")
                if start < a:
                    self.start = start + len(new_text)
            self.text = text
            if inside and len(w.token_ids) > self.context_tokens:
                self.focus(start + len(new_text), force=True)  # typing overfilled it
        encoded = 0 if w.defer else w.encode_missing()
        report = EditReport(w.cache.length - encoded, encoded, rotated, w.stale,
                            (time.perf_counter() - t0) * 1e3, span)
        w.record(report)
        return report

    def focus(self, cursor: int, force: bool = False) -> bool:
        """Move the window for a cursor, if it must (placement.py); True when it moved. The rows
        that enter it are MISSING until read (the next draft encodes them in its first forward)."""
        if not isinstance(cursor, int) or not 0 <= cursor <= len(self.text):
            raise ValueError(f"cursor {cursor} is out of bounds for a document of {len(self.text)} characters")
        a, b, w = self.start, self.end, self.window
        before = after = 0
        if a <= cursor <= b:
            starts = w.vocab.starts(w.token_ids)
            before = bisect.bisect_left(starts, len(w.text[:cursor - a].encode("utf-8")))
            after = len(w.token_ids) - before
        if not force and not self.placement.must_move(a, b, len(self.text), cursor, before, after):
            return False
        na, nb = self.placement.target(self.text, cursor)
        kept = min(b, nb) - max(a, na)
        if kept * 2 < nb - na:  # mostly new text: re-encode it whole (exact, and no dearer)
            self._replace(na, nb)
            return True
        if nb < b:  # the back first: deleting there is free and exact
            w.splice(nb - a, b - a, "")
        elif nb > b:
            w.splice(b - a, b - a, self.text[b:nb])
        if na > a:
            w.splice(0, na - a, "")
        elif na < a:
            w.splice(0, 0, self.text[na:a])
        self.start = na
        return True

    def _replace(self, start: int, end: int) -> None:
        """The window becomes text[start:end], encoded from scratch (its rows MISSING)."""
        self.window.splice(0, len(self.window.text), self.text[start:end])
        self.start = start

    # -- reading ---------------------------------------------------------------------------------

    def complete(self, cursor: int, max_new_tokens: int = 48, n: int = 1,
                 stop: str | Callable[[str], int | None] = "line",
                 cancelled: Callable[[], bool] | None = None, speculate: int = SPECULATE) -> list[str]:
        """Drafts for the text at `cursor`. Moves the window there if it must, then reads the
        cache before the cursor (and the FIM suffix window after it) only; text, ids and every
        computed K/V stay as they were (pending rows it reads get encoded)."""
        t0 = time.perf_counter()
        self.focus(cursor)
        out = drafts.complete(self.window, cursor - self.start, max_new_tokens, n, stop, cancelled,
                              self.fim_suffix, self.suffix_tokens, speculate, self.suffix_exact)
        self.last_draft_ms = (time.perf_counter() - t0) * 1e3  # not for a cancelled draft
        self._loaded()
        return out

    def next_token_logits(self, cursor: int | None = None) -> torch.Tensor:
        """fp32 logits of the first draft token at cursor (default: the end); cache untouched."""
        cursor = len(self.text) if cursor is None else cursor
        self.focus(cursor)
        return drafts.Start(self.window, cursor - self.start, fim_suffix=self.fim_suffix,
                            suffix_tokens=self.suffix_tokens, suffix_exact=self.suffix_exact).logits

    def encode_missing(self, budget_tokens: int | None = None,
                       interrupt: Callable[[], bool] | None = None) -> int:
        """Encode up to `budget_tokens` of the window's MISSING rows (a lazy open, an evicted
        cache), left to right; returns how many."""
        try:
            return self.window.encode_missing(budget_tokens, interrupt)
        finally:
            self._loaded()

    def _loaded(self) -> None:
        if not self.window.missing:
            self.loading = False

    def refresh(self, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> int:
        return self.window.refresh(budget_tokens, interrupt)

    def reencode(self, slots: list[int]) -> None:
        self.window.reencode(slots)

    def stats(self) -> dict:
        w = self.window
        r = w.last_report
        return {
            "tokens": len(w.token_ids),
            "reused": r.reused if r else 0,
            "rotated": r.rotated if r else 0,
            "encoded": r.encoded if r else 0,
            "stale": self.stale,
            "last_patch_ms": round(r.ms, 3) if r else 0.0,
            "last_draft_ms": None if self.last_draft_ms is None else round(self.last_draft_ms, 3),
            # of the latest decode, finished or cancelled: forwards run, tokens emitted, and the
            # speculative tokens proposed and accepted
            "last_decode": dataclasses.asdict(w.decode_stats),
            "strategy": w.strategy,
            "cache_bytes": w.cache.nbytes,
            "totals": dict(w.totals),
            "window": {"start": self.start, "end": self.end, "context_tokens": self.context_tokens},
            "missing": w.missing,
            # the first encode after a lazy open, which the user waits on; rows that a deferred
            # edit or a moved window leave for later are not one
            "ready": not self.loading,
            "encoding": {"done": self.progress[0], "total": self.progress[1]} if self.loading else None,
        }

    def close(self) -> None:
        self.window.close()
