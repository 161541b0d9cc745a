"""Cache ops: RoPE re-rotation, the splice's move-and-rotate, and attention.

One signature per op. Each dispatches to a Triton kernel when its tensors are on CUDA and
triton imports, and to the exact torch reference otherwise.
"""
from .attention import attention_reference as attention
from .rotary import apply_rope, rope_angles
from .rotary import rerotate_reference_ as rerotate_
from .rotary import rotate_and_move_reference_ as rotate_and_move_

__all__ = ["apply_rope", "attention", "rerotate_", "rope_angles", "rotate_and_move_"]
