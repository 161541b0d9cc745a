"""The model thread: the engine and every document's session live on one worker thread.

Loads, edits and drafts run as jobs in submission order, so each session sees its document's
edits in the order the editor made them, and the event loop never waits on the model. A session
is (re)made from a text snapshot whenever it is missing (model loaded after the document opened,
opened with other session options) or not holding that text. Opening only tokenizes: the
window's first encode runs as slices of ENCODE_SLICE tokens, each a job of its own behind
whatever was queued meanwhile, so other documents, edits and drafts never wait for a big one (a
draft encodes what it reads itself). Slices and idle refresh give way: they stop between two
layers as soon as a job the user waits on (a load, open, edit or draft) is queued behind them.
The engine's memory budget drops least recently used caches; their sessions stay, and a draft
re-encodes what it reads.

After every job that touches a session the worker publishes that session's stats in `published`
(one dict item assigned per job), so that the event loop answers `kvsplice/stats` from it
without waiting behind the queue.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import torch

from kvsplice.engine import Cancelled, Engine, MemoryBudgetError, ModelLoadError, Session
from kvsplice.engine.runtime import default_threads

from .documents import Edit
from .settings import Settings
from .syntax import Stop

log = logging.getLogger(__name__)
ENCODE_SLICE = 256  # tokens per first-encode job: a second or two on a laptop CPU, less on a GPU


class DraftJob:
    """One completion request: answered exactly once, cancellable before and during decoding."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.answer: asyncio.Future = loop.create_future()
        self.stopped = threading.Event()

    def cancel(self, why: str) -> None:
        """Answer Cancelled now; a decode in progress stops before its next token."""
        self.stopped.set()
        if not self.answer.done():
            self.answer.set_exception(Cancelled(why))


