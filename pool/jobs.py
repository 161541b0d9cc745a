"""One thread for all model work. The engine and its sessions are not thread-safe, and one
thread keeps each document's jobs in the order they were submitted.

Jobs somebody waits on (a load, an open, an edit, a draft) are *urgent*; background work (a first
encode in slices, idle refresh) asks `queued()` between two layers and gives way when an urgent
job is waiting behind it.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class ModelThread:
    def __init__(self, name: str):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        # Urgent jobs submitted (by one submitting thread) and started (on the model thread):
        # one writer each, so no lock.
        self._submitted = self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any, urgent: bool = False) -> Future:
        """fn's future; after shutdown (a running job may still submit its follow-up) a
        cancelled one."""
        if self._closed:
            future: Future = Future()
            future.cancel()
            return future
        if not urgent:
            return self._pool.submit(fn, *args)
        self._submitted += 1
        return self._pool.submit(self._run_urgent, fn, *args)

    def _run_urgent(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._started += 1
        return fn(*args)

    def queued(self) -> bool:
        """Whether an urgent job is queued behind the running one."""
        return self._submitted > self._started

    def shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
