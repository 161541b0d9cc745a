"""RoPE math for the cache: apply at a position, and re-rotate cached keys by a position delta.

Keys are stored post-RoPE in the half-split layout transformers uses for Llama/Qwen2
(pairs are (x[i], x[i + D/2])). Since R(a)R(b) = R(a+b), a key cached at position p becomes
the key at p + delta by one more rotation, which is what a splice applies to the suffix.
All rotations are computed in fp32 and written back in the cache dtype.
"""
from __future__ import annotations

import torch


def rope_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [T, D] in fp32, for integer (or float) positions."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    xf = x.to(torch.float32)
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, D] so that row t sits at positions[t]."""
    cos, sin = rope_angles(positions, inv_freq)
    return _rotate(x, cos, sin)


def rerotate_reference_(k: torch.Tensor, start: int, end: int, delta: int, inv_freq: torch.Tensor) -> None:
    """In place: keys in slots [start, end) of k [L, H, S, D] move delta positions."""
    if end <= start or delta == 0:
        return
    cos, sin = rope_angles(torch.tensor([delta], device=k.device), inv_freq)
    k[:, :, start:end] = _rotate(k[:, :, start:end], cos, sin)


def rotate_and_move_reference_(
    k: torch.Tensor, v: torch.Tensor, start: int, end: int, shift: int, delta: int, inv_freq: torch.Tensor
) -> None:
    """In place: slots [start, end) of k and v [L, H, S, D] move to [start+shift, end+shift);
    the moved keys are rotated by delta positions. Overlapping ranges are handled."""
    if end <= start:
        return
    keys = k[:, :, start:end].clone()
    if delta:
        cos, sin = rope_angles(torch.tensor([delta], device=k.device), inv_freq)
        keys = _rotate(keys, cos, sin)
    k[:, :, start + shift:end + shift] = keys
    if shift:
        v[:, :, start + shift:end + shift] = v[:, :, start:end].clone()
