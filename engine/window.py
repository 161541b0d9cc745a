"""The part of a document that the KV cache holds: its text, its token ids, and the cache that
every edit is spliced into.

Invariants after every public call (and after any exception, which leaves the window as it was):
`text` is the window's text, `token_ids` decode to it exactly, and cache slot `HEAD + t` holds
token t (slot 0 holds the head token that every draft can attend to, even at the start). Rows
whose K/V are not computed yet are marked MISSING (a deferred edit, a lazy open, an evicted
cache); anything that reads the cache encodes the MISSING rows it reads first.
"""
from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from .cache import HEAD, MISSING, STALE, KVCache, runs
from .decode import Stats
from .errors import Cancelled
from .model import Segment
from .runtime import Runtime
from .strategies import check_strategy, plan_edit
from .tokens import Splice

PREFILL_CHUNK = 512
DELETED_TOKENS = 512  # recently deleted ids kept as a source of speculative drafts
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


class Window:
    """Options: `defer` leaves an edit's rows unencoded until something reads the cache, so the
    next draft encodes them in its own first forward (one pass over the weights, not two);
    `refresh_tokens` R re-encodes the first R suffix tokens with every patch;
    `tail_tokens` T re-encodes stale tokens among the last T before a draft's cursor, fused with
    the draft's first forward; `min_chunk` is chunk-reuse's smallest reusable run; `fim` uses
    fill-in-the-middle when the tokenizer has the tokens (default: when available). With
    `encode=False` the text is tokenized but not encoded (every row MISSING): `encode_missing`
    then encodes it in slices."""

    def __init__(self, runtime: Runtime, text: str, strategy: str = "pie", fim: bool | None = None,
                 min_chunk: int = 32, refresh_tokens: int = REFRESH_TOKENS, tail_tokens: int = TAIL_TOKENS,
                 defer: bool = False, encode: bool = True):
        self.runtime = runtime
        self.configure(strategy=strategy, min_chunk=min_chunk, refresh_tokens=refresh_tokens,
                       tail_tokens=tail_tokens, defer=defer)
        self.vocab = runtime.vocab
        self.fim = runtime.fim_ids if fim is None or fim else None
        if fim and runtime.fim_ids is None:
            raise ValueError("this model's tokenizer has no fill-in-the-middle tokens")
        self.head_id = self.fim[0] if self.fim else runtime.start_id
        s = runtime.model.shape
        self.cache = KVCache(s.layers, s.kv_heads, s.head_dim, runtime.device, runtime.dtype,
                             request=self._request_memory)
        self.text = ""
        self.bytes = b""
        self.token_ids: list[int] = []
        self.deleted_ids: deque[int] = deque(maxlen=DELETED_TOKENS)
        self.last_report: EditReport | None = None
        self.decode_stats = Stats()  # of the latest drafts
        self.totals = {"reused": 0, "encoded": 0, "rotated": 0}
        self._load(text, encode)

    def configure(self, strategy: str, min_chunk: int, refresh_tokens: int, tail_tokens: int,
                  defer: bool) -> None:
        check_strategy(strategy)
        if refresh_tokens < 0 or tail_tokens < 0 or min_chunk < 1:
            raise ValueError(f"refresh_tokens ({refresh_tokens}) and tail_tokens ({tail_tokens}) must be "
                             f">= 0 and min_chunk ({min_chunk}) >= 1")
        self.strategy, self.min_chunk = strategy, min_chunk
        self.refresh_tokens, self.tail_tokens, self.defer = refresh_tokens, tail_tokens, defer

    @property
    def options(self) -> dict:
        return dict(strategy=self.strategy, min_chunk=self.min_chunk, refresh_tokens=self.refresh_tokens,
                    tail_tokens=self.tail_tokens, defer=self.defer)

    def fork(self) -> "Window":
        """An independent copy with its own cache (and its own share of the memory budget)."""
        clone = copy.copy(self)
        clone.cache = self.cache.copy(request=clone._request_memory)
        clone.token_ids, clone.totals = list(self.token_ids), dict(self.totals)
        clone.deleted_ids = deque(self.deleted_ids, maxlen=DELETED_TOKENS)
        return clone

    @property
    def slot_ids(self) -> list[int]:
        """Token ids by cache slot: the head token, then the window's tokens."""
        return [self.head_id, *self.token_ids]

    def _load(self, text: str, encode: bool) -> None:
        """Tokenize the whole text from scratch; encode it (an exact cache) or mark it MISSING."""
        t0 = time.perf_counter()
        self.text, self.bytes = text, text.encode("utf-8")
        self.token_ids = self.vocab.encode(text)
        n = HEAD + len(self.token_ids)
        self.cache.length = n
        self.cache.positions, self.cache.stale = list(range(n)), [MISSING] * n
        encoded = self.encode_missing() if encode else 0
        self.last_report = EditReport(0, encoded, 0, 0, (time.perf_counter() - t0) * 1e3, (0, 0, n - HEAD))

    # -- memory --------------------------------------------------------------------------------

    def _request_memory(self, nbytes: int) -> None:
        self.runtime.memory.request(self, nbytes, f"a window of {len(self.token_ids)} tokens")

    def drop_buffers(self) -> None:
        """Evicted for memory: keep text and ids, free the K/V; every row is MISSING until read."""
        self.cache.drop()
        self.cache.stale = [MISSING] * self.cache.length
        self.cache.positions = list(range(self.cache.length))

    @property
    def resident(self) -> bool:
        return self.cache.capacity >= self.cache.length

    # -- edits ---------------------------------------------------------------------------------

    def splice(self, start: int, end: int, new_text: str) -> tuple[int, tuple[int, int, int]]:
        """Replace text[start:end] by new_text in text, ids and cache, leaving the rows to encode
        MISSING. Returns the rows moved with a rotation and the token span (i, j, m): old ids
        [i, j) became m new ones."""
        if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start <= end <= len(self.text):
            raise ValueError(f"edit range [{start}, {end}) is out of bounds for a text of "
                             f"{len(self.text)} characters (need 0 <= start <= end <= length)")
        if not isinstance(new_text, str):
            raise ValueError(f"new_text must be str, not {type(new_text).__name__}")
        text = self.text[:start] + new_text + self.text[end:]
        b0 = len(self.text[:start].encode("utf-8"))
        b1 = b0 + len(self.text[start:end].encode("utf-8"))
        new_bytes = text.encode("utf-8")
        splice = self.vocab.splice(self.token_ids, new_bytes, b0, b1, len(new_bytes) - len(self.bytes))
        try:
            rotated = self._apply(splice)
        except BaseException:
            self._load(self.text, encode=True)  # a failed patch leaves an exact cache of the old text
            raise
        self.text, self.bytes = text, new_bytes
        self.deleted_ids.extend(self.token_ids[splice.start:splice.end])
        self.token_ids = self.token_ids[:splice.start] + splice.ids + self.token_ids[splice.end:]
        return rotated, (splice.start, splice.end, len(splice.ids))

    def record(self, report: EditReport) -> None:
        """Count an edit's cost in the totals; it becomes `last_report`."""
        for key in ("reused", "encoded", "rotated"):
            self.totals[key] += getattr(report, key)
        self.last_report = report

    def _apply(self, splice: Splice) -> int:
        """Patch the cache for one splice: the strategy plans, the shared machinery moves and
        rotates what it keeps and marks what it re-encodes MISSING. Returns rows moved with a
        rotation."""
        if splice.start == splice.end and not splice.ids:
            return 0  # the text changed nowhere that the tokens see (e.g. "a" -> "a")
        old = self.slot_ids
        new = old[:HEAD + splice.start] + splice.ids + old[HEAD + splice.end:]
        plan = plan_edit(self.strategy, old, new, HEAD + splice.start, HEAD + splice.end, self.min_chunk)
        plan.encode_end = min(len(new), plan.encode_end + self.refresh_tokens)
        cache = self.cache
        positions, stale = cache.positions, cache.stale
        new_positions = positions[:plan.encode_start] + [0] * (len(new) - plan.encode_start)
        new_stale = stale[:plan.encode_start] + [0] * (len(new) - plan.encode_start)
        resident = self.resident
        if resident:
            cache.reserve(len(new))
        moved = 0
        for mv in plan.moves:
            if resident:
                cache.move(mv.start, mv.end, mv.shift, mv.delta, self.runtime.model.inv_freq)
            for s in range(mv.start, mv.end):
                new_positions[s + mv.shift] = positions[s] + mv.delta if resident else s + mv.shift
                new_stale[s + mv.shift] = max(STALE, stale[s])
            moved += mv.end - mv.start if mv.delta else 0
        cache.positions, cache.stale = new_positions, new_stale
        cache.length = len(new)
        cache.mark_missing(plan.encode_start, plan.encode_end)
        return moved

    def encode_missing(self, budget_tokens: int | None = None,
                       interrupt: Callable[[], bool] | None = None) -> int:
        """Encode MISSING rows left to right, at most `budget_tokens` (None: all), in place and in
        chunks; returns how many were encoded. A lazy open or an evicted cache is encoded in
        slices this way; `interrupt` is asked between layers (Cancelled is raised, the rows of the
        unfinished chunk stay MISSING)."""
        ids, done = self.slot_ids, 0
        for a, b in self.cache.pending(self.cache.length):
            if budget_tokens is not None:
                b = min(b, a + budget_tokens - done)
            if b > a:
                self._encode(ids, a, b, interrupt)
                done += b - a
        return done

    def _encode(self, ids: list[int], start: int, end: int,
                interrupt: Callable[[], bool] | None = None) -> None:
        """Encode slots [start, end) in place (causal over everything before), in chunks.
        The rows are exact, and lose their stale mark, only if nothing before them is stale."""
        model = self.runtime.model
        self.cache.reserve(self.cache.length)
        self.runtime.memory.touch(self)
        for a in range(start, end, PREFILL_CHUNK):
            b = min(end, a + PREFILL_CHUNK)
            model.forward(torch.tensor(ids[a:b]), torch.arange(a, b), [Segment.in_place(a, b)],
                          self.cache.k, self.cache.v, interrupt=interrupt)
            self.cache.mark_encoded(a, b)

    def refresh(self, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> int:
        """Re-encode from the first stale token on, left to right, at most `budget_tokens` rows
        (idle-time work). Returns how many stale tokens became exact; 0 once the cache is exact,
        and 0 for an evicted cache (idle work never brings one back at another's expense).
        `interrupt()` is asked between layers: when true the refresh stops there, its unfinished
        rows keep their stale marks (their lower layers are fresher, never worse), and a request
        waits for one layer of it at most."""
        first = self.cache.first_stale()
        if first is None or budget_tokens <= 0 or not self.resident:
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
            raise ValueError(f"slots must lie in [{HEAD}, {self.cache.length}) (window tokens)")
        self.encode_missing()
        ranges, ids = runs(slots), self.slot_ids
        if not ranges:
            return
        rows = [s for a, b in ranges for s in range(a, b)]
        self.runtime.model.forward(torch.tensor([ids[s] for s in rows]), torch.tensor(rows),
                                   [Segment.in_place(a, b) for a, b in ranges], self.cache.k, self.cache.v)
        for a, b in ranges:
            self.cache.mark_encoded(a, b)

    # -- reading -------------------------------------------------------------------------------

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached K and V of the window's tokens, in order: [kv_heads, T, head_dim]."""
        self.encode_missing()
        k, v = self.cache.layer(layer)
        return k[:, HEAD:], v[:, HEAD:]

    @property
    def stale(self) -> int:
        return self.cache.stale_count()

    @property
    def missing(self) -> int:
        return self.cache.stale.count(MISSING)

    def close(self) -> None:
        self.runtime.memory.release(self)
        self.cache.drop()
