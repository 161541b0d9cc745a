"""Edit-replay cases from real source: a target line, its true left context, and the edits that
turn an older document into that context (PIE paper protocol, DESIGN §8).

Every case is built backwards from the truth: the *new* document after the edits is exactly the
context before the target line, so every strategy is scored on the same text and only the cache
it holds differs. A case is a pure function of (corpus, seed, index, context budget, edit type).
"""
from __future__ import annotations

import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kvsplice.server.documents import CLOSERS, redundant_after

EDIT_TYPES = ("insert", "delete", "multi")
MAX_LINE_CHARS = 200
MAX_FILE_BYTES = 400_000
SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Region:
    """True lines [a, b) of the context; the old document held `old` lines there instead."""

    a: int
    b: int
    old: tuple[str, ...]
    kind: str  # insert (old empty), delete (a == b), replace


@dataclass(frozen=True)
class Case:
    index: int
    edit: str
    source: str            # file the target line comes from (relative to the corpus)
    line_no: int           # 1-based line number of the target line in that file
    context: str           # the true document: the text right before the target line
    target: str            # the true next line (without its newline)
    old_text: str          # the document the cache is built on
    edits: tuple[tuple[int, int, str], ...]  # (start, end, new_text) applied in order
    suffix: str = ""       # mid-file cases: the real code after the target line (the cursor's suffix)
    rest: str = ""         # mid-line cases: what follows the hole on its line (closers), the suffix's start

    @property
    def document(self) -> str:
        """The true document after the edits: the context, the target left out, the suffix."""
        return self.context + self.suffix

    @property
    def truth(self) -> str:
        """The true text from the cursor to the end of its line."""
        return self.target + self.rest

    def accepted(self, draft: str) -> str:
        """What the cursor's line then reads from the cursor on, the draft accepted as the server
        writes it (documents.redundant_after: closers after the cursor that the draft ends with
        are replaced, not doubled: `foo(|)` with draft `x)` reads `x)`)."""
        return draft + self.rest[redundant_after(self.rest, draft):]

    def replay(self) -> str:
        """Apply the edits to old_text; equals `document` (checked by the benchmark)."""
        text = self.old_text
        for start, end, new in self.edits:
            text = text[:start] + new + text[end:]
        return text


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: Path) -> list[Path]:
    """Python files under root in a fixed order (installed third-party packages excluded)."""
    files = [p for p in sorted(root.rglob("*.py"))
             if not SKIP_PARTS & set(p.relative_to(root).parts) and p.is_file()
             and p.stat().st_size <= MAX_FILE_BYTES]
    if not files:
        raise ValueError(f"no .py files under {root}")
    return files


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (UnicodeDecodeError, OSError):
        return []


