"""The language server end to end: a real `kvsplice serve` subprocess, a real LSP client, a tiny model.

`ClientDoc` is the client's side of a document: it turns code-point edits into LSP changes in
the negotiated encoding with its own (independent) position arithmetic.
"""
import asyncio
import concurrent.futures
import re
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import (JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams,
                              JsonRpcRequestCancelled)
from pytest_lsp.client import make_test_lsp_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = [sys.executable, "-m", "kvsplice.server.cli", "serve"]
REAL_FILE = Path(sysconfig.get_paths()["stdlib"], "colorsys.py")
EOL = re.compile(r"\r\n|\r|\n")


def as_held(text: str) -> str:
    """The client's text as the server holds it: lone surrogates (JSON can send them, UTF-8
    cannot hold them) become U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def lsp_position(text: str, offset: int, encoding: str = "utf-16") -> types.Position:
    """The position of a code-point offset, by this module's own arithmetic."""
    before = text[:offset]
    last = EOL.split(before)[-1]
    units = {"utf-16": len(last.encode("utf-16-le", "surrogatepass")) // 2,
             "utf-8": len(last.encode("utf-8", "surrogatepass"))}[encoding]
    return types.Position(len(EOL.findall(before)), units)


def assert_held(seen, text: str) -> None:
    """A kvsplice/debugDocument answer says that mirror, syntax tree and engine session all
    hold the client's `text`."""
    held = as_held(text)
    assert seen.text == held
    assert seen.session_text == held
    if seen.tree is not None:
        data = held.encode()
        assert seen.tree.text.encode() == data[seen.tree.start_byte:]
        assert not data[:seen.tree.start_byte].strip()
        assert seen.tree.matches_fresh_parse


async def start_server(model: object, encodings: list[str] | None = None, **options):
    """A server subprocess, initialized with `model` and options (by default one torch thread,
    the fastest on a shared CI machine, plain PIE encoded at each edit and no idle refresh, so
    stats say exactly what each edit encoded, and the tiny model's fill-in-the-middle drafts),
    and a client that takes progress reports and offers `encodings`."""
    client = make_test_lsp_client()
    await client.start_io(*SERVER)
    capabilities = types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=encodings),
        window=types.WindowClientCapabilities(work_done_progress=True))
    pinned = {"model": str(model), "threads": 1, "idle_refresh_ms": 0, "refresh_tokens": 0, "tail_tokens": 0,
              "defer": False, "context_tokens": 3072, "fim_suffix": "cache"}
    client.init_result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities, initialization_options={**pinned, **options}))
    return client


async def stop_server(client) -> None:
    await client.shutdown_session()
    await client.stop()


class ClientDoc:
    """A document as the client holds it."""

    count = 0

    def __init__(self, client, text: str, language: str = "python", encoding: str = "utf-16"):
        ClientDoc.count += 1
        self.client, self.text, self.encoding, self.version = client, text, encoding, 1
        self.uri = f"file:///work/doc{ClientDoc.count}.{'py' if language == 'python' else 'txt'}"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(self.uri, language, self.version, text)))

    def position(self, offset: int) -> types.Position:
        return lsp_position(self.text, offset, self.encoding)

    def change(self, *edits: tuple[int, int, str]) -> None:
        """Send several (start, end, new) edits in one didChange; each is relative to the text
        left by the ones before it."""
        changes = []
        for start, end, new in edits:
            changes.append(types.TextDocumentContentChangePartial(
                range=types.Range(self.position(start), self.position(end)), text=new))
            self.text = self.text[:start] + new + self.text[end:]
        self.version += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version), changes))

    def inline_params(self, offset: int) -> types.InlineCompletionParams:
        return types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(self.uri), position=self.position(offset))

    async def inline(self, offset: int):
        return await asyncio.wait_for(
            self.client.text_document_inline_completion_async(self.inline_params(offset)), 120)

    async def debug(self):
        return await request(self.client, "kvsplice/debugDocument", {"uri": self.uri})

    async def stats(self):
        """The document's stats once the model worker has done what was sent before
        (debugDocument waits in its queue; stats never does)."""
        await self.debug()
        return (await request(self.client, "kvsplice/stats", {"uri": self.uri})).documents[0]

    async def assert_in_step(self) -> None:
        assert_held(await self.debug(), self.text)

    async def encoded(self):
        """Stats once the window's first encode (slices behind the queue) is done."""
        for _ in range(2400):
            stats = await self.stats()
            if stats.ready:
                return stats
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.uri} was not encoded within 120 s")


