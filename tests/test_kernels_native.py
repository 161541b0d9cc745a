"""The C++ CPU kernels built by kernels.native: the AVX2 decode attention against the torch
reference, with the promises the engine relies on (a row's bits depend neither on the rows beside
it nor on the thread count), and the int8 row ops against their torch implementations."""
import os
import subprocess
import sys

import pytest
import torch

from kvsplice.engine.runtime import cpu_kernels
from kvsplice.kernels import rows
from kvsplice.kernels.attention import attention_cpu, attention_reference
from test_kernels_attention import make_qkv, naive_attention

OP = torch.ops.kvsplice.decode_attention


def test_the_kernel_builds_here():
    """CI's machine has AVX2 and a compiler: the tests below must run the kernel, not the
    op's torch fallback."""
    assert cpu_kernels() == "avx2"


# hq, hkv, dim, slots, m, prefix_len, chunk_start, chunk_end: groups of 1, 3 and 7, one and two
# segments, keys ending on and around the 128-key blocks, a prefix of nothing, every head_dim built.
CASES = [
    (9, 3, 64, 3000, 1, 2048, 2048, 2049),
    (14, 2, 64, 1200, 5, 500, 700, 705),
    (4, 4, 128, 400, 2, 127, 127, 129),
    (7, 1, 64, 300, 1, 0, 0, 1),
    (6, 2, 32, 700, 8, 0, 100, 356),
    (4, 2, 16, 300, 3, 128, 200, 203),
    (8, 2, 96, 300, 4, 255, 260, 264),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_kernel_matches_the_reference(case):
    assert cpu_kernels() == "avx2"
    hq, hkv, dim, slots, m, prefix_len, chunk_start, chunk_end = case
    q, k, v = make_qkv(hq, hkv, dim, slots, m, torch.float32, q_rows_major=True)  # a strided q, as the engine's
    out = OP(q, k, v, prefix_len, chunk_start, chunk_end, chunk_end, dim ** -0.5)
    torch.testing.assert_close(out, attention_reference(q, k, v, prefix_len, chunk_start, chunk_end),
                               rtol=1e-5, atol=2e-6)
    if slots <= 400:
        torch.testing.assert_close(out.double(), naive_attention(q, k, v, prefix_len, chunk_start, chunk_end),
                                   rtol=1e-5, atol=2e-6)


def test_peaked_scores_stay_finite_and_exact():
    """Scores in the hundreds: the block maxima and the combine must keep the softmax stable."""
    q, k, v = make_qkv(6, 2, 64, 1000, 2, torch.float32, seed=3)
    q = q * 40
    out = OP(q, k, v, 600, 900, 950, 950, 0.125)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, 600, 900, 950, scale=0.125),
                               rtol=1e-4, atol=1e-5)


def test_a_row_does_not_depend_on_its_neighbours_nor_on_the_threads():
    """Speculative rows and batched drafts must equal plain one-row decoding bit for bit."""
    q, k, v = make_qkv(14, 2, 64, 2000, 9, torch.float32, q_rows_major=True)
    prefix_len, chunk_start, chunk_end = 1500, 1600, 1630
    together = OP(q, k, v, prefix_len, chunk_start, chunk_end, 1700, 0.125)
    for i in range(9):
        alone = OP(q[:, i:i + 1], k, v, prefix_len, chunk_start, chunk_end - 8 + i, chunk_end - 8 + i, 0.125)
        assert torch.equal(alone[:, 0], together[:, i])
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert torch.equal(OP(q, k, v, prefix_len, chunk_start, chunk_end, 1700, 0.125), together)
    finally:
        torch.set_num_threads(threads)


def test_the_engine_path_routes_decode_rows_to_the_op_and_chunks_to_sdpa():
    q, k, v = make_qkv(4, 2, 64, 600, 40, torch.float32)
    decode = attention_cpu(q[:, :3], k, v, 300, 400, 440)
    assert torch.equal(decode, OP(q[:, :3], k, v, 300, 400, 440, 440, 0.125))
    chunk = attention_cpu(q, k, v, 300, 400, 440)
    assert torch.equal(chunk, attention_reference(q, k, v, 300, 400, 440))
    torch.testing.assert_close(attention_cpu(q[:, :3].double(), k.double(), v.double(), 300, 400, 440),
                               attention_reference(q[:, :3].double(), k.double(), v.double(), 300, 400, 440))


