"""The server's answer to every input a client can send, through a real `kvsplice serve` over raw
stdio bytes (pygls' client cannot send malformed frames): framing, JSON-RPC envelopes, the LSP
lifecycle, and exit."""
import asyncio
import json
import sys

import pytest
import pytest_asyncio

from kvsplice.engine.packaged import prepare

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = [sys.executable, "-m", "kvsplice.server.cli", "serve"]
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, NOT_INITIALIZED, REQUEST_FAILED = -32700, -32600, -32602, -32002, -32803
PINNED = {"threads": 1, "idle_refresh_ms": 0}  # one torch thread: the fastest on a shared machine


def frame(body: bytes, header: bytes = b"Content-Length: %d\r\n\r\n") -> bytes:
    return header % len(body) + body


class Wire:
    """A JSON-RPC client that writes whatever bytes it is given to a server subprocess and
    keeps every message the server writes back."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.received: list[dict] = []
        self._arrived = asyncio.Event()
        self._ids = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> "Wire":
        return cls(await asyncio.create_subprocess_exec(*SERVER, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE))

    async def _read(self) -> None:
        """The server's frames, parsed strictly: what it writes must be exact."""
        out = self.process.stdout
        while header := await out.readuntil(b"\r\n\r\n"):
            assert header.startswith(b"Content-Length: "), header
            self.received.append(json.loads(await out.readexactly(int(header.split(b"\r\n")[0][16:]))))
            self._arrived.set()

    def write(self, data: bytes) -> None:
        self.process.stdin.write(data)

    def send(self, message: dict) -> None:
        self.write(frame(json.dumps({"jsonrpc": "2.0", **message}).encode()))

    def request(self, method: str, params: object = None) -> int:
        self._ids += 1
        self.send({"id": self._ids, "method": method, "params": params})
        return self._ids

    def notify(self, method: str, params: object = None) -> None:
        self.send({"method": method, "params": params})

    def answers(self, msg_id: object) -> list[dict]:
        return [m for m in self.received if "method" not in m and m.get("id", "absent") == msg_id]

    async def answer(self, msg_id: object, timeout: float = 60) -> dict:
        """The first answer to msg_id (a null id: the first null-id answer not yet taken)."""
        async def first() -> dict:
            while True:
                if found := self.answers(msg_id):
                    if msg_id is None:
                        self.received.remove(found[0])
                    return found[0]
                self._arrived.clear()
                await self._arrived.wait()
        return await asyncio.wait_for(first(), timeout)

    async def call(self, method: str, params: object = None) -> dict:
        return await self.answer(self.request(method, params))

    async def initialize(self, model: object, **options) -> dict:
        answer = await self.call("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                                "initializationOptions": {"model": str(model), **PINNED, **options}})
        self.notify("initialized", {})
        return answer

    def open(self, uri: str, text: str, language: str = "python") -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language,
                                                              "version": 1, "text": text}})

    async def exit_code(self, timeout: float = 30) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


def error_code(answer: dict) -> int | None:
    return answer.get("error", {}).get("code")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wire(tiny_model_dir):
    """One initialized server with one document open, for inputs that leave it serving."""
    wire = await Wire.start()
    await wire.initialize(tiny_model_dir())
    wire.open("file:///w/a.py", "def f(x):\n    return x\n")
    assert "result" in await wire.call("kvsplice/debugDocument", {"uri": "file:///w/a.py"})
    yield wire
    await wire.stop()


async def still_serving(wire: Wire) -> None:
    answer = await wire.call("kvsplice/stats", None)
    assert answer["result"]["ready"], answer


