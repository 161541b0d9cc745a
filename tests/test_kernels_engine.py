"""The engine gives the same cache and the same drafts whichever backend runs the kernels."""
import textwrap
from pathlib import Path

import torch

from kvsplice.engine import Engine

# Real code, short: the Triton interpreter runs every attention of every forward in Python.
TEXT = Path(textwrap.__file__).read_text()[:600]
EDITS = [(120, 120, "    x = 1\n"), (40, 52, ""), (300, 305, "return None"), (10, 11, "é")]


def edited_session(engine, monkeypatch, backend):
    monkeypatch.setenv("KVSPLICE_KERNELS", backend)
    session = engine.open_session(TEXT, strategy="pie")
    for start, end, text in EDITS:
        session.edit(start, end, text)
    cursor = session.text.index("\n", 200)
    drafts = session.complete(cursor, max_new_tokens=6, stop=lambda _: None)
    return session, drafts, session.next_token_logits(cursor)


def test_triton_and_torch_backends_give_the_same_cache_and_drafts(tiny_model_dir, monkeypatch):
    engine = Engine.load(str(tiny_model_dir("llama", layers=2)), quant="none")
    ref, ref_drafts, ref_logits = edited_session(engine, monkeypatch, "torch")
    tri, tri_drafts, tri_logits = edited_session(engine, monkeypatch, "triton")
    assert tri.text == ref.text and tri.token_ids == ref.token_ids
    assert tri.cache.positions == ref.cache.positions and tri.cache.stale == ref.cache.stale
    for layer in range(2):
        for got, want in zip(tri.kv(layer), ref.kv(layer)):
            # fp32 attention summed in another order, then one more layer on top: ~1e-6 relative.
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    torch.testing.assert_close(tri_logits, ref_logits, rtol=1e-4, atol=1e-3)
    assert tri_drafts == ref_drafts
