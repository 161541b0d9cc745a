"""`kvsplice bench edits`: what PIE costs and what it loses, side by side with recompute, naive and
llama.cpp-style chunk reuse, on edits replayed into real code (DESIGN §1, §8; issue 6).

For each case the old document is encoded once (exactly); each strategy gets its own copy of that
cache, applies the same edits (so the new document is the true context), and writes the next line
greedily. Recompute's cache is then exact, which makes it the reference for agreement and KL.
Timings are taken in the same run on the same document, in a per-case shuffled strategy order, and
reported as medians and as ratios to recompute (absolute times on shared machines are noise).

Sections: the replay (default), `--curve` (patch ms against context size for one 3-line insertion
near the top of one document) and `--humaneval` (pass rate of programs whose hidden line each
strategy wrote). `--merge` reloads earlier JSON so one table / plot can show several runs.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from kvsplice.engine.strategies import parse_variant

from .edit_cases import EDIT_TYPES, CaseMaker, corpus_files, default_corpus

REFERENCE = "recompute"
ORDER = ("recompute", "pie", "naive", "chunk-reuse")
CURVE_CONTEXTS = (256, 512, 1024, 2048, 4096)
CURVE_CONTEXTS_GPU = CURVE_CONTEXTS + (8192,)
BOOTSTRAP = 2000


# -- metrics ------------------------------------------------------------------------------------

def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(pred: str, truth: str) -> float:
    """1 − Levenshtein / max length, on stripped lines (as EM); two empty lines are identical."""
    pred, truth = pred.strip(), truth.strip()
    longest = max(len(pred), len(truth))
    return 1.0 if longest == 0 else 1.0 - levenshtein(pred, truth) / longest


def exact_match(pred: str, truth: str) -> float:
    return float(pred.strip() == truth.strip())


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(p_ref ‖ p) of the next-token distributions, in nats."""
    ref = torch.log_softmax(ref_logits.double(), -1)
    other = torch.log_softmax(logits.double(), -1)
    return max(0.0, float((ref.exp() * (ref - other)).sum()))


