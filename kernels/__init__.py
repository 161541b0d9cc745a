"""Cache ops: RoPE re-rotation, the splice's move-and-rotate, and attention.

One signature per op. Each checks its inputs, then dispatches (`dispatch.use_triton`) to a Triton
kernel when its tensors are on CUDA and triton imports, and to the exact torch reference
otherwise; `KVSPLICE_KERNELS=auto|triton|torch` overrides. On a CPU, decode attention and the
int8 linears' row ops (rows.py) run C++ kernels once `native.load` has built them.
"""
from . import rows  # noqa: F401  (defines the int8 linears' row ops, kvsplice::int8_input / int8_output)
from .attention import attention, chunk_attention, decode_attention
from .rotary import apply_rope, rerotate_, rope_angles, rotate, rotate_and_move_

__all__ = [
    "apply_rope", "attention", "chunk_attention", "decode_attention", "rerotate_", "rope_angles", "rotate",
    "rotate_and_move_",
]