async def request(client, method: str, params):
    return await asyncio.wait_for(client.protocol.send_request_async(method, params), 120)


async def send_raw(client, method: str, params: dict):
    """A request exactly as given (the typed client would refuse malformed params)."""
    msg_id = f"raw-{time.monotonic_ns()}"
    future = client.protocol._request_futures[msg_id] = concurrent.futures.Future()
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), 120)


def notify_raw(client, method: str, params: dict) -> None:
    """A notification exactly as given (the typed client would refuse malformed params)."""
    client.protocol._send_data({"jsonrpc": "2.0", "method": method, "params": params})


def configure(client, **settings) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"kvsplice": settings}))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model_dir):
    client = await start_server(tiny_model_dir())
    yield client
    await stop_server(client)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real_doc(client):
    """colorsys.py from the standard library, open and encoded."""
    doc = ClientDoc(client, REAL_FILE.read_text())
    await doc.assert_in_step()
    await doc.encoded()
    return doc


async def test_initialize_negotiates_encoding_and_reports_the_model_load(client, real_doc):
    capabilities = client.init_result.capabilities
    assert capabilities.position_encoding == types.PositionEncodingKind.Utf16
    assert capabilities.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert capabilities.inline_completion_provider is not None
    assert capabilities.completion_provider is not None
    load = next(rs for rs in client.progress_reports.values() if rs[0].title.startswith("kvsplice: loading"))
    assert load[0].kind == "begin" and load[-1].kind == "end" and "ready" in load[-1].message


async def test_a_documents_first_encode_is_reported_as_progress(client, real_doc):
    """Begun when the window is not encoded yet, tokens done/total while it is, ended when it is."""
    title = f"kvsplice: encoding {real_doc.uri.rsplit('/')[-1]}"
    reports = next(rs for rs in client.progress_reports.values() if rs[0].title == title)
    assert reports[0].kind == "begin"
    assert reports[0].message == f"0/{(await real_doc.stats()).tokens + 1} tokens"
    assert reports[-1].kind == "end" and reports[-1].message.endswith("tokens ready")
    assert all(r.kind == "report" and r.message.endswith(" tokens") for r in reports[1:-1])


async def test_incremental_edits_of_a_real_file_reach_tree_and_session(real_doc):
    doc = real_doc
    at = doc.text.index("def rgb_to_hls")
    doc.change((at, at, "# inserted 😀 中\n"))                       # insert
    await doc.assert_in_step()
    start = doc.text.index("    maxc = max(r, g, b)")
    doc.change((start, start + 4, ""))                                  # delete
    doc.change((start, start + 4, "maxc_"))                             # replace
    await doc.assert_in_step()
    end = len(doc.text)
    doc.change((0, 0, "# top\r\n"), (end + 7, end + 7, "\n# end\t!\n"), (10, 12, ""))  # several at once
    await doc.assert_in_step()


async def test_drafts_come_back_at_the_cursor(real_doc):
    doc = real_doc
    cursor = doc.text.index("    rangec = ") + len("    rangec = ")
    items = await doc.inline(cursor)
    assert items and all(isinstance(i.insert_text, str) and i.insert_text for i in items)
    assert all(i.range.start == doc.position(cursor) for i in items)
    listing = await asyncio.wait_for(doc.client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(doc.uri), position=doc.position(cursor))), 120)
    assert listing.is_incomplete
    assert [i.text_edit.new_text for i in listing.items] == [i.insert_text for i in items]
    assert (await doc.stats()).last_draft_ms > 0