def bootstrap_ci(values: list[float], seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (pass differences for a paired CI)."""
    if not values:
        return (math.nan, math.nan)
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(values, dtype=torch.float64)
    idx = torch.randint(len(values), (BOOTSTRAP, len(values)), generator=g)
    means = x[idx].mean(1).sort().values
    lo = means[int((1 - level) / 2 * BOOTSTRAP)]
    hi = means[min(BOOTSTRAP - 1, int((1 + level) / 2 * BOOTSTRAP))]
    return (float(lo), float(hi))


# -- sessions -----------------------------------------------------------------------------------

def fork(base, variant: str, **session_options):
    """A copy of the exactly encoded old document that applies edits as `variant` says
    (a strategy, optionally with a refresh and tail window: pie+r32+t16)."""
    strategy, options = parse_variant(variant)
    return base.fork(strategy=strategy, **options, **session_options)


def split_oracle(variant: str) -> tuple[str, int]:
    """'pie+o128+t16' -> ('pie+t16', 128). An oracle row re-encodes, after the edits, the K stale
    tokens whose K/V differ most from recompute's. Which rows those are is known only with the
    exact cache in hand, so the row bounds what any choice of K refresh rows could achieve."""
    parts = variant.split("+")
    oracle = [p for p in parts if p[:1] == "o"]
    if len(oracle) > 1 or (oracle and not oracle[0][1:].isdigit()):
        raise ValueError(f"bad oracle variant {variant!r}: expected e.g. pie+o128+t16")
    return "+".join(p for p in parts if p[:1] != "o"), int(oracle[0][1:]) if oracle else 0


def most_deviant(s, exact, k: int) -> list[int]:
    """The k stale slots of `s` whose K and V differ most from `exact`'s (same tokens), summed
    over layers, each layer's squared error relative to its mean squared norm there."""
    n = s.cache.length
    deviation = torch.zeros(n, dtype=torch.float64)
    for mine, ref in ((s.cache.k, exact.cache.k), (s.cache.v, exact.cache.v)):
        mine, ref = mine[:, :, :n].double(), ref[:, :, :n].double()
        per_layer = (mine - ref).pow(2).sum((1, 3)) / ref.pow(2).sum((1, 3)).mean(1, keepdim=True)
        deviation += per_layer.sum(0)
    stale = [slot for slot, mark in enumerate(s.cache.stale) if mark]
    return sorted(stale, key=lambda slot: -float(deviation[slot]))[:k]


def progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _plain_progress(iterable, total, desc):
    t0 = time.perf_counter()
    for i, item in enumerate(iterable):
        yield item
        print(f"\r{desc}: {i + 1}/{total} ({time.perf_counter() - t0:.0f}s)", end="", file=sys.stderr)
    print(file=sys.stderr)


# -- replay -------------------------------------------------------------------------------------

FIM_MODES = {"fim-cache": dict(fim_suffix="cache"), "fim-encode": dict(fim_suffix="encode"), "no-fim": {}}
FIM_MODE = re.compile("|".join([r"fim-cache(\d+)", *FIM_MODES]))


def split_fim(row: str) -> tuple[str, str | None]:
    """'pie+r32@fim-cache' -> ('pie+r32', 'fim-cache'): mid-file rows name how the draft reads
    the suffix: its K/V from the cache (fim-cacheK: the K tokens nearest the cursor encoded),
    encoded per request (exact), or not at all."""
    variant, _, mode = row.partition("@")
    if mode and not FIM_MODE.fullmatch(mode):
        raise ValueError(f"bad row {row!r}: after @ comes one of {', '.join(FIM_MODES)} or fim-cacheK")
    return variant, mode or None


def fim_options(mode: str | None) -> dict:
    """Session options of a mid-file row's mode (split_fim)."""
    match = FIM_MODE.fullmatch(mode or "")
    if match and match.group(1):
        return dict(fim_suffix="cache", suffix_exact=int(match.group(1)))
    return FIM_MODES.get(mode, {})


def reference_of(rows: list[str]) -> str:
    """The exact row the others are compared with: recompute, reading the suffix exactly."""
    return next((r for r in rows if r in (REFERENCE, f"{REFERENCE}@fim-encode")), REFERENCE)


def run_case(engine, case, strategies, args, rng: random.Random) -> list[dict]:
    bases = {}  # fill-in-the-middle or not: each needs its own encode (the head token differs)
    for row in strategies:
        fim = split_fim(row)[1] not in (None, "no-fim") or (split_fim(row)[1] is None and args.fim)
        if fim not in bases:
            bases[fim] = engine.open_session(case.old_text, strategy=REFERENCE, fim=fim, min_chunk=args.min_chunk,
                                             context_tokens=args.context + args.mid_file + 512)
    reference = reference_of(strategies)
    order = list(strategies)
    rng.shuffle(order)
    order.sort(key=lambda v: split_oracle(v)[1] > 0)  # oracle rows need recompute's cache: last
    rows, logits, exact = {}, {}, None
    cursor = len(case.context)
    for strategy in order:
        variant, mode = split_fim(strategy)
        variant, oracle = split_oracle(variant)
        fim = mode not in (None, "no-fim") or (mode is None and args.fim)
        s = fork(bases[fim], variant, **fim_options(mode))
        reports = [s.edit(*e) for e in case.edits]
        if s.text != case.document:
            raise AssertionError(f"case {case.index}: replayed text differs from the true document")
        patch_ms, encoded = sum(r.ms for r in reports), sum(r.encoded for r in reports)
        if strategy == reference:
            exact = s
        if oracle:
            picked = most_deviant(s, exact, oracle)
            t0 = time.perf_counter()
            s.reencode(picked)
            patch_ms, encoded = patch_ms + (time.perf_counter() - t0) * 1e3, encoded + len(picked)
        t0 = time.perf_counter()
        logits[strategy] = s.next_token_logits(cursor)  # encodes deferred rows and the stale tail
        first_ms = (time.perf_counter() - t0) * 1e3
        drafts = s.complete(cursor, max_new_tokens=args.max_new_tokens, stop="line")
        rows[strategy] = dict(
            case=case.index, edit=case.edit, strategy=strategy, draft=drafts[0] if drafts else "",
            encoded_tokens=encoded, rotated=sum(r.rotated for r in reports), stale=s.stale,
            patch_ms=patch_ms, first_ms=first_ms, ready_ms=patch_ms + first_ms, tokens=len(s.token_ids))
    for base in bases.values():
        base.close()
    out = []
    for strategy in strategies:
        row = rows[strategy]
        line = case.accepted(row["draft"])
        row["em"], row["es"] = exact_match(line, case.truth), edit_similarity(line, case.truth)
        if reference in rows:
            ref = logits[reference]
            row["agree"] = exact_match(row["draft"], rows[reference]["draft"])
            row["first_token_agree"] = float(int(logits[strategy].argmax()) == int(ref.argmax()))
            row["kl"] = kl_divergence(ref, logits[strategy])
        out.append(row)
    return out


def summarize(rows: list[dict], strategies, edits, seed: int) -> list[dict]:
    results = []
    for edit in [*edits, "all"] if len(edits) > 1 else edits:
        mine = [r for r in rows if edit in ("all", r["edit"])]
        by = {s: sorted((r for r in mine if r["strategy"] == s), key=lambda r: r["case"]) for s in strategies}
        ref = by.get(reference_of(list(strategies)))
        ref_ms = statistics.median(r["patch_ms"] for r in ref) if ref else math.nan
        for s in strategies:
            rs = by[s]
            if not rs:
                continue
            em, es = [r["em"] for r in rs], [r["es"] for r in rs]
            res = dict(edit=edit, strategy=s, n=len(rs), em=_mean(em), em_ci=bootstrap_ci(em, seed),
                       es=_mean(es), es_ci=bootstrap_ci(es, seed),
                       encoded_tokens=_mean([r["encoded_tokens"] for r in rs]),
                       rotated_tokens=_mean([r["rotated"] for r in rs]),
                       patch_ms=statistics.median(r["patch_ms"] for r in rs),
                       first_ms=_median_if_all([r.get("first_ms") for r in rs]),
                       ready_ms=_median_if_all([r.get("ready_ms") for r in rs]))
            res["patch_ratio"] = res["patch_ms"] / ref_ms if ref_ms else math.nan
            if ref:
                for key in ("agree", "first_token_agree", "kl"):
                    res[key] = _mean([r[key] for r in rs])
                    res[key + "_ci"] = bootstrap_ci([r[key] for r in rs], seed)
                dem = [a["em"] - b["em"] for a, b in zip(rs, ref)]
                des = [a["es"] - b["es"] for a, b in zip(rs, ref)]
                res.update(em_diff=_mean(dem), em_diff_ci=bootstrap_ci(dem, seed),
                           es_diff=_mean(des), es_diff_ci=bootstrap_ci(des, seed))
            results.append(res)
    return results


def _median_if_all(xs: list) -> float:
    """Median, or NaN where some rows lack the value (pooled with runs that did not time it)."""
    return statistics.median(xs) if xs and None not in xs else math.nan


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def replay(engine, args, strategies, edits) -> dict:
    corpus = Path(args.corpus) if args.corpus else default_corpus()
    maker = CaseMaker(corpus, lambda t: len(engine.vocab.encode(t)), args.context, args.seed)
    rows, cases = [], []
    rng = random.Random(f"order:{args.seed}")
    t0 = time.perf_counter()
    indices = range(args.start, args.start + args.cases)
    for i in progress(indices, args.cases, "cases", args.progress):
        if args.time_limit and time.perf_counter() - t0 > args.time_limit:
            print(f"time limit reached after {i} cases", file=sys.stderr)
            break
        case = maker.case(i, edits[i % len(edits)], args.mid_file, args.mid_line)
        cases.append(dict(index=i, edit=case.edit, source=case.source, line=case.line_no,
                          target=case.target, rest=case.rest, context_tokens=len(engine.vocab.encode(case.context)),
                          edits=len(case.edits)))
        rows.extend(run_case(engine, case, strategies, args, rng))
    return dict(cases=len(cases), case_list=cases, per_case=rows,
                results=summarize(rows, strategies, edits, args.seed))


# -- int8 against fp32 ---------------------------------------------------------------------------

def quant_check(args, edits) -> dict:
    """The int8 forward's quality cost on the replay's cases: each case's true document encoded
    exactly (recompute) by an int8 and an fp32 engine of the same model, the next line drafted by
    both; first-token KL(fp32 ‖ int8), first-token and whole-line agreement, EM of each."""
    from kvsplice.engine import Engine

    engines = {q: Engine.load(args.model, device=args.device, dtype=args.dtype, quant=q) for q in ("none", "int8")}
    corpus = Path(args.corpus) if args.corpus else default_corpus()
    maker = CaseMaker(corpus, lambda t: len(engines["none"].vocab.encode(t)), args.context, args.seed)
    rows = []
    for i in progress(range(args.start, args.start + args.cases), args.cases, "quant", args.progress):
        case = maker.case(i, edits[i % len(edits)], args.mid_file, args.mid_line)
        out = {}
        for quant, engine in engines.items():
            s = engine.open_session(case.old_text, strategy=REFERENCE, fim=None if args.mid_file else args.fim,
                                    context_tokens=args.context + args.mid_file + 512)
            for e in case.edits:
                s.edit(*e)
            cursor = len(case.context)
            drafts = s.complete(cursor, max_new_tokens=args.max_new_tokens, stop="line")
            out[quant] = (s.next_token_logits(cursor), drafts[0] if drafts else "")
            s.close()
        (ref, ref_draft), (q8, draft) = out["none"], out["int8"]
        rows.append(dict(case=i, edit=case.edit, kl=kl_divergence(ref, q8),
                         first_token_agree=float(int(ref.argmax()) == int(q8.argmax())),
                         agree=exact_match(draft, ref_draft), em_fp32=exact_match(case.accepted(ref_draft), case.truth),
                         em_int8=exact_match(case.accepted(draft), case.truth)))
    summary = {key: _mean([r[key] for r in rows]) for key in ("kl", "first_token_agree", "agree", "em_fp32", "em_int8")}
    summary["kl_ci"] = bootstrap_ci([r["kl"] for r in rows], args.seed)
    summary["em_diff_ci"] = bootstrap_ci([r["em_int8"] - r["em_fp32"] for r in rows], args.seed)
    return dict(cases=len(rows), summary=summary, per_case=rows)


def format_quant(data: dict) -> str:
    s = data["summary"]
    lo, hi = s["kl_ci"]
    return (f"int8 vs fp32 linears, {data['cases']} cases: first-token KL(fp32 ‖ int8) {s['kl']:.2e} "
            f"[95% CI {lo:.2e}, {hi:.2e}], first token agrees {100 * s['first_token_agree']:.1f}%, whole line "
            f"agrees {100 * s['agree']:.1f}%, EM fp32 {100 * s['em_fp32']:.1f}% / int8 {100 * s['em_int8']:.1f}% "
            f"(ΔEM CI {_ci(s['em_diff_ci'])})")


# -- cost curve ---------------------------------------------------------------------------------

def curve(engine, args, strategies) -> dict:
    """Patch ms of one 3-line insertion near the top, on prefixes of one long real file."""
    contexts = args.curve_contexts or (CURVE_CONTEXTS_GPU if engine.device.type == "cuda" else CURVE_CONTEXTS)
    corpus = Path(args.corpus) if args.corpus else default_corpus()
    at, k = 8, 3  # remove lines 9..11, then insert them back: an edit near the top
    rng = random.Random(f"curve:{args.seed}")
    files = corpus_files(corpus)
    rng.shuffle(files)
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) < 3 * max(contexts):
            continue
        lines = text.splitlines(keepends=True)
        keeps = [_lines_within(engine, lines, n) for n in contexts]
        if keeps[0] >= at + k + 4 and _lines_within(engine, lines, max(contexts) + 64) > keeps[-1]:
            break
    else:
        raise SystemExit(f"no file in {corpus} has {max(contexts)} tokens")
    points = []
    for n_ctx, keep in progress(list(zip(contexts, keeps)), len(contexts), "curve", args.progress):
        doc = "".join(lines[:keep])
        old = "".join(lines[:at] + lines[at + k:keep])
        start = sum(len(x) for x in lines[:at])
        base = engine.open_session(old, strategy=REFERENCE, fim=args.fim, min_chunk=args.min_chunk,
                                   context_tokens=max(contexts) + 512)
        for strategy in strategies:
            times, enc = [], 0
            for _ in range(args.repeats):
                s = fork(base, strategy)
                r = s.edit(start, start, "".join(lines[at:at + k]))
                assert s.text == doc
                times.append(r.ms)
                enc = r.encoded
            points.append(dict(context=n_ctx, tokens=len(engine.vocab.encode(doc)), strategy=strategy,
                               patch_ms=statistics.median(times), encoded_tokens=enc))
        base.close()
    ratios = {}
    for n_ctx in contexts:
        ms = {p["strategy"]: p["patch_ms"] for p in points if p["context"] == n_ctx}
        if REFERENCE in ms:
            ratios[str(n_ctx)] = {s: ms[s] / ms[REFERENCE] for s in ms}
    return dict(source=str(path.relative_to(corpus)), insert_at_line=at + 1, lines_inserted=k,
                points=points, ratio_to_recompute=ratios)


