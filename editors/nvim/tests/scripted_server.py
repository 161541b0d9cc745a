"""A stand-in for `kvsplice serve` with scripted drafts, for deterministic client tests.

Options (initializationOptions, or `kvsplice` in didChangeConfiguration):
  model     name reported by kvsplice/stats
  drafts    {line text before the cursor: [insert texts]}; the key "" answers any other line
  delay_ms  how long each inlineCompletion takes (to have requests in flight)
The custom request `scripted/log` reports how many requests were answered and cancelled.
"""
from __future__ import annotations

import asyncio

from lsprotocol import types
from pygls.lsp.server import LanguageServer

server = LanguageServer("kvsplice-scripted", "0.0.1")
options: dict = {"model": "scripted", "drafts": {}, "delay_ms": 0}
log = {"answered": 0, "cancelled": 0}


@server.feature(types.INITIALIZE)
def initialize(ls: LanguageServer, params: types.InitializeParams) -> None:
    options.update(params.initialization_options or {})


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: LanguageServer, params: types.DidChangeConfigurationParams) -> None:
    options.update((params.settings or {}).get("kvsplice", {}))


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: LanguageServer, params: types.InlineCompletionParams):
    try:
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
                           "last_patch_ms": 1.25, "last_draft_ms": 20.5} for uri in uris]}


@server.feature("scripted/log")
def get_log(ls: LanguageServer, params) -> dict:
    return log


if __name__ == "__main__":
    server.start_io()
