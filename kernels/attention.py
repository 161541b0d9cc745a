"""Attention of new query rows against a cache segment pair: a visible prefix and a causal chunk.

Every forward the engine runs is this shape. Query row i of m belongs to cache slot
chunk_end - m + i and sees keys [0, prefix_len) plus chunk keys [chunk_start, its own slot].
Encoding in place has chunk_start == prefix_len (one contiguous causal range); a draft at a
cursor c < n reads the prefix [0, c) and its own scratch slots after the live cache.

The Triton kernel sees the visible keys as one virtual sequence j = 0 .. prefix_len + chunk_len - 1
(slot j for j < prefix_len, slot chunk_start + j - prefix_len after), so the gap between the two
segments is never read and nothing is copied. The torch reference does the same for decode (one
matmul per segment) and hands chunks to SDPA.
"""
from __future__ import annotations

import math
import operator
from typing import Optional

import torch
import torch.nn.functional as F

from .dispatch import jit, tl, torchscript, triton, use_triton

# Rows per kv head (query rows x group size) up to which the Triton path counts an op as decode
# (small row blocks split over the keys), and query rows up to which the reference uses one
# batched matmul per segment (decode steps with their speculative rows).
_DECODE_ROWS = 16


# ---- torch reference ---------------------------------------------------------------------------

def _chunk_mask(m: int, chunk_len: int, device: torch.device, columns: Optional[int] = None) -> torch.Tensor:
    """[m, columns (default chunk_len)] bool: row i sees chunk keys up to its own slot
    (bottom-right causal in the chunk; columns past the chunk are never seen)."""
    rows = torch.arange(m, device=device)[:, None] + (chunk_len - m)
    return torch.arange(chunk_len if columns is None else columns, device=device)[None, :] <= rows


