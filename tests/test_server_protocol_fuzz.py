"""Protocol fuzz through a real `kvsplice serve` over raw stdio: random sequences of well-formed and
malformed messages (edits past line ends, lone surrogates and control characters, unparseable
changes, cut frames, garbage, invalid ids, bad positions, cancels). After every sequence: every
request got exactly one answer and none was an internal error, the server is alive, and the
document is in step (mirror == tree == session == the client's text), or, when the server was
sent a change it could not read, out of step and saying so until a whole-document change.

Bounded: 60 sequences of 1 to 12 actions, on the tiny model with 8-token drafts."""
import json
from types import SimpleNamespace

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_server_lsp import assert_held, lsp_position
from test_server_protocol import Wire, error_code, frame
from test_server_sync import representable

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIECES = ["a", "x = 1", "😀", "中文", "\t", "\r\n", "\n", "\r", " ", "é", "e\u0301", "def f():", "{", "}", '"',
          "\x00", "\x04", "\x1d", "\x85", "\u2028", "\ud83d", "\ude00", "\ufffd"]
EXPECTED_ERRORS = {-32602, -32601, -32800, -32801, -32803}  # bad params, no such method, cancelled, moved, out of step
BAD_CHANGES = [("character", -1), ("character", 2**31), ("line", 1.5), ("character", "3"), ("line", True),
               ("version", None), ("version", "missing"), ("line", 10**6)]
MALFORMED = [  # (bytes, null-id answers they get): none of them names the document
    (frame(b"not json at all"), 1),
    (frame(b'{"jsonrpc": "2.0", "id": '), 1),
    (b"garbage line\r\n", 0),
    (frame(b'{"jsonrpc": "2.0", "id": {}, "method": "kvsplice/stats"}'), 1),
    (frame(b'{"jsonrpc": "2.0", "method": 7}'), 1),
    (frame(b'{"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": {}}}'), 0),
    (frame(b'{"jsonrpc": "2.0", "method": "kvsplice/noSuchNotification"}'), 0),
]


def sent(text: str) -> str:
    """A string as the server reads it from JSON: a surrogate pair within it is one character."""
    return json.loads(json.dumps(text))


inserted = st.lists(st.sampled_from(PIECES), max_size=4).map("".join).map(sent)
span = st.tuples(st.one_of(st.floats(0, 1), st.just(1.0)), st.integers(0, 6))  # 1.0: at the end
edits = st.tuples(st.just("edit"), span, inserted, st.integers(0, 3))  # > 0: characters past the line's end
actions = st.one_of(
    edits, edits, edits,
    st.tuples(st.just("full"), inserted),
    st.tuples(st.just("bad change"), span, inserted, st.sampled_from(BAD_CHANGES)),
    st.tuples(st.just("cut change"), span, inserted, st.integers(2, 40)),
    st.tuples(st.just("inline"), st.floats(0, 1), st.sampled_from([0, 0, 5, "line past end", "1.5"])),
    st.tuples(st.just("request"), st.sampled_from(["kvsplice/stats", "kvsplice/debugDocument", "kvsplice/nothing",
                                                   "textDocument/completion"])),
    st.tuples(st.just("malformed"), st.sampled_from(MALFORMED)),
    st.tuples(st.just("cancel")),
)