def test_bad_input_is_an_error_not_a_crash():
    q, k, v = make_qkv(4, 2, 64, 100, 2, torch.float32)
    with pytest.raises(RuntimeError, match="fp32"):
        OP(q.double(), k.double(), v.double(), 10, 10, 20, 20, 0.125)
    with pytest.raises(RuntimeError, match="slots"):
        OP(q, k, v, 10, 10, 200, 200, 0.125)
    with pytest.raises(RuntimeError, match="contiguous"):
        OP(q, k[:, ::2], v[:, ::2], 10, 10, 20, 20, 0.125)
    with pytest.raises(RuntimeError, match="head_dim"):
        OP(q[..., :8], k[..., :8].contiguous(), v[..., :8].contiguous(), 10, 10, 20, 20, 0.125)


def test_without_the_kernel_the_op_runs_the_torch_reference():
    """KVSPLICE_KERNELS=torch (or a machine that cannot build): the op keeps its torch
    implementation, the same bits as the reference's batched matmul."""
    script = (
        "import torch\n"
        "from kvsplice.engine.runtime import cpu_kernels\n"
        "from kvsplice.kernels.attention import _attention_matmul\n"
        "assert cpu_kernels().startswith('torch'), cpu_kernels()\n"
        "g = torch.Generator().manual_seed(0)\n"
        "q, k, v = (torch.randn(s, generator=g) for s in ((6, 2, 64), (2, 300, 64), (2, 300, 64)))\n"
        "out = torch.ops.kvsplice.decode_attention(q, k, v, 100, 200, 230, 240, 0.125)\n"
        "assert torch.equal(out, _attention_matmul(q, k, v, 100, 200, 230, 0.125, 240))\n"
    )
    env = dict(os.environ, KVSPLICE_KERNELS="torch")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("n, width, bias", [(1, 576, False), (3, 896, True), (37, 4864, False), (200, 64, True)])
def test_int8_row_ops_give_the_bits_of_their_torch_implementations(n, width, bias):
    """The C++ int8_input / int8_output against kernels/rows.py's torch ops, bit for bit (the
    Python forward and the TorchScript stack may run either), outliers and a zero row included."""
    assert cpu_kernels() == "avx2"
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, width, generator=gen) * torch.rand(n, 1, generator=gen) * 10
    x[0, 5 % width] = 300.0
    x[-1] = 0.0 if n > 1 else x[-1]
    sentinel = torch.zeros(1, width)
    sentinel[0, :2] = torch.tensor([1.0, -1.0])
    stacked, scale = torch.ops.kvsplice.int8_input(x, sentinel)
    want_stacked, want_scale = rows.int8_input(x, sentinel)
    assert torch.equal(stacked, want_stacked) and torch.equal(scale, want_scale)
    y = torch.randn(2 * n + 1, 3 * width // 2, generator=gen)
    b = torch.randn(3 * width // 2, generator=gen) if bias else None
    assert torch.equal(torch.ops.kvsplice.int8_output(y, scale, b), rows.int8_output(y, scale, b))


def test_a_fresh_build_needs_no_venv_on_path_and_survives_a_killed_build(tmp_path):
    """What an editor's spawn meets on first use: the venv's bin/ (where pip put ninja) not on
    PATH, and a lock left by a build that was killed; the build must still finish, not hang."""
    build = tmp_path / f"torch-{torch.__version__}"
    build.mkdir()
    lock = build / "lock"
    lock.touch()
    os.utime(lock, (1, 1))  # a lock from long ago
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kvsplice.kernels import native\n"
        "print(native.load(Path(sys.argv[1])))\n"
    )
    env = dict(os.environ, PATH="/usr/bin:/bin")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "avx2", done.stderr
    assert any(build.glob("*.so"))
