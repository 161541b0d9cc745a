"""`kvsplice serve`: the language server (pygls 2). Handlers are thin; `KvspliceServer` wires
documents (mirror + tree) to the model worker and answers in LSP terms.

Positions use the client's first offered encoding among utf-8, utf-16 and utf-32 (pygls'
negotiation), utf-16 when it offers none. Document sync is incremental; each change reaches the
mirror, the syntax tree and the engine session in order (see `change`).

Answers to completion requests (`textDocument/inlineCompletion`, `textDocument/completion`):
- drafts for the cursor; nothing for languages outside the `languages` setting;
- `RequestCancelled` (-32800) when the client cancels it or a newer completion request for the
  same document supersedes it (decoding stops before the next token);
- `ContentModified` (-32801) when the document changed after the request was made (a draft
  already being decoded finishes first, so a newer request can still supersede it);
- `RequestFailed` (-32803) while no model is usable (the message says why: the load error), or
  while the document is out of step after a change that did not fit it (until a full-text change);
- `InvalidParams` (-32602) for unknown documents, positions outside the document, params that
  do not parse.
Requests that arrive while the model loads wait for it (the load is the worker's first job).

Custom requests:
- `kvsplice/stats` `{uri?}` -> `{model, device, dtype, ready, error, documents: [{uri, version,
  language, cached, tokens, reused, rotated, encoded, stale, last_patch_ms, last_draft_ms, ...}]}`
  (the edit counts are those of the last edit; `cached` is false while a document has no cache).
- `kvsplice/debugDocument` `{uri}` -> the mirror's text, the syntax tree's text and whether it
  equals a fresh parse, and the engine session's text: for tests of the sync path.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from importlib.metadata import version

import cattrs
from lsprotocol import types
from pygls.exceptions import (JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams,
                              JsonRpcRequestCancelled)
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from kvsplice.engine import Cancelled, ModelLoadError

from .documents import Document, PositionError
from .settings import RELOAD, SESSION, Settings
from .worker import DraftJob, ModelWorker

log = logging.getLogger(__name__)
STATS = "kvsplice/stats"
DEBUG_DOCUMENT = "kvsplice/debugDocument"
IDLE_REFRESH_CHUNK = 128  # tokens re-encoded per idle worker job


class RequestFailed(JsonRpcException):
    CODE = -32803


class KvspliceProtocol(LanguageServerProtocol):
    """pygls' protocol with two changes. Open documents are mirrored by documents.py only
    (pygls' own copies are not kept: see there why). A request whose params do not parse
    still gets its one answer, an InvalidParams error saying what was wrong."""

    def _register_builtin_features(self):
        super()._register_builtin_features()
        for method in (types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE,
                       types.TEXT_DOCUMENT_DID_CLOSE):
            self.fm.builtin_features.pop(method)

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise
            cause = exc.__cause__
            why = "; ".join(cattrs.transform_error(cause)) if isinstance(cause, cattrs.ClassValidationError) \
                else str(cause or exc)
            error = JsonRpcInvalidParams(f"invalid params for {data['method']}: {why}")
            self._send_response(data["id"], error=error.to_response_error())
            return None  # answered: nothing left to handle

    def handle_message(self, message):
        if message is not None:
            super().handle_message(message)


class RoutineErrors(logging.Filter):
    """pygls logs every error answer with a traceback; cancelled and outdated requests are routine."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], (JsonRpcRequestCancelled,
                                                                         JsonRpcContentModified)))


