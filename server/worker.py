"""The model thread: the engine and every document's session live on one worker thread.

The engine is a `DocumentEngine` (kvsplice.pool.host): a `Host` of sessions on a model loaded
here, or with an engine URL (`kvsplice serve --engine URL`) a `RemoteEngine` on a Ray Serve pool
(remote_engine.py). The worker is the same for both: it keeps the order of jobs, the first-encode
slices, the published stats, idle refresh and cancellation; what crosses to a remote engine is
what the engine API takes (open(text), edit(range, new text), complete(cursor, ...), refresh,
close), never a whole text but at a (re)open.

Loads, edits and drafts run as jobs in submission order, so each session sees its document's
edits in the order the editor made them, and the event loop never waits on the model. A session
is (re)made from a text snapshot whenever it is missing (model loaded after the document opened,
opened with other session options) or not holding that text: the engine then raises
UnknownDocument, and the draft re-opens it from the text and retries once. Opening only
tokenizes: the window's first encode runs as slices of ENCODE_SLICE tokens, each a job of its
own behind whatever was queued meanwhile, so other documents, edits and drafts never wait for a
big one (a draft encodes what it reads itself). Slices and idle refresh give way: they stop
between two layers as soon as a job the user waits on (a load, open, edit or draft) is queued
behind them. The engine's memory budget drops least recently used caches; their sessions stay,
and a draft re-encodes what it reads.

After every job that touches a session the worker publishes that session's stats in `published`
(one dict item assigned per job), so that the event loop answers `kvsplice/stats` from it
without waiting behind the queue.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable

import torch

from kvsplice.engine import Cancelled, Engine, MemoryBudgetError, ModelLoadError
from kvsplice.engine.runtime import default_threads
from kvsplice.pool.host import DocumentEngine, EngineUnavailable, Host, Reopen, UnknownDocument, digest
from kvsplice.pool.jobs import ModelThread

from .documents import Edit
from .remote_engine import RemoteEngine
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
    """`engine_url`: the pool to use (None: load the model in this process)."""

    def __init__(self, engine_url: str | None = None):
        self._pool = ModelThread("kvsplice-model")
        self.engine_url = engine_url
        self.engine: DocumentEngine | None = None
        self.error = "the model has not been loaded yet"  # why there is no engine
        # Each open document's session options, least recently used first; a new dict per
        # (re)open, so that a first encode's slices stop when their session is replaced.
        self._docs: OrderedDict[str, dict] = OrderedDict()
        self.published: dict[str, dict] = {}  # each session's stats after its last job (see above)
        self.on_publish: Callable[[str, dict], None] = lambda uri, snapshot: None  # called on this thread

    # -- called on the event loop ---------------------------------------------------------

    def load(self, settings: Settings) -> asyncio.Future:
        """Drop every session and load settings' model (or connect to the engine pool); fails
        with ModelLoadError."""
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
            lambda: self.engine.text(uri) if self.engine is not None and uri in self._docs else None))

    def shutdown(self) -> None:
        self._pool.shutdown()

    def _submit(self, fn: Callable[..., Any], *args: Any, urgent: bool = False) -> Future:
        return self._pool.submit(fn, *args, urgent=urgent)

    def _post(self, fn: Callable[..., Any], *args: Any, urgent: bool = False) -> None:
        """Run fn on the worker without waiting; a failure is logged, the worker goes on."""
        def report(done: Future) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.error("%s failed", fn.__name__, exc_info=done.exception())

        self._submit(fn, *args, urgent=urgent).add_done_callback(report)

    # -- on the worker thread -------------------------------------------------------------

    def _load(self, settings: Settings) -> DocumentEngine:
        self._drop_sessions()
        self.engine = None
        self.error = f"model {settings.model!r} is loading" if self.engine_url is None else \
            f"connecting to the engine pool at {self.engine_url}"
        try:
            self.engine = self._connect() if self.engine_url is not None else self._load_here(settings)
        except Exception as exc:  # any failure to load must reach the user as a message, not a crash
            self.error = str(exc) if isinstance(exc, ModelLoadError) else \
                f"could not load model {settings.model!r}: {type(exc).__name__}: {exc}"
            raise ModelLoadError(self.error) from exc
        return self.engine

    def _load_here(self, settings: Settings) -> Host:
        threads = settings.threads or default_threads()
        torch.set_num_threads(threads)
        log.info("torch uses %d CPU thread(s) (%s)", threads,
                 "the threads setting" if settings.threads else "default: half the cores, 1 to 4")
        engine = Engine.load(settings.model, device=settings.device, dtype=settings.dtype,
                             quant=settings.quant, memory_budget_mb=settings.memory_budget_mb)
        if engine.cpu_kernels is not None:
            log.info("CPU kernels: %s", engine.cpu_kernels)
        return Host(engine)

    def _connect(self) -> RemoteEngine:
        """The pool serves its own model: the model, device, dtype, quant, threads and
        memory_budget_mb settings are the pool's to choose (`kvsplice pool serve`)."""
        return RemoteEngine(self.engine_url)

    def _open(self, uri: str, text: str, settings: Settings) -> None:
        if self.engine is None:
            return
        options = self._open_session(uri, text, settings)
        self._encode_slice(uri, options)

    def _open_session(self, uri: str, text: str, settings: Settings) -> dict:
        options = self._docs[uri] = settings.session_options()
        self._docs.move_to_end(uri)
        try:
            self.engine.open(uri, text, options)
        finally:
            self._publish()
        return options

    def _encode_slice(self, uri: str, options: dict) -> None:
        """Encode the next slice of a window's first encode, then queue the next slice behind
        whatever was submitted meanwhile (until the window is encoded, or the session replaced)."""
        if self._docs.get(uri) is not options:
            return
        try:
            if self.engine.encode(uri, ENCODE_SLICE, interrupt=self._queued):
                return
        except Cancelled:
            pass  # a user's job is waiting: it runs first, this slice is taken up again after it
        except (MemoryBudgetError, UnknownDocument) as exc:
            log.info("%s: %s", uri, exc)
            return
        finally:
            self._publish()
        self._post(self._encode_slice, uri, options)

    def _set_budget(self, memory_budget_mb: float) -> None:
        if self.engine is not None:
            self.engine.set_budget(memory_budget_mb)

    def _edit(self, uri: str, edit: Edit, text_after: str, settings: Settings) -> None:
        """Patch the session; one without a cache stays without (remade on its next draft)."""
        if uri not in self._docs:
            return
        try:
            self.engine.edit(uri, edit.start, edit.end, edit.text, digest(text_after))
        except UnknownDocument as exc:
            log.warning("%s; it is re-opened on its next draft", exc)
            self._close(uri)
            return
        finally:
            self._publish()
        self._docs.move_to_end(uri)

    def _complete(self, job: DraftJob, uri: str, text: str, cursor: int, stop: Stop,
                  settings: Settings) -> list[str]:
        """Drafts from uri's session, re-opened from `text` first when it has none under these
        options; an engine that holds another text (or none: a lost replica, an eviction) says
        UnknownDocument, and the draft re-opens it and retries once."""
        if job.stopped.is_set():
            raise Cancelled()
        if self.engine is None and self.engine_url is not None:  # the pool may be up by now
            try:
                self.engine = self._connect()
            except ModelLoadError as exc:
                self.error = str(exc)
        if self.engine is None:
            raise ModelLoadError(self.error)
        options = settings.session_options()
        reopen = None if self._docs.get(uri) == options else Reopen(text, options)
        try:
            try:
                return self._draft(job, uri, text, cursor, stop, settings, reopen)
            except UnknownDocument as exc:
                log.warning("%s; re-encoding it from the editor's text", exc)
            try:
                return self._draft(job, uri, text, cursor, stop, settings, Reopen(text, options))
            except UnknownDocument as exc:
                raise EngineUnavailable(f"the engine lost {uri} again right after re-opening it ({exc})") from exc
        finally:
            self._publish()

    def _draft(self, job: DraftJob, uri: str, text: str, cursor: int, stop: Stop, settings: Settings,
               reopen: Reopen | None) -> list[str]:
        if reopen is not None:
            self._docs[uri] = reopen.options
        self._docs.move_to_end(uri)
        return self.engine.complete(uri, digest(text), cursor, stop, max_new_tokens=settings.max_new_tokens,
                                    n=settings.drafts, speculate=settings.speculate, cancelled=job.stopped.is_set,
                                    reopen=reopen)

    def _refresh(self, budget_tokens: int) -> int:
        for uri in reversed(self._docs):
            if not (self.published.get(uri) or {}).get("stale"):
                continue
            try:
                refreshed = self.engine.refresh(uri, budget_tokens, interrupt=self._queued)
            except Cancelled:
                return 0
            except (MemoryBudgetError, UnknownDocument):
                continue
            finally:
                self._publish()
            if refreshed:
                return refreshed
            if self._queued():
                return 0
        return 0

    def _queued(self) -> bool:
        """Whether a job the user waits on is queued behind the running one."""
        return self._pool.queued()

    def _publish(self) -> None:
        """The stats the engine recorded since the last job (see DocumentEngine.take_changes)."""
        if self.engine is None:
            return
        for uri, snapshot in self.engine.take_changes().items():
            if uri in self._docs:
                self.published[uri] = snapshot
                self.on_publish(uri, snapshot)

    def _close(self, uri: str) -> None:
        if self._docs.pop(uri, None) is not None:
            self.engine.close(uri)
            self.published.pop(uri, None)

    def _drop_sessions(self) -> None:
        for uri in list(self._docs):
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
