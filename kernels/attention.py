"""Attention of new query rows against a cache segment pair: a visible prefix and a causal chunk.

Every forward the engine runs is this shape. Query row i of m belongs to cache slot
chunk_end - m + i and sees keys [0, prefix_len) plus chunk keys [chunk_start, its own slot].
Encoding in place has chunk_start == prefix_len (one contiguous causal range); a draft at a
cursor c < n reads the prefix [0, c) and its own scratch slots after the live cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    prefix_len: int, chunk_start: int, chunk_end: int, scale: float | None = None,
) -> torch.Tensor:
    """q [Hq, m, D]; k, v [Hkv, S, D] (one layer of the cache). Returns [Hq, m, D]."""
    m = q.shape[1]
    chunk_len = chunk_end - chunk_start
    if chunk_start == prefix_len:
        keys, values = k[:, :chunk_end], v[:, :chunk_end]
    else:
        keys = torch.cat((k[:, :prefix_len], k[:, chunk_start:chunk_end]), dim=1)
        values = torch.cat((v[:, :prefix_len], v[:, chunk_start:chunk_end]), dim=1)
    rows = torch.arange(m, device=q.device)[:, None] + (chunk_len - m)
    cols = torch.arange(chunk_len, device=q.device)[None, :]
    mask = torch.cat((torch.ones(m, prefix_len, dtype=torch.bool, device=q.device), cols <= rows), dim=1)
    out = F.scaled_dot_product_attention(
        q[None], keys[None], values[None], attn_mask=mask, scale=scale,
        enable_gqa=q.shape[0] != k.shape[0],
    )
    return out[0]
