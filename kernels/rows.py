"""The per-row ops around the CPU's int8 linears (engine/linear.py has the arithmetic and why).

Ops rather than TorchScript functions: here their torch implementations, and C++ kernels
(row_ops.cpp) once kernels.native has loaded them, one pass over the rows where torch runs five
to eight small ops, each costing microseconds on a decode row. Both give the same bits
(tests/test_kernels_native.py), so a forward's result does not depend on which ran.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

# fbgemm's grid for inputs in [-1, 1] with reduce_range: q = round(63.5 x) + 64 (half to even),
# so x = +1 is 64 steps (q = 128; fbgemm clamps to 127 only for a single-row input, and
# int8_input never makes one: values, residuals and the sentinel are at least three rows).
GRID = 63.5


def int8_input(rows: torch.Tensor, sentinel: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """rows [n, in] -> ([value rows; residual rows; sentinel], scale [n, 1]): each row divided by
    its max |x|, and what the grid misses of it, doubled (at most half a step, so it fits again)."""
    scale = torch.linalg.vector_norm(rows, float("inf"), dim=[1], keepdim=True).clamp_min(1e-30)
    value = rows / scale
    grid = value * GRID
    residual = grid.sub_(grid.round()).mul_(2.0)
    return torch.cat((value, residual, sentinel)), scale


def int8_output(y: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """fbgemm's result for int8_input's rows -> (value + residual / 127) * scale (+ bias)."""
    n = scale.shape[0]
    out = (y.narrow(0, 0, n) + y.narrow(0, n, n) * (1.0 / 127)).mul_(scale)
    if bias is not None:
        out += bias
    return out


if not hasattr(torch.ops.kvsplice, "int8_input"):  # once per process, as kernels/attention.py's op
    _LIBRARY = torch.library.Library("kvsplice", "FRAGMENT")
    _LIBRARY.define("int8_input(Tensor rows, Tensor sentinel) -> (Tensor, Tensor)")
    _LIBRARY.define("int8_output(Tensor y, Tensor scale, Tensor? bias) -> Tensor")
    _LIBRARY.impl("int8_input", int8_input, "CompositeExplicitAutograd")
    _LIBRARY.impl("int8_output", int8_output, "CompositeExplicitAutograd")
