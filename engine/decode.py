"""Greedy decoding of several drafts at once, with speculative tokens from the document.

Each step runs one forward over every live draft's rows, so n drafts cost one pass over the
weights per step, not n. Each draft's rows are its last token plus up to `speculate` tokens that
prompt lookup (lookup.py) proposes; the model's greedy choice at each row is compared with the
next proposal, and the draft keeps the longest agreeing run plus the model's own next token. The
K/V of the accepted rows are already in place; rejected rows are overwritten by the next step.
So the output is exactly plain greedy decoding's (the int8 linears are row-independent too).

A proposed row is not free on a CPU (each costs 11% of a step for smollm2-135m, 17% for
Qwen2.5-Coder-0.5B, int8), and most proposals on real code are wrong, so each draft proposes
few tokens: 2 at first, then twice what was last accepted plus one, halving after a miss, and
never past where the draft's stop would end it. Replayed on 180 real-code drafts, this took
1.43x (smollm2) and 1.31x (Qwen) fewer step-costs than plain decoding, where always proposing
8 tokens took 1.19x and 0.99x.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import Cancelled
from .lookup import Lookup
from .model import Segment

SPECULATE = 8  # most proposed tokens per draft and step (`kvsplice bench peer` measures acceptance)
FIRST_GUESS = 2  # tokens a draft proposes before it has seen any accepted


def allowed(vocab, typed: bytes) -> list[int] | None:
    """Token ids consistent with the still-untyped bytes `typed` (None: anything goes)."""
    if not typed:
        return None
    table = vocab.table
    return [i for i in vocab.by_first_byte.get(typed[0], ())
            if table[i].startswith(typed) or typed.startswith(table[i])]


def pick(logits: torch.Tensor, allowed_ids: list[int] | None, k: int = 1) -> list[int]:
    if allowed_ids is None:
        return logits.topk(k).indices.tolist()
    idx = torch.tensor(allowed_ids)
    order = logits[idx].topk(min(k, len(allowed_ids))).indices
    return idx[order].tolist()


@dataclass
class Draft:
    base: int  # first slot of its region (the scratch chunk's copy)
    slot: int  # next slot to write
    lookup: Lookup
    remaining: bytes  # typed bytes the draft must still reproduce (and omit)
    out: bytearray = field(default_factory=bytearray)
    tokens: int = 0  # tokens emitted
    last: int = -1  # the latest emitted token, the next forward's first row
    text: str | None = None  # set when finished
    guess: int = FIRST_GUESS  # how many tokens to propose next

    def proposals(self, vocab, stop: Callable[[str], int | None], budget: int) -> list[int]:
        """Up to `guess` tokens from the lookup, none past where `stop` would end the draft."""
        if self.remaining:
            return []  # typed bytes still constrain the picks
        guess = self.lookup.propose(min(self.guess, budget))
        out = bytearray(self.out)
        for j, token in enumerate(guess):
            out += vocab.table[token]
            if stop(out.decode("utf-8", errors="ignore")) is not None:
                return guess[:j + 1]
        return guess

    def adapt(self, accepted: int, speculate: int) -> None:
        self.guess = min(speculate, 2 * accepted + 1) if accepted else max(1, self.guess // 2)

    def emit(self, token: int, vocab, stop: Callable[[str], int | None], max_new_tokens: int) -> bool:
        """Take one token; True when the draft is finished."""
        if token in vocab.special_ids:
            self.text = self.out.decode("utf-8", errors="ignore")
            return True
        piece = vocab.table[token]
        if self.remaining:
            used = min(len(self.remaining), len(piece))
            self.remaining, piece = self.remaining[used:], piece[used:]
        self.out += piece
        self.tokens += 1
        self.last = token
        self.lookup.push(token)
        text = self.out.decode("utf-8", errors="ignore")
        cut = stop(text)
        if cut is not None:
            self.text = text[:cut]
        elif self.tokens == max_new_tokens:
            self.text = text
        return self.text is not None


@dataclass
class Stats:
    """What decoding cost: forwards run, tokens emitted, speculative tokens proposed and kept."""

    forwards: int = 0
    tokens: int = 0
    proposed: int = 0
    accepted: int = 0


def decode(start, firsts: list[int], max_new_tokens: int, stop: Callable[[str], int | None],
           cancelled: Callable[[], bool] | None, speculate: int, stats: Stats | None = None) -> tuple[list[str], Stats]:
    """Continue each first token greedily (drafts.Start `start` holds the scratch); returns the
    drafts without the typed bytes, in the order of `firsts`, and what it cost (added to `stats`
    as it goes, so that a cancelled decode still says how far it got)."""
    vocab, cache, model = start.vocab, start.cache, start.model
    lookup = _lookup(start)
    drafts = []
    for i, first in enumerate(firsts):
        base = start.region(i)
        d = Draft(base, base + start.scratch, lookup.fork(), start.typed)
        d.emit(first, vocab, stop, max_new_tokens)
        drafts.append(d)
    stats = Stats() if stats is None else stats
    while live := [d for d in drafts if d.text is None]:
        if cancelled and cancelled():
            stats.tokens += sum(d.tokens for d in drafts)
            raise Cancelled()
        rows, proposals = [], []
        for d in live:
            guess = d.proposals(vocab, stop, min(speculate, max_new_tokens - d.tokens - 1))
            proposals.append(guess)
            rows.append([d.last, *guess])
        ids = torch.tensor([t for r in rows for t in r])
        positions = torch.tensor([start.position(d.slot + j, d.base) for d, r in zip(live, rows)
                                  for j in range(len(r))])
        segments = [Segment(start.prefix_len, d.base, d.slot + len(r), len(r), start.region_end(d.base))
                    for d, r in zip(live, rows)]
        logits = model.forward(ids, positions, segments, cache.k, cache.v, logits_rows=len(ids))
        stats.forwards += 1
        row = 0
        for d, guess in zip(live, proposals):
            stats.proposed += len(guess)
            for j in range(len(guess) + 1):
                token = pick(logits[row + j], allowed(vocab, d.remaining))[0]
                finished = d.emit(token, vocab, stop, max_new_tokens)
                if finished or j == len(guess) or token != guess[j]:
                    stats.accepted += j
                    d.slot += j + 1
                    d.adapt(j, speculate)
                    break
            row += len(guess) + 1
    stats.tokens += sum(d.tokens for d in drafts)
    return [d.text for d in drafts], stats


def _lookup(start) -> Lookup:
    """The index drafts propose from: recently deleted tokens, the window after the cursor, and
    the window before it (latest occurrences win), ending with the context the draft follows."""
    window = start.window
    ids = window.token_ids
    prefix_end = start.prefix_len - 1 + (0 if window.fim else 1)  # tokens before the draft's first
    return Lookup([list(window.deleted_ids), ids[prefix_end:]], ids[:prefix_end])
