"""rerotate_ / rotate_and_move_: the Triton kernel (interpreted on CPU) against the torch
reference, the rotation's algebra, no drift over many shifts, and clear errors for bad input."""
import random

import pytest
import torch

from kvsplice.kernels import apply_rope, rerotate_, rotate_and_move_
from kvsplice.kernels.rotary import rerotate_reference_, rotate_and_move_reference_

# Kernel and reference take the same fp32 cos/sin and differ only in fp32 rounding order
# (elementwise vs a matmul), so after the store they agree to one unit in the last place of the
# cache dtype: about 2^-10 relative for fp16 and 2^-7 for bf16. Values moved without rotation
# (all of V) must be bit-identical.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}
DTYPES = list(TOL)


def inv_freq(dim: int, theta: float = 10000.0) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)


def random_cache(layers, heads, slots, dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(layers, heads, slots, dim, generator=gen).to(dtype) for _ in range(2))


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")


# The kernel's block is 64 slots for head_dim 64 and 32 for head_dim 128, so these cover: short
# overlapping moves inside one block (period = block), overlapping moves longer than a block
# (chains `shift` apart, the last chain group partly masked), disjoint moves, rotation only,
# move only, delta != shift, and lengths that are not multiples of the block.
CASES = [
    # layers, heads, slots, dim, start, end, shift, delta
    (2, 3, 200, 64, 20, 151, 3, 3),
    (2, 1, 200, 64, 20, 151, -5, -5),
    (1, 2, 300, 128, 10, 157, 70, 70),
    (2, 1, 300, 64, 100, 263, -70, -70),
    (1, 3, 300, 64, 5, 105, 150, 150),
    (2, 2, 150, 128, 0, 150, 0, -1000),
    (1, 2, 200, 64, 30, 97, -30, 0),
    (2, 1, 200, 128, 40, 199, 1, -2),
    (1, 1, 64, 64, 0, 1, 63, 63),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}H{}S{}D{}[{},{})shift{}delta{}".format(*c))
def test_triton_rotate_and_move_matches_reference(case, dtype, triton_backend):
    layers, heads, slots, dim, start, end, shift, delta = case
    k, v = random_cache(layers, heads, slots, dim, dtype)
    k_ref, v_ref = k.clone(), v.clone()
    rotate_and_move_reference_(k_ref, v_ref, start, end, shift, delta, inv_freq(dim))
    rotate_and_move_(k, v, start, end, shift, delta, inv_freq(dim))
    torch.testing.assert_close(k, k_ref, **TOL[dtype])
    assert torch.equal(v, v_ref)


def test_triton_random_moves_match_reference(triton_backend):
    rng = random.Random(1)
    k, v = random_cache(2, 1, 160, 128, torch.float32)
    for _ in range(25):
        start = rng.randrange(0, 150)
        end = rng.randrange(start, 160)
        shift = rng.randint(-start, 160 - end)
        delta = rng.randint(-500, 500)
        k_ref, v_ref = k.clone(), v.clone()
        rotate_and_move_reference_(k_ref, v_ref, start, end, shift, delta, inv_freq(128))
        rotate_and_move_(k, v, start, end, shift, delta, inv_freq(128))
        torch.testing.assert_close(k, k_ref, **TOL[torch.float32])
        assert torch.equal(v, v_ref), (start, end, shift)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_rerotate_matches_reference(dtype, triton_backend):
    k, _ = random_cache(2, 3, 130, 64, dtype)
    k_ref = k.clone()
    rerotate_reference_(k_ref, 7, 130, 37, inv_freq(64, 1e6))
    rerotate_(k, 7, 130, 37, inv_freq(64, 1e6))
    torch.testing.assert_close(k, k_ref, **TOL[dtype])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_rotating_encoded_keys_by_delta_encodes_them_at_p_plus_delta(backend, monkeypatch):
    """Exact up to fp32 angle rounding: the angles p * inv_freq (p < 470) are each off by up to
    p * 2^-24 rad (3e-5), times |k| < 5, so 2e-4 (measured 5e-5)."""
    monkeypatch.setenv("KVSPLICE_KERNELS", backend)
    raw = torch.randn(2, 2, 90, 64, generator=torch.Generator().manual_seed(2))
    positions = torch.arange(90) + 40
    for delta in (1, -1, 17, -40, 333):
        k = torch.zeros(2, 2, 90, 64)
        k[:] = apply_rope(raw, positions, inv_freq(64))
        rerotate_(k, 0, 90, delta, inv_freq(64))
        torch.testing.assert_close(k, apply_rope(raw, positions + delta, inv_freq(64)), rtol=0, atol=2e-4)


