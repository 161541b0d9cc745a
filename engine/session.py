"""A Session is one document: its text, token ids, and the KV cache that edits are spliced into.

Invariants after every public call (and after any exception, which leaves the session as it was):
`text` is the document, `token_ids` decode to it exactly, and cache slot `HEAD + t` holds token t
(slot 0 holds the head token that every draft can attend to, even at the document start).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from . import drafts
from .cache import HEAD, STALE, KVCache, runs
from .errors import Cancelled
from .model import Segment
from .strategies import check_strategy, plan_edit
from .tokens import Splice

if TYPE_CHECKING:
    from .engine import Engine

PREFILL_CHUNK = 512
# Defaults chosen by `kvsplice bench edits --strategies recompute,pie,pie+r8,...,pie+r128+t16`
# (smollm2-135m 91 cases at 1k, Qwen2.5-Coder-0.5B 48 at 512 and 36 at 1k): R=32, T=16 cut mean
# first-token KL to recompute 19x (smollm2) and 2.3x (Qwen 1k); R=128 or even the 128 rows an
# oracle picks buy little more for 2-4x the cost. Edit -> first token, Qwen 1k, deferred: 1.7x
# plain PIE (a deletion pays most: plain PIE runs no forward for it, the window adds one).
REFRESH_TOKENS, TAIL_TOKENS = 32, 16


@dataclass(frozen=True)
class EditReport:
    """What one edit cost: tokens whose K/V were kept, encoded, and kept-but-rotated."""

    reused: int
    encoded: int
    rotated: int
    stale: int
    ms: float
    span: tuple[int, int, int]  # old token range [i, j) replaced by m new tokens


class Session:
    """Options: `defer` leaves an edit's rows unencoded until something reads the cache, so the
    next draft encodes them in its own first forward (one pass over the weights, not two);
    `refresh_tokens` R re-encodes the first R suffix tokens with every patch;
    `tail_tokens` T re-encodes stale tokens among the last T before a draft's cursor, fused with
    the draft's first forward; `min_chunk` is chunk-reuse's smallest reusable run; `fim` uses
    fill-in-the-middle when the tokenizer has the tokens (default: when available)."""

    def __init__(self, engine: "Engine", text: str, strategy: str = "pie", fim: bool | None = None,
                 min_chunk: int = 32, refresh_tokens: int = REFRESH_TOKENS, tail_tokens: int = TAIL_TOKENS,
                 defer: bool = False):
        self.engine = engine
        self._configure(strategy=strategy, min_chunk=min_chunk, refresh_tokens=refresh_tokens,
                        tail_tokens=tail_tokens, defer=defer)
        self.vocab = engine.vocab
        self.fim = engine.fim_ids if fim is None or fim else None
        if fim and engine.fim_ids is None:
            raise ValueError("this model's tokenizer has no fill-in-the-middle tokens")
        self.head_id = self.fim[0] if self.fim else engine.start_id
        s = engine.model.shape
        self.cache = KVCache(s.layers, s.kv_heads, s.head_dim, engine.device, engine.dtype)
        self.text = ""
        self._bytes = b""
        self.token_ids: list[int] = []
        self.last_report: EditReport | None = None
        self.last_draft_ms = 0.0
        self.totals = {"reused": 0, "encoded": 0, "rotated": 0}
        self._load(text)

    def _configure(self, strategy: str, min_chunk: int, refresh_tokens: int, tail_tokens: int,
                   defer: bool) -> None:
        check_strategy(strategy)
        if refresh_tokens < 0 or tail_tokens < 0 or min_chunk < 1:
            raise ValueError(f"refresh_tokens ({refresh_tokens}) and tail_tokens ({tail_tokens}) must be "
                             f">= 0 and min_chunk ({min_chunk}) >= 1")
        self.strategy, self.min_chunk = strategy, min_chunk
        self.refresh_tokens, self.tail_tokens, self.defer = refresh_tokens, tail_tokens, defer

    def fork(self, **options) -> "Session":
        """An independent copy with its own cache and some options changed (strategy,
        min_chunk, refresh_tokens, tail_tokens, defer): strategies can then be compared from
        one encoded document without paying for its prefill again."""
        clone = copy.copy(self)
        current = dict(strategy=self.strategy, min_chunk=self.min_chunk, refresh_tokens=self.refresh_tokens,
                       tail_tokens=self.tail_tokens, defer=self.defer)
        unknown = set(options) - set(current)
        if unknown:
            raise ValueError(f"fork cannot change {', '.join(sorted(unknown))}; it takes {', '.join(current)}")
        clone._configure(**{**current, **options})
        clone.cache = self.cache.copy()
        clone.token_ids, clone.totals = list(self.token_ids), dict(self.totals)
        self.engine.sessions.add(clone)
        return clone

    @property
    def slot_ids(self) -> list[int]:
        """Token ids by cache slot: the head token, then the document's tokens."""
        return [self.head_id, *self.token_ids]

    def _load(self, text: str) -> None:
        """(Re)encode the whole text from scratch: an exact cache."""
        t0 = time.perf_counter()
        self.text, self._bytes = text, text.encode("utf-8")
        self.token_ids = self.vocab.encode(text)
        ids = self.slot_ids
        self.cache.reserve(len(ids))
        self.cache.length = len(ids)
        self.cache.positions, self.cache.stale = list(range(len(ids))), [0] * len(ids)
        self._encode(ids, 0, len(ids))
        self.totals["encoded"] += len(ids)
        self.last_report = EditReport(0, len(ids), 0, 0, (time.perf_counter() - t0) * 1e3, (0, 0, len(ids) - 1))

    # -- edits -------------------------------------------------------------------------------

    def edit(self, start: int, end: int, new_text: str) -> EditReport:
        """Replace text[start:end] (code-point offsets, half-open) by new_text and patch the cache."""
        if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start <= end <= len(self.text):
            raise ValueError(f"edit range [{start}, {end}) is out of bounds for a document of "
                             f"{len(self.text)} characters (need 0 <= start <= end <= length)")
        if not isinstance(new_text, str):
            raise ValueError(f"new_text must be str, not {type(new_text).__name__}")
        t0 = time.perf_counter()
        text = self.text[:start] + new_text + self.text[end:]
        b0 = len(self.text[:start].encode("utf-8"))
        b1 = b0 + len(self.text[start:end].encode("utf-8"))
        new_bytes = text.encode("utf-8")
        splice = self.vocab.splice(self.token_ids, new_bytes, b0, b1, len(new_bytes) - len(self._bytes))
        try:
            encoded, rotated = self._apply(splice)
        except BaseException:
            self._load(self.text)  # a failed patch leaves an exact cache of the old text
            raise
        self.text, self._bytes = text, new_bytes
        self.token_ids = self.token_ids[:splice.start] + splice.ids + self.token_ids[splice.end:]
        report = EditReport(self.cache.length - encoded, encoded, rotated, self.stale,
                            (time.perf_counter() - t0) * 1e3, (splice.start, splice.end, len(splice.ids)))
        for key in ("reused", "encoded", "rotated"):
            self.totals[key] += getattr(report, key)
        self.last_report = report
        return report

    def _apply(self, splice: Splice) -> tuple[int, int]:
        """Patch the cache for one splice: the strategy plans, the shared machinery applies.
        Returns (rows encoded, rows moved with a rotation)."""
        if splice.start == splice.end and not splice.ids:
            return 0, 0  # the text changed nowhere that the tokens see (e.g. "a" -> "a")
        old = self.slot_ids
        new = old[:HEAD + splice.start] + splice.ids + old[HEAD + splice.end:]
        plan = plan_edit(self.strategy, old, new, HEAD + splice.start, HEAD + splice.end, self.min_chunk)
        plan.encode_end = min(len(new), plan.encode_end + self.refresh_tokens)
        cache = self.cache
        positions, stale = cache.positions, cache.stale
        new_positions = positions[:plan.encode_start] + [0] * (len(new) - plan.encode_start)
        new_stale = stale[:plan.encode_start] + [0] * (len(new) - plan.encode_start)
        cache.reserve(len(new))
        moved = 0
        for mv in plan.moves:
            cache.move(mv.start, mv.end, mv.shift, mv.delta, self.engine.model.inv_freq)
            for s in range(mv.start, mv.end):
                new_positions[s + mv.shift] = positions[s] + mv.delta
                new_stale[s + mv.shift] = max(STALE, stale[s])
            moved += mv.end - mv.start if mv.delta else 0
        cache.positions, cache.stale = new_positions, new_stale
        cache.length = len(new)
        if self.defer:
            cache.mark_missing(plan.encode_start, plan.encode_end)
            return 0, moved
        self._encode(new, plan.encode_start, plan.encode_end)
        return plan.encode_end - plan.encode_start, moved

    def _encode(self, ids: list[int], start: int, end: int,
                interrupt: Callable[[], bool] | None = None) -> None:
        """Encode slots [start, end) in place (causal over everything before), in chunks.
        The rows are exact, and lose their stale mark, only if nothing before them is stale."""
        model = self.engine.model
        for a in range(start, end, PREFILL_CHUNK):
            b = min(end, a + PREFILL_CHUNK)
            model.forward(torch.tensor(ids[a:b]), torch.arange(a, b), [Segment.in_place(a, b)],
                          self.cache.k, self.cache.v, interrupt=interrupt)
            self.cache.mark_encoded(a, b)

    def _encode_missing(self) -> None:
        """Encode a deferred edit's rows before something reads the whole cache."""
        ids = self.slot_ids
        for a, b in self.cache.pending(self.cache.length):
            self._encode(ids, a, b)

    def refresh(self, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> int:
        """Re-encode from the first stale token on, left to right, at most `budget_tokens` rows
        (idle-time work). Returns how many stale tokens became exact; 0 once the cache is exact.
        `interrupt()` is asked between layers: when true the refresh stops there, its unfinished
        rows keep their stale marks (their lower layers are fresher, never worse), and a request
        waits for one layer of it at most."""
        first = self.cache.first_stale()
        if first is None or budget_tokens <= 0:
            return 0
        end = min(self.cache.length, first + budget_tokens)
        before = self.stale
        try:
            self._encode(self.slot_ids, first, end, interrupt)
        except Cancelled:
            pass
        return before - self.stale

    def reencode(self, slots: list[int]) -> None:
        """Re-encode the tokens in these cache slots against the cache as it is, in one forward
        (neighbours share a segment, each sees the fresh K/V of the ones before). A run loses its
        stale marks only if nothing before it is stale. For refresh-selection studies: the
        benchmark's oracle rows re-encode the tokens that differ most from recompute."""
        if any(not HEAD <= s < self.cache.length for s in slots):
            raise ValueError(f"slots must lie in [{HEAD}, {self.cache.length}) (document tokens)")
        self._encode_missing()
        ranges, ids = runs(slots), self.slot_ids
        if not ranges:
            return
        rows = [s for a, b in ranges for s in range(a, b)]
        self.engine.model.forward(torch.tensor([ids[s] for s in rows]), torch.tensor(rows),
                                  [Segment.in_place(a, b) for a, b in ranges], self.cache.k, self.cache.v)
        for a, b in ranges:
            self.cache.mark_encoded(a, b)

    # -- reading -----------------------------------------------------------------------------

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached K and V of the document's tokens, in order: [kv_heads, T, head_dim]."""
        self._encode_missing()
        k, v = self.cache.layer(layer)
        return k[:, HEAD:], v[:, HEAD:]

    @property
    def stale(self) -> int:
        return self.cache.stale_count()

    def complete(self, cursor: int, max_new_tokens: int = 48, n: int = 1,
                 stop: str | Callable[[str], int | None] = "line",
                 cancelled: Callable[[], bool] | None = None) -> list[str]:
        """Drafts for the text at `cursor`. Reads cache[:cursor] only; text, ids and every
        computed K/V stay as they were (pending rows before the cursor get encoded)."""
        t0 = time.perf_counter()
        try:
            return drafts.complete(self, cursor, max_new_tokens, n, stop, cancelled)
        finally:
            self.last_draft_ms = (time.perf_counter() - t0) * 1e3

    def next_token_logits(self, cursor: int | None = None) -> torch.Tensor:
        """fp32 logits of the first draft token at cursor (default: the end); cache untouched."""
        return drafts.Start(self, len(self.text) if cursor is None else cursor).logits

    def stats(self) -> dict:
        r = self.last_report
        return {
            "tokens": len(self.token_ids),
            "reused": r.reused if r else 0,
            "rotated": r.rotated if r else 0,
            "encoded": r.encoded if r else 0,
            "stale": self.stale,
            "last_patch_ms": round(r.ms, 3) if r else 0.0,
            "last_draft_ms": round(self.last_draft_ms, 3),
            "strategy": self.strategy,
            "cache_bytes": self.cache.nbytes,
            "totals": dict(self.totals),
        }

    def close(self) -> None:
        self.engine.sessions.discard(self)
        self.cache = None