def _lines_within(engine, lines: list[str], budget: int) -> int:
    """How many leading lines fit in `budget` tokens."""
    keep, total = 0, 0
    while keep < len(lines):
        total += len(engine.vocab.encode(lines[keep]))
        if total > budget:
            break
        keep += 1
    while keep and len(engine.vocab.encode("".join(lines[:keep]))) > budget:
        keep -= 1
    return keep


# -- HumanEval ----------------------------------------------------------------------------------

def humaneval(engine, args, strategies) -> dict:
    from .humaneval_check import edited, load_problems, passes, program

    problems = load_problems(args.problems, args.seed)
    rows = []
    rng = random.Random(f"he-order:{args.seed}")
    for p in progress(problems, len(problems), "humaneval", args.progress):
        before, apply, undo = edited(p)
        if args.humaneval_mode == "roundtrip":
            base = engine.open_session(p.context, strategy=REFERENCE, fim=args.fim, min_chunk=args.min_chunk,
                                       context_tokens=4096)
        else:
            base = engine.open_session(before, strategy=REFERENCE, fim=args.fim, min_chunk=args.min_chunk,
                                       context_tokens=4096)
        order = list(strategies)
        rng.shuffle(order)
        for strategy in order:
            s = fork(base, strategy)
            if args.humaneval_mode == "roundtrip":
                s.edit(*apply)
            s.edit(*undo)
            assert s.text == p.context, p.task_id
            drafts = s.complete(len(s.text), max_new_tokens=args.max_new_tokens, stop="line")
            draft = drafts[0] if drafts else ""
            rows.append(dict(task_id=p.task_id, strategy=strategy, edit=p.edit_kind, draft=draft,
                             hidden=p.hidden, em=exact_match(draft, p.hidden),
                             passed=float(passes(program(p, draft)))))
        base.close()
    summary = []
    ref = sorted((r for r in rows if r["strategy"] == REFERENCE), key=lambda r: r["task_id"])
    for s in strategies:
        rs = sorted((r for r in rows if r["strategy"] == s), key=lambda r: r["task_id"])
        ok = [r["passed"] for r in rs]
        res = dict(strategy=s, n=len(rs), pass_rate=_mean(ok), pass_ci=bootstrap_ci(ok, args.seed),
                   em=_mean([r["em"] for r in rs]))
        if ref:
            diff = [a["passed"] - b["passed"] for a, b in zip(rs, ref)]
            res.update(pass_diff=_mean(diff), pass_diff_ci=bootstrap_ci(diff, args.seed),
                       agree=_mean([exact_match(a["draft"], b["draft"]) for a, b in zip(rs, ref)]))
        summary.append(res)
    return dict(mode=args.humaneval_mode, problems=len(problems), results=summary, per_problem=rows)


