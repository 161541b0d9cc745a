"""The int8 layer stack as one TorchScript call, so a CPU decode step runs no Python per op.

A decode step on a CPU is about a hundred small ops per layer around four fbgemm calls and the
attention; from Python each op, and each call into a TorchScript function, costs microseconds.
One call instead: a token in 0.7x the time for smollm2-135m (1 and 2 threads, 2k tokens), 0.8-0.9x
for Qwen2.5-Coder-0.5B, whose linears weigh more (README). `Transformer.forward` hands
its int8 forwards here, one call for all layers (one per layer when it must be interruptible);
only a forward that copies cache rows between layers (a FIM draft's suffix window) stays in
Python. The stack calls the very functions the Python forward calls (`rms_norm`,
`linear.int8_rows`, `kernels.rotary.rotate`, `kernels.attention.attention_cpu`) in the
same order, so the two give the same bits (tests/test_step.py).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from kvsplice.kernels.attention import attention_cpu
from kvsplice.kernels.dispatch import torchscript
from kvsplice.kernels.rotary import rotate

from .linear import int8_rows


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it (in fp32, weighted in the model's dtype), in plain ops:
    F.rms_norm's fused CPU kernel costs twice as much on a decode row."""
    h = x.float()
    return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


rms_norm = torchscript(rms_norm)


class Int8Layers(NamedTuple):
    """The int8 model's per-layer weights as lists TorchScript can index (each linear's sentinel
    row depends only on its input width, so one per kind serves every layer)."""

    norm1: List[torch.Tensor]
    qkv: List[torch.classes.quantized.LinearPackedParamsBase]
    qkv_bias: List[Optional[torch.Tensor]]
    o: List[torch.classes.quantized.LinearPackedParamsBase]
    norm2: List[torch.Tensor]
    gate_up: List[torch.classes.quantized.LinearPackedParamsBase]
    down: List[torch.classes.quantized.LinearPackedParamsBase]
    sentinels: List[torch.Tensor]  # qkv and gate_up, o, down


class Dims(NamedTuple):
    heads: int
    kv_heads: int
    head_dim: int
    eps: float


def int8_layers(layers) -> Int8Layers:
    first = layers[0]
    return Int8Layers(
        [l.norm1 for l in layers], [l.qkv.packed for l in layers], [l.qkv.bias for l in layers],
        [l.o.packed for l in layers], [l.norm2 for l in layers], [l.gate_up.packed for l in layers],
        [l.down.packed for l in layers], [first.qkv.sentinel, first.o.sentinel, first.down.sentinel],
    )


def run_layers(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_start: int,
               slot_index: Optional[torch.Tensor], segments: List[Tuple[int, int, int, int, int]],
               k_cache: torch.Tensor, v_cache: torch.Tensor, w: Int8Layers, d: Dims,
               first: int, last: int) -> torch.Tensor:
    """Layers [first, last) over rows x [n, hidden]; segments are (prefix_len, chunk_start,
    chunk_end, rows, keys_end) as model.Segment; the rows' cache slots are slot_start + i, or
    slot_index when the segments' slots are not one run. Returns the new x."""
    n = x.shape[0]
    q_size, kv_size = d.heads * d.head_dim, d.kv_heads * d.head_dim
    for li in range(first, last):
        qkv = int8_rows(rms_norm(x, w.norm1[li], d.eps), w.qkv[li], w.sentinels[0], w.qkv_bias[li])
        qk = rotate(qkv.narrow(1, 0, q_size + kv_size).view(n, d.heads + d.kv_heads, d.head_dim), cos, sin)
        q = qk.narrow(1, 0, d.heads).transpose(0, 1)
        keys = qk.narrow(1, d.heads, d.kv_heads).transpose(0, 1)
        values = qkv.narrow(1, q_size + kv_size, kv_size).view(n, d.kv_heads, d.head_dim).transpose(0, 1)
        if slot_index is None:
            k_cache[li].narrow(1, slot_start, n).copy_(keys)
            v_cache[li].narrow(1, slot_start, n).copy_(values)
        else:
            k_cache[li][:, slot_index] = keys
            v_cache[li][:, slot_index] = values
        outs: List[torch.Tensor] = []
        row = 0
        for g in segments:
            outs.append(attention_cpu(q.narrow(1, row, g[3]), k_cache[li], v_cache[li], g[0], g[1], g[2],
                                      None, g[4]))
            row += g[3]
        attn = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        x = x + int8_rows(attn.transpose(0, 1).reshape(n, q_size), w.o[li], w.sentinels[1], None)
        gate, up = int8_rows(rms_norm(x, w.norm2[li], d.eps), w.gate_up[li], w.sentinels[0], None).chunk(2, dim=-1)
        x = x + int8_rows(F.silu(gate).mul_(up), w.down[li], w.sentinels[2], None)
    return x


run_layers = torchscript(run_layers)
