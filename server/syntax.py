"""Tree-sitter for open documents: the tree kept in step with each edit, and where drafts stop.

Stop rules (DESIGN §5): a draft is one line, unless the cursor opens a new block or sits in an
empty body (the last token before it, comments skipped, is a block opener: `:` of a Python
compound statement, `{` elsewhere; and nothing but closers follows on its line, which
Document.draft_stop checks). Then the draft
runs to the end of that block and never past it: in Python up to the first line indented no
deeper than the block's header; in brace languages up to the `}` that closes the block, found
by parsing the document with the draft inserted (so braces in strings and comments do not
count). That `}` is dropped when the document closes the block on a later line already;
a `}` after the cursor on its own line is replaced instead (see Document.draft_edit).
Languages without a grammar wheel get line drafts.
"""
from __future__ import annotations

import functools
import importlib
from collections import OrderedDict
from typing import Callable, Protocol, Union

from tree_sitter import Language, Node, Parser, Tree

Stop = Union[str, Callable[[str], "int | None"]]

GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "javascriptreact": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "typescriptreact": ("tree_sitter_typescript", "language_tsx"),
    "rust": ("tree_sitter_rust", "language"),
    "go": ("tree_sitter_go", "language"),
    "java": ("tree_sitter_java", "language"),
}
SUFFIXES = {".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
            ".cjs": "javascript", ".jsx": "javascriptreact", ".ts": "typescript", ".mts": "typescript",
            ".tsx": "typescriptreact", ".rs": "rust", ".go": "go", ".java": "java"}  # for files outside an editor
INDENTED = {"python"}
# A tree takes ~22 bytes a character of Python (measured: 1.6 MB for a 73k-character file).
TREE_CHARS = 4_000_000  # text under kept trees, all open documents together (~90 MB of trees)
MAX_TREE_CHARS = 1_000_000  # a longer document gets line drafts: its tree alone would be ~22 MB a MB


@functools.cache
def grammar(language_id: str) -> Language | None:
    """The installed grammar for an LSP languageId, or None (line drafts only)."""
    spec = GRAMMARS.get(language_id)
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec[0])
    except ImportError:
        return None
    return Language(getattr(module, spec[1])())


def point(text: str, offset: int) -> tuple[int, int]:
    """tree-sitter's (row, byte column) of a code-point offset; its rows end at "\\n" only."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset), len(text[line_start:offset].encode())


def advance(start: tuple[int, int], inserted: str) -> tuple[int, int]:
    """The point after `inserted` when it is written at `start`."""
    rows = inserted.count("\n")
    if rows == 0:
        return start[0], start[1] + len(inserted.encode())
    return start[0] + rows, len(inserted[inserted.rfind("\n") + 1:].encode())


class Parsed(Protocol):
    """What Trees keeps trees for (a server Document)."""

    uri: str
    text: str

    def drop_tree(self) -> None: ...


class Trees:
    """Which open documents keep their tree: the most recently used, up to `budget` characters
    of text in all. A document whose tree was dropped parses again when next needed (milliseconds
    for thousands of lines), so many open documents cost a bounded amount of memory."""

    def __init__(self, budget: int = TREE_CHARS):
        self.budget = budget
        self._kept: OrderedDict[str, Parsed] = OrderedDict()

    def used(self, doc: Parsed) -> None:
        """doc's tree was just used: keep it, dropping the least recently used others over budget."""
        self._kept[doc.uri] = doc
        self._kept.move_to_end(doc.uri)
        total = sum(len(d.text) for d in self._kept.values())
        while total > self.budget and len(self._kept) > 1:
            _, old = self._kept.popitem(last=False)
            old.drop_tree()
            total -= len(old.text)

    def forget(self, uri: str) -> None:
        self._kept.pop(uri, None)

    @property
    def kept(self) -> list[str]:
        """Uris whose trees are kept, least recently used first."""
        return list(self._kept)


class SyntaxTree:
    """A document's tree; `edit` keeps it in step with the text without a full reparse."""

    def __init__(self, language_id: str, language: Language, text: str):
        self.language_id = language_id
        self.parser = Parser(language)
        self.tree: Tree = self.parser.parse(text.encode())

    @classmethod
    def for_language(cls, language_id: str, text: str) -> "SyntaxTree | None":
        language = grammar(language_id)
        return cls(language_id, language, text) if language is not None else None

    def edit(self, old_text: str, start: int, end: int, new: str, new_text: str) -> None:
        """old_text[start:end] (code points) became `new`, giving new_text."""
        start_byte = len(old_text[:start].encode())
        start_point = point(old_text, start)
        removed = old_text[start:end]
        self.tree.edit(
            start_byte=start_byte,
            old_end_byte=start_byte + len(removed.encode()),
            new_end_byte=start_byte + len(new.encode()),
            start_point=start_point,
            old_end_point=advance(start_point, removed),
            new_end_point=advance(start_point, new),
        )
        self.tree = self.parser.parse(new_text.encode(), self.tree)

    def matches_fresh_parse(self, text: str) -> bool:
        """Whether the incrementally kept tree equals a full parse of `text`, node by node, in
        bytes and points: what wrong edit offsets would break (a check for tests)."""
        return _shape(self.tree) == _shape(self.parser.parse(text.encode()))

    def block_stop(self, text: str, cursor: int, max_lines: int) -> Stop:
        """The block stop for a draft at `cursor` (code points) if the cursor opens a block or
        sits in an empty body, else "line". The caller checks that nothing but closers follows
        the cursor on its line."""
        source = text.encode()
        at = len(text[:cursor].encode())
        opener = _opener(self.tree.root_node, source, at, ":" if self.language_id in INDENTED else "{")
        if opener is None:
            return "line"
        if self.language_id in INDENTED:
            header = opener.parent if opener.parent.type != "ERROR" else opener
            return IndentStop(_indent_width(source, header.start_byte), max_lines)
        at_point, last = point(text, cursor), opener.parent.children[-1]
        closed_below = last.type == "}" and not last.is_missing and last.start_point.row > at_point[0]
        return BraceStop(self.parser.language, self.tree.copy(), source, at, at_point, closed_below, max_lines)


