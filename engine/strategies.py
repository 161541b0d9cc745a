"""Edit strategies: each decides only *what* to re-encode and how far to shift what it keeps.

A strategy turns a token splice into a `Plan` in cache-slot coordinates; the session applies
every plan with the same machinery (move + rotate, then one forward over the encoded rows).

- `pie`: keep the prefix, encode the new tokens, move the suffix by Δ and rotate its keys by Δ
  (Positional Integrity Encoding). Exact for the prefix, the new tokens and layer 0.
- `recompute`: re-encode everything from the first changed token (exact, the reference).
- `naive`: like pie but the moved keys keep their old rotation (the paper's failing baseline).
- `chunk-reuse`: llama.cpp server's `--cache-reuse`: after the common prefix, old chunks of at
  least `min_chunk` tokens that match the new ids *at the current position* are shifted left
  into place; the rest is recomputed. Insertions therefore recompute the whole suffix.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Move:
    start: int
    end: int
    shift: int
    delta: int


@dataclass
class Plan:
    """Moves are applied in order, then new-slot rows [encode_start, encode_end) are encoded."""

    moves: list[Move] = field(default_factory=list)
    encode_start: int = 0
    encode_end: int = 0


def plan_edit(strategy: str, old_ids: list[int], new_ids: list[int], i: int, j: int,
              min_chunk: int = 32) -> Plan:
    """Plan the cache patch for old slots [i, j) replaced so that the cache holds new_ids."""
    check_strategy(strategy)
    m = len(new_ids) - len(old_ids) + (j - i)
    delta = m - (j - i)
    n = len(old_ids)
    if strategy == "recompute":
        return Plan([], i, len(new_ids))
    if strategy == "pie":
        return Plan([Move(j, n, delta, delta)], i, i + m)
    if strategy == "naive":
        return Plan([Move(j, n, delta, 0)], i, i + m)
    return _chunk_reuse(old_ids, new_ids, i, min_chunk)  # chunk-reuse


def _chunk_reuse(old_ids: list[int], new_ids: list[int], start: int, min_chunk: int) -> Plan:
    moves = []
    head_c = head_p = start
    while head_c < len(old_ids) and head_p < len(new_ids):
        run = 0
        while (head_c + run < len(old_ids) and head_p + run < len(new_ids)
               and old_ids[head_c + run] == new_ids[head_p + run]):
            run += 1
        if run >= min_chunk:
            shift = head_p - head_c
            moves.append(Move(head_c, head_c + run, shift, shift))
            head_c += run
            head_p += run
        else:
            head_c += 1
    return Plan(moves, head_p, len(new_ids))


STRATEGIES = ("pie", "recompute", "naive", "chunk-reuse")


def check_strategy(name: str) -> None:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def parse_variant(name: str) -> tuple[str, dict]:
    """'pie+r32+t16+d' -> ('pie', {'refresh_tokens': 32, 'tail_tokens': 16, 'defer': True}): a
    strategy with its refresh window R, tail window T and deferred (fused) encoding, as benchmark
    rows name them ('pie' alone: R = T = 0, encoded at the edit)."""
    strategy, *parts = name.split("+")
    options = {"refresh_tokens": 0, "tail_tokens": 0, "defer": False}
    for part in parts:
        key = {"r": "refresh_tokens", "t": "tail_tokens"}.get(part[:1])
        if part == "d":
            options["defer"] = True
        elif key is None or not part[1:].isdigit():
            raise ValueError(f"bad strategy variant {name!r}: expected e.g. pie+r32+t16 (+d: deferred)")
        else:
            options[key] = int(part[1:])
    check_strategy(strategy)
    return strategy, options
