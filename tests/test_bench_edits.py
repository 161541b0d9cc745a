"""Smoke version of `kvsplice bench edits` on a tiny random model: the full runs are commands."""
import json

import pytest

from kvsplice.engine import bench_edits
from kvsplice.engine.edit_cases import CaseMaker, default_corpus
from kvsplice.engine.humaneval_check import passes


@pytest.fixture(scope="module")
def replay_json(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "edits.json"
    code = bench_edits.main(["--model", str(tiny_model_dir(arch="llama", layers=2)), "--cases", "6",
                             "--context", "160", "--max-new-tokens", "8", "--json", str(out),
                             "--no-progress"])
    assert code == 0
    return json.loads(out.read_text())


def test_replay_json_has_the_documented_schema(replay_json):
    assert {"model", "context", "cases", "results"} <= replay_json.keys()
    assert replay_json["cases"] == 6 and replay_json["context"] == 160
    keys = {"edit", "strategy", "em", "es", "agree", "kl", "encoded_tokens", "patch_ms"}
    for row in replay_json["results"]:
        assert keys <= row.keys()
    seen = {(r["edit"], r["strategy"]) for r in replay_json["results"]}
    assert seen == {(e, s) for e in ("insert", "delete", "multi", "all")
                    for s in ("recompute", "pie", "naive", "chunk-reuse")}


def test_recompute_is_the_reference_and_pie_beats_naive(replay_json):
    res = {(r["edit"], r["strategy"]): r for r in replay_json["results"]}
    rec, pie, naive = res["all", "recompute"], res["all", "pie"], res["all", "naive"]
    assert rec["kl"] == 0 and rec["agree"] == 1 and rec["em_diff"] == 0
    # pie rotates what naive leaves at the old positions: its first-token distribution is closer
    assert naive["kl"] > pie["kl"]
    # pie encodes only the new tokens; recompute everything from the edit on
    assert pie["encoded_tokens"] < rec["encoded_tokens"]
    for case in replay_json["per_case"]:
        assert case["strategy"] != "recompute" or case["stale"] == 0


def test_cases_are_deterministic_and_replay_to_the_true_context(tiny_model_dir):
    from kvsplice.engine import Engine

    engine = Engine.load(str(tiny_model_dir(arch="llama", layers=2)))
    count = lambda t: len(engine.vocab.encode(t))  # noqa: E731
    a = CaseMaker(default_corpus(), count, 160, seed=3)
    b = CaseMaker(default_corpus(), count, 160, seed=3)
    for i, edit in enumerate(("insert", "delete", "multi")):
        ca, cb = a.case(i, edit), b.case(i, edit)
        assert ca == cb and ca.replay() == ca.context and ca.old_text != ca.context
        assert len(ca.edits) == (3 if edit == "multi" else 1)
        assert 0.9 * 160 <= count(ca.context) <= 160


def test_metrics():
    assert bench_edits.levenshtein("kitten", "sitting") == 3
    assert bench_edits.edit_similarity("  return x", "return x  ") == 1.0
    assert bench_edits.edit_similarity("abcd", "abce") == 0.75
    lo, hi = bench_edits.bootstrap_ci([0.0, 1.0] * 50)
    assert lo < 0.5 < hi


def test_sandboxed_runner_reports_failures_and_timeouts():
    assert passes("assert 1 + 1 == 2\n")
    assert not passes("assert False\n")
    assert not passes("while True: pass\n", timeout=1)


def test_humaneval_check_runs_every_strategy(tiny_model_dir, tmp_path):
    out = tmp_path / "he.json"
    assert bench_edits.main(["--model", str(tiny_model_dir(arch="llama", layers=2)), "--humaneval",
                             "--problems", "2", "--max-new-tokens", "4", "--json", str(out),
                             "--no-progress"]) == 0
    he = json.loads(out.read_text())["humaneval"]
    assert he["problems"] == 2 and len(he["per_problem"]) == 8
    assert {r["strategy"] for r in he["results"]} == {"recompute", "pie", "naive", "chunk-reuse"}
    assert all(0 <= r["pass_rate"] <= 1 for r in he["results"])


def test_humaneval_hidden_line_restores_a_passing_program():
    from kvsplice.engine.humaneval_check import edited, load_problems, program

    for p in load_problems(3, seed=0):
        before, apply, undo = edited(p)
        a, b, new = apply
        assert p.context[:a] + new + p.context[b:] == before
        a, b, new = undo
        assert before[:a] + new + before[b:] == p.context
        assert passes(program(p, p.hidden)) and not passes(program(p, ""))
