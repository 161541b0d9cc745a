"""Speculative tokens from the document and drafts decoded as one batch: the same output as plain
greedy decoding, one draft at a time, in fewer forwards."""
import json
from pathlib import Path

import pytest

from kvsplice.engine import Engine
from kvsplice.engine.drafts import Start, line_stop
from kvsplice.engine.decode import decode
from kvsplice.engine.lookup import Lookup
from kvsplice.engine.packaged import prepare

SOURCE = (Path(json.__file__).parent / "decoder.py").read_text()


def test_lookup_proposes_what_followed_the_latest_occurrence_of_the_longest_ngram():
    lookup = Lookup([[9, 9, 1, 2, 3, 4, 5]], [7, 1, 2, 3, 6, 6, 1, 2, 3])
    assert lookup.propose(3) == [6, 6, 1], "the context's own 1 2 3 is the latest"
    lookup.push(6)  # 2 3 6 matches nothing longer; 3 6 occurred before
    assert lookup.propose(2) == [6, 1]
    assert lookup.propose(0) == []


def test_lookup_never_proposes_across_sources():
    lookup = Lookup([[1, 2], [3, 4]], [2])
    assert lookup.propose(4) == [], "2 ends the first source: nothing followed it there"
    assert Lookup([], [5, 5, 5]).propose(4) == [5]
    assert Lookup([], [1, 2, 3]).propose(4) == []


@pytest.fixture(scope="module", params=["none", "int8"])
def engine(request):
    prepare("smollm2-135m")
    return Engine.load("smollm2-135m", quant=request.param)


def never(text):
    return None


@pytest.mark.real_model
def test_speculative_drafts_equal_plain_greedy_on_real_code_in_fewer_forwards(engine):
    s = engine.open_session(SOURCE[:5000], context_tokens=4096)  # the whole text
    forwards = tokens = 0
    for cursor in (2000, 3100, 5000):
        plain = s.complete(cursor, max_new_tokens=24, stop=never, speculate=0)
        assert s.window.decode_stats.forwards == 24
        fast = s.complete(cursor, max_new_tokens=24, stop=never)
        assert fast == plain, cursor
        forwards += s.window.decode_stats.forwards
        tokens += s.window.decode_stats.tokens
    assert forwards < tokens, "code repeats itself: some proposals were accepted"


@pytest.mark.real_model
def test_drafts_decoded_together_equal_drafts_decoded_one_by_one(engine):
    s = engine.open_session(SOURCE[:4000], context_tokens=4096)  # cursors are the window's
    cursor = SOURCE.index("\n", 3000) + 1
    start = Start(s.window, cursor, room=40, drafts=3)
    firsts = start.logits.topk(3).indices.tolist()
    together, _ = decode(start, firsts, 16, line_stop, None, 8)
    alone = []
    for first in firsts:
        single = Start(s.window, cursor, room=40, drafts=1)
        alone.append(decode(single, [first], 16, line_stop, None, 0)[0][0])
    assert together == alone and len(set(together)) > 1
