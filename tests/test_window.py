"""A session caches a bounded window of its document, placed around the latest cursor, that
moves by splicing; edits outside it touch only the text; one memory budget holds for all."""
import argparse
from pathlib import Path

import pytest
import torch

from kvsplice.engine import Engine, MemoryBudgetError

LONG = Path(argparse.__file__).read_text()  # ~100 KB of real code, ~25k tiny-tokenizer tokens
CONTEXT = 256


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine("tiny", tiny_model_dir("llama", layers=2), quant="none")


def check(s):
    """The session's invariants: the window is the document's text at its place, its ids spell
    it, it fits its size, and its cache and bookkeeping have one row per token."""
    w = s.window
    assert w.text == s.text[s.start:s.end]
    assert s.vocab.to_bytes(w.token_ids) == w.text.encode()
    assert len(w.token_ids) <= s.context_tokens
    assert len(w.cache.stale) == len(w.cache.positions) == w.cache.length == len(w.token_ids) + 1


def kv_rows(s):
    return [torch.cat(s.kv(layer)) for layer in range(2)]


def test_a_long_document_opens_to_a_window_at_the_top_of_at_most_context_tokens(engine):
    s = engine.open_session(LONG, context_tokens=CONTEXT)
    check(s)
    assert s.start == 0 and CONTEXT // 2 < len(s.token_ids) <= CONTEXT and s.end < len(LONG) // 10
    assert s.text[s.end - 1] == "\n", "the window ends at a line end"
    assert s.stats()["window"] == {"start": 0, "end": s.end, "context_tokens": CONTEXT}


def test_the_default_window_is_what_the_device_encodes_in_a_few_seconds(engine, monkeypatch):
    from conftest import MEASURED_ENCODE_RATE
    from kvsplice.engine.runtime import FIRST_ENCODE_S, MIN_CONTEXT

    rate = MEASURED_ENCODE_RATE(engine)
    assert rate > 0
    monkeypatch.setattr(engine, "encode_rate", 1000 / FIRST_ENCODE_S)
    assert engine.context_tokens() == 768, "1,000 tokens, in whole 256-token steps"
    monkeypatch.setattr(engine, "encode_rate", 1.0)
    assert engine.context_tokens() == MIN_CONTEXT
    assert engine.open_session(LONG[:20000]).context_tokens == MIN_CONTEXT
    monkeypatch.setattr(engine, "encode_rate", 1e9)
    assert engine.context_tokens() == engine.model.shape.max_positions - 256
    assert engine.context_tokens(300) == 300


def test_context_tokens_never_exceeds_the_trained_context(engine):
    s = engine.open_session("x = 1\n", context_tokens=10**6)
    assert s.context_tokens <= engine.model.shape.max_positions - 256
    with pytest.raises(ValueError, match="at least 64"):
        engine.open_session("x", context_tokens=8)


