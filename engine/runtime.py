"""What every window of one model shares: the weights, the tokenizer, the special tokens, and
one memory budget for all their caches."""
from __future__ import annotations

from pathlib import Path

import os
import time

import torch
from transformers import AutoTokenizer

from kvsplice.kernels import native

from .errors import ModelLoadError
from .cache import KVCache
from .linear import quant_for
from .memory import MemoryBudget
from .packaged import model_home
from .model import Segment, Transformer
from .tokens import FIM_TOKENS, Vocabulary

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
# The default window is what this device encodes in about FIRST_ENCODE_S, measured when the
# model loads: opening a file costs its window's first encode, and that is what a user waits for
# before the first draft (`kvsplice bench window`). Between MIN_CONTEXT and the trained context.
FIRST_ENCODE_S = 4.0
MIN_CONTEXT = 512


def cpu_kernels() -> str:
    """Load kernels.native's C++ CPU kernels, built once per machine under KVSPLICE_HOME/kernels
    (engines, the kernel benchmark and the tests share that one build); says which run."""
    return native.load(model_home() / "kernels")


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
        # Which kernels the CPU runs ("avx2": kernels.native's C++, or "torch (why)"); before the warm-up.
        self.cpu_kernels = cpu_kernels() if self.device.type == "cpu" else None
        self.model = Transformer.from_folder(self.folder, self.device, self.dtype, self.quant)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.vocab = Vocabulary(self.tokenizer)
        fim = [self.vocab.token_id(t) for t in FIM_TOKENS]
        self.fim_ids = tuple(fim) if None not in fim else None
        self.start_id = self._start_token()
        self.memory = MemoryBudget(None if memory_budget_mb is None else memory_budget_mb * 2**20)
        self.encode_rate = self._encode_rate()

    def _start_token(self) -> int:
        """The token every document cache starts with: BOS if the model uses one, else a
        document separator, so a draft at the very start still has something to attend to."""
        tok = self.tokenizer
        if tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]:
            return tok.bos_token_id
        sep = self.vocab.token_id("<|endoftext|>")
        return sep if sep is not None else tok.eos_token_id

    def _encode_rate(self, tokens: int = 64) -> float:
        """Tokens per second this device encodes (after two warm-up forwards, which also let
        TorchScript specialise its graphs before a user waits on them)."""
        s = self.model.shape
        cache = KVCache(s.layers, s.kv_heads, s.head_dim, self.device, self.dtype)
        cache.reserve(tokens)
        ids = torch.full((tokens,), self.start_id)
        for n in (8, 8, tokens):
            t0 = time.perf_counter()
            self.model.forward(ids[:n], torch.arange(n), [Segment.in_place(0, n)], cache.k, cache.v, logits_rows=1)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return tokens / max(time.perf_counter() - t0, 1e-6)

    def context_tokens(self, asked: int | None = None) -> int:
        """The window size: `asked`, or what this device encodes in about FIRST_ENCODE_S; never
        past the trained context (less room for the head token, a draft's scratch and its
        speculative rows)."""
        limit = self.model.shape.max_positions - 256
        default = max(MIN_CONTEXT, int(self.encode_rate * FIRST_ENCODE_S) // 256 * 256)
        size = default if asked is None else asked
        if size < 64:
            raise ValueError(f"context_tokens must be at least 64, got {size}")
        return min(size, limit)
