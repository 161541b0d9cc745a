"""Server settings, from `initializationOptions` and `workspace/didChangeConfiguration`.

Both accept the keys flat or under a `"kvsplice"` section, in snake_case or camelCase
(`max_new_tokens` or `maxNewTokens`). A change replaces only the keys it names.

| key                | default          | meaning                                                            |
|--------------------|------------------|--------------------------------------------------------------------|
| `model`            | `"smollm2-135m"` | packaged short name, model folder, `.gguf` file or Hugging Face id |
| `device`           | `"cpu"`          | torch device: `"cpu"`, `"cuda"`, `"cuda:1"`, ...                   |
| `dtype`            | `"float32"`      | `float32`, `bfloat16` or `float16`                                 |
| `threads`          | `0`              | torch CPU threads (0: torch's default, one per core); 1 can be many times faster on a busy machine |
| `strategy`         | `"pie"`          | how edits reach the cache: `pie`, `recompute`, `naive`, `chunk-reuse` |
| `refresh_tokens`   | `32`             | also re-encode this many tokens after each edit (the most affected)  |
| `tail_tokens`      | `16`             | re-encode stale tokens among this many before a draft's cursor, in its first forward |
| `defer`            | `true`           | leave an edit's tokens unencoded until the next draft (or idle time), which encodes them in its own first forward: one pass over the weights instead of two, and none per keystroke while typing |
| `idle_refresh_ms`  | `1000`           | after this long without edits or requests, re-encode stale tokens until every cache is exact (0: never) |
| `drafts`           | `1`              | drafts per request (items in the answer)                           |
| `max_lines`        | `8`              | most lines in a multi-line (block) draft                           |
| `max_new_tokens`   | `48`             | most tokens decoded per draft                                      |
| `languages`        | `null`           | languageIds to complete (`null`: all; others are mirrored only)    |
| `memory_budget_mb` | `2048`           | KV-cache memory for all documents; least recently used lose theirs first (0: only the document in use keeps one) |

Changing `model`, `device`, `dtype` or `threads` reloads the model; changing `strategy`,
`refresh_tokens`, `tail_tokens` or `defer` re-encodes open documents; the others apply to the next request.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from kvsplice.engine.window import REFRESH_TOKENS, TAIL_TOKENS
from kvsplice.engine.strategies import STRATEGIES

SECTION = "kvsplice"
RELOAD = ("model", "device", "dtype", "threads")
SESSION = ("strategy", "refresh_tokens", "tail_tokens", "defer")  # Engine.open_session options
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Settings:
    model: str = "smollm2-135m"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    strategy: str = "pie"
    refresh_tokens: int = REFRESH_TOKENS
    tail_tokens: int = TAIL_TOKENS
    defer: bool = True  # edit -> first token 24% faster on Qwen 1k (`kvsplice bench edits ... pie+d`)
    idle_refresh_ms: int = 1000
    drafts: int = 1
    max_lines: int = 8
    max_new_tokens: int = 48
    languages: tuple[str, ...] | None = None
    memory_budget_mb: float = 2048

    def updated(self, options: object) -> tuple["Settings", list[str]]:
        """These settings with `options` applied, and the names of unknown keys (ignored).

        Raises ValueError naming the offending key; nothing is applied then.
        """
        if options is None:
            return self, []
        if not isinstance(options, dict):
            raise ValueError(f"settings must be an object, not {type(options).__name__}")
        if isinstance(options.get(SECTION), dict):
            options = options[SECTION]
        known = {f.name for f in dataclasses.fields(self)}
        changes, unknown = {}, []
        for key, value in options.items():
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
            if name in known:
                changes[name] = _checked(name, value)
            else:
                unknown.append(key)
        return dataclasses.replace(self, **changes), unknown

    def session_options(self) -> dict:
        return {key: getattr(self, key) for key in SESSION}

    def serves(self, language_id: str) -> bool:
        return self.languages is None or language_id in self.languages


def _checked(name: str, value: object) -> object:
    def fail(expected: str):
        raise ValueError(f"setting {name!r}: expected {expected}, got {value!r}")

    if name in ("drafts", "max_lines", "max_new_tokens"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail("a positive integer")
    elif name in ("threads", "refresh_tokens", "tail_tokens", "idle_refresh_ms"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail("an integer, 0 or more")
    elif name == "memory_budget_mb":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            fail("a number of megabytes, 0 or more")
    elif name == "defer" and not isinstance(value, bool):
        fail("true or false")
    elif name == "strategy" and value not in STRATEGIES:
        fail("one of " + ", ".join(STRATEGIES))
    elif name == "dtype" and value not in DTYPES:
        fail("one of " + ", ".join(DTYPES))
    elif name == "languages":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail("a list of languageIds or null")
        return tuple(value)
    elif name in ("model", "device") and (not isinstance(value, str) or not value):
        fail("a non-empty string")
    return value
