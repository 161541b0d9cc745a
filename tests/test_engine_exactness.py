"""The engine's forward equals transformers', and each strategy is exact exactly where theory says."""
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from kvsplice.engine import Engine
from tiny_models import last_logits
import textwrap
from pathlib import Path

TEXT = Path(textwrap.__file__).read_text()[:2500]


def fresh_kv(engine, text):
    return engine.open_session(text, strategy="recompute")


def random_edits(rng, session, count):
    for _ in range(count):
        n = len(session.text)
        a = rng.randrange(n)
        b = min(n, a + rng.choice([0, 0, 1, 5, 40]))
        new = rng.choice(["", "x", "    y = f(x)\n", "\n\n", "é😀", "def g():\n\treturn 1\n"])
        session.edit(a, b, new)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_forward_matches_transformers(tiny_model_dir, arch):
    folder = tiny_model_dir(arch, layers=2)
    engine = Engine("tiny", folder, quant="none")
    s = engine.open_session(TEXT)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    out = ref(torch.tensor([[s.head_id, *s.token_ids]]), use_cache=True)
    for layer in range(2):
        k, v = s.kv(layer)
        assert torch.allclose(k, out.past_key_values.layers[layer].keys[0][:, 1:], atol=1e-4)
        assert torch.allclose(v, out.past_key_values.layers[layer].values[0][:, 1:], atol=1e-4)
    assert (last_logits(s) - out.logits[0, -1]).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_pie_exact_for_single_layer_model(tiny_model_dir, arch):
    engine = Engine("tiny", tiny_model_dir(arch, layers=1), quant="none")
    s = engine.open_session(TEXT, strategy="pie")
    rng = random.Random(1)
    for _ in range(4):
        random_edits(rng, s, 3)
        ref = fresh_kv(engine, s.text)
        assert s.token_ids == ref.token_ids
        k, v = s.kv(0)
        rk, rv = ref.kv(0)
        scale = rk.abs().max()
        assert (k - rk).abs().max() <= 1e-4 * scale  # fp32 rope angles at positions ~1e3
        assert (v - rv).abs().max() <= 1e-5 * rv.abs().max()
        assert torch.allclose(last_logits(s), last_logits(ref), atol=1e-3)


def test_deep_model_pie_exact_prefix_and_layer0_recompute_everywhere_naive_not(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=3), quant="none")
    sessions = {name: engine.open_session(TEXT, strategy=name) for name in ("pie", "recompute", "naive")}
    for s in sessions.values():
        s.edit(120, 120, "import os\nimport sys\n")
    ref = fresh_kv(engine, sessions["pie"].text)
    i, _, m = sessions["pie"].last_report.span

    def diff(s, layer, sl=slice(None)):
        k, v = s.kv(layer)
        rk, rv = ref.kv(layer)
        return max((k[:, sl] - rk[:, sl]).abs().max().item(), (v[:, sl] - rv[:, sl]).abs().max().item())

    pie, recompute, naive = sessions["pie"], sessions["recompute"], sessions["naive"]
    assert diff(pie, 0) <= 1e-4
    for layer in range(3):
        assert diff(pie, layer, slice(0, i + m)) <= 1e-4
        assert diff(recompute, layer) <= 1e-4
    assert diff(pie, 2) > 1e-3, "deeper suffix layers are stale under PIE, as the paper says"
    assert diff(naive, 0) > 1e-2, "naive leaves suffix keys at their old rotation"
    assert pie.stale > 0 and recompute.stale == 0


@pytest.mark.parametrize("strategy", ["pie", "recompute", "naive", "chunk-reuse"])
def test_completion_before_all_edits_is_identical_under_every_strategy(tiny_model_dir, strategy):
    engine = Engine("tiny", tiny_model_dir("llama", layers=2), quant="none")
    cursor = 400
    # fim=False: with fill-in-the-middle the draft reads the (edited) suffix window on purpose.
    base = engine.open_session(TEXT, strategy="recompute", fim=False).complete(cursor, max_new_tokens=8, n=2)
    assert len(base) == 2
    s = engine.open_session(TEXT, strategy=strategy, fim=False)
    s.edit(1500, 1500, "\n    pass\n")
    s.edit(2000, 2040, "")
    assert s.complete(cursor, max_new_tokens=8, n=2) == base


def test_chunk_reuse_keeps_suffix_after_a_deletion_and_recomputes_after_an_insertion(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=1), quant="none")
    s = engine.open_session(TEXT, strategy="chunk-reuse")
    line_end = TEXT.index("\n", 200) + 1
    next_end = TEXT.index("\n", line_end) + 1
    deletion = s.edit(line_end, next_end, "")
    assert deletion.encoded < 10 and deletion.rotated > 100
    insertion = s.edit(line_end, line_end, "x = 1\n")
    assert insertion.encoded > 100
    ref = fresh_kv(engine, s.text)
    assert (s.kv(0)[0] - ref.kv(0)[0]).abs().max() <= 1e-4 * ref.kv(0)[0].abs().max()


def test_bad_edit_raises_and_leaves_session_unchanged(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=1), quant="none")
    s = engine.open_session("abc\n")
    before = (s.text, list(s.token_ids), s.kv(0)[0].clone())
    for start, end in [(-1, 2), (3, 2), (0, 99)]:
        with pytest.raises(ValueError, match=str(end)):
            s.edit(start, end, "x")
    with pytest.raises(ValueError):
        s.complete(99)
    assert (s.text, s.token_ids) == before[:2] and torch.equal(s.kv(0)[0], before[2])


def test_unknown_strategy_is_a_clear_error(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=1), quant="none")
    with pytest.raises(ValueError, match="pie, recompute, naive, chunk-reuse"):
        engine.open_session("x", strategy="fast")


def test_an_edit_that_changes_nothing_costs_nothing_and_marks_nothing_stale(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=1), quant="none")
    s = engine.open_session(TEXT)
    report = s.edit(10, 15, TEXT[10:15])
    assert (report.encoded, report.rotated, report.stale) == (0, 0, 0)


def test_fork_is_independent_and_can_change_the_strategy(tiny_model_dir):
    engine = Engine("tiny", tiny_model_dir("llama", layers=1), quant="none")
    base = engine.open_session(TEXT, strategy="recompute")
    kept = base.kv(0)[0].clone()
    pie = base.fork(strategy="pie", refresh_tokens=8)
    assert (pie.strategy, pie.window.refresh_tokens) == ("pie", 8)
    report = pie.edit(100, 100, "x = 1\n")
    assert report.rotated > 0 and base.text == TEXT and torch.equal(base.kv(0)[0], kept)
    with pytest.raises(ValueError, match="fim"):
        base.fork(fim=False)


def test_strategy_variants_name_refresh_and_tail_windows():
    from kvsplice.engine.strategies import parse_variant

    assert parse_variant("pie+r32+t16") == ("pie", {"refresh_tokens": 32, "tail_tokens": 16, "defer": False})
    assert parse_variant("pie") == ("pie", {"refresh_tokens": 0, "tail_tokens": 0, "defer": False})
    assert parse_variant("pie+t8+d") == ("pie", {"refresh_tokens": 0, "tail_tokens": 8, "defer": True})
    for bad in ("pie+x3", "pie+r", "fast+r8", "pie+d1"):
        with pytest.raises(ValueError):
            parse_variant(bad)
