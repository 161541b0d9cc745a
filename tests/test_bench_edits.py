"""Smoke version of `kvsplice bench edits` on a tiny random model: the full runs are commands."""
import dataclasses
import json

import pytest

from kvsplice.bench import edits as bench_edits
from kvsplice.bench.edit_cases import CaseMaker, default_corpus
from kvsplice.bench.humaneval_check import passes


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
    from kvsplice.bench.humaneval_check import edited, load_problems, program

    for p in load_problems(3, seed=0):
        before, apply, undo = edited(p)
        a, b, new = apply
        assert p.context[:a] + new + p.context[b:] == before
        a, b, new = undo
        assert before[:a] + new + before[b:] == p.context
        assert passes(program(p, p.hidden)) and not passes(program(p, ""))


def test_oracle_rows_reencode_the_most_deviant_tokens(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir(arch="llama", layers=2))
    out = tmp_path / "oracle.json"
    assert bench_edits.main(["--model", model, "--cases", "3", "--context", "160", "--max-new-tokens", "4",
                             "--strategies", "recompute,pie,pie+o4,pie+o100000", "--json", str(out),
                             "--no-progress"]) == 0
    rows = {(r["case"], r["strategy"]): r for r in json.loads(out.read_text())["per_case"]}
    for case in range(3):
        pie, some, every = (rows[case, s] for s in ("pie", "pie+o4", "pie+o100000"))
        assert some["encoded_tokens"] == pie["encoded_tokens"] + min(4, pie["stale"])
        assert every["stale"] == 0 and every["kl"] < 1e-9 and every["agree"] == 1
    assert max(rows[case, "pie"]["kl"] for case in range(3)) > 1e-6, "plain PIE was not exact"
    assert bench_edits.main(["--model", model, "--strategies", "pie,pie+o4", "--no-progress"]) == 2


def test_refresh_series_are_pie_rows_over_rows_refreshed():
    names = ["recompute", "pie", "pie+r8", "pie+r32", "pie+t16", "pie+r32+t16", "pie+o32+t16", "naive"]
    results = [dict(edit=e, strategy=s, kl=0.1, agree=0.5, patch_ms=1.0) for e in ("insert", "all") for s in names]
    lines = bench_edits.refresh_series(results)
    as_names = {label: [(x, r["strategy"]) for x, r in pts] for label, pts in lines.items()}
    assert as_names == {
        "first R suffix tokens, T=0": [(0, "pie"), (8, "pie+r8"), (32, "pie+r32")],
        "first R suffix tokens, T=16": [(0, "pie+t16"), (32, "pie+r32+t16")],
        "oracle: K most deviant, T=16": [(0, "pie+t16"), (32, "pie+o32+t16")],
    }
    assert bench_edits.refresh_series([r for r in results if "+" not in r["strategy"]]) == {}


def test_plot_draws_the_refresh_curves(tmp_path):
    results = [dict(edit="all", strategy=s, kl=kl, agree=a, patch_ms=ms, em=0.2, es=0.5, em_ci=(0.1, 0.3),
                    es_ci=(0.4, 0.6)) for s, kl, a, ms in (("pie", 0.1, 0.7, 100), ("pie+r32", 0.01, 0.8, 150))]
    out = tmp_path / "p.png"
    bench_edits.plot({"model": "m", "cases": 3, "results": results}, str(out))
    height = int.from_bytes(out.read_bytes()[20:24], "big")  # PNG IHDR
    assert height > 900, "EM and ES bars, then KL, agreement and cost curves: two rows of panels"


def test_deferred_rows_give_the_same_first_token_and_move_the_work_into_it(tiny_model_dir, tmp_path):
    out = tmp_path / "defer.json"
    assert bench_edits.main(["--model", str(tiny_model_dir(arch="llama", layers=2)), "--cases", "3",
                             "--context", "160", "--max-new-tokens", "4", "--strategies",
                             "recompute,pie+r8+t4,pie+r8+t4+d", "--json", str(out), "--no-progress"]) == 0
    rows = {(r["case"], r["strategy"]): r for r in json.loads(out.read_text())["per_case"]}
    for case in range(3):
        eager, deferred = rows[case, "pie+r8+t4"], rows[case, "pie+r8+t4+d"]
        assert eager["encoded_tokens"] > 0 and deferred["encoded_tokens"] == 0
        assert deferred["ready_ms"] >= deferred["patch_ms"]
        if eager["edit"] != "multi":  # one edit: the same rows against the same cache, only later
            assert deferred["kl"] == pytest.approx(eager["kl"], rel=1e-4, abs=1e-7)
            assert deferred["draft"] == eager["draft"]