def merge(data: dict, more: dict) -> None:
    """Fold `more` into `data`; replay cases of both (same model and seed) are pooled and the
    summary recomputed, so a long run can be done in pieces (`--start`)."""
    rows = {(r["case"], r["strategy"]): r for r in data.get("per_case", []) + more.get("per_case", [])}
    cases = {c["index"]: c for c in data.get("case_list", []) + more.get("case_list", [])}
    data.update(more)
    if rows:
        pooled = sorted(rows.values(), key=lambda r: r["case"])
        strategies = list(dict.fromkeys(r["strategy"] for r in pooled))
        strategies = [s for s in ORDER if s in strategies] + [s for s in strategies if s not in ORDER]
        edits = [e for e in EDIT_TYPES if any(r["edit"] == e for r in pooled)]
        data.update(per_case=pooled, case_list=sorted(cases.values(), key=lambda c: c["index"]),
                    cases=len(cases), results=summarize(pooled, strategies, edits, data.get("seed", 0)))


# -- output -------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return "  -  " if x != x else f"{100 * x:5.1f}"


def _ci(ci) -> str:
    lo, hi = ci
    return "" if lo != lo else f"[{100 * lo:5.1f},{100 * hi:5.1f}]"


def format_replay(data: dict) -> str:
    width = max([11] + [len(r["strategy"]) for r in data["results"]])
    head = (f"{'edit':7} {'strategy':{width}} {'n':>4} {'EM':>5} {'95% CI':>13} {'ES':>5} {'95% CI':>13} "
            f"{'ΔEM':>5} {'95% CI':>13} {'agree':>5} {'tok1':>5} {'KL':>8} {'encoded':>7} "
            f"{'patch ms':>9} {'ratio':>6} {'first ms':>9} {'ready ms':>9}")
    out = [head, "-" * len(head)]
    for r in data["results"]:
        out.append(f"{r['edit']:7} {r['strategy']:{width}} {r['n']:4d} {_pct(r['em'])} {_ci(r['em_ci']):>13} "
                   f"{_pct(r['es'])} {_ci(r['es_ci']):>13} {_pct(r.get('em_diff', math.nan))} "
                   f"{_ci(r.get('em_diff_ci', (math.nan, math.nan))):>13} {_pct(r.get('agree', math.nan))} "
                   f"{_pct(r.get('first_token_agree', math.nan))} {r.get('kl', math.nan):8.2e} "
                   f"{r['encoded_tokens']:7.1f} {r['patch_ms']:9.1f} {r['patch_ratio']:6.3f} "
                   f"{r.get('first_ms', math.nan):9.1f} {r.get('ready_ms', math.nan):9.1f}")
    out.append("first ms: median time of the first draft token's forward after the edits (deferred rows, tail "
               "refresh, the FIM suffix window); ready ms: the patch and that forward, edit to first token")
    return "\n".join(out)