async def test_mid_file_insertion_encodes_only_the_edited_tokens(real_doc):
    doc = real_doc
    at = doc.text.index("def hls_to_rgb")
    doc.change((at, at, "x = 1\n"))
    stats = await doc.stats()
    assert 1 <= stats.encoded <= 8
    assert stats.rotated > 100  # every token after the insertion moved, none re-encoded
    assert stats.reused + stats.encoded >= stats.tokens
    await doc.assert_in_step()


async def test_a_deferred_edit_is_encoded_by_the_next_drafts_first_forward(real_doc):
    doc = real_doc
    configure(doc.client, defer=True)  # the server's default; this module pins it off elsewhere
    try:
        await doc.encoded()  # re-opened under the new setting
        at = doc.text.index("def hls_to_rgb")
        doc.change((at, at, "z = 3\n"))
        edited = await doc.stats()
        assert edited.encoded == 0 and edited.rotated > 100
        assert edited.stale > edited.rotated, "the moved suffix is stale and the new tokens are missing"
        assert await doc.inline(at + len("z = 3\n"))
        # the draft encoded the new tokens, all but the one it backs off from (token healing)
        assert edited.rotated <= (await doc.stats()).stale <= edited.rotated + 1 < edited.stale
        await doc.assert_in_step()
    finally:
        configure(doc.client, defer=False)
        await doc.encoded()


async def test_idle_time_re_encodes_stale_tokens_until_the_cache_is_exact(real_doc):
    doc = real_doc
    at = doc.text.index("def rgb_to_hsv")
    doc.change((at, at, "y = 2\n"))
    assert (await doc.stats()).stale > 0
    configure(doc.client, idle_refresh_ms=20)
    for _ in range(200):
        if (await doc.stats()).stale == 0:
            break
        await asyncio.sleep(0.05)
    configure(doc.client, idle_refresh_ms=0)
    assert (await doc.stats()).stale == 0
    await doc.assert_in_step()


async def test_cancel_mid_decode_answers_request_cancelled_and_keeps_the_session(real_doc):
    doc, client = real_doc, real_doc.client
    configure(client, drafts=16, max_new_tokens=64)  # a long decode
    cursor = doc.text.index("def yiq_to_rgb")
    await doc.inline(cursor)
    full = await doc.stats()
    full_ms, full_forwards = full.last_draft_ms, full.last_decode.forwards
    future = asyncio.wrap_future(client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, doc.inline_params(cursor), msg_id="cancel-me"))
    await asyncio.sleep(full_ms / 1000 / 4)
    client.cancel_request(types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(future, 120)
    configure(client, drafts=1, max_new_tokens=48)
    after = await doc.stats()
    assert after.last_draft_ms == full_ms, "a cancelled draft is not a finished one"
    assert after.last_decode.forwards < full_forwards * 0.75  # it stopped decoding, not only answering
    await doc.assert_in_step()
    assert await doc.inline(cursor)


async def test_burst_of_requests_while_typing_gets_one_result_and_49_cancellations(real_doc):
    doc, client = real_doc, real_doc.client
    cursor = doc.text.index("def rgb_to_yiq")
    futures = []
    for _ in range(50):
        doc.change((cursor, cursor, "x"))
        cursor += 1
        futures.append(asyncio.wrap_future(client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, doc.inline_params(cursor))))
    answers = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 120)
    assert not isinstance(answers[-1], Exception)
    assert all(isinstance(a, JsonRpcRequestCancelled) for a in answers[:-1]), answers
    await doc.assert_in_step()


async def test_request_for_an_older_version_gets_content_modified(real_doc):
    doc, client = real_doc, real_doc.client
    cursor = doc.text.index("def hls_to_rgb")
    future = asyncio.wrap_future(client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, doc.inline_params(cursor)))
    doc.change((0, 0, "#"))
    with pytest.raises(JsonRpcException, match="changed") as failure:
        await asyncio.wait_for(future, 120)
    assert failure.value.code == JsonRpcContentModified.CODE