def test_mid_file_cases_compare_reading_the_suffix_from_the_cache_encoded_or_not_at_all(tiny_model_dir, tmp_path):
    out = tmp_path / "mid.json"
    rows = "recompute@fim-encode,recompute@fim-cache,recompute@fim-cache1000,recompute@no-fim,pie@fim-cache"
    assert bench_edits.main(["--model", str(tiny_model_dir(arch="qwen2", layers=2)), "--cases", "3", "--context", "160",
                             "--mid-file", "64", "--max-new-tokens", "6", "--strategies", rows, "--json", str(out),
                             "--no-progress"]) == 0
    data = json.loads(out.read_text())
    res = {r["strategy"]: r for r in data["results"] if r["edit"] == "all"}
    assert res["recompute@fim-encode"]["kl"] == 0, "the exact suffix is the reference"
    assert res["recompute@fim-cache"]["kl"] > 0, "two layers: the copied suffix rows never saw <fim_suffix>"
    assert res["recompute@fim-cache1000"]["kl"] == 0, "every suffix token nearest the cursor encoded: exact"
    assert res["recompute@no-fim"]["kl"] > res["recompute@fim-cache"]["kl"]
    assert all(c["strategy"] and "first_ms" in c for c in data["per_case"])
    assert bench_edits.main(["--model", str(tiny_model_dir(arch="qwen2", layers=2)), "--strategies",
                             "recompute@fim-cache", "--no-progress"]) == 2, "@ rows need --mid-file"


def test_mid_line_cases_put_the_cursor_inside_the_line_before_its_closers(tiny_model_dir, tmp_path):
    from kvsplice.engine import Engine
    from kvsplice.server.documents import CLOSERS

    model = tiny_model_dir(arch="qwen2", layers=2)
    engine = Engine.load(str(model))
    maker = CaseMaker(default_corpus(), lambda t: len(engine.vocab.encode(t)), 160, seed=5)
    split = 0
    for i in range(12):
        line_start, mid = maker.case(i, "insert", 64), maker.case(i, "insert", 64, mid_line=True)
        assert mid.replay() == mid.document
        assert mid.context + mid.target + mid.suffix == line_start.context + line_start.target + "\n" + line_start.suffix
        assert mid.context.startswith(line_start.context) and mid.suffix.startswith(mid.rest)
        typed = mid.context[len(line_start.context):]
        assert typed + mid.truth == line_start.target and mid.target
        assert not mid.rest.strip(CLOSERS + " ")
        split += bool(typed.strip())
        assert mid == maker.case(i, "insert", 64, mid_line=True)
    assert split >= 10, "nearly every target line has code to split"

    case = dataclasses.replace(maker.case(0, "insert", 64, mid_line=True), target="x", rest=")]")
    assert case.truth == "x)]"
    assert case.accepted("x") == "x)]" and case.accepted("x)") == "x)]" and case.accepted("x)]") == "x)]"
    assert case.accepted("x]") == "x])]", "only a run of the closers in their own order is replaced"

    out = tmp_path / "mid-line.json"
    rows = "recompute@fim-encode,recompute@no-fim"
    assert bench_edits.main(["--model", str(model), "--cases", "4", "--seed", "5", "--context", "160", "--mid-file", "64",
                             "--mid-line", "--max-new-tokens", "6", "--strategies", rows, "--json", str(out),
                             "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["mid_line"] and {r["strategy"] for r in data["per_case"]} == set(rows.split(","))
    cases = {c["index"]: dataclasses.replace(case, target=c["target"], rest=c["rest"]) for c in data["case_list"]}
    assert any(c.rest for c in cases.values()), "some hole has closers after it"
    for r in data["per_case"]:  # scored on the line as it reads, closers after the cursor included
        c = cases[r["case"]]
        assert r["es"] == bench_edits.edit_similarity(c.accepted(r["draft"]), c.truth)
    assert bench_edits.main(["--model", str(model), "--mid-line", "--no-progress"]) == 2, "--mid-line needs --mid-file"


def test_compare_quant_scores_int8_against_fp32_on_the_same_cases(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "quant.json"
    assert bench_edits.main(["--model", str(tiny_model_dir(arch="llama", layers=2)), "--compare-quant", "--cases", "3",
                             "--context", "160", "--max-new-tokens", "6", "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())["quant"]
    assert data["cases"] == 3 and 0 < data["summary"]["kl"] < 1
    assert {"em_fp32", "em_int8", "agree", "first_token_agree"} <= data["summary"].keys()
    assert "int8 vs fp32" in capsys.readouterr().out