def _attention_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_len: int, chunk_start: int,
                      chunk_end: int, scale: float, keys_end: int) -> torch.Tensor:
    """Scores per segment with grouped heads folded into rows, in fp32: K/V are read as views
    (no copy for an fp32 cache), never expanded per query head nor concatenated. For decode,
    where it beats SDPA on CPU for long caches (2x at 8k keys) and for a draft's two segments.
    Chunk keys are read up to `keys_end` (>= chunk_end), masked past each row's own slot: every
    reduction then runs over the same keys however many rows share the call, so a row's result
    does not depend on them (speculative rows equal plain decoding, bit for bit)."""
    hq, m, dim = q.shape[0], q.shape[1], q.shape[2]
    hkv = k.shape[0]
    qg = q.float().reshape(hkv, (hq // hkv) * m, dim)
    chunk_k = k.narrow(1, chunk_start, keys_end - chunk_start).float()
    chunk_v = v.narrow(1, chunk_start, keys_end - chunk_start).float()
    chunk = torch.bmm(qg, chunk_k.transpose(1, 2))
    if m > 1 or keys_end > chunk_end:
        rows = torch.arange(m, device=q.device).unsqueeze(1) + (chunk_end - chunk_start - m)
        unseen = torch.arange(keys_end - chunk_start, device=q.device).unsqueeze(0) > rows
        chunk.view(hkv, hq // hkv, m, -1).masked_fill_(unseen, float("-inf"))
    if prefix_len == 0:
        out = torch.bmm(chunk.mul_(scale).softmax(dim=-1), chunk_v)
    else:
        prefix_k, prefix_v = k.narrow(1, 0, prefix_len).float(), v.narrow(1, 0, prefix_len).float()
        scores = torch.cat([torch.bmm(qg, prefix_k.transpose(1, 2)), chunk], dim=-1)
        probs = scores.mul_(scale).softmax(dim=-1)
        out = torch.baddbmm(torch.bmm(probs.narrow(2, 0, prefix_len), prefix_v),
                            probs.narrow(2, prefix_len, keys_end - chunk_start), chunk_v)
    return out.view(hq, m, dim).to(q.dtype)


_attention_matmul = torchscript(_attention_matmul)

# The CPU decode op: the AVX2 kernel (decode_attention.cpp) once kernels.native has built and
# loaded it, and `_attention_matmul` until then or where it cannot build. An op rather than a
# Python branch, so that the TorchScript layer stack (engine/step.py) calls whichever runs.
# Defined once per process: run from the repository's root, this file is also importable as the
# top-level `kernels.attention` (transformers probes for a package named `kernels`).
if not hasattr(torch.ops.kvsplice, "decode_attention"):
    _LIBRARY = torch.library.Library("kvsplice", "FRAGMENT")
    _LIBRARY.define("decode_attention(Tensor q, Tensor k, Tensor v, int prefix_len, int chunk_start, "
                    "int chunk_end, int keys_end, float scale) -> Tensor")
    _LIBRARY.impl("decode_attention", lambda q, k, v, prefix_len, chunk_start, chunk_end, keys_end, scale:
                  _attention_matmul(q, k, v, prefix_len, chunk_start, chunk_end, scale, keys_end),
                  "CompositeExplicitAutograd")


def _attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_len: int, chunk_start: int,
                    chunk_end: int, scale: float) -> torch.Tensor:
    """SDPA's blocked kernel, for chunks and prefill: faster there, and no score matrix in memory."""
    m = q.shape[1]
    chunk_len = chunk_end - chunk_start
    if chunk_start == prefix_len:
        keys, values = k[:, :chunk_end], v[:, :chunk_end]
    else:
        keys = torch.cat((k[:, :prefix_len], k[:, chunk_start:chunk_end]), dim=1)
        values = torch.cat((v[:, :prefix_len], v[:, chunk_start:chunk_end]), dim=1)
    causal = prefix_len == 0 and m == chunk_len
    mask: Optional[torch.Tensor] = None
    if not causal and m > 1:
        mask = torch.cat((torch.ones(m, prefix_len, dtype=torch.bool, device=q.device),
                          _chunk_mask(m, chunk_len, q.device)), dim=1)
    out = F.scaled_dot_product_attention(
        q[None], keys[None], values[None], attn_mask=mask, is_causal=causal, scale=scale,
        enable_gqa=q.shape[0] != k.shape[0],
    )
    return out[0]


def _is_decode(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q.shape[1] * (q.shape[0] // k.shape[0]) <= _DECODE_ROWS


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    prefix_len: int, chunk_start: int, chunk_end: int, scale: Optional[float] = None, keys_end: Optional[int] = None,
    matmul_rows: int = _DECODE_ROWS,
) -> torch.Tensor:
    """q [Hq, m, D]; k, v [Hkv, S, D] (one layer of the cache). Returns [Hq, m, D]. TorchScript, so
    that the engine's CPU layer stack (engine/step.py) runs the same function without Python
    (`matmul_rows` is an argument because TorchScript reads no module globals)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.shape[1] <= matmul_rows:
        return _attention_matmul(q, k, v, prefix_len, chunk_start, chunk_end, scale,
                                 chunk_end if keys_end is None else keys_end)
    return _attention_sdpa(q, k, v, prefix_len, chunk_start, chunk_end, scale)


attention_reference = torchscript(attention_reference)


def attention_cpu(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    prefix_len: int, chunk_start: int, chunk_end: int, scale: Optional[float] = None, keys_end: Optional[int] = None,
    matmul_rows: int = _DECODE_ROWS,
) -> torch.Tensor:
    """attention_reference's contract, with fp32 decode rows through the `kvsplice::decode_attention`
    op (the AVX2 kernel where kernels.native loaded it): what the engine runs off the GPU."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.shape[1] <= matmul_rows and q.dtype == torch.float32 and k.dtype == torch.float32 \
            and q.shape[2] in (16, 32, 64, 96, 128):
        return torch.ops.kvsplice.decode_attention(q, k, v, prefix_len, chunk_start, chunk_end,
                                                   chunk_end if keys_end is None else keys_end, scale)
    return attention_reference(q, k, v, prefix_len, chunk_start, chunk_end, scale, keys_end, matmul_rows)


attention_cpu = torchscript(attention_cpu)


# ---- Triton kernels ----------------------------------------------------------------------------

@jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    stride_qh, stride_qm, stride_qd,
    S, m, prefix_len, chunk_start, chunk_len, split_len, qk_scale,
    G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, PRECISION: tl.constexpr,
):
    """Flash attention over one split of the virtual key sequence for BLOCK_M rows of one kv head.

    Rows are (query row i, head in group g) with g fastest, so a block holds a few consecutive
    query rows of all the heads that share this kv head: K/V are loaded once for the group, and
    the block's causal limit is tight. Everything is computed in fp32 (the interpreter's bf16
    arithmetic is broken, and 16-bit values are exact in tf32). With SPLIT the program writes its
    normalised partial output and log2-sum-exp for `_combine_kernel`; otherwise the final rows.
    """
    pid_m = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)

    r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    i = r // G
    head = kvh * G + r % G
    row_ok = i < m
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(q_ptr + head[:, None] * stride_qh + i[:, None] * stride_qm + d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)

    # Row i sees virtual keys j <= limit_i; the block needs keys up to its last row's limit.
    limit = prefix_len + chunk_len - m + i
    last_i = (tl.minimum((pid_m + 1) * BLOCK_M, m * G) - 1) // G
    lo = split * split_len
    hi = tl.minimum(lo + split_len, prefix_len + chunk_len - m + last_i + 1)

    base = kvh.to(tl.int64) * S * D
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        j = start_n + tl.arange(0, BLOCK_N)
        slot = tl.where(j < prefix_len, j, j + (chunk_start - prefix_len))
        kv_ok = (j < hi)[:, None] & d_ok[None, :]
        offs = base + slot.to(tl.int64)[:, None] * D + d[None, :]
        keys = tl.load(k_ptr + offs, mask=kv_ok, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(keys), input_precision=PRECISION) * qk_scale
        s = tl.where((j[None, :] < hi) & (j[None, :] <= limit[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        values = tl.load(v_ptr + offs, mask=kv_ok, other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, values, input_precision=PRECISION)
        m_i = m_new

    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    row = head * m + i
    out_ok = row_ok[:, None] & d_ok[None, :]
    if SPLIT:
        rows = m * G * tl.num_programs(1)
        part = split.to(tl.int64) * rows + row
        tl.store(o_ptr + part[:, None] * D + d[None, :], out, mask=out_ok)
        tl.store(lse_ptr + part, m_i + tl.log2(l_i), mask=row_ok)
    else:
        tl.store(o_ptr + row.to(tl.int64)[:, None] * D + d[None, :], out.to(o_ptr.dtype.element_ty), mask=out_ok)


@jit
def _combine_kernel(part_ptr, lse_ptr, o_ptr, rows, splits,
                    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SPLITS: tl.constexpr):
    """Flash-decoding's reduce: weight each split's partial output by exp2(its lse - max lse)."""
    row = tl.program_id(0)
    s = tl.arange(0, BLOCK_SPLITS)
    d = tl.arange(0, BLOCK_D)
    s_ok = s < splits
    lse = tl.load(lse_ptr + s * rows + row, mask=s_ok, other=float("-inf"))
    w = tl.exp2(lse - tl.max(lse, axis=0))
    part = tl.load(part_ptr + (s.to(tl.int64) * rows + row)[:, None] * D + d[None, :],
                   mask=s_ok[:, None] & (d < D)[None, :], other=0.0)
    out = tl.sum(w[:, None] * part, axis=0) / tl.sum(w, axis=0)
    tl.store(o_ptr + row.to(tl.int64) * D + d, out.to(o_ptr.dtype.element_ty), mask=d < D)


_MIN_SPLIT_KEYS = 256  # a split shorter than this costs more in the reduce than it saves
_CHUNK_ROWS = 64  # row block of the Triton kernel for chunks


def _target_programs(device: torch.device) -> int:
    """Enough programs to fill the GPU twice over (a fixed guess under the interpreter)."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 64


def attention_triton(q, k, v, prefix_len, chunk_start, chunk_end, scale=None, *,
                     block_m: int = 64, block_n: int = 64, num_splits: int | None = None) -> torch.Tensor:
    """The reference's contract as flash attention; splits the keys (flash-decoding) when there
    are too few row blocks to fill the device."""
    hq, m, dim = q.shape
    hkv, slots, _ = k.shape
    group = hq // hkv
    chunk_len = chunk_end - chunk_start
    visible = prefix_len + chunk_len
    row_blocks = triton.cdiv(m * group, block_m)
    if num_splits is None:
        wanted = triton.cdiv(_target_programs(q.device), row_blocks * hkv)
        num_splits = max(1, min(wanted, visible // _MIN_SPLIT_KEYS))
    split_len = triton.cdiv(triton.cdiv(visible, num_splits), block_n) * block_n
    num_splits = triton.cdiv(visible, split_len)
    scale = dim ** -0.5 if scale is None else scale
    out = torch.empty(hq, m, dim, dtype=q.dtype, device=q.device)
    split = num_splits > 1
    if split:
        part = torch.empty(num_splits, hq * m, dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(num_splits, hq * m, dtype=torch.float32, device=q.device)
    block_d = max(16, triton.next_power_of_2(dim))
    _attention_kernel[(row_blocks, hkv, num_splits)](
        q, k, v, part if split else out, lse if split else out,
        *q.stride(), slots, m, prefix_len, chunk_start, chunk_len, split_len, scale * math.log2(math.e),
        G=group, D=dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT=split,
        PRECISION="ieee" if k.dtype == torch.float32 else "tf32",
    )
    if split:
        _combine_kernel[(hq * m,)](part, lse, out, hq * m, num_splits, D=dim, BLOCK_D=block_d,
                                   BLOCK_SPLITS=triton.next_power_of_2(num_splits))
    return out


# ---- public ops --------------------------------------------------------------------------------

def _check_attention(q, k, v, prefix_len, chunk_start, chunk_end, keys_end=None) -> tuple[int, int, int]:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            got = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"{name} must be 3-d ([heads, rows, head_dim]), got {got}")
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"q, k, v must share dtype and device: {name} is {x.dtype} on {x.device}, "
                             f"q is {q.dtype} on {q.device}")
    if not q.dtype.is_floating_point:
        raise ValueError(f"attention needs floating point tensors, got {q.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    for name, x in (("k", k), ("v", v)):
        if not x.is_contiguous():
            raise ValueError(f"{name} must be contiguous (one layer of the cache, kernels index raw memory); "
                             f"got strides {x.stride()} for shape {tuple(x.shape)}")
    hq, m, dim = q.shape
    hkv, slots, kdim = k.shape
    if kdim != dim:
        raise ValueError(f"head_dim differs: q has {dim}, k has {kdim}")
    if hkv == 0 or hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of kv heads ({hkv})")
    prefix_len, chunk_start, chunk_end = (operator.index(x) for x in (prefix_len, chunk_start, chunk_end))
    if not 0 <= prefix_len <= chunk_start <= chunk_end <= slots:
        raise ValueError(f"need 0 <= prefix_len ({prefix_len}) <= chunk_start ({chunk_start}) <= "
                         f"chunk_end ({chunk_end}) <= slots ({slots})")
    if m > chunk_end - chunk_start:
        raise ValueError(f"{m} query rows do not fit in the chunk [{chunk_start}, {chunk_end})")
    if keys_end is not None and not chunk_end <= operator.index(keys_end) <= slots:
        raise ValueError(f"need chunk_end ({chunk_end}) <= keys_end ({keys_end}) <= slots ({slots})")
    return prefix_len, chunk_start, chunk_end


def _attend(q, k, v, prefix_len, chunk_start, chunk_end, scale, block_m, num_splits, keys_end=None):
    prefix_len, chunk_start, chunk_end = _check_attention(q, k, v, prefix_len, chunk_start, chunk_end, keys_end)
    if q.shape[1] == 0:
        return torch.empty_like(q)
    if not use_triton(q, k, v):
        return attention_cpu(q, k, v, prefix_len, chunk_start, chunk_end, scale, keys_end)
    if block_m is None:
        block_m = _DECODE_ROWS if _is_decode(q, k) else _CHUNK_ROWS
    return attention_triton(q, k, v, prefix_len, chunk_start, chunk_end, scale,
                            block_m=block_m, num_splits=num_splits)


def decode_attention(q, k, v, prefix_len, chunk_start, chunk_end, scale=None, *, num_splits=None):
    """A few query rows (draft tokens) against the cache: small row blocks, keys split across
    programs (flash-decoding) with a reduce step, so long caches still fill the device."""
    return _attend(q, k, v, prefix_len, chunk_start, chunk_end, scale, _DECODE_ROWS, num_splits)


def chunk_attention(q, k, v, prefix_len, chunk_start, chunk_end, scale=None, *, num_splits=None):
    """m new tokens against prefix + themselves (causal): flash attention over 64-row blocks,
    splitting the keys too when the chunk is short and the prefix long."""
    return _attend(q, k, v, prefix_len, chunk_start, chunk_end, scale, _CHUNK_ROWS, num_splits)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              prefix_len: int, chunk_start: int, chunk_end: int, scale: float | None = None,
              keys_end: int | None = None) -> torch.Tensor:
    """q [Hq, m, D]; k, v [Hkv, S, D] (one layer of the cache, contiguous). Returns [Hq, m, D].
    Decode or chunk by rows per kv head (m times the group size): rows of a group share K/V loads.
    `keys_end` (>= chunk_end): the torch reference reads the chunk's keys up to there, masked, so
    that a few rows' results do not depend on how many share the call (the Triton kernel skips
    masked keys by block and does not promise that)."""
    return _attend(q, k, v, prefix_len, chunk_start, chunk_end, scale, None, None, keys_end)
