"""Tree-sitter kept in step with edits, and the draft stop rules it drives."""
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsplice.server.documents import Document
from kvsplice.server.syntax import GRAMMARS, BraceStop, IndentStop, SyntaxTree, advance, point

REAL = Path(sysconfig.get_paths()["stdlib"], "colorsys.py").read_text()
PIECES = ["a", "😀", "中文", "\t", "\r\n", "\n", "\r", " ", "é", "def f():", "{", "}", "(", '"', "#", "x = 1"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 6), st.lists(st.sampled_from(PIECES), max_size=4)),
                min_size=1, max_size=12))
def test_incremental_tree_equals_a_fresh_parse_after_any_edits(edits):
    text = REAL[:1500]
    tree = SyntaxTree.for_language("python", text)
    for where, length, pieces in edits:
        start = int(where * len(text))
        end, new = min(len(text), start + length), "".join(pieces)
        new_text = text[:start] + new + text[end:]
        tree.edit(text, start, end, new, new_text)
        text = new_text
        assert tree.matches_fresh_parse(text)


def test_points_are_rows_and_byte_columns_with_rows_ending_at_lf_only():
    text = "a😀\r\nb中\rc"
    assert point(text, 6) == (1, 4)           # after "b中": 1 + 3 bytes
    assert point(text, 8) == (1, 6)           # a lone \r does not end a tree-sitter row
    assert advance((1, 4), "x\n中") == (2, 3)


def test_every_listed_grammar_is_installed():
    for language_id in GRAMMARS:
        assert SyntaxTree.for_language(language_id, "x") is not None, language_id
    assert SyntaxTree.for_language("cobol", "x") is None


def stop_at(language: str, marked: str):
    cursor = marked.index("|")
    return Document("file:///t", marked.replace("|", ""), 1, language).draft_stop(cursor, max_lines=4)


@pytest.mark.parametrize("language, marked, kind", [
    ("python", "def f(x):\n    |\n\ndef g(): pass\n", IndentStop),    # empty body
    ("python", "def f(x):|", IndentStop),                              # opens a block
    ("python", "for i in r:  # loop\n    |", IndentStop),              # comments are skipped
    ("python", "class A:\n    x = 1\n    |", "line"),                  # a body that has content
    ("python", "x = foo(|)", "line"),                                  # middle of an expression
    ("python", "d = {|", "line"),                                      # a dict is not a block
    ("python", "def f(x):|  y", "line"),                               # text follows on the line
    ("javascript", "function f() {\n  |\n}\n", BraceStop),
    ("javascript", "foo(() => {|});", BraceStop),                      # only closers follow
    ("typescript", "interface I {\n  |\n}", BraceStop),
    ("rust", "fn main() {\n    |\n}", BraceStop),
    ("go", "func f() {\n\t|\n}", BraceStop),
    ("java", "class A {\n  void f() {\n    |\n  }\n}", BraceStop),
    ("javascript", "const x = 1|", "line"),
    ("rust", "let v = vec![1, |];", "line"),
])
def test_multi_line_only_where_the_cursor_opens_a_block_or_an_empty_body(language, marked, kind):
    stop = stop_at(language, marked)
    assert stop == kind if isinstance(kind, str) else isinstance(stop, kind)


def cut(stop, draft: str) -> str:
    end = stop(draft)
    return draft if end is None else draft[:end]


@pytest.mark.parametrize("draft, expected", [
    ("return 1\n        x = 2\n    def g(self):\n        pass", "return 1\n        x = 2"),
    ("if x:\n            y\n        z\n", "if x:\n            y\n        z\n"),  # still inside
    ("a\n        b\n\n  c", "a\n        b"),                   # any line at or left of the header ends it
    ("\tx\n", "\tx\n"),
])
def test_python_block_ends_at_the_first_line_not_deeper_than_its_header(draft, expected):
    stop = stop_at("python", "class A:\n    def f(self):\n        |\n")
    assert cut(stop, draft) == expected


def test_python_draft_keeps_at_most_max_lines():
    stop = stop_at("python", "def f():\n    |")
    assert cut(stop, "a\n    b\n    c\n    d\n    e\n    f") == "a\n    b\n    c\n    d"


@pytest.mark.parametrize("marked, draft, expected", [
    # the document closes the block below: the draft stops before its own `}`
    ("function f() {\n  |\n}\n", 'return "}";\n}\n\nfunction g() {}', 'return "}";'),
    ("function f() {\n  |\n}\n", "if (x) {\n    y();\n  }\n  z();\n}", "if (x) {\n    y();\n  }\n  z();"),
    ("function f() {\n  |\n}\n", "s = `${a}`; // }\n  t();\n}", "s = `${a}`; // }\n  t();"),
    # not closed below: the draft's `}` ends it and is kept
    ("if (x) {\n  |", "y();\n}\nelse {", "y();\n}"),
    ("foo(() => {|});", "\n  return 1;\n}", "\n  return 1;\n}"),
    ("fn main() {\n    |\n}", "let s = \"}\";\n}\nfn g() {}", "let s = \"}\";"),
])
def test_brace_block_ends_at_its_closing_brace_ignoring_strings_and_comments(marked, draft, expected):
    language = "rust" if marked.startswith("fn") else "javascript"
    assert cut(stop_at(language, marked), draft) == expected


def test_brace_stop_judges_each_of_several_drafts_afresh():
    stop = stop_at("javascript", "function f() {\n  |\n}\n")
    assert cut(stop, "a();\n}\nb") == "a();"
    assert cut(stop, "if (x) {\n    c();\n  }") == "if (x) {\n    c();\n  }"  # open: decoding goes on
    assert cut(stop, "if (x) {\n    c();\n  }\n}") == "if (x) {\n    c();\n  }"
