"""attention / decode_attention / chunk_attention: the torch reference against an explicit
softmax, the Triton kernels (interpreted on CPU) against the reference, and clear errors."""
import pytest
import torch

from kvsplice.kernels import attention, chunk_attention, decode_attention
from kvsplice.kernels.attention import _attention_matmul, _attention_sdpa, attention_reference

# Outputs are convex combinations of V rows (|out| < 4 here). Both backends compute scores,
# softmax and the weighted sum in fp32 and round once on output, so they differ by about one
# unit in the last place of the output dtype: 2^-10 relative for fp16, 2^-7 for bf16 (0.016 at
# |out| in [2, 4)). fp32 differs only in summation order.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=2e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}
DTYPES = list(TOL)


def naive_attention(q, k, v, prefix_len, chunk_start, chunk_end, scale=None):
    """The definition, one row at a time in float64."""
    hq, m, dim = q.shape
    group = hq // k.shape[0]
    scale = dim ** -0.5 if scale is None else scale
    out = torch.empty(hq, m, dim, dtype=torch.float64)
    for h in range(hq):
        for i in range(m):
            seen = list(range(prefix_len)) + list(range(chunk_start, chunk_end - m + i + 1))
            keys, values = k[h // group, seen].double(), v[h // group, seen].double()
            out[h, i] = torch.softmax(keys @ q[h, i].double() * scale, dim=0) @ values
    return out


def make_qkv(hq, hkv, dim, slots, m, dtype, seed=0, q_rows_major=False):
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(hkv, slots, dim, generator=gen).to(dtype)
    v = torch.randn(hkv, slots, dim, generator=gen).to(dtype)
    q = torch.randn(m, hq, dim, generator=gen).to(dtype).transpose(0, 1) if q_rows_major else \
        torch.randn(hq, m, dim, generator=gen).to(dtype)
    return q, k, v


# hq, hkv, dim, slots, m, prefix_len, chunk_start, chunk_end
CASES = {
    "decode-1row-grouped-7:1-two-segments": (7, 1, 64, 300, 1, 100, 250, 251),
    "decode-2rows-grouped-7:1-one-segment": (7, 1, 64, 300, 2, 181, 181, 183),
    "decode-3rows-2heads-d128-draft-after-chunk": (2, 2, 128, 300, 3, 77, 200, 230),
    "chunk-1head-d128-after-prefix": (1, 1, 128, 300, 37, 100, 100, 137),
    "chunk-grouped-7:1-two-segments": (14, 2, 64, 300, 20, 90, 150, 175),
    "prefill-from-zero": (4, 2, 64, 120, 83, 0, 0, 83),
    "chunk-without-prefix-not-at-zero": (2, 1, 64, 200, 17, 0, 60, 77),
}


def _matmul(q, k, v, prefix_len, chunk_start, chunk_end, scale):
    return _attention_matmul(q, k, v, prefix_len, chunk_start, chunk_end, scale, chunk_end)


@pytest.mark.parametrize("path", [_matmul, _attention_sdpa], ids=["matmul", "sdpa"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_reference_matches_explicit_softmax(case, path):
    """Both halves of the reference (batched matmul for decode, SDPA for chunks) on every case."""
    hq, hkv, dim, slots, m, prefix_len, chunk_start, chunk_end = case
    q, k, v = make_qkv(hq, hkv, dim, slots, m, torch.float32, q_rows_major=True)
    out = path(q, k, v, prefix_len, chunk_start, chunk_end, dim ** -0.5)
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, prefix_len, chunk_start, chunk_end),
                               rtol=1e-5, atol=1e-5)


def test_keys_past_the_chunk_change_nothing_and_make_each_row_independent_of_its_call():
    """Decode steps read the chunk up to keys_end, masked: the same values, and a row computed
    alone equals it computed with the rows after it, bit for bit (speculative decoding)."""
    q, k, v = make_qkv(14, 2, 64, 400, 9, torch.float32, q_rows_major=True)
    prefix_len, chunk_start, chunk_end, keys_end = 200, 300, 330, 380
    together = attention(q, k, v, prefix_len, chunk_start, chunk_end, keys_end=keys_end)
    torch.testing.assert_close(together, attention(q, k, v, prefix_len, chunk_start, chunk_end), rtol=1e-5, atol=1e-6)
    for i in range(9):
        alone = attention(q[:, i:i + 1], k, v, prefix_len, chunk_start, chunk_end - 8 + i, keys_end=keys_end)
        assert torch.equal(alone[:, 0], together[:, i])


def test_reference_respects_scale():
    q, k, v = make_qkv(4, 2, 64, 50, 5, torch.float32)
    torch.testing.assert_close(attention(q, k, v, 10, 20, 30, scale=0.3).double(),
                               naive_attention(q, k, v, 10, 20, 30, scale=0.3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_triton_attention_matches_reference(case, dtype, monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")
    hq, hkv, dim, slots, m, prefix_len, chunk_start, chunk_end = case
    q, k, v = make_qkv(hq, hkv, dim, slots, m, dtype, q_rows_major=True)
    expected = attention_reference(q, k, v, prefix_len, chunk_start, chunk_end)
    torch.testing.assert_close(attention(q, k, v, prefix_len, chunk_start, chunk_end), expected, **TOL[dtype])


@pytest.mark.parametrize("op", [decode_attention, chunk_attention], ids=["decode", "chunk"])
@pytest.mark.parametrize("num_splits", [1, 3, 7])
def test_triton_split_keys_combine_exactly(op, num_splits, monkeypatch):
    """Splits that end before a row's causal limit, or hold no visible key for some rows, must
    not change the result (their log-sum-exp is -inf in the reduce)."""
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")
    q, k, v = make_qkv(7, 1, 64, 400, 3, torch.float32, seed=num_splits)
    expected = attention_reference(q, k, v, 260, 300, 390)
    torch.testing.assert_close(op(q, k, v, 260, 300, 390, num_splits=num_splits), expected, **TOL[torch.float32])


def test_triton_tiny_head_dim_of_the_test_models(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")
    q, k, v = make_qkv(4, 2, 16, 60, 9, torch.float32)
    torch.testing.assert_close(attention(q, k, v, 20, 20, 40), attention_reference(q, k, v, 20, 20, 40),
                               **TOL[torch.float32])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_attention_input_raises_clear_errors(backend, monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", backend)
    q, k, v = make_qkv(4, 2, 64, 50, 3, torch.float32)
    with pytest.raises(ValueError, match="contiguous"):
        attention(q, k.transpose(0, 1).contiguous().transpose(0, 1), v, 10, 10, 20)
    with pytest.raises(ValueError, match="contiguous"):
        attention(q, k, torch.cat((v, v), dim=1)[:, ::2], 10, 10, 20)
    with pytest.raises(ValueError, match="3-d"):
        attention(q, k[None], v[None], 10, 10, 20)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        attention(q[:3], k, v, 10, 10, 20)
    with pytest.raises(ValueError, match="head_dim"):
        attention(q[..., :32], k, v, 10, 10, 20)
    with pytest.raises(ValueError, match="same shape"):
        attention(q, k, v[:, :40].contiguous(), 10, 10, 20)
    with pytest.raises(ValueError, match="dtype"):
        attention(q, k.half(), v.half(), 10, 10, 20)
    with pytest.raises(ValueError, match="prefix_len"):
        attention(q, k, v, 12, 10, 20)
    with pytest.raises(ValueError, match="slots"):
        attention(q, k, v, 10, 10, 51)
    with pytest.raises(ValueError, match="do not fit"):
        attention(q, k, v, 10, 18, 20)


def test_no_query_rows_gives_an_empty_result():
    q, k, v = make_qkv(4, 2, 64, 50, 0, torch.float32)
    assert attention(q, k, v, 10, 10, 20).shape == (4, 0, 64)