class KvspliceServer(LanguageServer):
    def __init__(self):
        super().__init__("kvsplice", version("kvsplice"), protocol_cls=KvspliceProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.documents: dict[str, Document] = {}
        self.worker = ModelWorker()
        self.pending: dict[str, DraftJob] = {}  # the live completion request of each document
        self.activity = asyncio.Event()  # set by edits, requests, settings: restarts the idle timer
        self.idle_refresh: asyncio.Future | None = None
        self.started = False

    # -- settings and the model ---------------------------------------------------------------

    def configure(self, options: object) -> None:
        """Apply settings; reload the model or re-encode documents when they changed so."""
        try:
            new, unknown = self.settings.updated(options)
        except ValueError as exc:
            self.show(types.MessageType.Error, f"kvsplice: {exc}; settings unchanged")
            return
        if unknown:
            self.show(types.MessageType.Warning, f"kvsplice: unknown settings ignored: {', '.join(unknown)}")
        old, self.settings = self.settings, new
        self.activity.set()  # restarts the idle timer under the new settings
        if not self.started:
            return
        reload = any(getattr(old, key) != getattr(new, key) for key in RELOAD)
        reopen = reload or any(getattr(old, key) != getattr(new, key) for key in SESSION)
        if reload:
            self.load_model()
        for doc in self.documents.values():
            if not new.serves(doc.language_id):
                self.worker.close(doc.uri)
            elif reopen or not old.serves(doc.language_id):
                self.worker.open(doc.uri, doc.text, new)

    def load_model(self) -> None:
        """Queue the load first, so that documents opened meanwhile are encoded after it."""
        if not self.started:
            self.started = True
            self.idle_refresh = asyncio.ensure_future(self._refresh_when_idle())
        asyncio.ensure_future(self._report_load(self.worker.load(self.settings), self.settings))

    async def _refresh_when_idle(self) -> None:
        """Once `idle_refresh_ms` pass without edits or requests, re-encode stale tokens, a
        chunk per worker job, until every cache is exact or the user is back. A chunk stops
        between two layers when an edit or a request is queued behind it (worker.py)."""
        while True:
            await self.activity.wait()
            self.activity.clear()
            await asyncio.sleep(self.settings.idle_refresh_ms / 1000)
            if self.activity.is_set() or self.pending or not self.settings.idle_refresh_ms:
                continue
            try:
                while not self.activity.is_set() and await self.worker.refresh(IDLE_REFRESH_CHUNK):
                    pass
            except Exception:  # a failed refresh leaves the cache stale, not the server down
                log.exception("idle refresh failed")

    async def _report_load(self, load: asyncio.Future, settings: Settings) -> None:
        """`$/progress` begin / report (seconds so far) / end, where the client takes it."""
        progress, token = self.work_done_progress, None
        window = self.client_capabilities.window
        if window is not None and window.work_done_progress:
            try:
                await progress.create_async(candidate := str(uuid.uuid4()))
                token = candidate
            except Exception as exc:  # the client refused: load without a progress bar
                log.warning("window/workDoneProgress/create failed: %s", exc)
        if token:
            progress.begin(token, types.WorkDoneProgressBegin(
                title=f"kvsplice: loading {settings.model}", message=f"on {settings.device}"))
        seconds = 0
        while token and not load.done():
            await asyncio.wait([load], timeout=1.0)
            seconds += 1
            if not load.done():
                progress.report(token, types.WorkDoneProgressReport(message=f"{seconds} s"))
        try:
            engine = await load
        except ModelLoadError as exc:
            message = f"kvsplice: {exc}"
            self.show(types.MessageType.Error, message)
        else:
            message = f"{engine.name} ready on {engine.device} ({_dtype_name(engine)})"
            self.window_log_message(types.LogMessageParams(types.MessageType.Info, f"kvsplice: {message}"))
        if token:
            progress.end(token, types.WorkDoneProgressEnd(message=message))

    # -- documents --------------------------------------------------------------------------

    def open(self, item: types.TextDocumentItem) -> None:
        encoding = str(getattr(self.workspace.position_encoding, "value", self.workspace.position_encoding))
        doc = self.documents[item.uri] = Document(item.uri, item.text, item.version, item.language_id, encoding)
        if self.settings.serves(doc.language_id):
            self.worker.open(doc.uri, doc.text, self.settings)

    def change(self, params: types.DidChangeTextDocumentParams) -> None:
        """Apply each change in order to mirror, tree and session. A change that does not fit
        the mirror leaves the document broken (no drafts) until a whole-document change."""
        doc = self.documents.get(params.text_document.uri)
        if doc is None:
            self.show(types.MessageType.Error,
                      f"kvsplice: didChange for {params.text_document.uri}, which is not open; ignored")
            return
        self.activity.set()
        serve = self.settings.serves(doc.language_id)
        for i, change in enumerate(params.content_changes):
            if doc.broken and isinstance(change, types.TextDocumentContentChangePartial):
                continue
            try:
                edit = doc.apply(change)
            except PositionError as exc:
                doc.broken = f"change {i} of version {params.text_document.version}: {exc}"
                self.show(types.MessageType.Error, f"kvsplice: {doc.uri} is out of step: {doc.broken}; "
                                                   "send its full text or reopen it")
                continue
            doc.broken = None
            if serve:
                self.worker.edit(doc.uri, edit, doc.text, self.settings)
        doc.version = params.text_document.version

    def close(self, uri: str) -> None:
        if self.documents.pop(uri, None) is None:
            self.show(types.MessageType.Warning, f"kvsplice: didClose for {uri}, which is not open; ignored")
            return
        if (job := self.pending.pop(uri, None)) is not None:
            job.cancel("the document was closed")
        self.worker.close(uri)

    def document(self, uri: str) -> Document:
        doc = self.documents.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"document {uri} is not open (send textDocument/didOpen first)")
        return doc

    # -- requests ---------------------------------------------------------------------------

    async def drafts(self, uri: str, position: types.Position) -> list[types.TextEdit]:
        """Drafts at a position as edits, with the answer rules of this module's docstring."""
        doc = self.document(uri)
        if doc.broken:
            raise RequestFailed(f"{uri} is out of step with the editor ({doc.broken})")
        try:
            cursor = doc.offset_at(position)
        except PositionError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        settings, version = self.settings, doc.version
        if not settings.serves(doc.language_id):
            return []
        stop = doc.draft_stop(cursor, settings.max_lines)
        self.activity.set()
        job = DraftJob(asyncio.get_running_loop())
        if (older := self.pending.get(uri)) is not None:
            older.cancel("superseded by a newer completion request for this document")
        self.pending[uri] = job
        try:
            texts = await self.worker.complete(job, uri, doc.text, cursor, stop, settings)
        except asyncio.CancelledError:
            job.cancel("cancelled by the client")
            raise
        except Cancelled as exc:
            raise JsonRpcRequestCancelled(str(exc) or "cancelled") from None
        except ModelLoadError as exc:
            raise RequestFailed(str(exc)) from None
        finally:
            if self.pending.get(uri) is job:
                del self.pending[uri]
        if self.documents.get(uri) is not doc or doc.version != version:
            raise JsonRpcContentModified(f"{uri} changed (version {version} -> {doc.version}) while drafting")
        return [doc.draft_edit(cursor, text) for text in texts]

    async def stats(self, params: object) -> dict:
        docs = [self.document(_uri(params))] if params else list(self.documents.values())
        per_uri = await self.worker.stats([doc.uri for doc in docs])
        engine = self.worker.engine
        return {
            "model": engine.name if engine else self.settings.model,
            "device": str(engine.device) if engine else self.settings.device,
            "dtype": _dtype_name(engine) if engine else self.settings.dtype,
            "ready": engine is not None,
            "error": None if engine else self.worker.error,
            "documents": [{"uri": doc.uri, "version": doc.version, "language": doc.language_id,
                           "cached": per_uri[doc.uri] is not None, **(per_uri[doc.uri] or {})} for doc in docs],
        }

    async def debug_document(self, params: object) -> dict:
        doc = self.document(_uri(params))
        tree = doc.syntax.tree.root_node if doc.syntax else None
        return {
            "version": doc.version,
            "text": doc.text,
            "tree": None if tree is None else {
                "start_byte": tree.start_byte, "text": tree.text.decode(),
                "matches_fresh_parse": doc.syntax.matches_fresh_parse(doc.text)},
            "session_text": await self.worker.session_text(doc.uri),
        }

    def shut_down(self) -> None:
        if self.idle_refresh is not None:
            self.idle_refresh.cancel()
        for job in self.pending.values():
            job.cancel("the server is shutting down")
        self.worker.shutdown()

    def show(self, kind: types.MessageType, message: str) -> None:
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))


