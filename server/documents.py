"""Open documents: the text mirror, LSP positions in the negotiated encoding, and the syntax tree.

Content changes are applied here one at a time, in order; `apply` updates the mirror and the
tree and returns the change in code points, the engine's unit. The mirror is kept here rather
than in pygls' workspace documents, which split lines with `str.splitlines` (LSP ends lines only
at \\n, \\r\\n and \\r, not at \\f, \\v, \\x1c-\\x1e, \\x85, \\u2028, \\u2029) and map the position after a
final newline to a wrong offset under utf-8: each would leave the cache encoding a text the
editor does not show.

Client text enters here only, through `engine_input`: the mirror, the tree and the engine all
hold the same text, the client's with each lone surrogate made U+FFFD.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from lsprotocol import types

from .syntax import MAX_TREE_CHARS, Stop, SyntaxTree, Trees, grammar

EOL = re.compile(r"\r\n|\r|\n")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str from JSON, a surrogate is always unpaired
CLOSERS = ")]}>'\"`;,"  # what editors auto-insert after a cursor, and statement ends
CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": (None, 1)}


def redundant_after(rest: str, draft: str) -> int:
    """How much of `rest` (the line after the cursor) a draft written at the cursor replaces:
    blanks only (the draft brings its own indentation), or closers the editor auto-inserted
    that the draft ends with (`foo(|)` with draft `x)` gives `foo(x)`, not `foo(x))`)."""
    blanks = len(rest) - len(rest.lstrip(" \t"))
    closers = len(rest) - blanks - len(rest[blanks:].lstrip(CLOSERS))
    matched = next((k for k in range(closers, 0, -1) if draft.endswith(rest[blanks:blanks + k])), 0)
    return len(rest) if blanks == len(rest) else blanks + matched if matched else 0


def engine_input(text: str) -> str:
    """Client text as the mirror, the tree and the engine hold it: each lone surrogate (JSON
    strings can carry one, UTF-8 cannot, so neither tree-sitter nor the tokenizer take it)
    becomes U+FFFD. Both are one code point, one UTF-16 unit and three UTF-8 bytes (the
    surrogate's as the client would count them), so every position and offset stays the same."""
    return LONE_SURROGATE.sub("\ufffd", text)


class PositionError(ValueError):
    """A position or range that does not exist in the document."""


@dataclass(frozen=True)
class Edit:
    """One applied change: text[start:end] (code points, before the change) became `text`."""

    start: int
    end: int
    text: str


class Document:
    """One open document. `broken` holds why the mirror lost step with the editor, if it did;
    `changes` counts didChange notifications received, applied or not (a draft answers
    ContentModified when it moved). Its tree is parsed when first needed and kept while `trees`
    (shared by a server's documents; by default this document's own) lets it."""

    def __init__(self, uri: str, text: str, version: int, language_id: str, encoding: str = "utf-16",
                 trees: Trees | None = None):
        text = engine_input(text)
        self.uri, self.text, self.version, self.language_id = uri, text, version, language_id
        self.encoding = encoding
        self._codec, self._width = CODECS[encoding]
        self.trees = trees or Trees()
        self._syntax: SyntaxTree | None = None
        self.broken: str | None = None
        self.changes = 0
        self._starts: list[int] | None = None

    @property
    def syntax(self) -> SyntaxTree | None:
        """The tree, kept in step with each change; None without a grammar or past MAX_TREE_CHARS."""
        if self._syntax is None and len(self.text) <= MAX_TREE_CHARS and grammar(self.language_id):
            self._syntax = SyntaxTree.for_language(self.language_id, self.text)
        if self._syntax is not None:
            self.trees.used(self)
        return self._syntax

    def drop_tree(self) -> None:
        self._syntax = None

    @property
    def line_starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [0, *(m.end() for m in EOL.finditer(self.text))]
        return self._starts

    def _line(self, line: int) -> tuple[int, str]:
        """Start offset and content (without its line ending) of a 0-based line."""
        starts = self.line_starts
        if not 0 <= line < len(starts):
            raise PositionError(f"line {line} is past the end of the document ({len(starts)} lines)")
        end = starts[line + 1] if line + 1 < len(starts) else len(self.text)
        return starts[line], self.text[starts[line]:end].rstrip("\r\n")

    def offset_at(self, position: types.Position, clamp: bool = False) -> int:
        """Code-point offset of an LSP position; PositionError if it is not in the document.
        With `clamp`, LSP's rule for what clients send: a character past the end of its line
        means the end of the line (a line past the end of the document stays an error)."""
        start, content = self._line(position.line)
        plain = content.isascii() or self._codec is None
        data = b"" if plain else content.encode(self._codec)
        length = len(content) if plain else len(data) // self._width
        units = min(position.character, length) if clamp else position.character
        if not 0 <= units <= length:
            raise PositionError(f"character {position.character} is outside line {position.line}, "
                                f"which has {length} {self.encoding} units")
        if plain:
            return start + units
        try:
            return start + len(data[:units * self._width].decode(self._codec))
        except UnicodeDecodeError:
            raise PositionError(f"position {position.line}:{units} splits a character "
                                f"({self.encoding} units)") from None

    def position_at(self, offset: int) -> types.Position:
        """The LSP position of a code-point offset."""
        line = bisect.bisect_right(self.line_starts, offset) - 1
        before = self.text[self.line_starts[line]:offset]
        if self._codec is None:
            return types.Position(line, len(before))
        return types.Position(line, len(before.encode(self._codec)) // self._width)

    def line_end(self, offset: int) -> int:
        """Offset of the end of the line holding `offset`, before its line ending."""
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start, content = self._line(line)
        return start + len(content)

    def draft_stop(self, cursor: int, max_lines: int) -> Stop:
        """How a draft at `cursor` ends: at the end of its line, or with the block the cursor
        opens (syntax.py) when the language has a grammar and only closers follow on the line."""
        if self.text[cursor:self.line_end(cursor)].strip(CLOSERS + " \t") or self.syntax is None:
            return "line"
        return self.syntax.block_stop(self.text, cursor, max_lines)

    def draft_edit(self, cursor: int, draft: str) -> types.TextEdit:
        """The edit that writes a draft at the cursor, replacing what it makes redundant after
        the cursor on its line (`redundant_after`)."""
        replaced = redundant_after(self.text[cursor:self.line_end(cursor)], draft)
        return types.TextEdit(range=types.Range(self.position_at(cursor), self.position_at(cursor + replaced)),
                              new_text=draft)

    def apply(self, change: types.TextDocumentContentChangeEvent) -> Edit:
        """Apply one content change (ranged or whole-document) to the mirror and the tree."""
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = self.offset_at(change.range.start, clamp=True), self.offset_at(change.range.end, clamp=True)
            if end < start:
                raise PositionError(f"range end {change.range.end.line}:{change.range.end.character} "
                                    f"is before its start")
        else:
            start, end = 0, len(self.text)
        new = engine_input(change.text)
        old, self.text = self.text, self.text[:start] + new + self.text[end:]
        self._starts = None
        if self._syntax is not None:  # a dropped tree parses afresh when next needed
            if len(self.text) > MAX_TREE_CHARS:
                self._syntax = None
            else:
                self._syntax.edit(old, start, end, new, self.text)
        return Edit(start, end, new)
