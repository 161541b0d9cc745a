"""The server with the packaged smollm2-135m on real code: block drafts end with their block,
drafts inside an expression stay on their line; text its tokenizer cannot spell still works."""
import pytest
import pytest_asyncio

from kvsplice.engine.packaged import prepare
from test_server_lsp import REAL_FILE, ClientDoc, start_server, stop_server

pytestmark = [pytest.mark.real_model, pytest.mark.asyncio(loop_scope="module")]

HEADER = "def rgb_to_yiq(r, g, b):\n"
HEAD = REAL_FILE.read_text()[:REAL_FILE.read_text().index(HEADER)]  # module docstring, constants
EMPTY_BODY = "    \n\n"
EXPRESSION = "def yiq_to_rgb(y, i, q):\n    r = y + 0.9468822170900693*i + "


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client():
    prepare("smollm2-135m")
    client = await start_server("smollm2-135m", max_new_tokens=24, max_lines=4)
    yield client
    await stop_server(client)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def doc(client):
    return ClientDoc(client, HEAD + HEADER + EMPTY_BODY + EXPRESSION + "1.0\n    return (r, i, q)\n")


async def test_draft_in_an_empty_body_is_multi_line_and_stays_inside_the_block(doc):
    [item] = await doc.inline(len(HEAD + HEADER) + 4)
    lines = item.insert_text.split("\n")
    assert lines[0].strip() and len(lines) <= 4
    assert all(line.startswith("    ") or not line.strip() for line in lines[1:])  # never past the block


async def test_draft_inside_an_expression_stays_on_its_line(doc):
    items = await doc.inline(len(HEAD + HEADER + EMPTY_BODY + EXPRESSION))
    assert items and all("\n" not in item.insert_text for item in items)


@pytest.mark.parametrize("text", ["a\u001d", "\u0004\u0006\u0013\u0014\u0016", "x = '\U00040000'"])
async def test_characters_the_tokenizer_drops_still_get_drafts(client, text):
    doc = ClientDoc(client, text, language="plaintext")
    assert isinstance(await doc.inline(len(text)), list)
    await doc.assert_in_step()
