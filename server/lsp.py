"""`kvsplice serve`: the language server (pygls 2). Handlers are thin; `KvspliceServer` wires
documents (mirror + tree) to the model worker and answers in LSP terms.

Positions use the client's first offered encoding among utf-8, utf-16 and utf-32 (pygls'
negotiation), utf-16 when it offers none; a character past the end of its line means the line's
end (LSP). Document sync is incremental; each change reaches the mirror, the syntax tree and the
engine session in order (see `change`).

Every input gets the answer the specs give it (`KvspliceProtocol.receive`; frames are read by
framing.py, which finds its way back after garbage):
- a body that is not JSON: Parse error (-32700, id null); not a JSON-RPC message, or an id that
  is neither an integer nor a string: InvalidRequest (-32600; id null unless the message names
  a method and a valid id);
- before `initialize`: ServerNotInitialized (-32002) for requests, notifications dropped; a
  second `initialize`, and any request after `shutdown`: InvalidRequest; `exit` ends the process
  at once, with code 0 after `shutdown` and 1 otherwise, as does the end of the input stream;
- params that do not parse (cattrs, without its coercions: 1.5, "3" and true are not integers):
  InvalidParams for a request; for a notification that may have changed a document's text, the
  document is out of step (`out_of_step`, below).
A document is out of step when a change could not be applied or could not be read: its drafts
answer RequestFailed until a whole-document change or a reopen, and the client is told.

Answers to completion requests (`textDocument/inlineCompletion`, `textDocument/completion`):
- drafts for the cursor; nothing for languages outside the `languages` setting;
- `RequestCancelled` (-32800) when the client cancels it or a newer completion request for the
  same document supersedes it (decoding stops before the next token);
- `ContentModified` (-32801) when the document changed after the request was made (a draft
  already being decoded finishes first, so a newer request can still supersede it);
- `RequestFailed` (-32803) while no model is usable (the message says why: the load error),
  while the document is out of step, or when its window cannot fit the memory budget;
- `InvalidParams` (-32602) for unknown documents, lines past the end of the document, params
  that do not parse.
Requests that arrive while the model loads wait for it (the load is the worker's first job).

Custom requests:
- `kvsplice/stats` `{uri?}` -> `{model, device, dtype, ready, error, documents: [{uri, version,
  language, in_step, cached, tokens, reused, rotated, encoded, stale, last_patch_ms,
  last_draft_ms, last_decode: {forwards, tokens, proposed, accepted}, window: {start, end,
  context_tokens}, ready, encoding: {done, total} | null,
  ...}]}` (the edit counts are those of the last edit; `cached` is false while a document has
  no cache; `ready` is false until its window is encoded, `encoding` says how far that is;
  `tokens` counts the window's). Each document's first encode is also reported as
  `$/progress` ("kvsplice: encoding NAME", "done/total tokens"). Answered at once from what the model worker published after its last
  job for each document, never queued behind model work: right after an edit it may not count
  that edit yet.
- `kvsplice/debugDocument` `{uri}` -> the mirror's text, the syntax tree's text and whether it
  equals a fresh parse, and the engine session's text: for tests of the sync path.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from functools import partial
from importlib.metadata import version
from typing import Awaitable, Callable, NoReturn

import cattrs
from lsprotocol import types
from pygls.exceptions import (JsonRpcContentModified, JsonRpcException, JsonRpcInternalError,
                              JsonRpcInvalidParams, JsonRpcInvalidRequest, JsonRpcParseError,
                              JsonRpcRequestCancelled, JsonRpcServerNotInitialized)
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, default_converter

from kvsplice.engine import Cancelled, MemoryBudgetError, ModelLoadError

from .documents import Document, PositionError
from .framing import CHUNK, Framer, Garbage, read_stdin
from .progress import EncodeProgress, Progress
from .settings import RELOAD, SESSION, Settings
from .syntax import Trees
from .worker import DraftJob, ModelWorker

log = logging.getLogger(__name__)
STATS = "kvsplice/stats"
DEBUG_DOCUMENT = "kvsplice/debugDocument"
IDLE_REFRESH_CHUNK = 128  # tokens re-encoded per idle worker job
TEXT_CHANGES = (types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE)
METHOD = re.compile(rb'"method"\s*:\s*"([^"\\]*)"')
URI = re.compile(rb'"uri"\s*:\s*("(?:[^"\\]|\\.)*")')


class RequestFailed(JsonRpcException):
    CODE = -32803


def strict_converter() -> cattrs.Converter:
    """pygls' converter without cattrs' coercions, which call int() and str() on anything
    (a position of 1.5, "3" or true would become 1, 3 and 1)."""
    converter = default_converter()
    for kind in (int, str, bool, float):
        converter.register_structure_hook(kind, partial(_exactly, kind))
    return converter


def _exactly(kind: type, value: object, _: type) -> object:
    number = kind is float and isinstance(value, int)
    if isinstance(value, bool) != (kind is bool) or not (isinstance(value, kind) or number):
        raise TypeError(f"expected {'a number' if kind is float else kind.__name__}, got {value!r}")
    return value


class KvspliceProtocol(LanguageServerProtocol):
    """pygls' protocol, fed one frame body at a time by `KvspliceServer.serve`, answering every
    input as the module docstring says. Open documents are mirrored by documents.py only
    (pygls' own copies are not kept: see there why)."""

    def __init__(self, server, converter):
        super().__init__(server, converter)
        self.initialized = False  # an initialize request was accepted

    def _register_builtin_features(self):
        super()._register_builtin_features()
        for method in (types.TEXT_DOCUMENT_DID_OPEN, types.TEXT_DOCUMENT_DID_CHANGE,
                       types.TEXT_DOCUMENT_DID_CLOSE):
            self.fm.builtin_features.pop(method)

    def receive(self, body: bytes) -> None:
        """One frame's body: parse it, check the envelope, apply the lifecycle, structure the
        params, then hand it to pygls."""
        try:
            data = json.loads(body.decode())
        except (ValueError, RecursionError) as exc:
            self.reply(None, JsonRpcParseError(f"Parse error: {exc}"))
            self._server.dropped(None, body, "a message that is not JSON")
            return
        try:
            kind = _kind(data)
        except JsonRpcInvalidRequest as exc:
            self.reply(_request_id(data), exc)
            self._server.dropped(data, body, exc.message)
            return
        method = data.get("method")
        if method == types.EXIT:
            self._server.exit_now()
        refusal = self._refusal(kind, method)
        if refusal is not None:
            if kind == "request":
                self.reply(data["id"], refusal)
            else:
                log.warning("%s ignored: %s", method, refusal.message)
            return
        if kind != "response":
            data.setdefault("params", None)  # JSON-RPC lets params be left out; pygls wants them
        try:
            message = self.structure_message(data)
            if method == types.CANCEL_REQUEST and not _valid_id(message.params.id):
                raise TypeError(f"expected an integer or a string id, got {message.params.id!r}")
        except Exception as exc:
            self._unreadable(kind, data, body, _why(exc))
            return
        if method == types.INITIALIZE:
            self.initialized = True
        self.handle_message(message)

    def _refusal(self, kind: str, method: str | None) -> JsonRpcException | None:
        """Why the lifecycle refuses a message now (LSP: initialize first and once, nothing but
        exit after shutdown), or None."""
        if kind == "response":
            return None
        if not self.initialized:
            return None if method == types.INITIALIZE and kind == "request" else \
                JsonRpcServerNotInitialized(f"{method} before initialize")
        if method == types.INITIALIZE:
            return JsonRpcInvalidRequest("initialize was sent already: the server is initialized once")
        if self._shutdown:
            return JsonRpcInvalidRequest(f"{method} after shutdown: only exit is served now")
        return None

    def _unreadable(self, kind: str, data: dict, body: bytes, why: str) -> None:
        """A message whose params (or result) do not parse: a request gets InvalidParams, a
        pending request of ours its error; a notification is dropped (see `dropped`)."""
        if kind == "request":
            self.reply(data["id"], JsonRpcInvalidParams(f"invalid params for {data['method']}: {why}"))
        elif kind == "response":
            if (future := self._request_futures.pop(data["id"], None)) is not None:
                future.set_exception(JsonRpcInternalError(f"unreadable response: {why}"))
        else:
            self._server.dropped(data, body, f"{data['method']} could not be read ({why})")

    def reply(self, msg_id: int | str | None, error: JsonRpcException) -> None:
        """An error answer; written as a plain object, since pygls would drop a null id."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": error.code, "message": error.message}})


def _valid_id(value: object) -> bool:
    return isinstance(value, str) or isinstance(value, int) and not isinstance(value, bool)


def _kind(data: object) -> str:
    """"request", "notification" or "response"; JsonRpcInvalidRequest for anything else."""
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        raise JsonRpcInvalidRequest('Invalid Request: expected a JSON object with "jsonrpc": "2.0"')
    if "method" in data:
        if not isinstance(data["method"], str):
            raise JsonRpcInvalidRequest("Invalid Request: method must be a string")
        if "id" in data and not _valid_id(data["id"]):
            raise JsonRpcInvalidRequest(f"Invalid Request: id must be an integer or a string, not {data['id']!r}")
        return "request" if "id" in data else "notification"
    if ("result" in data) != ("error" in data) and (data.get("id") is None or _valid_id(data["id"])):
        return "response"
    raise JsonRpcInvalidRequest("Invalid Request: neither a request, a notification nor a response")


def _request_id(data: object) -> int | str | None:
    """The id to answer an invalid message with: its own where it names a method and a valid id."""
    if isinstance(data, dict) and isinstance(data.get("method"), str) and _valid_id(data.get("id")):
        return data["id"]
    return None


def _why(exc: Exception) -> str:
    """What did not parse and where, e.g. "expected int, got 1.5 @ $.params.position.line"."""
    cause = exc.__cause__ or exc
    if isinstance(cause, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(cause, format_exception=_describe))
    return _describe(cause)


def _describe(exc: BaseException, _: object = None) -> str:
    return "required field missing" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__


class RoutineErrors(logging.Filter):
    """pygls logs every error answer with a traceback; cancelled and outdated requests are
    routine, and params that do not parse are answered (and logged) by `receive`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Unable to deserialize message\n%s":
            return False
        return not (record.exc_info and isinstance(record.exc_info[1], (JsonRpcRequestCancelled,
                                                                         JsonRpcContentModified)))


class KvspliceServer(LanguageServer):
    def __init__(self):
        super().__init__("kvsplice", version("kvsplice"), protocol_cls=KvspliceProtocol,
                         converter_factory=strict_converter,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.documents: dict[str, Document] = {}
        self.trees = Trees()  # the open documents' syntax trees, bounded together
        self.worker = ModelWorker()
        self.pending: dict[str, DraftJob] = {}  # the live completion request of each document
        self.encodes: dict[str, EncodeProgress] = {}  # documents whose first encode is reported
        self.activity = asyncio.Event()  # set by edits, requests, settings: restarts the idle timer
        self.idle_refresh: asyncio.Future | None = None
        self.started = False

    # -- the connection ---------------------------------------------------------------------

    def start_io(self, stdin=None, stdout=None) -> None:
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))

        async def main() -> None:
            await self.serve(read_stdin(stdin or sys.stdin.buffer).get)

        asyncio.run(main())

    def start_tcp(self, host: str, port: int) -> None:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await self.serve(partial(reader.read, CHUNK))

        async def main() -> None:
            async with await asyncio.start_server(connection, host, port) as listener:
                await listener.serve_forever()

        asyncio.run(main())

    async def serve(self, read: Callable[[], Awaitable[bytes]]) -> NoReturn:
        """Read frames until the client closes the stream, then exit: a server must not
        outlive its client. A message that fails in a way nothing else caught is logged; the
        next one is read all the same."""
        framer = Framer()
        while chunk := await read():
            for item in framer.feed(chunk):
                try:
                    if isinstance(item, Garbage):
                        self.dropped(None, item.data, "bytes outside any message")
                    else:
                        self.protocol.receive(item)
                except Exception:
                    log.exception("failed to handle a message")
                await asyncio.sleep(0)  # a request handler starts, and sees the document, before the next change
        log.info("the client closed the connection")
        self.exit_now()

    def exit_now(self) -> NoReturn:
        """End the process now: 0 after shutdown, 1 otherwise (LSP). Queued model work goes
        with it, and a forward in progress is abandoned: no cache outlives the process anyway."""
        os._exit(0 if self.protocol._shutdown else 1)

    def dropped(self, data: object, raw: bytes, why: str) -> None:
        """Input that was read but not used (`data`: its JSON, None if it is not JSON). What
        it may have changed is out of step: no edit is lost without its document knowing."""
        changed = self._changed_by(data, raw)
        for doc in changed:
            self.out_of_step(doc, why)
        if not changed:
            log.warning("ignored %s", why)
            self.window_log_message(types.LogMessageParams(types.MessageType.Warning, f"kvsplice: ignored {why}"))

    def _changed_by(self, data: object, raw: bytes) -> list[Document]:
        """The open documents that unread input may have changed: for a text change (didOpen,
        didChange) the documents it names, or all when it names none; for other methods none.
        Input that is not JSON is searched for a method and uris; with neither, it counts as
        a text change only if it holds "contentChanges" (what is left of a cut didChange)."""
        if isinstance(data, dict):
            method = data.get("method") if isinstance(data.get("method"), str) else None
            params = data.get("params")
            document = params.get("textDocument") if isinstance(params, dict) else None
            uri = document.get("uri") if isinstance(document, dict) else None
            uris = [uri] if isinstance(uri, str) else []
        else:
            found = METHOD.search(raw)
            method = found[1].decode(errors="replace") if found else None
            uris = [uri for m in URI.finditer(raw) if isinstance(uri := _json_string(m[1]), str)]
        if method is not None and method not in TEXT_CHANGES:
            return []
        if uris:
            return [self.documents[uri] for uri in dict.fromkeys(uris) if uri in self.documents]
        return list(self.documents.values()) if method or b"contentChanges" in raw else []

    def out_of_step(self, doc: Document, why: str) -> None:
        """The one place a document falls out of step with its editor: until a whole-document
        change or a reopen its drafts answer RequestFailed, and a draft in progress answers
        ContentModified. The client is told once, with the first reason."""
        doc.changes += 1
        if doc.broken is None:
            doc.broken = why
            self.show(types.MessageType.Error, f"kvsplice: {doc.uri} is out of step: {why}; "
                                               "send its full text or reopen it")

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
        elif old.memory_budget_mb != new.memory_budget_mb:
            self.worker.set_budget(new.memory_budget_mb)
        for doc in self.documents.values():
            if not new.serves(doc.language_id):
                self.worker.close(doc.uri)
            elif reopen or not old.serves(doc.language_id):
                self.reopen(doc)

    def load_model(self) -> None:
        """Queue the load first, so that documents opened meanwhile are encoded after it."""
        if not self.started:
            self.started = True
            self.idle_refresh = asyncio.ensure_future(self._refresh_when_idle())
            self.worker.on_publish = partial(asyncio.get_running_loop().call_soon_threadsafe, self._published)
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
        progress = await Progress.begin(self, f"kvsplice: loading {settings.model}", f"on {settings.device}")
        seconds = 0
        while progress.token and not load.done():
            await asyncio.wait([load], timeout=1.0)
            seconds += 1
            if not load.done():
                progress.report(f"{seconds} s")
        try:
            engine = await load
        except ModelLoadError as exc:
            message = f"kvsplice: {exc}"
            self.show(types.MessageType.Error, message)
        else:
            message = f"{engine.name} ready on {engine.device} ({_dtype_name(engine)}, {engine.quant} linears)"
            self.window_log_message(types.LogMessageParams(types.MessageType.Info, f"kvsplice: {message}"))
        progress.end(message)

    def _published(self, uri: str, snapshot: dict) -> None:
        """The worker published uri's stats (on the event loop): feed its encode progress."""
        tracker = self.encodes.get(uri)
        if tracker is None and not snapshot["ready"] and uri in self.documents:
            tracker = self.encodes[uri] = EncodeProgress(self, uri)
        if tracker is not None:
            tracker.update(snapshot)
            if snapshot["ready"]:
                del self.encodes[uri]

    def _stop_encode_progress(self, uri: str) -> None:
        if (tracker := self.encodes.pop(uri, None)) is not None:
            tracker.stop()

    # -- documents --------------------------------------------------------------------------

    def open(self, item: types.TextDocumentItem) -> None:
        encoding = str(getattr(self.workspace.position_encoding, "value", self.workspace.position_encoding))
        self.trees.forget(item.uri)  # a second didOpen replaces the document
        doc = self.documents[item.uri] = Document(item.uri, item.text, item.version, item.language_id, encoding,
                                                  self.trees)
        if self.settings.serves(doc.language_id):
            self.reopen(doc)

    def reopen(self, doc: Document) -> None:
        """(Re)make doc's session from the mirror; its first encode reports itself."""
        self._stop_encode_progress(doc.uri)
        self.worker.open(doc.uri, doc.text, self.settings)

    def change(self, params: types.DidChangeTextDocumentParams) -> None:
        """Apply each change in order to mirror, tree and session. A change that does not fit
        the mirror puts the document out of step; ranged changes after it are skipped until a
        whole-document change."""
        doc = self.documents.get(params.text_document.uri)
        if doc is None:
            self.show(types.MessageType.Error,
                      f"kvsplice: didChange for {params.text_document.uri}, which is not open; ignored")
            return
        self.activity.set()
        doc.changes += 1
        serve = self.settings.serves(doc.language_id)
        for i, change in enumerate(params.content_changes):
            if doc.broken and isinstance(change, types.TextDocumentContentChangePartial):
                continue
            try:
                edit = doc.apply(change)
            except PositionError as exc:
                self.out_of_step(doc, f"change {i} of version {params.text_document.version}: {exc}")
                continue
            doc.broken = None
            if serve:
                self.worker.edit(doc.uri, edit, doc.text, self.settings)
        doc.version = params.text_document.version

    def close(self, uri: str) -> None:
        if self.documents.pop(uri, None) is None:
            self.show(types.MessageType.Warning, f"kvsplice: didClose for {uri}, which is not open; ignored")
            return
        self.trees.forget(uri)
        if (job := self.pending.pop(uri, None)) is not None:
            job.cancel("the document was closed")
        self._stop_encode_progress(uri)
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
            cursor = doc.offset_at(position, clamp=True)
        except PositionError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        settings, version, changes = self.settings, doc.version, doc.changes
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
        except (ModelLoadError, MemoryBudgetError) as exc:
            raise RequestFailed(str(exc)) from None
        finally:
            if self.pending.get(uri) is job:
                del self.pending[uri]
        if self.documents.get(uri) is not doc or doc.changes != changes:
            raise JsonRpcContentModified(f"{uri} changed (version {version} -> {doc.version}) while drafting")
        return [doc.draft_edit(cursor, text) for text in texts]

    def stats(self, params: object) -> dict:
        docs = [self.document(_uri(params))] if params else list(self.documents.values())
        per_uri = {doc.uri: self.worker.published.get(doc.uri) for doc in docs}
        engine = self.worker.engine
        return {
            "model": engine.name if engine else self.settings.model,
            "device": str(engine.device) if engine else self.settings.device,
            "dtype": _dtype_name(engine) if engine else self.settings.dtype,
            "ready": engine is not None,
            "error": None if engine else self.worker.error,
            "documents": [{"uri": doc.uri, "version": doc.version, "language": doc.language_id,
                           "in_step": doc.broken is None, "cached": per_uri[doc.uri] is not None,
                           **(per_uri[doc.uri] or {})} for doc in docs],
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


def _json_string(quoted: bytes) -> object:
    try:
        return json.loads(quoted)
    except ValueError:
        return None


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
    if not ls.started:  # a second `initialized` must not reload the model
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
def stats(ls: KvspliceServer, params: object) -> dict:
    return ls.stats(params)


@server.feature(DEBUG_DOCUMENT)
async def debug_document(ls: KvspliceServer, params: object) -> dict:
    return await ls.debug_document(params)


@server.feature(types.SHUTDOWN)
def shutdown(ls: KvspliceServer, params: None) -> None:
    ls.shut_down()