def _is_target(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#") and len(line) <= MAX_LINE_CHARS and "\t" not in line[:1]


class CaseMaker:
    """Draws cases from a corpus; `count_tokens` is the model tokenizer's length function."""

    def __init__(self, root: Path, count_tokens: Callable[[str], int], context: int, seed: int):
        self.root, self.count, self.context, self.seed = root, count_tokens, context, seed
        self.files = corpus_files(root)

    def truncate(self, lines: list[str], budget: int) -> list[str]:
        """The longest tail of `lines` (cut at a line boundary) that fits in `budget` tokens."""
        keep, total = 0, 0
        for line in reversed(lines):
            total += self.count(line)
            if total > budget:
                break
            keep += 1
        tail = lines[len(lines) - keep:]
        while tail and self.count("".join(tail)) > budget:  # merges across lines can differ
            tail = tail[1:]
        return tail

    def foreign_lines(self, rng: random.Random, k: int, avoid: Path) -> list[str]:
        """k consecutive non-blank lines from another file of the corpus."""
        for _ in range(100):
            path = rng.choice(self.files)
            lines = [ln for ln in _read_lines(path) if ln.strip() and len(ln) <= MAX_LINE_CHARS]
            if path != avoid and len(lines) > k:
                a = rng.randrange(len(lines) - k)
                return [ln if ln.endswith("\n") else ln + "\n" for ln in lines[a:a + k]]
        raise ValueError("corpus too small to draw foreign lines from")

    def draw(self, rng: random.Random) -> tuple[Path, int, list[str]]:
        """A target line whose truncated context is at least 90% of the budget."""
        for _ in range(1000):
            path = rng.choice(self.files)
            lines = _read_lines(path)
            if len(lines) < 20:
                continue
            t = rng.randrange(10, len(lines))
            if not _is_target(lines[t]):
                continue
            # Cheap pre-filter: ~2 chars per token is a safe lower bound for code.
            if sum(len(ln) for ln in lines[:t]) < self.context * 2:
                continue
            window = lines[max(0, t - self.context):t]
            ctx = self.truncate(window, self.context)
            if self.count("".join(ctx)) >= 0.9 * self.context and len(ctx) >= 12:
                return path, t, ctx
        raise ValueError(f"could not find targets with {self.context} tokens of context in {self.root}")

    def case(self, index: int, edit: str, suffix_tokens: int = 0, mid_line: bool = False) -> Case:
        """Case `index` (a pure function of it); with `suffix_tokens`, a mid-file case whose
        document goes on after the target line with up to that many tokens of the file. With
        `mid_line` the cursor sits inside the target line: its start typed, the closers at its
        end already there (as editors auto-insert them), the hole in between the target."""
        rng = random.Random(f"{self.seed}:{index}:{self.context}")
        path, t, ctx = self.draw(rng)
        lines = _read_lines(path)
        target, typed, rest = lines[t].rstrip("\r\n"), "", ""
        suffix = "".join(self.truncate(lines[t + 1:][::-1], suffix_tokens)[::-1]) if suffix_tokens else ""
        if mid_line:
            typed, target, rest = _hole(target, random.Random(f"{self.seed}:{index}:{self.context}:mid-line"))
            suffix = rest + lines[t][len(typed) + len(target) + len(rest):] + suffix
        if edit == "multi":
            kinds = [rng.choice(("insert", "delete", "replace")) for _ in range(3)]
        else:
            kinds = [edit]
        regions = self._regions(rng, ctx, kinds, path)
        old_text, edits = _build(ctx, regions, rng)
        case = Case(index, edit, str(path.relative_to(self.root)), t + 1, "".join(ctx) + typed, target,
                    old_text + typed + suffix, tuple(edits), suffix, rest)
        assert case.replay() == case.document
        return case

    def _regions(self, rng: random.Random, ctx: list[str], kinds: list[str], path: Path) -> list[Region]:
        """Non-overlapping regions at random places of the context, one per edit kind."""
        n = len(ctx)
        while True:
            regions = []
            for kind in kinds:
                k = rng.randint(1, 5)
                if kind == "delete":
                    a = rng.randint(0, n)
                    regions.append(Region(a, a, tuple(self.foreign_lines(rng, k, path)), kind))
                else:
                    a = rng.randint(0, n - k)
                    old = () if kind == "insert" else tuple(self.foreign_lines(rng, k, path))
                    regions.append(Region(a, a + k, old, kind))
            regions.sort(key=lambda r: (r.a, r.b))
            # Disjoint and not touching: two edits at one spot would be one edit.
            if all(r.b < s.a for r, s in zip(regions, regions[1:])):
                return regions


def _hole(line: str, rng: random.Random) -> tuple[str, str, str]:
    """line split as (typed, hole, closers): the cursor after at least one character of the
    line's code, the hole at least one character up to the closers that end the line."""
    code = line.rstrip(CLOSERS + " ")
    indent = len(line) - len(line.lstrip())
    if len(code) - indent < 2:  # nothing to split: the whole line is the hole
        return "", line, ""
    a = rng.randint(indent + 1, len(code) - 1)
    return line[:a], line[a:len(code)], line[len(code):]


def _build(ctx: list[str], regions: list[Region], rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    """The old document and the edits (in a random order, offsets in the then-current text)."""
    pieces, prev = [], 0      # alternating kept text and (old, new) edit slots
    for r in regions:
        pieces.append("".join(ctx[prev:r.a]))
        pieces.append(("".join(r.old), "".join(ctx[r.a:r.b])))
        prev = r.b
    pieces.append("".join(ctx[prev:]))
    slots = [i for i, p in enumerate(pieces) if isinstance(p, tuple)]
    order = slots[:]
    rng.shuffle(order)
    state = {i: p[0] for i, p in enumerate(pieces) if isinstance(p, tuple)}
    old_text = "".join(p if isinstance(p, str) else p[0] for p in pieces)
    edits = []
    for slot in order:
        start = sum(len(p if isinstance(p, str) else state[i]) for i, p in enumerate(pieces[:slot]))
        old, new = pieces[slot]
        edits.append((start, start + len(old), new))
        state[slot] = new
    return old_text, edits