def _dtype_name(engine) -> str:
    return str(engine.dtype).removeprefix("torch.")


def _uri(params: object) -> str:
    """The uri of custom-request params (pygls hands them over as namedtuples)."""
    uri = getattr(params, "uri", None)
    if not isinstance(uri, str):
        raise JsonRpcInvalidParams(f"expected params {{\"uri\": string}}, got {params!r}")
    return uri


server = KvspliceServer()
logging.getLogger("pygls.protocol.json_rpc").addFilter(RoutineErrors())


@server.feature(types.INITIALIZE)
def initialize(ls: KvspliceServer, params: types.InitializeParams) -> None:
    ls.configure(params.initialization_options)


@server.feature(types.INITIALIZED)
def initialized(ls: KvspliceServer, params: types.InitializedParams) -> None:
    ls.load_model()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: KvspliceServer, params: types.DidChangeConfigurationParams) -> None:
    ls.configure(params.settings)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: KvspliceServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.open(params.text_document)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: KvspliceServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.change(params)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: KvspliceServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.close(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: KvspliceServer, params: types.InlineCompletionParams) -> list:
    edits = await ls.drafts(params.text_document.uri, params.position)
    return [types.InlineCompletionItem(insert_text=e.new_text, range=e.range) for e in edits]


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
async def completion(ls: KvspliceServer, params: types.CompletionParams) -> types.CompletionList:
    edits = await ls.drafts(params.text_document.uri, params.position)
    return types.CompletionList(is_incomplete=True, items=[
        types.CompletionItem(label=e.new_text.strip().split("\n")[0][:80] or e.new_text, text_edit=e,
                             kind=types.CompletionItemKind.Text, detail="kvsplice draft",
                             sort_text=f"{i:03d}", insert_text_format=types.InsertTextFormat.PlainText)
        for i, e in enumerate(edits)])


@server.feature(STATS)
async def stats(ls: KvspliceServer, params: object) -> dict:
    return await ls.stats(params)


@server.feature(DEBUG_DOCUMENT)
async def debug_document(ls: KvspliceServer, params: object) -> dict:
    return await ls.debug_document(params)


@server.feature(types.SHUTDOWN)
def shutdown(ls: KvspliceServer, params: None) -> None:
    ls.shut_down()
