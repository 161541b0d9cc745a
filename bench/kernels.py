"""`kvsplice bench kernels`: time each cache op per backend on model-shaped caches.

One table row per (op, shape, backend): median µs, effective GB/s (bytes the op must move
divided by its time), and the speedup over the "torch" row measured in the same run. On a CPU
only the "torch" backend runs (the Triton interpreter's timings mean nothing): what the engine
runs there, which for decode attention is the C++ kernel of kernels.native where it built, so
that row is also timed as the torch reference's batched matmul ("torch bmm"); attention is also
timed as plain `scaled_dot_product_attention` over the same cache, the baseline to beat.
On a CPU the model's linear layers are timed too, for every weight format torch offers there:
fp32 (the reference), bf16, kvsplice's int8 (fbgemm, engine/linear.py) and
`torch._weight_int8pack_mm`, at one row (a decode step) and nine (one with 8 speculative rows).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from kvsplice.engine.linear import Int8, int8_available
from kvsplice.engine.runtime import cpu_kernels
from kvsplice.kernels import chunk_attention, decode_attention, rerotate_, rotate_and_move_
from kvsplice.kernels.attention import attention_reference
from kvsplice.kernels.dispatch import triton

# Cache shapes of the models the project runs (DESIGN §6): layers, kv heads, q heads, head_dim,
# and the document length in tokens for the benchmark.
MODELS = {
    "smollm2-135m": dict(layers=30, kv_heads=3, heads=9, head_dim=64, tokens=2048),
    "qwen2.5-coder-0.5b": dict(layers=24, kv_heads=2, heads=14, head_dim=64, tokens=8192),
}
# Linear layer shapes (DESIGN §6): hidden size, MLP width, vocabulary, q and kv projection widths.
LINEARS = {
    "smollm2-135m": dict(hidden=576, intermediate=1536, vocab=49152, q=576, kv=192),
    "qwen2.5-coder-0.5b": dict(hidden=896, intermediate=4864, vocab=151936, q=896, kv=128),
}
LINEAR_ROWS = (1, 9)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TYPED_CHARS = 3  # a splice inserts a few tokens; the suffix moves (and rotates) by that much
CHUNK_ROWS = 32  # new tokens encoded against the whole prefix (an edit, a FIM suffix window)


@dataclass
class Row:
    op: str
    model: str
    shape: str
    dtype: str
    backend: str
    median_us: float
    gb_per_s: float
    x_torch: float | None = None  # torch reference time / this time, same run


@contextlib.contextmanager
def _backend(name: str):
    old = os.environ.get("KVSPLICE_KERNELS")
    os.environ["KVSPLICE_KERNELS"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["KVSPLICE_KERNELS"]
        else:
            os.environ["KVSPLICE_KERNELS"] = old


def _median_us(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: compile, allocate, fault pages in
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def _cases(shape: dict, dtype: torch.dtype, device: torch.device):
    """(op, shape text, bytes moved, {backend: callable}) for one model's cache."""
    layers, hkv, hq, dim, tokens = (shape[k] for k in ("layers", "kv_heads", "heads", "head_dim", "tokens"))
    slots = tokens + CHUNK_ROWS + TYPED_CHARS
    gen = torch.Generator(device=device).manual_seed(0)
    k = torch.randn(layers, hkv, slots, dim, device=device, dtype=dtype, generator=gen)
    v = torch.randn(layers, hkv, slots, dim, device=device, dtype=dtype, generator=gen)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    size = k.element_size()

    edit = tokens // 4  # an edit a quarter into the document: three quarters of it move
    moved = tokens - edit
    cache = f"{layers}x{hkv}x{tokens}x{dim}"
    yield ("rotate_and_move_", f"{cache} move {moved}", 4 * moved * layers * hkv * dim * size,
           {"op": lambda: rotate_and_move_(k, v, edit, tokens, TYPED_CHARS, TYPED_CHARS, inv_freq)})
    yield ("rerotate_", f"{cache} rotate {moved}", 2 * moved * layers * hkv * dim * size,
           {"op": lambda: rerotate_(k, edit, tokens, TYPED_CHARS, inv_freq)})

    for name, op, rows in (("decode_attention", decode_attention, 1),
                           ("chunk_attention", chunk_attention, CHUNK_ROWS)):
        q = torch.randn(hq, rows, dim, device=device, dtype=dtype, generator=gen)
        prefix = tokens - rows
        keys, values = k[0, :, :tokens], v[0, :, :tokens]
        mask = None
        if rows > 1:
            mask = torch.ones(rows, tokens, dtype=torch.bool, device=device).tril(tokens - rows)

        def sdpa(q=q, keys=keys, values=values, mask=mask):
            return F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask,
                                                  enable_gqa=hq != hkv)

        fns = {"op": lambda op=op, q=q, prefix=prefix: op(q, k[0], v[0], prefix, prefix, tokens), "torch sdpa": sdpa}
        if device.type == "cpu" and rows == 1:
            fns["torch bmm"] = lambda q=q, prefix=prefix: attention_reference(q, k[0], v[0], prefix, prefix, tokens)
        yield name, f"q {hq}x{rows}x{dim} kv {hkv}x{tokens}", (2 * hkv * tokens + 2 * hq * rows) * dim * size, fns