@pytest.mark.parametrize("body", [b'{"jsonrpc": "2.0", "id": 1, "method": ', b"\xff\xfe", b"", b"[" * 100_000])
async def test_a_body_that_is_not_json_gets_parse_error_with_a_null_id(wire, body):
    wire.write(frame(body))
    assert error_code(await wire.answer(None)) == PARSE_ERROR
    await still_serving(wire)


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "id": {}, "method": "kvsplice/stats"},
    {"jsonrpc": "2.0", "id": [1], "method": "kvsplice/stats"},
    {"jsonrpc": "2.0", "id": True, "method": "kvsplice/stats"},
    {"jsonrpc": "2.0", "id": 1.5, "method": "kvsplice/stats"},
    {"jsonrpc": "2.0", "id": None, "method": "kvsplice/stats"},
    {"jsonrpc": "2.0", "method": 7},
    {"jsonrpc": "2.0", "id": 3},
    [1, 2],
    "hello",
])
async def test_an_invalid_request_gets_invalid_request_with_a_null_id(wire, message):
    wire.write(frame(json.dumps(message).encode()))
    assert error_code(await wire.answer(None)) == INVALID_REQUEST
    await still_serving(wire)


@pytest.mark.parametrize("version", ["1.0", None, "absent"])
async def test_a_request_with_a_wrong_jsonrpc_version_is_answered_with_its_own_id(wire, version):
    message = {"jsonrpc": version, "id": f"v-{version}", "method": "kvsplice/stats"}
    if version == "absent":
        del message["jsonrpc"]
    wire.write(frame(json.dumps(message).encode()))
    assert error_code(await wire.answer(f"v-{version}")) == INVALID_REQUEST


@pytest.mark.parametrize("header", [b"content-length: %d\r\n\r\n", b"Content-Length:%d\r\n\r\n",
                                    b"Content-Length: %d\n\n", b"CONTENT-LENGTH :  %d \r\nX-Other: 1\n\r\n"])
async def test_headers_in_any_case_and_spacing_with_lf_only_lines_are_read(wire, header):
    wire.write(frame(b'{"jsonrpc": "2.0", "id": "h", "method": "kvsplice/stats"}', header))
    assert (await wire.answer("h"))["result"]["ready"]
    wire.received.clear()


@pytest.mark.parametrize("before", [
    b"garbage without a header\r\n",
    b"}}",  # glued to the next header
    b"Content-Length: 5\r\n\r\n{\"jsonrpc\": \"2.0\"}",  # too short: a cut body, then garbage
    b"Content-Length: x\r\n\r\n",
])
async def test_after_garbage_the_next_frame_is_answered(wire, before):
    wire.write(before + frame(b'{"jsonrpc": "2.0", "id": "g", "method": "kvsplice/stats"}'))
    assert (await wire.answer("g"))["result"]["ready"]
    wire.received.clear()


async def test_a_too_long_content_length_loses_neither_its_message_nor_the_next(wire):
    first = b'{"jsonrpc": "2.0", "id": "long", "method": "kvsplice/stats"}'
    wire.write(b"Content-Length: %d\r\n\r\n" % (len(first) + 500) + first)
    assert "result" in await wire.answer("long")  # its object is whole: no need to wait for more
    second = b'{"jsonrpc": "2.0", "id": "next", "method": "kvsplice/stats"}'
    wire.write(b"Content-Length: 900\r\n\r\n[1, " + frame(second))
    assert "result" in await wire.answer("next")
    assert error_code(await wire.answer(None)) == PARSE_ERROR  # the "[1, " cut short by the next header


async def test_a_cut_did_change_frame_puts_its_document_out_of_step(wire):
    wire.open("file:///w/cut.py", "x = 1\n")
    change = json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
        "textDocument": {"uri": "file:///w/cut.py", "version": 2},
        "contentChanges": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                            "text": "y"}]}}).encode()
    wire.write(b"Content-Length: %d\r\n\r\n" % (len(change) - 30) + change)
    assert error_code(await wire.answer(None)) == PARSE_ERROR
    answer = await wire.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": "file:///w/cut.py"}, "position": {"line": 0, "character": 0},
        "context": {"triggerKind": 1}})
    assert error_code(answer) == REQUEST_FAILED and "out of step" in answer["error"]["message"]
    shown = [m["params"]["message"] for m in wire.received if m.get("method") == "window/showMessage"]
    assert any("file:///w/cut.py is out of step" in message for message in shown)


