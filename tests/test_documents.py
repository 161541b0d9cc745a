"""The mirror and LSP positions: offsets per encoding, line endings as LSP counts them, clamping,
lone surrogates, bad input."""
import pytest
from lsprotocol import types

from kvsplice.server.documents import Document, PositionError
from kvsplice.server.syntax import Trees


def doc(text: str, encoding: str = "utf-16", language: str = "python") -> Document:
    return Document("file:///t.py", text, 1, language, encoding)


def pos(line: int, character: int) -> types.Position:
    return types.Position(line, character)


@pytest.mark.parametrize("encoding, units_after_emoji", [("utf-16", 3), ("utf-8", 5), ("utf-32", 2)])
def test_offsets_count_units_of_the_negotiated_encoding(encoding, units_after_emoji):
    d = doc("x😀y\n", encoding)
    assert d.offset_at(pos(0, units_after_emoji)) == 2
    assert d.position_at(2) == pos(0, units_after_emoji)


def test_cjk_columns_are_three_bytes_in_utf8_and_one_unit_in_utf16():
    assert doc("中文x", "utf-8").offset_at(pos(0, 6)) == 2
    assert doc("中文x", "utf-16").offset_at(pos(0, 2)) == 2


def test_lines_end_at_lf_crlf_and_cr_only():
    d = doc("a\r\nb\rc\nd\x0ce\u2028f")
    assert [d.offset_at(pos(i, 0)) for i in range(4)] == [0, 3, 5, 7]
    assert d.offset_at(pos(3, 4)) == 11  # \f and \u2028 are characters of line 3, not line breaks


def test_the_line_after_a_final_newline_exists_and_is_empty():
    d = doc("中\n", "utf-8")
    assert d.offset_at(pos(1, 0)) == 2
    with pytest.raises(PositionError, match="outside line 1"):
        d.offset_at(pos(1, 1))


@pytest.mark.parametrize("position, message", [
    (pos(0, 4), "outside line 0, which has 3 utf-16 units"),  # the line ending is not part of it
    (pos(2, 0), "line 2 is past the end of the document"),
    (pos(1, 1), "splits a character"),                        # half of a surrogate pair
])
def test_positions_outside_the_text_are_errors(position, message):
    with pytest.raises(PositionError, match=message):
        doc("abc\r\n😀").offset_at(position)


def test_changes_apply_in_order_and_report_code_point_offsets():
    d = doc("def f():\n    return 1\n")
    assert d.syntax is not None  # parsed now, so the changes below edit it
    edit = d.apply(types.TextDocumentContentChangePartial(
        range=types.Range(pos(1, 11), pos(1, 12)), text="😀 + 2"))
    assert (edit.start, edit.end, edit.text) == (20, 21, "😀 + 2")
    d.apply(types.TextDocumentContentChangePartial(range=types.Range(pos(1, 14), pos(1, 15)), text="-"))  # after the 2-unit emoji
    assert d.text == "def f():\n    return 😀 - 2\n"
    assert d.syntax.matches_fresh_parse(d.text)


def test_whole_document_change_replaces_everything():
    d = doc("a\nb\n")
    assert d.apply(types.TextDocumentContentChangeWholeDocument(text="x")).start == 0
    assert d.text == "x" and d.line_starts == [0]


def test_reversed_range_is_refused_and_leaves_the_text():
    d = doc("abc")
    with pytest.raises(PositionError, match="before its start"):
        d.apply(types.TextDocumentContentChangePartial(range=types.Range(pos(0, 2), pos(0, 1)), text="x"))
    assert d.text == "abc"


@pytest.mark.parametrize("text, draft, result", [
    ("print(|)\n", '"hi")', 'print("hi")\n'),        # the auto-closed paren is not doubled
    ("print(|)\n", '"hi"', 'print("hi")\n'),
    ("foo(() => {|});\n", "\n  x;\n}", "foo(() => {\n  x;\n});\n"),
    ("    |   \n", "return 1", "    return 1\n"),      # trailing blanks give way to the draft
    ("x = |y\n", "1 + ", "x = 1 + y\n"),              # text after the cursor is kept
])
def test_draft_edit_writes_the_draft_without_doubling_what_follows(text, draft, result):
    cursor = text.index("|")
    d = doc(text.replace("|", ""), language="javascript")
    edit = d.draft_edit(cursor, draft)
    start, end = d.offset_at(edit.range.start), d.offset_at(edit.range.end)
    assert start == cursor
    assert d.text[:start] + edit.new_text + d.text[end:] == result


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
def test_a_character_past_the_end_of_its_line_clamps_to_the_line_end_for_clients(encoding):
    d = doc("ab😀\r\ncd", encoding)
    assert d.offset_at(pos(0, 99), clamp=True) == 3
    with pytest.raises(PositionError, match="outside line 0"):
        d.offset_at(pos(0, 99))  # without clamp (the CLI's columns), still an error
    with pytest.raises(PositionError, match="line 2 is past the end"):
        d.offset_at(pos(2, 0), clamp=True)
    d.apply(types.TextDocumentContentChangePartial(range=types.Range(pos(1, 5), pos(1, 9)), text="!"))
    assert d.text == "ab😀\r\ncd!"


def test_lone_surrogates_become_replacement_characters_at_the_same_positions():
    d = doc("a\ud83db\n")  # what JSON "a\\ud83db" decodes to
    assert d.text == "a\ufffdb\n"
    assert d.syntax.matches_fresh_parse(d.text)
    edit = d.apply(types.TextDocumentContentChangePartial(range=types.Range(pos(0, 2), pos(0, 2)), text="\ude00"))
    assert (edit.start, edit.text) == (2, "\ufffd")
    client = "a\ud83d\ude00b"  # the client's line: each surrogate one UTF-16 unit, three WTF-8 bytes
    for encoding, codec, width in (("utf-16", "utf-16-le", 2), ("utf-8", "utf-8", 1)):
        held = Document("file:///t.py", d.text, 1, "python", encoding)
        units = len(client[:3].encode(codec, "surrogatepass")) // width
        assert held.offset_at(pos(0, units)) == 3 and held.position_at(3) == pos(0, units)


def test_many_documents_keep_trees_within_the_budget_and_reparse_when_used_again():
    trees = Trees(budget=100)
    docs = [Document(f"file:///{i}.py", f"def f{i}(x):\n    return x\n" * 2, 1, "python", trees=trees) for i in range(6)]
    for d in docs:
        assert d.syntax is not None
    kept = trees.kept
    assert sum(len(d.text) for d in docs if d.uri in kept) <= 100 and kept[-1] == docs[-1].uri
    assert docs[0]._syntax is None  # dropped, not only forgotten
    docs[0].apply(types.TextDocumentContentChangePartial(range=types.Range(pos(1, 11), pos(1, 12)), text="x + 1"))
    assert docs[0].syntax.matches_fresh_parse(docs[0].text) and trees.kept[-1] == docs[0].uri
    assert docs[0].draft_stop(len("def f0(x):"), 4) != "line"  # block drafts come back with the tree


def test_a_document_past_the_tree_limit_gets_line_drafts_without_a_parse(monkeypatch):
    monkeypatch.setattr("kvsplice.server.documents.MAX_TREE_CHARS", 40)
    d = doc("def f(x):\n\n" + "# filler\n" * 8)
    assert d.syntax is None and d.draft_stop(len("def f(x):\n"), 4) == "line"
