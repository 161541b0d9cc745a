"""What every window of one model shares: the weights, the tokenizer, the special tokens, and
one memory budget for all their caches."""
from __future__ import annotations

from pathlib import Path

import os

import torch
from transformers import AutoTokenizer

from .errors import ModelLoadError
from .linear import quant_for
from .memory import MemoryBudget
from .model import Transformer
from .tokens import Vocabulary

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
# Default context window per device. On this 2-core AVX2 CPU a 2048-token window encodes in
# about 2 s (smollm2-135m) / 8 s (qwen2.5-coder-0.5b), which sets how long a file takes to open
# (`kvsplice bench window`); a GPU encodes the trained context in well under a second.
CONTEXT_TOKENS = {"cpu": 2048}
GPU_CONTEXT_TOKENS = 32768


def default_threads() -> int:
    """Half the cores, 1 to 4: torch's default of one thread per core was 8-15x slower than one
    thread on a 2-core machine whenever another process (the editor, a build) held a core, and
    decode is bound by memory bandwidth, which a few threads already saturate."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


class Runtime:
    """A model (weights, tokenizer) on one device, with the memory budget of its caches.
    `quant`: "auto" (int8 linears on CPU in fp32, dense elsewhere), "int8" or "none"."""

    def __init__(self, name: str, folder: Path, device: str = "cpu", dtype: str | torch.dtype = "float32",
                 quant: str = "auto", memory_budget_mb: float | None = None):
        self.name, self.folder = name, Path(folder)
        self.device, self.dtype = torch.device(device), _dtype(dtype)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("device 'cuda' was asked for but torch sees no CUDA GPU; use device='cpu'")
        self.quant = quant_for(quant, self.device, self.dtype)
        self.model = Transformer.from_folder(self.folder, self.device, self.dtype, self.quant)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.vocab = Vocabulary(self.tokenizer)
        fim = [self.vocab.token_id(t) for t in FIM_TOKENS]
        self.fim_ids = tuple(fim) if None not in fim else None
        self.start_id = self._start_token()
        self.memory = MemoryBudget(None if memory_budget_mb is None else memory_budget_mb * 2**20)

    def _start_token(self) -> int:
        """The token every document cache starts with: BOS if the model uses one, else a
        document separator, so a draft at the very start still has something to attend to."""
        tok = self.tokenizer
        if tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]:
            return tok.bos_token_id
        sep = self.vocab.token_id("<|endoftext|>")
        return sep if sep is not None else tok.eos_token_id

    def context_tokens(self, asked: int | None = None) -> int:
        """The window size: `asked`, or the device's default, never past the trained context
        (less room for the head token, a draft's scratch and its speculative rows)."""
        limit = self.model.shape.max_positions - 256
        default = CONTEXT_TOKENS.get(self.device.type, GPU_CONTEXT_TOKENS)
        size = default if asked is None else asked
        if size < 64:
            raise ValueError(f"context_tokens must be at least 64, got {size}")
        return min(size, limit)