async def test_a_second_initialize_is_invalid_request(wire, tiny_model_dir):
    answer = await wire.call("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    assert error_code(answer) == INVALID_REQUEST
    await still_serving(wire)


async def test_stats_is_answered_while_the_model_is_busy(wire):
    """kvsplice/stats reads what the model worker published; it never waits in its queue."""
    wire.notify("workspace/didChangeConfiguration", {"settings": {"drafts": 16, "maxNewTokens": 200}})
    drafting = wire.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": "file:///w/a.py"}, "position": {"line": 1, "character": 4},
        "context": {"triggerKind": 1}})
    stats = wire.request("kvsplice/stats", {"uri": "file:///w/a.py"})
    await wire.answer(drafting)
    wire.notify("workspace/didChangeConfiguration", {"settings": {"drafts": 1, "maxNewTokens": 48}})
    order = [m.get("id") for m in wire.received if m.get("id") in (drafting, stats)]
    assert order == [stats, drafting]
    assert wire.answers(stats)[0]["result"]["documents"][0]["cached"]


async def test_the_lifecycle_is_kept_from_the_first_message_to_exit(tiny_model_dir):
    wire = await Wire.start()
    try:
        assert error_code(await wire.call("kvsplice/stats", None)) == NOT_INITIALIZED
        wire.open("file:///early.py", "x = 1\n")  # a notification before initialize: dropped
        assert "capabilities" in (await wire.initialize(tiny_model_dir()))["result"]
        answer = await wire.call("kvsplice/debugDocument", {"uri": "file:///early.py"})
        assert error_code(answer) == INVALID_PARAMS and "not open" in answer["error"]["message"]
        assert (await wire.call("shutdown"))["result"] is None
        assert error_code(await wire.call("kvsplice/stats", None)) == INVALID_REQUEST
        assert error_code(await wire.call("shutdown")) == INVALID_REQUEST
        wire.notify("exit")
        assert await wire.exit_code() == 0
        assert sum(1 for m in wire.received if "id" in m and "method" not in m) == 6  # one answer each
    finally:
        await wire.stop()


@pytest.mark.parametrize("initialized", [False, True])
async def test_exit_without_shutdown_exits_with_1(tiny_model_dir, initialized):
    wire = await Wire.start()
    try:
        if initialized:
            await wire.initialize(tiny_model_dir())
        wire.notify("exit")
        assert await wire.exit_code() == 1
    finally:
        await wire.stop()


async def test_closing_the_input_ends_the_server(tiny_model_dir):
    wire = await Wire.start()
    try:
        await wire.initialize(tiny_model_dir())
        wire.process.stdin.close()
        assert await wire.exit_code() == 1
    finally:
        await wire.stop()


@pytest.mark.real_model
@pytest.mark.parametrize("goodbye", ["shutdown and exit", "closed input"])
async def test_queued_model_work_does_not_keep_the_server_alive(goodbye):
    """Six 2,000-line documents queued for encoding (minutes of work on a CPU): the server goes
    when its client does, long before that work could be done."""
    wire = await Wire.start()
    try:
        await wire.initialize(prepare("smollm2-135m"))
        for i in range(6):
            wire.open(f"file:///big{i}.py", "".join(f"value_{j} = compute({j}, {i})\n" for j in range(2000)))
        if goodbye == "shutdown and exit":
            assert (await wire.call("shutdown"))["result"] is None
            wire.notify("exit")
        else:
            wire.process.stdin.close()
        assert await wire.exit_code(timeout=20) == (0 if goodbye == "shutdown and exit" else 1)
    finally:
        await wire.stop()
