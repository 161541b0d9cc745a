"""Checks on the packaged smollm2-135m and real source that nobody on the project wrote."""
import json
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from kvsplice.engine import Engine
from kvsplice.engine.packaged import prepare
from tiny_models import last_logits

SOURCE = Path(json.__file__).parent / "decoder.py"


@pytest.fixture(scope="module")
def engine():
    prepare("smollm2-135m")
    return Engine.load("smollm2-135m", quant="none")  # exactness against transformers


def kl(p_log, q_log):
    return torch.sum(p_log.exp() * (p_log - q_log)).item()


def test_forward_matches_transformers_on_a_real_file(engine):
    text = SOURCE.read_text()[:3000]
    s = engine.open_session(text, context_tokens=4096)  # the whole file: compared with a whole forward
    ref = AutoModelForCausalLM.from_pretrained(engine.folder, dtype=torch.float32)
    out = ref(torch.tensor([[s.head_id, *s.token_ids]]))
    assert (last_logits(s) - out.logits[0, -1]).abs().max() <= 1e-4


def test_pie_is_far_closer_to_recompute_than_naive_after_an_insertion_near_the_top(engine):
    text = SOURCE.read_text()[:4000]
    top = text.index("\n", 200) + 1
    inserted = "import sys\nimport os\n\n"
    logprobs = {}
    for strategy in ("pie", "naive", "recompute"):
        s = engine.open_session(text, strategy=strategy, context_tokens=4096)
        s.edit(top, top, inserted)
        logprobs[strategy] = torch.log_softmax(s.next_token_logits(), -1)
    kl_pie = kl(logprobs["recompute"], logprobs["pie"])
    kl_naive = kl(logprobs["recompute"], logprobs["naive"])
    assert kl_pie < 0.05
    assert kl_naive > 10 * kl_pie


def test_token_healing_completes_a_partly_typed_name_without_repeating_it(engine):
    text = "import os\n\n\ndef here():\n    return os.getc"
    drafts = engine.open_session(text).complete(len(text), max_new_tokens=6)
    assert drafts and drafts[0].startswith("wd")


def test_several_drafts_are_distinct_and_stop_at_the_end_of_the_line(engine):
    text = textwrap.dedent('''\
        def mean(values):
            """Arithmetic mean of a list of numbers."""
            total = ''')
    drafts = engine.open_session(text).complete(len(text), max_new_tokens=16, n=3)
    assert len(drafts) == 3 and len(set(drafts)) == 3
    assert all("\n" not in d for d in drafts)