def _linear_cases(shape: dict):
    """(op, shape text, int8 weight bytes, {format: callable}) for one model's linear layers on a
    CPU; "op" is fp32 F.linear, the reference. Bytes are the int8 weights', the least any format
    here reads."""
    h, gen = shape["hidden"], torch.Generator().manual_seed(0)
    layers = {"qkv": (shape["q"] + 2 * shape["kv"], h), "o": (h, shape["q"]),
              "gate_up": (2 * shape["intermediate"], h), "down": (h, shape["intermediate"]),
              "lm_head": (shape["vocab"], h)}
    for name, (out, inp) in layers.items():
        w = torch.randn(out, inp, generator=gen) / inp ** 0.5
        w_bf16 = w.to(torch.bfloat16)
        int8 = Int8(w) if int8_available() else None
        scales = w.abs().amax(dim=1) / 127
        w_int8 = (w / scales[:, None]).round().to(torch.int8)
        for rows in LINEAR_ROWS:
            x = torch.randn(rows, inp, generator=gen)
            fns = {"op": lambda x=x, w=w: F.linear(x, w),
                   "bf16": lambda x=x.to(torch.bfloat16), w=w_bf16: F.linear(x, w),
                   "_weight_int8pack_mm": lambda x=x, w=w_int8, s=scales: torch._weight_int8pack_mm(x, w, s)}
            if int8 is not None:
                fns["int8 (kvsplice)"] = lambda x=x, f=int8: f(x)
            yield "linear", f"{name} {inp}->{out} x{rows}", out * inp, fns


def run(models: list[str], dtype: str, device: torch.device, repeats: int, tokens: int | None,
        linear: bool = True) -> list[Row]:
    backends = ["torch"] + (["triton"] if device.type == "cuda" and triton is not None else [])
    if device.type == "cpu":
        cpu_kernels()
    rows = []
    for model in models:
        shape = dict(MODELS[model], **({"tokens": tokens} if tokens else {}))
        linears = _linear_cases(LINEARS[model]) if device.type == "cpu" and linear else ()
        for op, text, nbytes, fns in (*_cases(shape, DTYPES[dtype], device), *linears):
            timed = []
            for backend in backends:
                with _backend(backend):
                    timed.append((backend, _median_us(fns["op"], device, repeats)))
            timed += [(name, _median_us(fn, device, repeats)) for name, fn in fns.items() if name != "op"]
            reference = timed[0][1]
            for backend, us in timed:
                rows.append(Row(op, model, text, dtype, backend, round(us, 1), round(nbytes / us / 1e3, 2),
                                None if backend == "torch" else round(reference / us, 2)))
    return rows


def format_table(rows: list[Row]) -> str:
    header = ("op", "model", "shape", "dtype", "backend", "median µs", "GB/s", "x torch")
    cells = [header] + [(r.op, r.model, r.shape, r.dtype, r.backend, f"{r.median_us:.1f}", f"{r.gb_per_s:.2f}",
                         "" if r.x_torch is None else f"{r.x_torch:.2f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines, last_op = [], None
    for n, c in enumerate(cells):
        if n > 1 and c[0] != last_op:
            lines.append("")
        last_op = c[0] if n else None
        padded = (x.rjust(w) if i >= 5 else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths)))
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kvsplice bench kernels",
                                     description="Time each cache op per backend on model-shaped caches.")
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all", help="cache shapes to use")
    parser.add_argument("--tokens", type=int, help="document length (default: 2k for SmolLM2, 8k for Qwen)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, help="cache dtype (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row (median reported)")
    parser.add_argument("--no-linear", action="store_true", help="skip the linear layers (timed on CPU only)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU")
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    models = list(MODELS) if args.model == "all" else [args.model]
    rows = run(models, dtype, device, args.repeats, args.tokens, linear=not args.no_linear)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)")
    print(f"kernels on {name}, torch {torch.__version__}; x torch = torch reference time / this time")
    print(format_table(rows))
    if device.type != "cuda":
        print("\n(no GPU: Triton kernels not timed; they run here only under TRITON_INTERPRET=1, for tests)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": [asdict(r) for r in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
