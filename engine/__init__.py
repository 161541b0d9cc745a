"""The document KV-cache engine: load a model, open sessions, splice edits, draft completions."""
