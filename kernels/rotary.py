"""RoPE math for the cache: apply at a position, and re-rotate cached keys by a position delta.

Keys are stored post-RoPE in the half-split layout transformers uses for Llama/Qwen2
(pairs are (x[i], x[i + D/2])). Since R(a)R(b) = R(a+b), a key cached at position p becomes
the key at p + delta by one more rotation, which is what a splice applies to the suffix.
All rotations are computed in fp32 and written back in the cache dtype.

`rerotate_` and `rotate_and_move_` check their inputs once, then run either the torch reference
or the Triton kernel (`dispatch.use_triton`); both take the angles from `_delta_angles` and
apply the same two products per half, so they agree to the last bit or so.
"""
from __future__ import annotations

import operator

import torch

from .dispatch import jit, tl, torchscript, triton, use_triton


def rope_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [T, D] in fp32, for integer (or float) positions."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_into(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """out (fp32) = x rotated in the half-split layout, cos/sin [..., D/2]: y1 = x1 c - x2 s,
    y2 = x2 c + x1 s. Two fused multiply-adds per half, no other temporaries."""
    x = x.to(torch.float32)
    half = x.shape[-1] // 2
    x1, x2 = x.narrow(-1, 0, half), x.narrow(-1, half, half)
    torch.mul(x1, cos, out=out.narrow(-1, 0, half)).addcmul_(x2, sin, value=-1)
    torch.mul(x2, cos, out=out.narrow(-1, half, half)).addcmul_(x1, sin)
    return out


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., D] rotated by angles whose cos/sin [..., D/2] broadcast against x's halves (one
    call for a forward's queries and keys together, angles computed once per forward).
    TorchScript: the engine's CPU layer stack (engine/step.py) calls it without Python."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    return _rotate_into(out, x, cos, sin).to(x.dtype)


rotate = torchscript(rotate)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, D] so that row t sits at positions[t]."""
    cos, sin = rope_angles(positions, inv_freq)
    half = x.shape[-1] // 2
    return rotate(x, cos[:, :half], sin[:, :half])


