"""Errors the engine raises on purpose; each message says what went wrong and how to fix it."""


class ModelLoadError(RuntimeError):
    """A model could not be found, fetched, verified or loaded. The message names the fix."""


class UnsupportedArchitecture(ModelLoadError):
    """The model is not of a family the engine's own forward implements."""


class Cancelled(Exception):
    """A draft was cancelled between two decode steps; the session is unchanged."""


class MemoryBudgetError(RuntimeError):
    """A cache cannot fit in the memory budget even after every other cache was dropped."""