class Fuzzer:
    """The client's side: its document, what it expects, and the checks."""

    def __init__(self, wire: Wire):
        self.wire, self.requests, self.null_answers, self.docs = wire, [], 0, 0

    def open(self, text: str) -> None:
        self.docs += 1
        self.uri, self.text, self.version, self.in_step = f"file:///fuzz/{self.docs}.py", sent(text), 1, True
        self.wire.open(self.uri, self.text)

    def request(self, method: str, params: object) -> int:
        self.requests.append(self.wire.request(method, params))
        return self.requests[-1]

    def change(self, changes: list, identifier: dict | None = None) -> bytes:
        self.version += 1
        params = {"textDocument": identifier or {"uri": self.uri, "version": self.version}, "contentChanges": changes}
        return json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": params}).encode()

    def edit(self, where: float, length: int, new: str, past: int = 0) -> dict:
        """Edit the client's text; the ranged change that says so, in utf-16 positions, with
        `past` more characters where an end of the range is the end of its line (LSP: the same)."""
        start = representable(self.text, int(where * len(self.text)))
        end = representable(self.text, min(len(self.text), start + length))
        ends = [position(self.text, at, past if self.text[at:at + 1] in ("", "\r", "\n") else 0) for at in (start, end)]
        self.text = self.text[:start] + new + self.text[end:]
        return {"range": dict(zip(("start", "end"), ends)), "text": new}

    async def act(self, action: tuple) -> None:
        kind, wire = action[0], self.wire
        if kind == "edit":
            wire.write(frame(self.change([self.edit(*action[1], action[2], action[3])])))
            if self.in_step:
                await self.check()
        elif kind == "full":
            self.text = sent(self.text + action[1])
            wire.write(frame(self.change([{"text": self.text}])))
            self.in_step = True
            await self.check()
        elif kind == "bad change":
            change, (field, value) = self.edit(*action[1], action[2]), action[3]
            identifier = {"uri": self.uri, "version": self.version + 1}
            if field == "version":
                identifier.pop("version") if value == "missing" else identifier.update(version=value)
            else:
                change["range"]["start"][field] = value
            wire.write(frame(self.change([change], identifier)))
            self.in_step = False
        elif kind == "cut change":
            body = self.change([self.edit(*action[1], action[2])])
            wire.write(b"Content-Length: %d\r\n\r\n" % (len(body) - action[3]) + body)
            self.in_step, self.null_answers = False, self.null_answers + 1
        elif kind == "inline":
            where, past = int(action[1] * len(self.text)), action[2]
            at = position(self.text, representable(self.text, where), past if isinstance(past, int) else 0)
            if past == "line past end":
                at["line"] += 10**6
            elif past == "1.5":
                at["character"] = 1.5
            self.request("textDocument/inlineCompletion", {"textDocument": {"uri": self.uri}, "position": at,
                                                           "context": {"triggerKind": 1}})
        elif kind == "request":
            params = {"textDocument": {"uri": self.uri}, "position": {"line": 0, "character": 0}} \
                if action[1] == "textDocument/completion" else {"uri": self.uri}
            self.request(action[1], params)
        elif kind == "malformed":
            wire.write(action[1][0])
            self.null_answers += action[1][1]
        elif kind == "cancel" and self.requests:
            wire.notify("$/cancelRequest", {"id": self.requests[-1]})

    async def check(self) -> None:
        """Mirror, tree and session hold the client's text."""
        answer = await self.wire.answer(self.request("kvsplice/debugDocument", {"uri": self.uri}))
        assert_held(json.loads(json.dumps(answer["result"]), object_hook=lambda d: SimpleNamespace(**d)), self.text)

    async def settle(self) -> None:
        """The end of a sequence: out of step it says so, a whole-document change repairs it;
        every request so far has exactly one answer, none an internal error."""
        if not self.in_step:
            answer = await self.wire.answer(self.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": self.uri}, "position": {"line": 0, "character": 0},
                "context": {"triggerKind": 1}}))
            assert error_code(answer) == -32803 and "out of step" in answer["error"]["message"]
            await self.act(("full", ""))
        self.request("kvsplice/stats", None)  # answered in order: after any null-id answer before it
        for msg_id in self.requests:
            await self.wire.answer(msg_id)
        for msg_id in self.requests:
            [answer] = self.wire.answers(msg_id)
            assert "result" in answer or error_code(answer) in EXPECTED_ERRORS, answer
        nulls = [m for m in self.wire.received if "method" not in m and m.get("id") is None]
        assert len(nulls) == self.null_answers and all(error_code(m) in (-32700, -32600) for m in nulls)
        assert self.wire.process.returncode is None


def position(text: str, offset: int, beyond: int = 0) -> dict:
    at = lsp_position(text, offset)
    return {"line": at.line, "character": at.character + beyond}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fuzzer(tiny_model_dir):
    wire = await Wire.start()
    await wire.initialize(tiny_model_dir(), max_new_tokens=8, refresh_tokens=0, tail_tokens=0)
    yield Fuzzer(wire)
    await wire.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(start=st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
       steps=st.lists(actions, min_size=1, max_size=12))
async def test_any_input_gets_its_answer_and_no_edit_is_lost_unsaid(fuzzer, start, steps):
    fuzzer.open("def f(x):\n    return x\n" + start)
    await fuzzer.check()
    for action in steps:
        await fuzzer.act(action)
    await fuzzer.settle()
