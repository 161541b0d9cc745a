"""Engine: one loaded model, shared by the sessions (documents) opened on it."""
from __future__ import annotations

import weakref
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .errors import ModelLoadError
from .model import Transformer
from .session import Session
from .tokens import Vocabulary

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


class Engine:
    """A model (weights, tokenizer) on one device; `open_session` gives a document cache."""

    def __init__(self, name: str, folder: Path, device: str = "cpu", dtype: str | torch.dtype = "float32"):
        self.name, self.folder = name, Path(folder)
        self.device, self.dtype = torch.device(device), _dtype(dtype)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("device 'cuda' was asked for but torch sees no CUDA GPU; use device='cpu'")
        self.model = Transformer.from_folder(self.folder, self.device, self.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.vocab = Vocabulary(self.tokenizer)
        fim = [self.vocab.token_id(t) for t in FIM_TOKENS]
        self.fim_ids = tuple(fim) if None not in fim else None
        self.start_id = self._start_token()
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    def _start_token(self) -> int:
        """The token every document cache starts with: BOS if the model uses one, else a
        document separator, so a draft at the very start still has something to attend to."""
        tok = self.tokenizer
        if tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]:
            return tok.bos_token_id
        sep = self.vocab.token_id("<|endoftext|>")
        return sep if sep is not None else tok.eos_token_id

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", dtype: str | torch.dtype = "float32") -> "Engine":
        """A packaged short name, a local model folder, a GGUF file, or a Hugging Face id."""
        from .loading import resolve_model

        return cls(str(name_or_path), resolve_model(str(name_or_path)), device, dtype)

    def open_session(self, text: str, strategy: str = "pie", **options) -> Session:
        session = Session(self, text, strategy, **options)
        self.sessions.add(session)
        return session