def test_a_cursor_jump_moves_the_window_and_drafts_equal_a_fresh_session_on_its_text(engine):
    s = engine.open_session(LONG, context_tokens=CONTEXT, fim=False)
    cursor = LONG.index("\n", len(LONG) // 2) + 1 + 8
    drafts = s.complete(cursor, max_new_tokens=8)
    check(s)
    assert s.start <= cursor <= s.end and s.start > len(LONG) // 3
    # far from where it was: re-encoded whole, so exact
    fresh = engine.open_session(s.window.text, fim=False)
    assert drafts == fresh.complete(cursor - s.start, max_new_tokens=8)
    assert s.stale == s.window.missing, "nothing approximate: only rows not read yet"


def test_a_small_cursor_move_inside_the_window_costs_nothing(engine):
    s = engine.open_session(LONG, context_tokens=CONTEXT, fim=False)
    s.complete(s.end - 40, max_new_tokens=4)
    window = (s.start, s.end)
    before = kv_rows(s)
    s.complete(s.end - 60, max_new_tokens=4)
    assert (s.start, s.end) == window
    assert all(torch.equal(a, b) for a, b in zip(before, kv_rows(s)))


def test_moving_down_past_the_windows_end_slides_it_by_rotation(engine):
    s = engine.open_session(LONG, context_tokens=CONTEXT, fim=False)
    old_start, old_end = s.start, s.end
    s.complete(old_end + 200, max_new_tokens=4)
    check(s)
    assert old_start < s.start < old_end < s.end, "overlapping: the front was cut, the back extended"
    assert s.last_report is not None


def test_edits_before_the_window_move_it_and_edits_after_it_leave_the_cache_alone(engine):
    s = engine.open_session(LONG, context_tokens=CONTEXT)
    s.complete(len(LONG) // 2, max_new_tokens=4)
    start, before = s.start, kv_rows(s)
    report = s.edit(10, 20, "# a comment that is longer\n")
    assert s.start == start + len("# a comment that is longer\n") - 10
    assert (report.encoded, report.rotated) == (0, 0)
    s.edit(s.end + 100, s.end + 100, "x = 1\n")
    check(s)
    assert all(torch.equal(a, b) for a, b in zip(before, kv_rows(s)))


def test_edits_over_the_windows_edges_cut_it_and_keep_the_invariants(engine):
    s = engine.open_session(LONG, context_tokens=CONTEXT)
    s.complete(len(LONG) // 2, max_new_tokens=4)
    s.edit(s.start - 30, s.start + 40, "replaced = True\n")  # over the start
    check(s)
    s.edit(s.end - 25, s.end + 50, "")  # over the end
    check(s)
    s.edit(s.start - 5, s.end + 5, "whole = 1\n")  # over all of it
    check(s)
    assert s.window.text == ""
    assert s.complete(s.text.index("whole = 1") + 9, max_new_tokens=4) is not None
    check(s)


def test_typing_past_the_window_size_trims_it(engine):
    s = engine.open_session(LONG[:3000], context_tokens=CONTEXT)
    at = s.end
    for i in range(60):
        s.edit(at, at, f"value_{i} = {i}\n")
        at += len(f"value_{i} = {i}\n")
        check(s)
    assert s.start > 0 and s.start <= at <= s.end


def test_a_paste_larger_than_the_window_never_encodes_more_than_the_window(engine):
    s = engine.open_session("def f():\n    pass\n", context_tokens=CONTEXT)
    s.edit(9, 9, LONG[:50_000])
    check(s)
    assert s.cache.capacity < 4 * CONTEXT


def test_a_200k_character_single_line_gets_a_window_inside_the_line(engine):
    line = "x = [" + ", ".join(str(i) for i in range(40_000)) + "]"
    assert len(line) > 200_000 and "\n" not in line
    s = engine.open_session(line, context_tokens=CONTEXT)
    check(s)
    drafts = s.complete(len(line) // 2, max_new_tokens=4)
    check(s)
    assert s.start < len(line) // 2 < s.end and isinstance(drafts, list)


def test_lazy_open_encodes_in_slices_to_the_same_cache(engine):
    eager = engine.open_session(LONG[:6000], context_tokens=CONTEXT)
    lazy = engine.open_session(LONG[:6000], context_tokens=CONTEXT, encode=False)
    done, total = lazy.progress
    assert done == 0 and total == eager.cache.length and not lazy.stats()["ready"]
    while not lazy.stats()["ready"]:
        assert lazy.encode_missing(budget_tokens=50) > 0
        assert lazy.stats()["ready"] or lazy.stats()["encoding"]["done"] == lazy.progress[0]
    assert lazy.stats()["ready"] and lazy.stats()["encoding"] is None
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(kv_rows(eager), kv_rows(lazy)))


def test_many_documents_under_a_small_budget_all_answer_and_the_budget_holds(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=2), quant="none", memory_budget_mb=0.5)
    docs = [LONG[i * 4000:(i + 1) * 4000] for i in range(8)]
    sessions = [engine.open_session(d, context_tokens=CONTEXT, encode=False) for d in docs]
    for rounds in range(2):
        for s, d in zip(sessions, docs):
            assert s.complete(len(d) // 2, max_new_tokens=4) is not None
            assert engine.memory.used <= engine.memory.limit
    assert sum(s.window.resident for s in sessions) < len(sessions), "some caches were dropped"


def test_a_window_larger_than_the_whole_budget_is_a_clear_error(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=2), quant="none", memory_budget_mb=0.05)
    with pytest.raises(MemoryBudgetError, match="memory_budget_mb"):
        engine.open_session(LONG[:20_000], context_tokens=CONTEXT)


def test_a_5_mb_file_costs_what_its_window_costs(engine):
    text = (LONG * 60)[:5 * 2**20]
    s = engine.open_session(text, context_tokens=CONTEXT)
    check(s)
    assert s.complete(len(text) // 2, max_new_tokens=4) is not None
    check(s)
    assert s.cache.capacity < 8 * CONTEXT, "the cache holds the window and a draft's scratch, not the file"


@pytest.mark.real_model
def test_a_slide_by_rotation_stays_close_to_a_fresh_encode_of_the_same_window():
    """Moving down past the window's end cuts its front (a PIE deletion: the rest is rotated and
    stale) and appends the new lines: approximate, and measured here against an exact encode."""
    from kvsplice.engine.packaged import prepare

    prepare("smollm2-135m")
    real = Engine.load("smollm2-135m", quant="none")
    s = real.open_session(LONG, context_tokens=512, fim=False, refresh_tokens=0, tail_tokens=0)
    cursor = LONG.index("\n", s.end + 400)
    old_start = s.start
    slid = s.next_token_logits(cursor).double().log_softmax(-1)
    assert old_start < s.start < cursor <= s.end and s.stale > 0
    fresh = real.open_session(s.window.text, fim=False).next_token_logits(cursor - s.start).double().log_softmax(-1)
    kl = float((fresh.exp() * (fresh - slid)).sum())
    assert 0 < kl < 0.1