async def test_a_line_past_the_end_of_the_document_is_invalid_params(client):
    doc = ClientDoc(client, "x = 1\n")
    params = doc.inline_params(0)
    params.position = types.Position(10_000, 0)
    with pytest.raises(JsonRpcInvalidParams, match="past the end of the document"):
        await client.text_document_inline_completion_async(params)


async def test_a_character_past_the_end_of_its_line_means_the_line_end(client):
    """LSP: such a character "defaults back to the line length", in changes and in requests."""
    doc = ClientDoc(client, "x = 1\ny = 2\n")
    doc.version += 1
    notify_raw(client, types.TEXT_DOCUMENT_DID_CHANGE, {
        "textDocument": {"uri": doc.uri, "version": doc.version},
        "contentChanges": [{"range": {"start": {"line": 0, "character": 99}, "end": {"line": 0, "character": 120}},
                            "text": " # one"}]})
    doc.text = "x = 1 # one\ny = 2\n"
    await doc.assert_in_step()
    params = doc.inline_params(0)
    params.position = types.Position(1, 999)
    items = await client.text_document_inline_completion_async(params)
    assert items and all(item.range.start == types.Position(1, 5) for item in items)


async def test_lone_surrogates_reach_tree_and_session_as_replacement_characters(client):
    doc = ClientDoc(client, "s = '\ud83d'\n")  # opened with one
    await doc.assert_in_step()
    doc.change((6, 6, "\ude00\ud83d"))         # more inserted, none pairing up in the JSON
    await doc.assert_in_step()
    assert (await doc.debug()).text == "s = '\ufffd\ufffd\ufffd'\n"
    assert isinstance(await doc.inline(len(doc.text) - 1), list)
    doc.change((8, 9, "x = '\ud83d' + '\ude00'\n"))
    await doc.assert_in_step()


@pytest.mark.parametrize("bad_field, value", [
    ("character", -1), ("character", 2**31), ("character", 1.5), ("character", "3"), ("character", True),
    ("version", None), ("version", "missing"),
])
async def test_an_unreadable_did_change_puts_its_document_out_of_step_and_says_so(client, bad_field, value):
    doc = ClientDoc(client, "a = 1\n")
    position = {"line": 0, "character": value if bad_field == "character" else 0}
    identifier = {"uri": doc.uri, "version": value if bad_field == "version" else 2}
    if value == "missing":
        del identifier["version"]
    notify_raw(client, types.TEXT_DOCUMENT_DID_CHANGE, {
        "textDocument": identifier, "contentChanges": [{"range": {"start": position, "end": position}, "text": "b"}]})
    with pytest.raises(JsonRpcException, match="out of step") as failure:
        await doc.inline(0)
    assert failure.value.code == -32803
    assert not (await doc.stats()).in_step
    assert any(f"{doc.uri} is out of step: textDocument/didChange could not be read" in m.message
               for m in client.messages)
    client.text_document_did_change(types.DidChangeTextDocumentParams(  # a full text repairs it
        types.VersionedTextDocumentIdentifier(uri=doc.uri, version=3),
        [types.TextDocumentContentChangeWholeDocument(text="b = 2\n")]))
    doc.text = "b = 2\n"
    await doc.assert_in_step()
    assert (await doc.stats()).in_step and isinstance(await doc.inline(0), list)


@pytest.mark.parametrize("field, value", [("line", 1.5), ("character", "3"), ("line", True), ("character", -1)])
async def test_a_position_that_is_not_an_unsigned_integer_is_invalid_params(client, field, value):
    doc = ClientDoc(client, "x = 1\n" * 4)
    params = {"textDocument": {"uri": doc.uri}, "position": {"line": 0, "character": 0, field: value},
              "context": {"triggerKind": 1}}
    with pytest.raises(JsonRpcInvalidParams, match=f"invalid params for textDocument/inlineCompletion.*{field}"):
        await send_raw(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, params)