class ModelWorker:
    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvsplice-model")
        self.engine: Engine | None = None
        self.error = "the model has not been loaded yet"  # why there is no engine
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._options: dict[str, dict] = {}  # what each session was opened with
        self.published: dict[str, dict] = {}  # each session's stats after its last job (see above)
        self.on_publish: Callable[[str, dict], None] = lambda uri, snapshot: None  # called on this thread
        # Urgent jobs submitted (event loop thread) and started (worker thread): one writer each.
        self._submitted = self._started = 0

    # -- called on the event loop ---------------------------------------------------------

    def load(self, settings: Settings) -> asyncio.Future:
        """Drop every session and load settings' model; fails with ModelLoadError."""
        return asyncio.wrap_future(self._submit(self._load, settings, urgent=True))

    def open(self, uri: str, text: str, settings: Settings) -> None:
        """Make a document's session now and encode its window in slices, so that its first
        draft finds the cache ready (or encodes the rest itself)."""
        self._post(self._open, uri, text, settings, urgent=True)

    def set_budget(self, memory_budget_mb: float) -> None:
        self._post(self._set_budget, memory_budget_mb)

    def edit(self, uri: str, edit: Edit, text_after: str, settings: Settings) -> None:
        self._post(self._edit, uri, edit, text_after, settings, urgent=True)

    def close(self, uri: str) -> None:
        self._post(self._close, uri)

    async def complete(self, job: DraftJob, uri: str, text: str, cursor: int, stop: Stop,
                       settings: Settings) -> list[str]:
        """Drafts at `cursor` of `text` (the document as the request saw it)."""
        loop = asyncio.get_running_loop()
        future = self._submit(self._complete, job, uri, text, cursor, stop, settings, urgent=True)
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(_settle, job.answer, done))
        return await job.answer

    def refresh(self, budget_tokens: int) -> asyncio.Future:
        """Re-encode up to `budget_tokens` stale tokens of the most recently used document that
        has any; resolves to how many became exact (0: every cache is exact)."""
        return asyncio.wrap_future(self._submit(self._refresh, budget_tokens))

    def session_text(self, uri: str) -> asyncio.Future:
        return asyncio.wrap_future(self._submit(
            lambda: s.text if (s := self._sessions.get(uri)) else None))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., Any], *args: Any, urgent: bool = False) -> Future:
        if not urgent:
            return self._pool.submit(fn, *args)
        self._submitted += 1
        return self._pool.submit(self._run_urgent, fn, *args)

    def _run_urgent(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._started += 1
        return fn(*args)

    def _post(self, fn: Callable[..., Any], *args: Any, urgent: bool = False) -> None:
        """Run fn on the worker without waiting; a failure is logged, the worker goes on."""
        def report(done: Future) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("%s failed", fn.__name__, exc_info=done.exception())

        self._submit(fn, *args, urgent=urgent).add_done_callback(report)

    # -- on the worker thread -------------------------------------------------------------

    def _load(self, settings: Settings) -> Engine:
        self._drop_sessions()
        self.engine, self.error = None, f"model {settings.model!r} is loading"
        threads = settings.threads or default_threads()
        torch.set_num_threads(threads)
        log.info("torch uses %d CPU thread(s) (%s)", threads,
                 "the threads setting" if settings.threads else "default: half the cores, 1 to 4")
        try:
            self.engine = Engine.load(settings.model, device=settings.device, dtype=settings.dtype,
                                      quant=settings.quant, memory_budget_mb=settings.memory_budget_mb)
        except Exception as exc:  # any failure to load must reach the user as a message, not a crash
            self.error = str(exc) if isinstance(exc, ModelLoadError) else \
                f"could not load model {settings.model!r}: {type(exc).__name__}: {exc}"
            raise ModelLoadError(self.error) from exc
        return self.engine

    def _session(self, uri: str, text: str, settings: Settings) -> Session:
        """uri's session holding exactly `text` under settings' session options, made or remade
        as needed; now the most recently used."""
        if self.engine is None:
            raise ModelLoadError(self.error)
        session, options = self._sessions.get(uri), settings.session_options()
        if session is not None and session.text != text:
            log.warning("the cache of %s was out of step with the document; re-encoding it", uri)
        if session is not None and (session.text != text or self._options[uri] != options):
            self._close(uri)
            session = None
        if session is None:
            session = self._sessions[uri] = self.engine.open_session(text, encode=False, **options)
            self._options[uri] = options
            self._publish(uri)
        self._sessions.move_to_end(uri)
        return session

    def _open(self, uri: str, text: str, settings: Settings) -> None:
        if self.engine is not None:
            self._encode_slice(uri, self._session(uri, text, settings))

    def _encode_slice(self, uri: str, session: Session) -> None:
        """Encode the next slice of a window's first encode, then queue the next slice behind
        whatever was submitted meanwhile (until the window is encoded, or the session replaced)."""
        if self._sessions.get(uri) is not session or not session.window.missing:
            return
        try:
            with self.engine.memory.without_eviction():
                session.encode_missing(ENCODE_SLICE, interrupt=self._queued)
        except Cancelled:
            pass  # a user's job is waiting: it runs first, this slice is taken up again after it
        except MemoryBudgetError as exc:
            log.info("%s: %s", uri, exc)
            return
        finally:
            self._publish(uri)
        self._post(self._encode_slice, uri, session)

    def _set_budget(self, memory_budget_mb: float) -> None:
        if self.engine is not None:
            self.engine.memory.limit = memory_budget_mb * 2**20

    def _edit(self, uri: str, edit: Edit, text_after: str, settings: Settings) -> None:
        """Patch the session; one without a cache stays without (remade on its next draft)."""
        session = self._sessions.get(uri)
        if session is None:
            return
        try:
            session.edit(edit.start, edit.end, edit.text)
        except ValueError:
            log.exception("edit of %s failed; its cache is dropped and remade on next use", uri)
        if session.text != text_after:
            self._close(uri)
            return
        self._publish(uri)
        self._sessions.move_to_end(uri)

    def _complete(self, job: DraftJob, uri: str, text: str, cursor: int, stop: Stop,
                  settings: Settings) -> list[str]:
        if job.stopped.is_set():
            raise Cancelled()
        session = self._session(uri, text, settings)
        try:
            return session.complete(cursor, max_new_tokens=settings.max_new_tokens, n=settings.drafts,
                                    stop=stop, cancelled=job.stopped.is_set, speculate=settings.speculate)
        finally:
            self._publish(uri)

    def _refresh(self, budget_tokens: int) -> int:
        for uri, session in reversed(self._sessions.items()):
            try:
                with self.engine.memory.without_eviction():
                    refreshed = session.refresh(budget_tokens, interrupt=self._queued)
            except MemoryBudgetError:
                continue
            if refreshed:
                self._publish(uri)
                return refreshed
            if self._queued():
                return 0
        return 0

    def _queued(self) -> bool:
        """Whether a job the user waits on is queued behind the running one."""
        return self._submitted > self._started

    def _publish(self, uri: str) -> None:
        """uri's stats, and those of any other session whose cache the budget dropped meanwhile."""
        for other, session in self._sessions.items():
            if other == uri or self.published.get(other, {}).get("cached") != session.window.resident:
                snapshot = self.published[other] = {**session.stats(), "cached": session.window.resident}
                self.on_publish(other, snapshot)

    def _close(self, uri: str) -> None:
        session = self._sessions.pop(uri, None)
        if session is not None:
            session.close()
            del self._options[uri]
            self.published.pop(uri, None)

    def _drop_sessions(self) -> None:
        for uri in list(self._sessions):
            self._close(uri)


def _settle(answer: asyncio.Future, done: Future) -> None:
    """Copy a worker result into the job's answer, unless it was answered (cancelled) already."""
    if answer.done():
        return
    if done.cancelled():
        answer.set_exception(Cancelled("the server is shutting down"))
    elif done.exception() is not None:
        answer.set_exception(done.exception())
    else:
        answer.set_result(done.result())
