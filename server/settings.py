"""Server settings, from `initializationOptions` and `workspace/didChangeConfiguration`.

Both accept the keys flat or under a `"kvsplice"` section, in snake_case or camelCase
(`max_new_tokens` or `maxNewTokens`). A change replaces only the keys it names.

| key                | default          | meaning                                                            |
|--------------------|------------------|--------------------------------------------------------------------|
| `model`            | `"smollm2-135m"` | packaged short name, model folder, `.gguf` file or Hugging Face id |
| `device`           | `"cpu"`          | torch device: `"cpu"`, `"cuda"`, `"cuda:1"`, ...                   |
| `dtype`            | `"float32"`      | `float32`, `bfloat16` or `float16`                                 |
| `quant`            | `"auto"`         | `auto` (int8 linears on CPU in float32, dense elsewhere), `int8` or `none` |
| `threads`          | `0`              | torch CPU threads (0: half the cores, 1 to 4; the server logs its choice) |
| `strategy`         | `"pie"`          | how edits reach the cache: `pie`, `recompute`, `naive`, `chunk-reuse` |
| `refresh_tokens`   | `32`             | also re-encode this many tokens after each edit (the most affected)  |
| `tail_tokens`      | `16`             | re-encode stale tokens among this many before a draft's cursor, in its first forward |
| `defer`            | `true`           | leave an edit's tokens unencoded until the next draft (or idle time), which encodes them in its own first forward: one pass over the weights instead of two, and none per keystroke while typing |
| `context_tokens`   | `0`              | tokens of each document the cache holds, around the latest cursor (0: the device's default, 2048 on CPU; never past the model's trained context) |
| `fim_suffix`       | `"none"`         | for fill-in-the-middle models, the text after the cursor: `none` (drafts continue the text before the cursor: measured as good as the exact FIM prompt at line starts, about 8 EM points below it inside a line, at no extra cost), `encode` (the exact FIM prompt, encoded per request: seconds on a CPU) or `cache` (its K/V copied from the document cache: fast, measured worse) |
| `suffix_tokens`    | `512`            | tokens of text after the cursor that a fill-in-the-middle draft reads |
| `suffix_exact`     | `0`              | with `cache`, the suffix tokens nearest the cursor encoded per request (closer to `encode`, ~20 ms a token with Qwen on one CPU thread) |
| `speculate`        | `8`              | tokens proposed from the document per draft step and verified in the same forward (0: plain greedy; same drafts) |
| `idle_refresh_ms`  | `1000`           | after this long without edits or requests, re-encode stale tokens until every cache is exact (0: never) |
| `drafts`           | `1`              | drafts per request (items in the answer), decoded as one batch    |
| `max_lines`        | `8`              | most lines in a multi-line (block) draft                           |
| `max_new_tokens`   | `48`             | most tokens decoded per draft                                      |
| `languages`        | `null`           | languageIds to complete (`null`: all; others are mirrored only)    |
| `memory_budget_mb` | `2048`           | memory for every document's cache (windows, draft scratch, growth); least recently used caches are dropped first and re-encoded on next use; a window that cannot fit alone gets an error |

Changing `model`, `device`, `dtype`, `quant` or `threads` reloads the model; changing `strategy`,
`refresh_tokens`, `tail_tokens`, `defer`, `context_tokens`, `fim_suffix`, `suffix_tokens` or `suffix_exact`
re-opens documents; the others apply at once.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from kvsplice.engine.decode import SPECULATE
from kvsplice.engine.drafts import FIM_SUFFIX, SUFFIX_EXACT, SUFFIX_TOKENS
from kvsplice.engine.linear import QUANTS
from kvsplice.engine.strategies import STRATEGIES
from kvsplice.engine.window import REFRESH_TOKENS, TAIL_TOKENS

SECTION = "kvsplice"
RELOAD = ("model", "device", "dtype", "quant", "threads")
# Engine.open_session options
SESSION = ("strategy", "refresh_tokens", "tail_tokens", "defer", "context_tokens", "fim_suffix", "suffix_tokens",
           "suffix_exact")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Settings:
    model: str = "smollm2-135m"
    device: str = "cpu"
    dtype: str = "float32"
    quant: str = "auto"
    threads: int = 0
    strategy: str = "pie"
    refresh_tokens: int = REFRESH_TOKENS
    tail_tokens: int = TAIL_TOKENS
    defer: bool = True  # edit -> first token 24% faster on Qwen 1k (`kvsplice bench edits ... pie+d`)
    context_tokens: int = 0
    fim_suffix: str = "none"  # measured: README, "FIM from the cache"
    suffix_tokens: int = SUFFIX_TOKENS
    suffix_exact: int = SUFFIX_EXACT
    speculate: int = SPECULATE
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
        options = {key: getattr(self, key) for key in SESSION}
        options["context_tokens"] = self.context_tokens or None  # 0: the device's default
        return options

    def serves(self, language_id: str) -> bool:
        return self.languages is None or language_id in self.languages


def _checked(name: str, value: object) -> object:
    def fail(expected: str):
        raise ValueError(f"setting {name!r}: expected {expected}, got {value!r}")

    if name in ("drafts", "max_lines", "max_new_tokens"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail("a positive integer")
    elif name in ("threads", "refresh_tokens", "tail_tokens", "idle_refresh_ms", "suffix_tokens", "suffix_exact",
                  "speculate"):
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
    elif name == "quant" and value not in QUANTS:
        fail("one of " + ", ".join(QUANTS))
    elif name == "fim_suffix" and value not in FIM_SUFFIX:
        fail("one of " + ", ".join(FIM_SUFFIX))
    elif name == "context_tokens":
        if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or value >= 64):
            fail("0 (the device's default) or an integer of at least 64")
    elif name == "languages":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail("a list of languageIds or null")
        return tuple(value)
    elif name in ("model", "device") and (not isinstance(value, str) or not value):
        fail("a non-empty string")
    return value
