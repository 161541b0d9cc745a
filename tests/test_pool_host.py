"""The engine boundary without Ray: a Host answers only for the text its caller names, keeps
editors' stats apart and its documents bounded; stop rules and requests cross the wire intact
or are refused with a clear error."""
import json
import textwrap
from pathlib import Path

import pytest

from kvsplice.engine import Engine
from kvsplice.pool.deployment import PoolConfig, _checked
from kvsplice.pool.host import EngineUnavailable, Host, Reopen, UnknownDocument, digest
from kvsplice.server import cli
from kvsplice.server.documents import Document
from kvsplice.server.remote_engine import RemoteEngine, bind_stop, wire_stop
from kvsplice.server.settings import Settings

TEXT = Path(textwrap.__file__).read_text()[:3000]
OPTIONS = Settings(context_tokens=3072).session_options()
DRAFT = {"max_new_tokens": 8, "n": 1, "speculate": 8}


@pytest.fixture
def engine(tiny_model_dir):
    return Engine("tiny", tiny_model_dir("llama", layers=2), quant="none")


def test_a_host_drafts_only_from_the_text_its_caller_names(engine):
    host = Host(engine)
    host.open("a", TEXT, OPTIONS)
    with pytest.raises(UnknownDocument, match="another text"):
        host.complete("a", digest(TEXT + "x"), 100, "line", **DRAFT)
    with pytest.raises(UnknownDocument, match="not open"):
        host.complete("b", digest(TEXT), 100, "line", **DRAFT)
    with pytest.raises(UnknownDocument, match="out of step"):  # an edit whose result is not the caller's
        host.edit("a", 0, 0, "#", digest(TEXT))
    assert host.text("a") is None, "a session out of step is dropped, not kept"
    text = "import os\n" + TEXT
    drafts = host.complete("a", digest(text), 200, "line", reopen=Reopen(text, OPTIONS), **DRAFT)
    fresh = engine.open_session(text, **OPTIONS).complete(200, max_new_tokens=8, stop="line")
    assert drafts == fresh and host.text("a") == text


def test_stats_go_to_their_owner_with_the_caches_the_budget_dropped(engine):
    host = Host(engine)
    host.open("a1", TEXT, OPTIONS, owner="A")
    host.complete("a1", digest(TEXT), len(TEXT), "line", **DRAFT)
    stats = host.take_changes("A")["a1"]
    assert stats["cached"] and host.take_changes("A") == {}
    host.set_budget(stats["cache_bytes"] * 1.5 / 2**20)  # one window and a draft, not two
    other = TEXT.replace("def ", "def _")
    host.open("b1", other, OPTIONS, owner="B")
    host.complete("b1", digest(other), len(other), "line", **DRAFT)
    assert set(host.take_changes("B")) == {"b1"}, "B hears nothing of A's documents"
    assert host.take_changes("A")["a1"]["cached"] is False, "A hears that its cache was dropped"


def test_a_host_keeps_at_most_max_documents_and_drops_the_least_recently_used(engine):
    host = Host(engine, max_documents=2)
    for doc in ("a", "b"):
        host.open(doc, TEXT, OPTIONS)
    host.complete("a", digest(TEXT), 10, "line", **DRAFT)  # b is now the least recently used
    host.open("c", TEXT, OPTIONS)
    assert (host.text("a"), host.text("b"), host.text("c")) == (TEXT, None, TEXT) and len(host) == 2
    with pytest.raises(ValueError, match="max_documents"):
        Host(engine, max_documents=0)
    with pytest.raises(ValueError, match="cannot open x"):
        host.open("x", TEXT, {"stratgy": "pie"})


@pytest.mark.parametrize("language, marked, draft", [
    ("python", "def f(x):\n    |\n\ndef g(): pass\n", "return 1\n    x = 2\ndef h():"),
    ("javascript", "function f() {\n  |\n}\n", "if (x) {\n    y();\n  }\n  z();\n}\nq()"),
    ("javascript", "if (x) {\n  |", "y();\n}\nelse {"),
    ("rust", "fn main() {\n    |\n}", "let s = \"}\";\n}\nfn g() {}"),
    ("python", "x = foo(|)", "a, b)\nc"),
])
def test_stop_rules_cross_the_wire_and_cut_drafts_as_before(language, marked, draft):
    cursor = marked.index("|")
    doc = Document("file:///t", marked.replace("|", ""), 1, language)
    stop = doc.draft_stop(cursor, max_lines=4)
    bound = bind_stop(json.loads(json.dumps(wire_stop(stop))), doc.text)
    cuts = [stop(draft[:k]) if callable(stop) else None for k in range(1, len(draft) + 1)]
    assert cuts == [bound(draft[:k]) if callable(bound) else None for k in range(1, len(draft) + 1)]
    assert callable(stop) == callable(bound)


@pytest.mark.parametrize("spec", [{"indent": True, "max_lines": 4}, {"brace": "cobol", "at": 0, "at_point": [0, 0],
                                  "closed": False, "max_lines": 4}, "block", {"indent": 2}])
def test_a_stop_rule_that_is_not_one_is_refused(spec):
    with pytest.raises(ValueError, match="not a stop rule"):
        bind_stop(spec, "x\n")


@pytest.mark.parametrize("op, body, error", [
    ("open", {"doc": "d", "owner": "o", "edits": [], "text": 3, "options": {}}, "field 'text' must be str"),
    ("encode", {"doc": "d", "owner": "o", "edits": [], "budget": True}, "field 'budget' must be int"),
    ("complete", {"doc": "d", "owner": "o", "edits": []}, "missing fields"),
    ("edit", {"doc": "d", "owner": "o", "edits": [{"start": 0, "end": 0, "text": "x"}]}, "edit's edit: missing"),
    ("close", {"doc": "d", "owner": "o", "edits": [], "extra": 1}, "unknown fields \\['extra'\\]"),
    ("drop", {}, "unknown operation 'drop'"),
    ("text", [], "takes a JSON object"),
])
def test_a_replica_refuses_malformed_requests_with_clear_errors(op, body, error):
    with pytest.raises(ValueError, match=error):
        _checked(op, body)


def test_pool_settings_and_engine_urls_are_checked_before_anything_starts(capsys):
    with pytest.raises(ValueError, match="'replicas' must be a positive integer"):
        PoolConfig(replicas=0)
    with pytest.raises(ValueError, match="unknown pool settings gpus"):
        PoolConfig.from_dict({"gpus": 1})
    with pytest.raises(EngineUnavailable, match="must be http"):
        RemoteEngine("ray://head:10001")
    with pytest.raises(EngineUnavailable, match="cannot be reached"):
        RemoteEngine("http://127.0.0.1:9/kvsplice")  # the discard port: nothing listens
    assert cli.main(["pool", "serve", "--replicas", "0"]) == 1
    assert cli.main(["serve", "--engine", "localhost:8000"]) == 1
    err = capsys.readouterr().err
    assert "'replicas' must be a positive integer" in err and "--engine wants the http:// URL" in err
