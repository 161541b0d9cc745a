"""A window's KV cache: buffers that grow on request, plus per-slot bookkeeping.

Slots hold tokens in document order. `positions[s]` is the RoPE position the key in slot s was
rotated to, and `stale[s]` says its deeper-layer K/V were computed against other text
(STALE), or were not computed yet (MISSING: a deferred edit's rows, a lazy open, an evicted
cache; encoded before any read). The buffers are `[layers, kv_heads, capacity, head_dim]`,
contiguous in the slot dimension per layer and head, so moving a range of tokens is one strided
copy and the kernels stay simple. Every growth is asked of `request(total_bytes)` first (the
engine's memory budget), which may refuse.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from kvsplice import kernels

from .errors import MemoryBudgetError

STALE, MISSING = 1, 2  # per-slot marks; 0 (False) is exact
HEAD = 1  # slot 0 holds a start token (BOS, FIM prefix or separator), so slot = HEAD + token index


class KVCache:
    """K/V buffers; slots past `length` are scratch. Capacity starts at 0 and doubles on demand."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, device: torch.device,
                 dtype: torch.dtype, request: Callable[[int], None] | None = None):
        self.dims = (layers, kv_heads, head_dim)
        self.device, self.dtype = device, dtype
        self.request = request or (lambda nbytes: None)
        self.growth_cap: int | None = None  # doubling stops here (the window's bound); asks past it are exact
        self.k = self.v = torch.zeros(layers, kv_heads, 0, head_dim, device=device, dtype=dtype)
        self.length = 0
        self.positions: list[int] = []
        self.stale: list[int] = []

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return self.bytes_for(self.capacity)

    def bytes_for(self, slots: int) -> int:
        layers, heads, dim = self.dims
        return 2 * layers * heads * slots * dim * torch.empty(0, dtype=self.dtype).element_size()

    def reserve(self, slots: int) -> None:
        """Make room for `slots` slots (live + scratch), doubling so appends stay amortized O(1);
        just `slots` where doubling would not fit the budget. MemoryBudgetError if that does not."""
        if slots <= self.capacity:
            return
        doubled = 2 * self.capacity if self.growth_cap is None else min(2 * self.capacity, self.growth_cap)
        capacity = max(slots, doubled)
        try:
            self.request(self.bytes_for(capacity))
        except MemoryBudgetError:
            if capacity == slots:
                raise
            capacity = slots
            self.request(self.bytes_for(capacity))
        layers, heads, dim = self.dims
        keep = min(self.length, self.capacity)
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.zeros(layers, heads, capacity, dim, device=self.device, dtype=self.dtype)
            new[:, :, :keep] = old[:, :, :keep]
            setattr(self, name, new)

    def drop(self) -> None:
        """Free the buffers (bookkeeping stays; the owner marks what must be re-encoded)."""
        self.k = self.v = self.k.new_zeros(*self.dims[:2], 0, self.dims[2])

    def copy(self, request: Callable[[int], None] | None = None) -> "KVCache":
        clone = copy.copy(self)
        clone.request = request or self.request
        clone.request(self.nbytes)
        clone.k, clone.v = self.k.clone(), self.v.clone()
        clone.positions, clone.stale = list(self.positions), list(self.stale)
        return clone

    def move(self, start: int, end: int, shift: int, delta: int, inv_freq: torch.Tensor) -> None:
        """Move slots [start, end) by `shift` slots and rotate their keys by `delta` positions."""
        if end <= start or (shift == 0 and delta == 0):
            return
        self.reserve(end + shift)
        kernels.rotate_and_move_(self.k, self.v, start, end, shift, delta, inv_freq)

    def first_stale(self) -> int | None:
        return next((s for s, mark in enumerate(self.stale) if mark), None)

    def stale_count(self) -> int:
        return sum(1 for mark in self.stale if mark)

    def mark_encoded(self, start: int, end: int) -> None:
        """Slots [start, end) were just encoded at their own positions."""
        first = self.first_stale()
        exact = first is None or first >= start
        self.positions[start:end] = range(start, end)
        self.stale[start:end] = [0 if exact else STALE] * (end - start)

    def mark_missing(self, start: int, end: int) -> None:
        """Slots [start, end) hold new tokens whose K/V are still to be computed."""
        self.positions[start:end] = range(start, end)
        self.stale[start:end] = [MISSING] * (end - start)

    def pending(self, end: int, tail_tokens: int = 0, tail_end: int | None = None) -> list[tuple[int, int]]:
        """Slot ranges to encode before reading cache[:end]: every missing slot, and the tail
        from the first stale slot among the last `tail_tokens` before `tail_end` (default: end)
        up to tail_end. Sorted, disjoint."""
        tail_end = end if tail_end is None else tail_end
        tail = next((s for s in range(max(0, tail_end - tail_tokens), tail_end) if self.stale[s]), tail_end)
        missing = [s for s in range(end) if self.stale[s] == MISSING]
        return runs(missing + list(range(tail, tail_end)))

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[index, :, :self.length], self.v[index, :, :self.length]


def runs(slots: list[int]) -> list[tuple[int, int]]:
    """Sorted slots as half-open ranges of neighbours: [3, 4, 5, 9] -> [(3, 6), (9, 10)]."""
    ranges: list[tuple[int, int]] = []
    for s in sorted(set(slots)):
        if ranges and ranges[-1][1] == s:
            ranges[-1] = (ranges[-1][0], s + 1)
        else:
            ranges.append((s, s + 1))
    return ranges
