"""Which backend runs an op: the Triton kernel or the torch reference.

`KVSPLICE_KERNELS` (read at every call, so tests can flip it) is `auto` (default: Triton when the
tensors are on CUDA and triton imports), `torch`, or `triton` (always the kernel; without a GPU
that only works when TRITON_INTERPRET=1 was set before triton was imported, because triton
decides at decoration time whether a kernel is compiled or interpreted).

Kernel files decorate with `jit` from here, so they still import when triton is absent.
"""
from __future__ import annotations

import os
import warnings

import torch

try:
    import triton
    import triton.language as tl
    from triton import knobs as _knobs

    INTERPRETED = bool(_knobs.runtime.interpret)
    _IMPORT_ERROR: Exception | None = None
except ImportError as error:  # triton is an optional dependency; the torch references need nothing
    triton = tl = None
    INTERPRETED = False
    _IMPORT_ERROR = error

BACKENDS = ("auto", "triton", "torch")


def jit(fn):
    """triton.jit when triton imports; otherwise the plain function (never launched)."""
    return triton.jit(fn) if triton is not None else fn


def requested() -> str:
    mode = os.environ.get("KVSPLICE_KERNELS", "auto").strip().lower() or "auto"
    if mode not in BACKENDS:
        raise ValueError(f"KVSPLICE_KERNELS={mode!r}: expected one of {', '.join(BACKENDS)}")
    return mode


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the op on these tensors should launch its Triton kernel."""
    mode = requested()
    if mode == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if mode == "auto":
        return on_cuda and triton is not None
    if triton is None:
        raise RuntimeError(f"KVSPLICE_KERNELS=triton but triton does not import: {_IMPORT_ERROR}")
    if not on_cuda and not INTERPRETED:
        raise RuntimeError("KVSPLICE_KERNELS=triton needs CUDA tensors; to run the kernels on CPU, set "
                           "TRITON_INTERPRET=1 in the environment before anything imports triton")
    return True


def torchscript(fn):
    """fn compiled by TorchScript, for the CPU's small ops around the heavy ones (the int8 layer
    stack, engine/step.py, and the functions it calls): from Python each small op costs about
    10 us on a laptop CPU, as much as the matmul it serves; TorchScript runs them without the
    interpreter. torch.compile was slower here (its graph breaks at fbgemm's op, and its guards
    cost more than they save for one-row decode). torch.jit.script is deprecated in torch 2.13,
    whose version CI pins; this is the one place that applies it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(fn)