def _delta_angles(delta: int, inv_freq: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of delta * inv_freq, [D/2] fp32: the same products rope_angles forms for one
    position (a scalar multiply, so no host-to-device copy of delta)."""
    angles = inv_freq.to(device=device, dtype=torch.float32) * float(delta)
    return angles.cos(), angles.sin()


# ---- torch reference ---------------------------------------------------------------------------

def rotate_and_move_reference_(
    k: torch.Tensor, v: torch.Tensor | None, start: int, end: int, shift: int, delta: int, inv_freq: torch.Tensor
) -> None:
    """In place: slots [start, end) of k and v [L, H, S, D] move to [start+shift, end+shift);
    the moved keys are rotated by delta positions. Overlapping ranges are handled. v=None
    rotates keys only. Works one layer at a time so that temporaries stay in cache."""
    n = end - start
    if n <= 0 or (shift == 0 and delta == 0):
        return
    src, dst = slice(start, end), slice(start + shift, end + shift)
    overlap = 0 < abs(shift) < n

    def moved(x: torch.Tensor) -> torch.Tensor:
        return x[:, src].clone() if overlap else x[:, src]

    if delta:
        cos, sin = _delta_angles(delta, inv_freq, k.device)
        rotated = torch.empty(k.shape[1], n, k.shape[3], dtype=torch.float32, device=k.device)
    for layer in range(k.shape[0]):
        if delta:
            k[layer, :, dst] = _rotate_into(rotated, k[layer, :, src], cos, sin)
        elif shift:
            k[layer, :, dst] = moved(k[layer])
        if shift and v is not None:
            v[layer, :, dst] = moved(v[layer])


def rerotate_reference_(k: torch.Tensor, start: int, end: int, delta: int, inv_freq: torch.Tensor) -> None:
    """In place: keys in slots [start, end) of k [L, H, S, D] move delta positions."""
    rotate_and_move_reference_(k, None, start, end, 0, delta, inv_freq)


# ---- Triton kernel -----------------------------------------------------------------------------

@jit
def _rotate_move_kernel(
    k_ptr, v_ptr, cos_ptr, sin_ptr, S, start, n, shift, period,
    HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_S: tl.constexpr,
    ROTATE: tl.constexpr, MOVE_V: tl.constexpr, BACKWARD: tl.constexpr,
):
    """One program owns the slots whose offset from `start` is r0 .. r0+BLOCK_S-1 modulo `period`
    (a chain: each tile's destination is the next tile's source, and no other program touches
    those slots), for one (layer, head) row. It walks its chain against the direction of the move,
    so every slot is loaded before it is overwritten; the barrier orders the loads of one tile
    before its stores when a short move overlaps the tile itself (period == BLOCK_S > |shift|)."""
    r0 = tl.program_id(0) * BLOCK_S
    row = tl.program_id(1).to(tl.int64) * S * (2 * HALF)
    t = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_HALF)
    in_chain = ((r0 + t) < period)[:, None] & (d < HALF)[None, :]
    if ROTATE:
        cos = tl.load(cos_ptr + d, mask=d < HALF, other=1.0)[None, :]
        sin = tl.load(sin_ptr + d, mask=d < HALF, other=0.0)[None, :]
    n_tiles = tl.cdiv(n - r0, period)
    for i in range(n_tiles):
        if BACKWARD:
            j = n_tiles - 1 - i
        else:
            j = i
        offs = r0 + j * period + t
        mask = in_chain & (offs < n)[:, None]
        src = row + (start + offs).to(tl.int64)[:, None] * (2 * HALF) + d[None, :]
        dst = src + shift * (2 * HALF)
        k1 = tl.load(k_ptr + src, mask=mask)
        k2 = tl.load(k_ptr + src + HALF, mask=mask)
        if ROTATE:
            x1 = k1.to(tl.float32)
            x2 = k2.to(tl.float32)
            k1 = (x1 * cos - x2 * sin).to(k_ptr.dtype.element_ty)
            k2 = (x2 * cos + x1 * sin).to(k_ptr.dtype.element_ty)
        if MOVE_V:
            v1 = tl.load(v_ptr + src, mask=mask)
            v2 = tl.load(v_ptr + src + HALF, mask=mask)
        tl.debug_barrier()
        tl.store(k_ptr + dst, k1, mask=mask)
        tl.store(k_ptr + dst + HALF, k2, mask=mask)
        if MOVE_V:
            tl.store(v_ptr + dst, v1, mask=mask)
            tl.store(v_ptr + dst + HALF, v2, mask=mask)


def rotate_and_move_triton_(
    k: torch.Tensor, v: torch.Tensor | None, start: int, end: int, shift: int, delta: int, inv_freq: torch.Tensor
) -> None:
    """The reference's contract in one launch for all layers and heads (K and V together)."""
    n = end - start
    if n <= 0 or (shift == 0 and delta == 0):
        return
    layers, heads, slots, dim = k.shape
    half = dim // 2
    block_half = triton.next_power_of_2(half)
    block_s = max(16, 2048 // block_half)
    # Chains: a move that overlaps its own range chains slots `period` apart; otherwise every
    # tile is independent (one tile per chain).
    overlap = 0 < abs(shift) < n
    period = max(abs(shift), block_s) if overlap else n
    cos, sin = _delta_angles(delta, inv_freq, k.device)
    move_v = bool(shift) and v is not None
    grid = (triton.cdiv(min(period, n), block_s), layers * heads)
    _rotate_move_kernel[grid](
        k, v if move_v else k, cos, sin, slots, start, n, shift, period,
        HALF=half, BLOCK_HALF=block_half, BLOCK_S=block_s,
        ROTATE=delta != 0, MOVE_V=move_v, BACKWARD=shift > 0,
    )


# ---- public ops --------------------------------------------------------------------------------

def _check_cache(name: str, x: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be a cache tensor [layers, kv_heads, slots, head_dim], "
                         f"got {getattr(x, 'shape', type(x).__name__)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (kernels index raw memory); got strides {x.stride()} "
                         f"for shape {tuple(x.shape)}")
    if x.shape[-1] % 2:
        raise ValueError(f"{name}: head_dim must be even for RoPE, got {x.shape[-1]}")
    if like is not None and (x.shape != like.shape or x.dtype != like.dtype or x.device != like.device):
        raise ValueError(f"{name} must match k: got {tuple(x.shape)} {x.dtype} on {x.device}, "
                         f"k is {tuple(like.shape)} {like.dtype} on {like.device}")


def _check_move(k: torch.Tensor, v: torch.Tensor | None, start, end, shift, delta, inv_freq) -> tuple[int, ...]:
    _check_cache("k", k)
    if v is not None:
        _check_cache("v", v, like=k)
    start, end, shift, delta = (operator.index(x) for x in (start, end, shift, delta))
    slots = k.shape[2]
    if inv_freq.shape != (k.shape[-1] // 2,):
        raise ValueError(f"inv_freq must have head_dim/2 = {k.shape[-1] // 2} entries, "
                         f"got {tuple(inv_freq.shape)}")
    if not 0 <= start <= end <= slots:
        raise ValueError(f"slot range [{start}, {end}) is outside the cache's {slots} slots")
    if end > start and not 0 <= start + shift <= end + shift <= slots:
        raise ValueError(f"moving [{start}, {end}) by {shift} leaves the cache's {slots} slots")
    return start, end, shift, delta


def rerotate_(k: torch.Tensor, start: int, end: int, delta: int, inv_freq: torch.Tensor) -> None:
    """In place: keys in slots [start, end) of every layer and head move delta positions."""
    start, end, _, delta = _check_move(k, None, start, end, 0, delta, inv_freq)
    run = rotate_and_move_triton_ if use_triton(k) else rotate_and_move_reference_
    run(k, None, start, end, 0, delta, inv_freq)


def rotate_and_move_(
    k: torch.Tensor, v: torch.Tensor, start: int, end: int, shift: int, delta: int, inv_freq: torch.Tensor
) -> None:
    """In place, all layers at once: slots [start, end) of k and v move to [start+shift, end+shift)
    (overlap allowed, either direction) and the moved keys are rotated by delta positions."""
    start, end, shift, delta = _check_move(k, v, start, end, shift, delta, inv_freq)
    run = rotate_and_move_triton_ if use_triton(k, v) else rotate_and_move_reference_
    run(k, v, start, end, shift, delta, inv_freq)
