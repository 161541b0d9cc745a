"""Engine: one loaded model, and the sessions (documents) opened on it."""
from __future__ import annotations

import torch

from .runtime import Runtime
from .session import Session


class Engine(Runtime):
    """A model on one device; `open_session` gives a document's cache."""

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", dtype: str | torch.dtype = "float32",
             quant: str = "auto", memory_budget_mb: float | None = None) -> "Engine":
        """A packaged short name, a local model folder, a GGUF file, or a Hugging Face id."""
        from .loading import resolve_model

        return cls(str(name_or_path), resolve_model(str(name_or_path)), device, dtype, quant, memory_budget_mb)

    def open_session(self, text: str, strategy: str = "pie", **options) -> Session:
        return Session(self, text, strategy, **options)
