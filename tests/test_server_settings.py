"""Settings from initializationOptions / didChangeConfiguration: shapes accepted, bad values refused."""
import pytest

from kvsplice.engine import Engine
from kvsplice.server.settings import Settings


def test_keys_flat_or_in_a_section_snake_or_camel_case():
    flat, _ = Settings().updated({"maxNewTokens": 12, "strategy": "recompute"})
    nested, _ = Settings().updated({"kvsplice": {"max_new_tokens": 12, "strategy": "recompute"}})
    assert flat == nested == Settings(max_new_tokens=12, strategy="recompute")


def test_context_tokens_zero_means_the_devices_default():
    assert Settings().session_options()["context_tokens"] is None
    assert Settings(context_tokens=4096).session_options()["context_tokens"] == 4096


def test_a_change_replaces_only_the_keys_it_names_and_reports_unknown_ones():
    base = Settings(drafts=3)
    new, unknown = base.updated({"languages": ["python", "rust"], "colour": "red"})
    assert new == Settings(drafts=3, languages=("python", "rust"))
    assert unknown == ["colour"]
    assert new.serves("rust") and not new.serves("go") and Settings().serves("go")
    assert new.updated({"languages": None})[0].languages is None


@pytest.mark.parametrize("options, message", [
    ({"strategy": "fast"}, "one of pie, recompute, naive, chunk-reuse"),
    ({"drafts": 0}, "a positive integer"),
    ({"max_lines": True}, "a positive integer"),
    ({"memory_budget_mb": -1}, "megabytes"),
    ({"dtype": "int8"}, "float32"),
    ({"languages": "python"}, "a list of languageIds"),
    ({"model": ""}, "a non-empty string"),
    ({"defer": 1}, "true or false"),
    ({"quant": "int4"}, "one of auto, int8, none"),
    ({"contextTokens": 32}, "at least 64"),
    ({"fim_suffix": "copy"}, "one of cache, encode, none"),
    ({"speculate": -1}, "0 or more"),
    ("model", "must be an object"),
])
def test_bad_values_are_refused_naming_the_setting(options, message):
    with pytest.raises(ValueError, match=message):
        Settings().updated(options)


def test_session_options_are_what_open_session_takes(tiny_model_dir):
    options = Settings(tail_tokens=4, defer=True).session_options()
    assert options == {"strategy": "pie", "refresh_tokens": 32, "tail_tokens": 4, "defer": True,
                       "context_tokens": None, "fim_suffix": "none", "suffix_tokens": 512, "suffix_exact": 0}
    session = Engine("tiny", tiny_model_dir("llama", layers=1)).open_session("x = 1\n", **options)
    assert (session.window.tail_tokens, session.window.defer) == (4, True)
