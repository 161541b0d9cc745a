"""Property: after any sequence of edits (emoji, CJK, tabs, CRLF, several changes per didChange),
sent in utf-16 or utf-8 positions, the server's mirror, its syntax tree and the engine session
all hold exactly the client's text."""
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_server_lsp import REAL_FILE, ClientDoc, start_server, stop_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIECES = ["a", "x = 1", "😀", "🚀x", "中文", "\t", "\r\n", "\n", "\r", " ", "é", "def f():", "{", "}", '"', "#"]
START = REAL_FILE.read_text()[:600] + "s = '😀 中文'\r\n\tif x:\r\n\t\tpass\r\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["utf-16", "utf-8"])
async def client(request, tiny_model_dir):
    client = await start_server(tiny_model_dir(), encodings=[request.param])
    assert client.init_result.capabilities.position_encoding == request.param
    client.encoding = request.param
    yield client
    await stop_server(client)


def representable(text: str, offset: int) -> int:
    """Nearest offset at or before `offset` that LSP can name (not between \\r and \\n)."""
    return offset - 1 if 0 < offset < len(text) and text[offset - 1:offset + 1] == "\r\n" else offset


edit = st.tuples(st.floats(0, 1), st.integers(0, 8), st.lists(st.sampled_from(PIECES), max_size=4).map("".join))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.lists(edit, min_size=1, max_size=3), min_size=1, max_size=6))
async def test_mirror_tree_and_session_follow_any_edits(client, steps):
    doc = ClientDoc(client, START, encoding=client.encoding)
    for step in steps:
        edits, text = [], doc.text
        for where, length, new in step:
            start = representable(text, int(where * len(text)))
            end = representable(text, min(len(text), start + length))
            edits.append((start, end, new))
            text = text[:start] + new + text[end:]
        doc.change(*edits)
        await doc.assert_in_step()
