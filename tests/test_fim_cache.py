"""Fill-in-the-middle drafts take the suffix window's K/V from the document cache (keys rotated to
their scratch positions) instead of encoding it per request; `fim_suffix="encode"` is the exact
reference. With one layer the copied rows are exact, so both must agree; deeper, they differ
only by the suffix rows never having seen `<fim_suffix>`."""
import textwrap
from pathlib import Path

import pytest
import torch

from kvsplice.engine import Engine

TEXT = Path(textwrap.__file__).read_text()[:6000]


def engine_of(tiny_model_dir, layers):
    engine = Engine("tiny", tiny_model_dir("qwen2", layers=layers), quant="none")
    assert engine.fim_ids is not None, "the tiny tokenizer has the FIM tokens"
    return engine


def cursors(text):
    at_line = text.index("\n", 3000) + 1 + 4  # inside a line, mid-file
    mid_token = text.index("self.", 4000) + 2  # splits `self`
    return [at_line, mid_token, len(text) - 1, 0]


@pytest.mark.parametrize("defer, suffix_exact", [(False, 0), (True, 0), (True, 5)])
def test_cache_fim_equals_encoded_fim_with_one_layer(tiny_model_dir, defer, suffix_exact):
    engine = engine_of(tiny_model_dir, layers=1)
    s = engine.open_session(TEXT, defer=defer, suffix_exact=suffix_exact)
    s.edit(3300, 3300, "    extra = 1\n")  # inside the suffix window of the first cursor
    exact = s.fork(fim_suffix="encode")
    for cursor in cursors(s.text):
        cached, encoded = s.next_token_logits(cursor), exact.next_token_logits(cursor)
        assert (cached - encoded).abs().max() <= 1e-4 * encoded.abs().max(), cursor
        assert s.complete(cursor, max_new_tokens=6) == exact.complete(cursor, max_new_tokens=6)


def test_cache_fim_is_close_to_encoded_fim_but_not_equal_with_more_layers(tiny_model_dir):
    engine = engine_of(tiny_model_dir, layers=3)
    s = engine.open_session(TEXT)
    exact = s.fork(fim_suffix="encode")
    cursor = cursors(TEXT)[0]
    cached, encoded = s.next_token_logits(cursor), exact.next_token_logits(cursor)
    kl = torch.sum(encoded.log_softmax(-1).exp() * (encoded.log_softmax(-1) - cached.log_softmax(-1)))
    assert (cached - encoded).abs().max() > 1e-4, "deeper suffix rows never saw <fim_suffix>"
    assert kl < 0.5


def test_suffix_tokens_nearest_the_cursor_are_encoded_exactly(tiny_model_dir):
    engine = engine_of(tiny_model_dir, layers=3)
    s = engine.open_session(TEXT, suffix_tokens=64)
    cursor = cursors(TEXT)[0]
    encoded = s.fork(fim_suffix="encode").next_token_logits(cursor)
    kl = {}
    for k in (0, 16, 64):
        cached = s.fork(suffix_exact=k).next_token_logits(cursor)
        logp = encoded.log_softmax(-1)
        kl[k] = float(torch.sum(logp.exp() * (logp - cached.log_softmax(-1))))
    assert kl[64] < 1e-9 < kl[16] < kl[0], kl  # all encoded: exact; the nearest 16: closer than none


def test_a_draft_leaves_the_live_cache_untouched(tiny_model_dir):
    engine = engine_of(tiny_model_dir, layers=2)
    s = engine.open_session(TEXT)
    before = [t.clone() for layer in range(2) for t in s.kv(layer)]
    s.complete(cursors(TEXT)[0], max_new_tokens=8, n=2)
    after = [t for layer in range(2) for t in s.kv(layer)]
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_the_suffix_window_is_bounded_by_suffix_tokens(tiny_model_dir):
    engine = engine_of(tiny_model_dir, layers=1)
    short = engine.open_session(TEXT, suffix_tokens=16)
    long = engine.open_session(TEXT, suffix_tokens=400)
    cursor = cursors(TEXT)[0]
    assert not torch.equal(short.next_token_logits(cursor), long.next_token_logits(cursor))
    with pytest.raises(ValueError, match="fim_suffix"):
        engine.open_session(TEXT, fim_suffix="copy")


def test_fim_suffix_none_drafts_without_fill_in_the_middle(tiny_model_dir):
    engine = engine_of(tiny_model_dir, layers=2)
    plain, none = engine.open_session(TEXT, fim=False), engine.open_session(TEXT, fim_suffix="none")
    assert none.window.fim is None and engine.open_session(TEXT).window.fim is not None
    cursor = cursors(TEXT)[0]
    assert torch.equal(none.next_token_logits(cursor), plain.next_token_logits(cursor))
    with pytest.raises(ValueError, match="cannot turn fill-in-the-middle on or off"):
        none.fork(fim_suffix="cache")
