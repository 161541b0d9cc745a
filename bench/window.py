"""`kvsplice bench window`: real files through a real server, as an editor opens them.

All drive one `kvsplice serve` subprocess over stdio (bench/server.py's client), the model loaded
before anything is timed.
1. open: for each real file of 40-60 KB from the standard library, didOpen and at once an inline
   completion at a mid-file cursor (the end of a line in the middle): client-observed time until
   the draft comes back. The window is placed around the waiting request's cursor.
2. jump: on a file of over 2,000 lines, a draft near the top, then one 2,000 lines further down:
   its time against a fresh document of the window's new text encoding (what the new part costs).
3. hostile: a 200,000-character single line, a 5 MB file and 200 documents of 2,000 lines under a
   64 MB memory budget; every request answered (drafts, and stats while the big ones encode) and
   the server's peak resident memory against the budget plus what the loaded model alone held.
Prints a table; `--json PATH` also writes the numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import sysconfig
import time
from pathlib import Path

from kvsplice.server.documents import Document

from .server import Client

STDLIB = Path(sysconfig.get_paths()["stdlib"])
OPEN_FILES = ("configparser.py", "shutil.py", "imaplib.py")  # 54-55 KB each
JUMP_FILE = "argparse.py"  # 2,600 lines


def mid_line_end(text: str, fraction: float = 0.5) -> int:
    """The end of the first non-blank line after `fraction` of the text."""
    at = text.index("\n", int(len(text) * fraction))
    while not text[text.rfind("\n", 0, at) + 1:at].strip():
        at = text.index("\n", at + 1)
    return at


def line_end(text: str, line: int) -> int:
    at = -1
    for _ in range(line + 1):
        at = text.index("\n", at + 1)
    return at


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def timed(coro) -> tuple[object, float]:
    t0 = time.perf_counter()
    result = await coro
    return result, (time.perf_counter() - t0) * 1e3


async def start(args, **options) -> Client:
    client = Client("", "file:///bench/none.py")
    await client.start({"model": args.model, "threads": args.threads, "max_new_tokens": args.draft_tokens,
                        "idle_refresh_ms": 0, **options}, open_document=False)
    while not (await client.lsp.protocol.send_request_async("kvsplice/stats", None)).ready:
        await asyncio.sleep(0.1)  # the model's load is not what is measured
    return client


async def open_part(args) -> dict:
    client = await start(args)
    try:
        rows = {}
        for name in OPEN_FILES:
            text = (STDLIB / name).read_text(encoding="utf-8")
            doc = Document(f"file:///bench/{name}", text, 1, "python")
            cursor = mid_line_end(text)
            t0 = time.perf_counter()
            client.open(doc)
            items = await client.inline(cursor, doc)
            rows[name] = {"kb": round(len(text.encode()) / 1024, 1), "open_to_draft_ms": (time.perf_counter() - t0) * 1e3,
                          "draft": items[0].insert_text if items else "",
                          "window_tokens": (await client.stats(doc.uri)).tokens}
        return rows
    finally:
        await client.stop()


async def jump_part(args) -> dict:
    client = await start(args)
    try:
        text = (STDLIB / JUMP_FILE).read_text(encoding="utf-8")
        doc = Document(f"file:///bench/{JUMP_FILE}", text, 1, "python")
        client.open(doc)
        await client.inline(line_end(text, 300), doc)
        await client.encoded(doc.uri)
        _, jump_ms = await timed(client.inline(line_end(text, 2300), doc))
        window = (await client.stats(doc.uri)).window
        fresh = Document("file:///bench/window.py", text[window.start:window.end], 1, "python")
        t0 = time.perf_counter()
        client.open(fresh)
        await client.encoded(fresh.uri)
        encode_ms = (time.perf_counter() - t0) * 1e3
        return {"lines": text.count("\n"), "jump_lines": 2000, "draft_after_jump_ms": jump_ms,
                "encode_new_window_ms": encode_ms, "ratio": jump_ms / encode_ms,
                "window_tokens": (await client.stats(fresh.uri)).tokens}
    finally:
        await client.stop()


async def hostile_part(args) -> dict:
    client = await start(args, memory_budget_mb=args.budget_mb)
    pid = client.lsp._server.pid
    baseline_mb = rss_mb(pid)[0]
    out: dict = {"budget_mb": args.budget_mb, "model_rss_mb": baseline_mb}
    try:
        small = Document("file:///bench/small.py", "def f(x):\n    return x\n", 1, "python")
        client.open(small)
        line = "x = [" + ", ".join(str(i) for i in range(40_000)) + "]\n"
        files = sorted(STDLIB.glob("*.py"))
        big = ""
        for f in files:
            big += f.read_text(encoding="utf-8", errors="replace")
            if len(big.encode()) >= 5 * 2**20:
                break
        for name, text in (("200k_line", line), ("5mb_file", big)):
            doc = Document(f"file:///bench/{name}.py", text, 1, "python")
            t0 = time.perf_counter()
            client.open(doc)
            stats_ms = []
            draft = asyncio.ensure_future(client.inline(mid_line_end(text, 0.5) if "\n" in text[:-1] else len(text) // 2, doc))
            other = asyncio.ensure_future(client.inline(len(small.text) - 1, small))
            while not draft.done():
                _, ms = await timed(client.lsp.protocol.send_request_async("kvsplice/stats", None))
                stats_ms.append(ms)
                await asyncio.sleep(0.1)
            await draft
            await other
            out[name] = {"chars": len(text), "open_to_draft_ms": (time.perf_counter() - t0) * 1e3,
                         "stats_ms_max": max(stats_ms, default=0.0), "stats_answered": len(stats_ms),
                         "rss_mb": rss_mb(pid)[0]}
        text = (STDLIB / JUMP_FILE).read_text(encoding="utf-8")
        head = "".join(text.splitlines(keepends=True)[:2000])
        docs = [Document(f"file:///bench/many/{i}.py", f"# copy {i}\n" + head, 1, "python") for i in range(args.documents)]
        for doc in docs:
            client.open(doc)
        latencies = []
        for doc in docs:
            _, ms = await timed(client.inline(mid_line_end(doc.text), doc))
            latencies.append(ms)
        out["many"] = {"documents": len(docs), "drafts_answered": len(latencies),
                       "draft_ms_p50": statistics.median(latencies), "draft_ms_max": max(latencies)}
        out["peak_rss_mb"] = rss_mb(pid)[1]
        out["bound_mb"] = args.budget_mb + baseline_mb + 500
        return out
    finally:
        await client.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvsplice bench window", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--draft-tokens", type=int, default=32, help="max_new_tokens of the drafts")
    p.add_argument("--budget-mb", type=float, default=64, help="memory_budget_mb of the hostile part")
    p.add_argument("--documents", type=int, default=200, help="documents of the hostile part")
    p.add_argument("--parts", default="open,jump,hostile")
    p.add_argument("--json", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - {"open", "jump", "hostile"}:
        raise SystemExit(f"unknown --parts {args.parts!r}: choose from open, jump, hostile")
    results: dict = {"model": args.model, "threads": args.threads}
    if "open" in parts:
        results["open"] = asyncio.run(open_part(args))
        print(f"open -> first draft at a mid-file cursor ({args.model}, {args.threads} thread(s)):")
        for name, r in results["open"].items():
            print(f"  {name:<16} {r['kb']:6.1f} KB  {r['open_to_draft_ms']:9.0f} ms  window {r['window_tokens']} tokens")
    if "jump" in parts:
        r = results["jump"] = asyncio.run(jump_part(args))
        print(f"cursor jump of {r['jump_lines']} lines in {JUMP_FILE}: draft {r['draft_after_jump_ms']:.0f} ms, "
              f"encoding the new window ({r['window_tokens']} tokens) fresh {r['encode_new_window_ms']:.0f} ms: "
              f"{r['ratio']:.2f}x")
    if "hostile" in parts:
        r = results["hostile"] = asyncio.run(hostile_part(args))
        print(f"hostile inputs ({args.model}, memory_budget_mb {r['budget_mb']:.0f}, model alone {r['model_rss_mb']:.0f} MB):")
        for name in ("200k_line", "5mb_file"):
            h = r[name]
            print(f"  {name:<10} {h['chars']:>9} chars: draft {h['open_to_draft_ms']:.0f} ms after open, "
                  f"{h['stats_answered']} stats answered meanwhile (slowest {h['stats_ms_max']:.1f} ms), RSS {h['rss_mb']:.0f} MB")
        m = r["many"]
        print(f"  {m['documents']} documents of 2,000 lines: {m['drafts_answered']} drafts answered, p50 "
              f"{m['draft_ms_p50']:.0f} ms, max {m['draft_ms_max']:.0f} ms")
        print(f"  peak RSS {r['peak_rss_mb']:.0f} MB (bound: budget + model + 500 = {r['bound_mb']:.0f} MB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