def format_curve(data: dict) -> str:
    strategies = list(dict.fromkeys(p["strategy"] for p in data["points"]))
    contexts = sorted({p["context"] for p in data["points"]})
    ms = {(p["context"], p["strategy"]): p["patch_ms"] for p in data["points"]}
    head = f"{'context':>8} " + " ".join(f"{s + ' ms':>15}" for s in strategies)
    if REFERENCE in strategies:
        head += "  " + " ".join(f"{s + '/rec':>15}" for s in strategies if s != REFERENCE)
    out = [f"patch ms, {data['lines_inserted']}-line insertion at line {data['insert_at_line']} of "
           f"{data['source']}", head, "-" * len(head)]
    for c in contexts:
        line = f"{c:8d} " + " ".join(f"{ms.get((c, s), math.nan):15.1f}" for s in strategies)
        if REFERENCE in strategies:
            line += "  " + " ".join(f"{ms.get((c, s), math.nan) / ms[(c, REFERENCE)]:15.4f}"
                                    for s in strategies if s != REFERENCE)
        out.append(line)
    return "\n".join(out)


def format_humaneval(data: dict) -> str:
    out = [f"HumanEval functional check ({data['problems']} problems, mode {data['mode']})",
           f"{'strategy':11} {'n':>4} {'pass %':>6} {'95% CI':>13} {'Δpass':>6} {'95% CI':>13} {'EM':>5} {'agree':>5}"]
    for r in data["results"]:
        out.append(f"{r['strategy']:11} {r['n']:4d} {_pct(r['pass_rate']):>6} {_ci(r['pass_ci']):>13} "
                   f"{_pct(r.get('pass_diff', math.nan)):>6} {_ci(r.get('pass_diff_ci', (math.nan, math.nan))):>13} "
                   f"{_pct(r['em'])} {_pct(r.get('agree', math.nan))}")
    return "\n".join(out)