def _opener(root: Node, source: bytes, at: int, kind: str) -> Node | None:
    """The token ending the last non-blank, non-comment text before byte `at`, if it is `kind`
    opening a block (for `:`: of a compound statement or clause, or of an unfinished one)."""
    end = at
    while True:
        while end > 0 and source[end - 1] in b" \t\r\n\f\v":
            end -= 1
        if end == 0:
            return None
        node = root.descendant_for_byte_range(end - 1, end)
        if node.type.endswith("comment"):
            end = node.start_byte
            continue
        if node.type != kind or node.end_byte != end:
            return None
        if kind == ":" and not node.parent.type.endswith(("_statement", "_definition", "_clause", "ERROR")):
            return None
        return node


def _indent_width(source: bytes, byte: int) -> int:
    line = source[source.rfind(b"\n", 0, byte) + 1:byte].decode(errors="replace")
    return _width(line)


def _width(line: str) -> int:
    """Columns of a line's leading blanks, tabs to multiples of 8 (as Python's tokenizer)."""
    return len(line[:len(line) - len(line.lstrip(" \t"))].expandtabs(8))


def _cut_lines(lines: list[str], keep: int) -> int:
    """Index into the draft split as `lines` that keeps its first `keep` lines, minus trailing blanks."""
    return len("\n".join(lines[:keep]).rstrip())


def _line_limit(draft: str, max_lines: int) -> int | None:
    """Cut after `max_lines` lines counted from the first one with content."""
    lines = draft.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    if len(lines) > first + max_lines:
        return _cut_lines(lines, first + max_lines)
    return None


class IndentStop:
    """A Python block ends at the first line indented no deeper than its header."""

    def __init__(self, header_width: int, max_lines: int):
        self.header_width, self.max_lines = header_width, max_lines

    def __call__(self, draft: str) -> int | None:
        lines = draft.split("\n")
        for i, line in enumerate(lines[1:], 1):
            if line.strip() and _width(line) <= self.header_width:
                return _cut_lines(lines, i)
        return _line_limit(draft, self.max_lines)


class BraceStop:
    """A brace block ends at the `}` that takes the draft's brace depth below zero.

    Called with the whole draft after every token (and for each of n drafts in turn); it parses
    only when a `}` arrived since the longest draft already known to leave the block open.
    """

    def __init__(self, language: Language, tree: Tree, source: bytes, at: int,
                 at_point: tuple[int, int], closed: bool, max_lines: int):
        self.language, self.tree, self.source, self.at, self.at_point = language, tree, source, at, at_point
        self.closed, self.max_lines = closed, max_lines
        self.parser: Parser | None = None  # made on the thread that decodes
        self.still_open = ""

    def __call__(self, draft: str) -> int | None:
        known = self.still_open if draft.startswith(self.still_open) else ""
        if "}" in draft[len(known):]:
            end = self._block_end(draft)
            if end is not None:
                return len(draft[:end].rstrip()) if self.closed else end + 1
            self.still_open = draft
        return _line_limit(draft, self.max_lines)

    def _block_end(self, draft: str) -> int | None:
        """Index in draft of the `}` closing the block, or None while it stays open."""
        inserted = draft.encode()
        at = self.at
        tree = self.tree.copy()
        tree.edit(start_byte=at, old_end_byte=at, new_end_byte=at + len(inserted),
                  start_point=self.at_point, old_end_point=self.at_point,
                  new_end_point=advance(self.at_point, draft))
        self.parser = self.parser or Parser(self.language)
        tree = self.parser.parse(self.source[:at] + inserted + self.source[at:], tree)
        depth = 0
        for leaf in _leaves(tree.root_node, at, at + len(inserted)):
            if leaf.is_missing:
                continue
            if leaf.type.endswith("{"):  # also "${" of template strings
                depth += 1
            elif leaf.type == "}":
                depth -= 1
                if depth < 0:
                    return len(inserted[:leaf.start_byte - at].decode(errors="ignore"))
        return None


def _leaves(node: Node, start: int, end: int):
    """Leaf tokens that lie within bytes [start, end), in order."""
    if node.end_byte <= start or node.start_byte >= end:
        return
    if node.child_count == 0:
        if node.start_byte >= start and node.end_byte <= end:
            yield node
        return
    for child in node.children:
        yield from _leaves(child, start, end)


def _shape(tree: Tree) -> list[tuple]:
    cursor, shape = tree.walk(), []
    while True:
        node = cursor.node
        shape.append((node.type, node.start_byte, node.end_byte, node.start_point, node.end_point))
        if cursor.goto_first_child() or cursor.goto_next_sibling():
            continue
        while cursor.goto_parent():
            if cursor.goto_next_sibling():
                break
        else:
            return shape
