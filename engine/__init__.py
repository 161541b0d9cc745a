"""The document KV-cache engine: load a model, open sessions, splice edits, draft completions."""
from .engine import Engine
from .errors import Cancelled, ModelLoadError, UnsupportedArchitecture
from .session import EditReport, Session
from .strategies import STRATEGIES

__all__ = ["Cancelled", "EditReport", "Engine", "ModelLoadError", "STRATEGIES", "Session",
           "UnsupportedArchitecture"]