async def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(client, real_doc):
    unknown = real_doc.inline_params(0)
    unknown.text_document.uri = "file:///nowhere.py"
    with pytest.raises(JsonRpcInvalidParams, match="not open"):
        await client.text_document_inline_completion_async(unknown)
    with pytest.raises(JsonRpcInvalidParams, match="invalid params for textDocument/inlineCompletion"):
        await send_raw(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": real_doc.uri}})
    with pytest.raises(JsonRpcInvalidParams, match="uri"):
        await request(client, "kvsplice/stats", {"uri": 3})

    closed = ClientDoc(client, "y = 2\n")
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(closed.uri)))
    closed.change((0, 0, "z"))                                       # a change for a closed document
    broken = ClientDoc(client, "a\n")
    client.text_document_did_change(types.DidChangeTextDocumentParams(  # a range outside the document
        types.VersionedTextDocumentIdentifier(uri=broken.uri, version=2),
        [types.TextDocumentContentChangePartial(range=types.Range(types.Position(0, 0), types.Position(5, 0)),
                                                text="b")]))
    configure(client, strategy="fastest")                            # a setting that does not exist
    stats = await request(client, "kvsplice/stats", None)
    assert closed.uri not in [d.uri for d in stats.documents]
    shown = " | ".join(m.message for m in client.messages)
    assert f"didChange for {closed.uri}, which is not open" in shown
    assert f"{broken.uri} is out of step" in shown
    assert "setting 'strategy': expected one of pie" in shown
    with pytest.raises(JsonRpcException, match="out of step"):
        await broken.inline(0)
    client.text_document_did_change(types.DidChangeTextDocumentParams(  # a full text repairs it
        types.VersionedTextDocumentIdentifier(uri=broken.uri, version=3),
        [types.TextDocumentContentChangeWholeDocument(text="b\n")]))
    broken.text = "b\n"
    await broken.assert_in_step()
    assert await real_doc.inline(real_doc.text.index("def "))       # everything else still works


async def test_languages_setting_limits_drafts_but_not_the_mirror(client):
    configure(client, languages=["python"])
    doc = ClientDoc(client, "some notes\n", language="plaintext")
    doc.change((4, 4, "!"))
    assert await doc.inline(5) == []
    seen = await doc.debug()
    assert seen.text == doc.text and seen.session_text is None and seen.tree is None
    configure(client, languages=None)
    await doc.assert_in_step()  # served again: encoded from the mirror


async def test_memory_budget_drops_least_recently_used_caches_and_remakes_them_on_use(client):
    """About 1,100 tokens of tiny-model K/V (512 bytes a token) and a draft fit in 0.9 MB: one window, not two."""
    configure(client, memory_budget_mb=0.9)
    text = REAL_FILE.read_text()[:2000]
    first, second = ClientDoc(client, text), ClientDoc(client, text.replace("def ", "def _"))
    await first.inline(len(text))
    assert (await first.stats()).cached and not (await second.stats()).cached
    await second.inline(len(second.text))
    assert (await second.stats()).cached and not (await first.stats()).cached
    await first.inline(len(text))  # re-encoded on use
    assert (await first.stats()).cached and not (await second.stats()).cached
    configure(client, memory_budget_mb=0.001)
    with pytest.raises(JsonRpcException, match="memory_budget_mb") as failure:
        await first.inline(10)
    assert failure.value.code == -32803
    configure(client, memory_budget_mb=2048)
    assert await first.inline(10) is not None


async def test_model_that_cannot_load_gives_request_failed_with_its_reason(tmp_path):
    client = await start_server(tmp_path / "no-such-model")
    try:
        doc = ClientDoc(client, "x = 1\n")
        with pytest.raises(JsonRpcException, match="no model") as failure:
            await doc.inline(0)
        assert failure.value.code == -32803
        stats = await request(client, "kvsplice/stats", None)
        assert not stats.ready and "no model" in stats.error
        assert any("no model" in m.message for m in client.messages)
    finally:
        await stop_server(client)
