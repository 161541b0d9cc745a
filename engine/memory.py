"""One budget for every KV buffer the engine holds: live windows, draft scratch, growth headroom.

A cache asks before it grows, never after: the least recently used other caches are dropped
(their windows keep text and ids and are re-encoded on next use), and a cache that cannot fit
even alone gets a MemoryBudgetError that says what it needs. So the budget holds at every moment
whatever a client sends.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Protocol

from .errors import MemoryBudgetError


class Holder(Protocol):
    """What the budget can ask of a cache owner."""

    def drop_buffers(self) -> None: ...


class MemoryBudget:
    def __init__(self, limit_bytes: float | None = None):
        self.limit = limit_bytes  # None: no limit
        self._held: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()  # least recent first
        self._evicting = True

    @contextmanager
    def without_eviction(self) -> Iterator[None]:
        """Background work (a first encode in slices, idle refresh) must not drop the cache of a
        document the user just used: inside, a request that does not fit as it is fails."""
        self._evicting = False
        try:
            yield
        finally:
            self._evicting = True

    @property
    def used(self) -> int:
        self._forget_dead()
        return sum(nbytes for _, nbytes in self._held.values())

    def touch(self, owner: Holder) -> None:
        """owner was just used: it is the last to be dropped."""
        if id(owner) in self._held:
            self._held.move_to_end(id(owner))

    def request(self, owner: Holder, nbytes: int, what: str = "a document's cache") -> None:
        """owner will hold `nbytes` in all (instead of what it holds now); make room or raise."""
        self._forget_dead()
        if self.limit is not None:
            if nbytes > self.limit:
                raise MemoryBudgetError(
                    f"{what} needs {nbytes / 2**20:.1f} MB, more than the whole memory budget of "
                    f"{self.limit / 2**20:.1f} MB; raise memory_budget_mb or lower context_tokens")
            others = [key for key in self._held if key != id(owner)] if self._evicting else []
            for key in others:
                if self.used - self._nbytes(id(owner)) + nbytes <= self.limit:
                    break
                victim = self._held.pop(key)[0]()
                if victim is not None:
                    victim.drop_buffers()
            if self.used - self._nbytes(id(owner)) + nbytes > self.limit:
                raise MemoryBudgetError(
                    f"{what} needs {nbytes / 2**20:.1f} MB; the memory budget of {self.limit / 2**20:.1f} MB "
                    f"is held by documents in use (it waits for its next draft)")
        self._held[id(owner)] = (weakref.ref(owner), nbytes)
        self._held.move_to_end(id(owner))

    def release(self, owner: Holder) -> None:
        self._held.pop(id(owner), None)

    def _nbytes(self, key: int) -> int:
        entry = self._held.get(key)
        return entry[1] if entry else 0

    def _forget_dead(self) -> None:
        for key in [k for k, (ref, _) in self._held.items() if ref() is None]:
            del self._held[key]
