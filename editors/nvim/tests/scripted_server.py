"""A stand-in for `kvsplice serve` with scripted drafts, for deterministic client tests.

Options (initializationOptions, or `kvsplice` in didChangeConfiguration):
  model     name reported by kvsplice/stats
  drafts    {line text before the cursor: [insert texts]}; the key "" answers any other line
  delay_ms  how long each inlineCompletion takes (to have requests in flight)
  encode_ms how long a document's first encode takes after didOpen (0: none), reported as the
            real server does: `$/progress` titled "kvsplice: encoding <file name>" with
            "<done>/<total> tokens" in four steps, and `ready: false` with `encoding` in stats;
            drafts for the document wait for it
The custom request `scripted/log` reports how many requests were answered and cancelled.
"""
from __future__ import annotations

import asyncio
import posixpath
import uuid
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.lsp.server import LanguageServer

server = LanguageServer("kvsplice-scripted", "0.0.1")
options: dict = {"model": "scripted", "drafts": {}, "delay_ms": 0, "encode_ms": 0}
log = {"answered": 0, "cancelled": 0}
encoding: dict[str, dict] = {}  # uri -> {"done", "total"} while its first encode runs
encoded: dict[str, asyncio.Event] = {}
ENCODE_STEPS = 4


@server.feature(types.INITIALIZE)
def initialize(ls: LanguageServer, params: types.InitializeParams) -> None:
    options.update(params.initialization_options or {})


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: LanguageServer, params: types.DidChangeConfigurationParams) -> None:
    options.update((params.settings or {}).get("kvsplice", {}))


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: LanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    uri = params.text_document.uri
    encoded[uri] = asyncio.Event()
    if options["encode_ms"]:
        asyncio.ensure_future(encode(ls, uri, len(params.text_document.text)))
    else:
        encoded[uri].set()


async def encode(ls: LanguageServer, uri: str, total: int) -> None:
    token = str(uuid.uuid4())
    await ls.work_done_progress.create_async(token)
    name = posixpath.basename(unquote(urlparse(uri).path))
    encoding[uri] = {"done": 0, "total": total}
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
        title=f"kvsplice: encoding {name}", message=f"0/{total} tokens", percentage=0))
    for step in range(1, ENCODE_STEPS + 1):
        await asyncio.sleep(options["encode_ms"] / 1000 / ENCODE_STEPS)
        done = total * step // ENCODE_STEPS
        encoding[uri] = {"done": done, "total": total}
        if step < ENCODE_STEPS:
            ls.work_done_progress.report(token, types.WorkDoneProgressReport(
                message=f"{done}/{total} tokens", percentage=100 * step // ENCODE_STEPS))
    del encoding[uri]
    ls.work_done_progress.end(token, types.WorkDoneProgressEnd())
    encoded[uri].set()


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams):
    try:
        await encoded[params.text_document.uri].wait()
        await asyncio.sleep(options["delay_ms"] / 1000)
    except asyncio.CancelledError:
        log["cancelled"] += 1
        raise
    doc = ls.workspace.get_text_document(params.text_document.uri)
    line = doc.lines[params.position.line] if params.position.line < len(doc.lines) else ""
    typed = line[: params.position.character]
    texts = options["drafts"].get(typed, options["drafts"].get("", []))
    log["answered"] += 1
    here = types.Range(params.position, params.position)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=t, range=here) for t in texts])


@server.feature("kvsplice/stats")
def stats(ls: LanguageServer, params) -> dict:
    """The shape of the real server's answer (server/lsp.py), with fixed figures."""
    uris = [params.uri] if params else list(ls.workspace.text_documents)
    return {"model": options["model"], "device": "cpu", "dtype": "float32", "ready": True, "error": None,
            "documents": [{"uri": uri, "version": 1, "language": "python", "cached": True, "tokens": 120,
                           "reused": 100, "rotated": 15, "encoded": 5, "stale": 15,
                           "last_patch_ms": 1.25, "last_draft_ms": 20.5,
                           "ready": uri not in encoding, "encoding": encoding.get(uri)} for uri in uris]}


@server.feature("scripted/log")
def get_log(ls: LanguageServer, params) -> dict:
    return log


if __name__ == "__main__":
    server.start_io()
