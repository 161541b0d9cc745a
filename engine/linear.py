"""The forward's linear layers: dense (any dtype, any device), or int8 weights on CPU.

A decode step reads every weight once, so on a CPU its speed is the weights' bytes. int8 weights
run through torch's own quantized engine (fbgemm's dynamic-quantized linear), which on this AVX2
CPU beat every other path torch offers: `kvsplice bench kernels` times it beside fp32 and bf16
`F.linear` and `torch._weight_int8pack_mm` on the models' shapes (e.g. smollm2's lm_head, one
row: 5.1 ms against 22 ms fp32); fbgemm's fp16 weights, `torch._weight_int4pack_mm_for_cpu` and
`torch._int_mm` lost too when tried once, and are not kept in the benchmark.

fbgemm also quantizes the input, with one scale for the whole tensor. Two consequences, two fixes:
- A row's result would depend on the rows batched with it (drafts decoded together, speculative
  rows, prefill chunks). So each row is divided by its own max |x|, and a sentinel row (+1 and
  -1, its output dropped) pins every input's range to exactly [-1, 1]: the quantization grid is
  the same for every row, and a row's output is bit-identical whatever it is batched with
  (integer accumulation is exact).
- 7-bit activations lose too much on small models (mean first-token KL to fp32 0.17 on
  smollm2-135m: a few outlier channels set each token's scale). So every row goes in twice: its
  value, and the residual that the 7-bit grid missed (at most half a step, so scaled by a fixed
  127 it fits the grid again). The weights are read once for both; activations are then exact
  to ~2^-14 and what remains is the int8 weights' own error (KL 0.0067 on the same cases).
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F

from kvsplice.kernels.dispatch import torchscript

QUANTS = ("auto", "int8", "none")
_ENGINE = "fbgemm"  # torch's x86 engine picks the same kernels for dynamic linear; fbgemm is explicit


def quant_for(quant: str, device: torch.device, dtype: torch.dtype) -> str:
    """`auto` is int8 on CPU for fp32 models (where it is faster) and dense elsewhere."""
    if quant not in QUANTS:
        raise ValueError(f"unknown quant {quant!r}; choose one of {', '.join(QUANTS)}")
    if quant == "auto":
        return "int8" if device.type == "cpu" and dtype == torch.float32 and int8_available() else "none"
    if quant == "int8" and (device.type != "cpu" or not int8_available()):
        raise ValueError(f"quant 'int8' runs on CPU with torch's fbgemm engine (device {device}, "
                         f"engines {torch.backends.quantized.supported_engines}); use quant 'none'")
    return quant


def int8_available() -> bool:
    return _ENGINE in torch.backends.quantized.supported_engines


class Dense:
    """y = x W^T + b in the weight's dtype (the exact path; CUDA and other dtypes)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8:
    """int8 weights (one scale per output channel), activations as value + residual on fbgemm's
    7-bit grid (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        torch.backends.quantized.engine = _ENGINE
        w = weight.detach().to(torch.float32)
        out, self.in_features = w.shape
        scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12).to(torch.float64)
        with warnings.catch_warnings():  # quantized tensors are deprecated, fbgemm's linear is not gone
            warnings.simplefilter("ignore", UserWarning)
            q = torch.quantize_per_channel(w, scale, torch.zeros(out, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None)
        self.out_features = out
        self.bias = None if bias is None else bias.detach().to(torch.float32)
        self.sentinel = torch.zeros(1, self.in_features)
        self.sentinel[0, :2] = torch.tensor([1.0, -1.0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = int8_rows(x.reshape(-1, self.in_features), self.packed, self.sentinel, self.bias)
        return out.view(*x.shape[:-1], self.out_features)


def int8_rows(rows: torch.Tensor, packed: torch.classes.quantized.LinearPackedParamsBase,
              sentinel: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Int8's arithmetic on [n, in] rows (TorchScript below; step.py calls it from its stack): the
    value and residual rows and the sentinel in, their outputs recombined (the ops of
    kernels/rows.py, which importing kvsplice.kernels defines)."""
    stacked, scale = torch.ops.kvsplice.int8_input(rows, sentinel)
    y = torch.ops.quantized.linear_dynamic(stacked, packed, True)
    return torch.ops.kvsplice.int8_output(y, scale, bias)


int8_rows = torchscript(int8_rows)


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, quant: str):
    return Int8(weight, bias) if quant == "int8" else Dense(weight, bias)