def test_rotations_compose_and_invert():
    k, _ = random_cache(1, 2, 50, 64, torch.float32)
    original = k.clone()
    once = k.clone()
    rerotate_(k, 0, 50, 12, inv_freq(64))
    rerotate_(k, 0, 50, 30, inv_freq(64))
    rerotate_(once, 0, 50, 42, inv_freq(64))
    torch.testing.assert_close(k, once, rtol=0, atol=1e-5)
    rerotate_(k, 0, 50, -42, inv_freq(64))
    torch.testing.assert_close(k, original, rtol=0, atol=1e-5)


def shifted_back_and_forth(steps: int, layers=2, heads=2, length=100, slots=400, dim=64):
    """A suffix encoded at its slots, moved `steps` random times (each a PIE splice: the slot
    shift is also the position delta); returns (final keys, keys encoded directly there,
    final values, original values)."""
    rng = random.Random(steps)
    raw = torch.randn(layers, heads, length, dim, generator=torch.Generator().manual_seed(3))
    k = torch.zeros(layers, heads, slots, dim)
    v = torch.zeros(layers, heads, slots, dim)
    at = 50
    k[:, :, at:at + length] = apply_rope(raw, torch.arange(at, at + length), inv_freq(64))
    v[:, :, at:at + length] = raw
    for _ in range(steps):
        shift = rng.choice([s for s in range(-at, slots - length - at + 1) if s])
        rotate_and_move_(k, v, at, at + length, shift, shift, inv_freq(dim))
        at += shift
    direct = apply_rope(raw, torch.arange(at, at + length), inv_freq(dim))
    return k[:, :, at:at + length], direct, v[:, :, at:at + length], raw


# Each rotation rounds its angle delta * inv_freq in fp32 (error <= |delta| * 2^-24 rad, here
# |delta| < 350) and the stored key; the errors do not accumulate systematically but walk at
# random, so after 1000 shifts of keys with |k| < 5 they stay far below 1e-3 (measured ~7e-5).
DRIFT_ATOL = 1e-3


def test_thousand_random_shifts_do_not_drift():
    final, direct, values, raw = shifted_back_and_forth(1000)
    torch.testing.assert_close(final, direct, rtol=0, atol=DRIFT_ATOL)
    assert torch.equal(values, raw)


def test_triton_many_random_shifts_do_not_drift(triton_backend):
    final, direct, values, raw = shifted_back_and_forth(300, layers=1, heads=1, length=60, slots=200)
    torch.testing.assert_close(final, direct, rtol=0, atol=DRIFT_ATOL)
    assert torch.equal(values, raw)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_cache_input_raises_clear_errors(backend, monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", backend)
    k, v = random_cache(2, 2, 40, 64, torch.float32)
    freq = inv_freq(64)
    with pytest.raises(ValueError, match="contiguous"):
        rerotate_(k.transpose(1, 2), 0, 10, 1, freq)
    with pytest.raises(ValueError, match="contiguous"):
        rotate_and_move_(k, v[:, :, ::2], 0, 10, 1, 1, freq)
    with pytest.raises(ValueError, match="cache tensor"):
        rerotate_(k[0], 0, 10, 1, freq)
    with pytest.raises(ValueError, match="must match k"):
        rotate_and_move_(k, v[:, :1].contiguous(), 0, 10, 1, 1, freq)
    with pytest.raises(ValueError, match="must match k"):
        rotate_and_move_(k, v.half(), 0, 10, 1, 1, freq)
    with pytest.raises(ValueError, match="inv_freq"):
        rerotate_(k, 0, 10, 1, inv_freq(128))
    with pytest.raises(ValueError, match="outside"):
        rerotate_(k, 30, 41, 1, freq)
    with pytest.raises(ValueError, match="leaves"):
        rotate_and_move_(k, v, 30, 40, 1, 1, freq)
    with pytest.raises(ValueError, match="leaves"):
        rotate_and_move_(k, v, 3, 10, -4, -4, freq)
    with pytest.raises(TypeError):
        rerotate_(k, 0, 10, 1.5, freq)


def test_empty_range_and_zero_move_leave_the_cache_alone():
    k, v = random_cache(1, 1, 20, 64, torch.float32)
    k0, v0 = k.clone(), v.clone()
    rotate_and_move_(k, v, 5, 5, 3, 3, inv_freq(64))
    rotate_and_move_(k, v, 0, 20, 0, 0, inv_freq(64))
    assert torch.equal(k, k0) and torch.equal(v, v0)