def plot(data: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit("--plot needs matplotlib (pip install 'kvsplice[bench]')") from e
    series = refresh_series(data.get("results", []))
    panels = (["curve"] if data.get("curve") else []) + (["em", "es"] if data.get("results") else []) \
        + (["kl", "agree", "cost"] if series else [])
    if not panels:
        raise SystemExit("nothing to plot: run the replay and/or --curve")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colors = {"recompute": "#444444", "pie": "#1f77b4", "naive": "#d62728", "chunk-reuse": "#ff7f0e"}
    for ax, panel in zip(axes.flat, panels):
        if panel == "curve":
            pts = data["curve"]["points"]
            for s in dict.fromkeys(p["strategy"] for p in pts):
                xs = [p["context"] for p in pts if p["strategy"] == s]
                ys = [max(p["patch_ms"], 1e-3) for p in pts if p["strategy"] == s]
                ax.plot(xs, ys, marker="o", label=s, color=colors.get(s))
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({p["context"] for p in pts}), [str(c) for c in sorted({p["context"] for p in pts})])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("context tokens")
            ax.set_ylabel("patch ms (log)")
            ax.set_title(f"patch cost, 3-line insertion near the top ({data.get('model', '')})", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        elif panel in ("kl", "agree", "cost"):
            _plot_refresh(ax, panel, series, data)
        else:
            res = [r for r in data["results"] if r["edit"] != "all"] or data["results"]
            edits = list(dict.fromkeys(r["edit"] for r in res))
            strategies = list(dict.fromkeys(r["strategy"] for r in res))
            width = 0.8 / len(strategies)
            for k, s in enumerate(strategies):
                xs, ys, lo, hi = [], [], [], []
                for e, edit in enumerate(edits):
                    r = next((r for r in res if r["edit"] == edit and r["strategy"] == s), None)
                    if r is None:
                        continue
                    v, (a, b) = 100 * r[panel], r[panel + "_ci"]
                    xs.append(e + (k - (len(strategies) - 1) / 2) * width)
                    ys.append(v)
                    lo.append(v - 100 * a)
                    hi.append(100 * b - v)
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=s, color=colors.get(s))
            ax.set_xticks(range(len(edits)), edits)
            ax.set_ylabel(f"{panel.upper()} % (95% bootstrap CI)")
            n = data.get("cases", "?")
            ax.set_title(f"{panel.upper()} of the next line, {data.get('model', '')}, {n} cases")
            ax.set_ylim(0, 100 if panel == "es" else None)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def refresh_series(results: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """PIE rows of all edits pooled, as lines over the number of refreshed rows: the first R
    suffix tokens (pie+rR+tT) per tail T, and oracle rows (pie+oK+tT). Empty unless some line
    has two points, i.e. the run compared refresh sizes."""
    pooled = [r for r in results if r["edit"] == "all"] or results
    lines: dict[str, list[tuple[int, dict]]] = {}
    for r in pooled:
        variant, oracle = split_oracle(r["strategy"])
        strategy, options = parse_variant(variant)
        if strategy != "pie":
            continue
        t, window = options["tail_tokens"], options["refresh_tokens"]
        fused = ", deferred" if options["defer"] else ""
        if not oracle:
            lines.setdefault(f"first R suffix tokens, T={t}{fused}", []).append((window, r))
        if oracle or not window:  # R = 0 is also where the oracle line of the same T starts
            lines.setdefault(f"oracle: K most deviant, T={t}{fused}", []).append((oracle, r))
    lines = {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len(v) > 1}
    return lines


def _plot_refresh(ax, panel: str, series: dict, data: dict) -> None:
    """Quality (first-token KL, whole-line agreement) and patch cost against rows refreshed;
    plain PIE (no refresh at all) as a reference line, and cost as a multiple of it."""
    pooled = [r for r in data["results"] if r["edit"] == "all"] or data["results"]
    plain = next((r for r in pooled if r["strategy"] == "pie"), None)
    # deferred rows are encoded in the first draft step, so compare edit -> first token where known
    cost = "ready_ms" if all(not math.isnan(r.get("ready_ms", math.nan)) for r in pooled) else "patch_ms"
    for label, points in series.items():
        if panel == "cost" and cost == "patch_ms" and "deferred" in label:
            continue  # a deferred edit's work is in its first draft step, not in its patch
        xs = [x for x, _ in points]
        if panel == "kl":
            ys = [max(r["kl"], 1e-9) for _, r in points]
        elif panel == "agree":
            ys = [100 * r["agree"] for _, r in points]
        else:
            ys = [r[cost] / plain[cost] if plain else r[cost] for _, r in points]
        ax.plot(xs, ys, marker="o", label=label, linestyle="--" if label.startswith("oracle") else "-")
    target = {"kl": 5e-4, "agree": 95, "cost": 2 if plain else None}[panel]  # the refresh targets
    if target:
        ax.axhline(target, color="grey", linestyle=":", label="target")
    if plain and panel != "cost":
        value = max(plain["kl"], 1e-9) if panel == "kl" else 100 * plain["agree"]
        ax.axhline(value, color="black", linestyle="-.", linewidth=1, label="plain PIE")
    ax.set_xscale("symlog", base=2, linthresh=8)
    ticks = sorted({x for line in series.values() for x, _ in line})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("rows refreshed with each patch (R, or K for the oracle)")
    if panel == "kl":
        ax.set_yscale("log")
        ax.set_ylabel("mean first-token KL to recompute (nats, log)")
    elif panel == "agree":
        ax.set_ylabel("whole-line agreement with recompute %")
    else:
        what = "edit -> first token" if cost == "ready_ms" else "patch"
        ax.set_ylabel(f"median {what} ms" + (" / plain PIE" if plain else ""))
    what = {"kl": "first-token KL", "agree": "whole-line agreement", "cost": "cost"}[panel]
    ax.set_title(f"{what} vs rows refreshed, {data.get('model', '')}, {data.get('cases', '?')} cases", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


# -- CLI ----------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvsplice bench edits", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="packaged name, model folder, GGUF file or HF id")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--cases", type=int, default=200, help="replay cases, spread round-robin over --edits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first case index (to extend an earlier run; --merge both)")
    p.add_argument("--corpus", help="folder of real source (default: this interpreter's stdlib)")
    p.add_argument("--context", type=int, default=1024, help="context tokens before the target line")
    p.add_argument("--edits", default=",".join(EDIT_TYPES), help="comma list of insert,delete,multi")
    p.add_argument("--strategies", default=",".join(ORDER),
                   help="comma list; include recompute for KL/agreement; a variant pie+rR+tT adds a "
                        "refresh window of R suffix tokens and a tail refresh of T tokens; +d defers "
                        "the edit's rows into the first draft step's forward; +oK "
                        "(oracle) re-encodes the K stale tokens farthest from recompute's K/V")
    p.add_argument("--fim", choices=("off", "on"), default="off",
                   help="fill-in-the-middle drafts for FIM models (off: plain next-line from the left "
                        "context, the PIE paper's setup; the suffix is empty here anyway)")
    p.add_argument("--mid-file", type=int, default=0, metavar="TOKENS",
                   help="mid-file cases: the document goes on after the target line with up to TOKENS "
                        "tokens of the file (the draft's suffix); rows then take @fim-cache, @fim-encode "
                        "or @no-fim (e.g. recompute@fim-encode,recompute@fim-cache,recompute@no-fim,pie@fim-cache)")
    p.add_argument("--mid-line", action="store_true",
                   help="with --mid-file: the cursor inside the target line (its start typed, its closing "
                        "brackets and quotes after the cursor); scored on the line as it reads with the "
                        "draft accepted")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--min-chunk", type=int, default=32, help="chunk-reuse minimum chunk")
    p.add_argument("--replay", action="store_true", help="run the replay too when --curve/--humaneval are given")
    p.add_argument("--curve", action="store_true", help="patch ms against context size")
    p.add_argument("--curve-contexts", type=lambda s: tuple(int(x) for x in s.split(",")),
                   help="comma list (default 256,512,1024,2048,4096, plus 8192 on CUDA)")
    p.add_argument("--repeats", type=int, default=1, help="curve timings per point (median)")
    p.add_argument("--humaneval", action="store_true", help="functional check on HumanEval problems")
    p.add_argument("--quant", default="auto", help="the engine's linears: auto (int8 on CPU), int8 or none")
    p.add_argument("--compare-quant", action="store_true",
                   help="instead of the replay: int8 against fp32 linears on the same cases (KL, agreement, EM)")
    p.add_argument("--problems", type=int, default=164, help="HumanEval problems to use")
    p.add_argument("--humaneval-mode", choices=("stale", "roundtrip"), default="stale")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--time-limit", type=float, help="start no new replay case after this many seconds")
    p.add_argument("--json", help="write results to this JSON file")
    p.add_argument("--plot", help="write a PNG (cost curve and EM/ES bars)")
    p.add_argument("--merge", action="append", default=[], help="earlier JSON to merge in (repeatable)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    edits = [e for e in args.edits.split(",") if e]
    bad = [e for e in edits if e not in EDIT_TYPES]
    for s in strategies:
        try:
            variant, mode = split_fim(s)
            variant, oracle = split_oracle(variant)
            parse_variant(variant)
        except ValueError:
            bad.append(s)
        else:
            if mode and not args.mid_file:
                bad.append(f"{s} (@ rows need --mid-file)")
    if args.mid_line and not args.mid_file:
        bad.append("--mid-line (it needs --mid-file)")
    if any(split_oracle(split_fim(s)[0])[1] for s in strategies if s not in bad):
        if reference_of(strategies) not in strategies:
            bad.append(f"oracle rows without {REFERENCE} (they need its cache)")
        if args.curve or args.humaneval:
            bad.append("oracle rows outside the replay (they need recompute's cache of each case)")
    if bad:
        print(f"bad strategy, edit type or option: {', '.join(bad)}", file=sys.stderr)
        return 2
    args.fim = args.fim == "on"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare_quant:
        data = dict(model=args.model, context=args.context, seed=args.seed, mid_file=args.mid_file,
                    mid_line=args.mid_line, quant=quant_check(args, edits))
        print(format_quant(data["quant"]))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(data, indent=1))
        return 0
    data: dict = {}
    for path in args.merge:
        merge(data, json.loads(Path(path).read_text()))
    # the replay runs by default; --curve / --humaneval / --merge select other sections instead
    run_replay = args.cases > 0 and (args.replay or not (args.curve or args.humaneval or args.merge))
    if run_replay or args.curve or args.humaneval:
        from kvsplice.engine import Engine

        engine = Engine.load(args.model, device=args.device, dtype=args.dtype, quant=args.quant)
        t0 = time.perf_counter()
        data.update(model=args.model, device=args.device, dtype=args.dtype, quant=engine.quant, seed=args.seed,
                    context=args.context, fim=args.fim, max_new_tokens=args.max_new_tokens,
                    mid_file=args.mid_file, mid_line=args.mid_line,
                    corpus=str(args.corpus or default_corpus()), threads=torch.get_num_threads())
        if run_replay:
            merge(data, replay(engine, args, strategies, edits))
        if args.curve:
            data["curve"] = curve(engine, args, strategies)
        if args.humaneval:
            data["humaneval"] = humaneval(engine, args, strategies)
        data["wall_s"] = round(time.perf_counter() - t0, 1)
    if data.get("results"):
        print(f"model {data.get('model')}, context {data.get('context')}, {data.get('cases')} cases, "
              f"seed {data.get('seed')}; EM/ES %, ΔEM vs recompute (paired), agree = same line as "
              f"recompute, tok1 = same first token, KL(recompute ‖ strategy) nats, patch ms median")
        print(format_replay(data))
    if data.get("curve"):
        print()
        print(format_curve(data["curve"]))
    if data.get("humaneval"):
        print()
        print(format_humaneval(data["humaneval"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1))
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(data, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
