"""The document KV-cache engine: load a model, open sessions, splice edits, draft completions."""
from .engine import Engine
from .errors import Cancelled, MemoryBudgetError, ModelLoadError, UnsupportedArchitecture
from .session import Session
from .strategies import STRATEGIES
from .window import EditReport

__all__ = ["Cancelled", "EditReport", "Engine", "MemoryBudgetError", "ModelLoadError", "STRATEGIES", "Session",
           "UnsupportedArchitecture"]
