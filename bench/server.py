"""`kvsplice bench server`: what the server adds around the model, and edit -> first draft per strategy.

All drive a real `kvsplice serve` subprocess over stdio, as an editor would (utf-16 positions).
1. overhead: inline-completion round trips on a large real file (default: the first 2000 lines of
   the standard library's difflib.py), minus the model's own time for each draft (the session's
   `last_draft_ms` from `kvsplice/stats`): JSON-RPC both ways, position conversion, tree-sitter
   stop planning, the hand-off to the model thread, building items. Cursors are line ends in the
   first tenth of the file, so drafts are short; the overhead does not depend on where they are.
2. edit -> first draft: a one-line insertion near the top, immediately followed by an inline
   completion at the end of the inserted line; client-observed time from didChange to the
   answer, `pie`, `pie+defer` (the edit's tokens encoded in the draft's first forward: one pass
   over the weights instead of two) and `recompute`, in one server on one file, as medians.
   Drafts are capped at --draft-tokens so that the edit, not the draft's length, is measured.
3. idle refresh: after a one-line insertion near the top (plain PIE, so the whole suffix is
   stale), how long the server takes once idle to make the cache exact again (stats polled), and
   what a draft requested in the middle of that refresh costs against one with idle refresh off:
   the refresh yields between two layers, so the difference is the wait for one layer.
Prints a table; `--json PATH` also writes the numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import sysconfig
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from kvsplice.server.documents import Document

DEFAULT_FILE = Path(sysconfig.get_paths()["stdlib"], "difflib.py")
# part 2's rows: (strategy, defer); "pie+defer" encodes the edit in the draft's first forward
EDIT_ROWS = {"pie": ("pie", False), "pie+defer": ("pie", True), "recompute": ("recompute", False)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvsplice bench server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model for both parts")
    p.add_argument("--overhead-model", help="model for part 1 only (its time is subtracted anyway)")
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="a real source file")
    p.add_argument("--lines", type=int, default=2000, help="lines of --file for part 1")
    p.add_argument("--requests", type=int, default=50, help="inline completions in part 1")
    p.add_argument("--edit-lines", type=int, default=300, help="lines of --file for part 2")
    p.add_argument("--repeats", type=int, default=3, help="insertions per strategy in part 2")
    p.add_argument("--draft-tokens", type=int, default=8, help="max_new_tokens of part 2's drafts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in the server (0: default)")
    p.add_argument("--idle-ms", type=int, default=200, help="idle_refresh_ms in part 3")
    p.add_argument("--parts", default="overhead,edits,idle", help="parts to run, comma-separated")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


class Client:
    """One server subprocess and one open document, driven like an editor."""

    def __init__(self, text: str, uri: str = "file:///bench/doc.py"):
        self.lsp = LanguageClient("kvsplice-bench", "0")
        self.lsp.feature(types.WINDOW_LOG_MESSAGE)(lambda params: None)
        self.lsp.feature(types.WINDOW_SHOW_MESSAGE)(lambda params: print(params.message, file=sys.stderr))
        self.doc = Document(uri, text, 1, "plaintext")  # positions only
        self.uri = self.doc.uri

    async def start(self, options: dict, open_document: bool = True) -> None:
        await self.lsp.start_io(sys.executable, "-m", "kvsplice.server.cli", "serve")
        await self.lsp.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=options))
        self.lsp.initialized(types.InitializedParams())
        if open_document:
            self.open()
            await self.encoded()

    def open(self, doc: Document | None = None) -> None:
        doc = doc or self.doc
        self.lsp.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(doc.uri, "python", doc.version, doc.text)))

    async def stats(self, uri: str | None = None):
        """The document's stats once the model worker has done what was sent before
        (debugDocument waits in its queue; stats is answered at once)."""
        uri = uri or self.uri
        await self.lsp.protocol.send_request_async("kvsplice/debugDocument", {"uri": uri})
        return (await self.lsp.protocol.send_request_async("kvsplice/stats", {"uri": uri})).documents[0]

    async def encoded(self, uri: str | None = None):
        """Stats once the document's first encode (slices behind the queue) is done."""
        while not (stats := await self.stats(uri)).ready:
            await asyncio.sleep(0.05)
        return stats

    async def inline(self, offset: int, doc: Document | None = None):
        doc = doc or self.doc
        return await self.lsp.text_document_inline_completion_async(types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(doc.uri), position=doc.position_at(offset)))

    def insert(self, offset: int, text: str) -> None:
        position = self.doc.position_at(offset)
        change = types.TextDocumentContentChangePartial(range=types.Range(position, position), text=text)
        self.doc.apply(change)
        self.doc.version += 1
        self.lsp.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.doc.version), [change]))

    def configure(self, **settings) -> None:
        self.lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))

    async def stop(self) -> None:
        await self.lsp.shutdown_async(None)
        self.lsp.exit(None)
        await self.lsp.stop()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def overhead(args: argparse.Namespace, text: str) -> dict:
    client = Client(text)
    await client.start({"model": args.overhead_model or args.model, "device": args.device,
                        "threads": args.threads, "max_new_tokens": 8})
    try:
        ends = [m.start() for m in re.finditer(r"\S\n", text[:len(text) // 10])]
        cursors = random.Random(0).choices(ends, k=args.requests)
        rows = []
        for cursor in cursors:
            t0 = time.perf_counter()
            await client.inline(cursor + 1)
            wall_ms = (time.perf_counter() - t0) * 1e3
            model_ms = (await client.stats()).last_draft_ms
            rows.append(wall_ms - model_ms)
        return {"lines": text.count("\n"), "requests": len(rows), "overhead_ms_p50": percentile(rows, 50),
                "overhead_ms_p95": percentile(rows, 95)}
    finally:
        await client.stop()


async def edit_latency(args: argparse.Namespace, text: str) -> dict:
    client = Client(text)
    await client.start({"model": args.model, "device": args.device, "threads": args.threads,
                        "strategy": "pie", "max_new_tokens": args.draft_tokens})
    result = {"lines": text.count("\n"), "tokens": (await client.stats()).tokens}
    try:
        for name, (strategy, defer) in EDIT_ROWS.items():
            client.configure(strategy=strategy, defer=defer)
            await client.encoded()  # sessions re-encoded under the strategy
            times = []
            for i in range(args.repeats):
                at = client.doc.line_starts[10]
                line = f"value_{i} = compute({i})\n"
                t0 = time.perf_counter()
                client.insert(at, line)
                await client.inline(at + len(line) - 1)
                times.append((time.perf_counter() - t0) * 1e3)
            stats = await client.stats()
            result[name] = {"edit_to_draft_ms": statistics.median(times), "last_patch_ms": stats.last_patch_ms,
                            "last_draft_ms": stats.last_draft_ms, "encoded": stats.encoded}
        result["ratio"] = result["pie"]["edit_to_draft_ms"] / result["recompute"]["edit_to_draft_ms"]
        result["defer_ratio"] = result["pie+defer"]["edit_to_draft_ms"] / result["pie"]["edit_to_draft_ms"]
        return result
    finally:
        await client.stop()


async def idle_refresh(args: argparse.Namespace, text: str) -> dict:
    client = Client(text)
    await client.start({"model": args.model, "device": args.device, "threads": args.threads, "strategy": "pie",
                        "refresh_tokens": 0, "tail_tokens": 0, "max_new_tokens": args.draft_tokens,
                        "idle_refresh_ms": args.idle_ms})
    result: dict = {"lines": text.count("\n"), "tokens": (await client.stats()).tokens, "idle_ms": args.idle_ms}
    try:
        converge, rates = [], []
        for i in range(args.repeats):
            at = client.doc.line_starts[10]
            t0 = time.perf_counter()
            client.insert(at, f"idle_{i} = {i}\n")
            stale = (await client.stats()).stale
            while (await client.stats()).stale:
                await asyncio.sleep(0.01)
            seconds = time.perf_counter() - t0 - args.idle_ms / 1000
            converge.append(seconds * 1e3)
            rates.append(stale / seconds)
        result.update(stale_tokens=stale, converge_ms=statistics.median(converge),
                      tokens_per_s=statistics.median(rates))
        for mode, idle_ms in (("refreshing", args.idle_ms), ("idle refresh off", 0)):
            client.configure(idle_refresh_ms=idle_ms)
            times = []
            for i in range(args.repeats):
                at = client.doc.line_starts[10]
                client.insert(at, f"busy_{mode[0]}{i} = {i}\n")
                # into the refresh: one idle period plus about a third of the convergence time
                await asyncio.sleep(args.idle_ms / 1000 + result["converge_ms"] / 3000)
                t0 = time.perf_counter()
                await client.inline(client.doc.line_starts[12] - 1)
                times.append((time.perf_counter() - t0) * 1e3)
            result[mode] = statistics.median(times)
        return result
    finally:
        await client.stop()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lines = args.file.read_text(encoding="utf-8").splitlines(keepends=True)
    results: dict = {"model": args.model, "device": args.device, "file": str(args.file)}
    parts = set(args.parts.split(","))
    if parts - {"overhead", "edits", "idle"}:
        raise SystemExit(f"unknown --parts {args.parts!r}: choose from overhead, edits, idle")
    if "overhead" in parts:
        results["overhead"] = asyncio.run(overhead(args, "".join(lines[:args.lines])))
        results["overhead"]["model"] = args.overhead_model or args.model
        o = results["overhead"]
        print(f"server overhead per inline completion, {o['lines']} lines, {o['requests']} requests "
              f"({o['model']}): p50 {o['overhead_ms_p50']:.2f} ms, p95 {o['overhead_ms_p95']:.2f} ms")
    if "edits" in parts:
        e = results["edits"] = asyncio.run(edit_latency(args, "".join(lines[:args.edit_lines])))
        print(f"edit -> first draft, insertion near the top of {e['lines']} lines ({e['tokens']} tokens, {args.model}):")
        print(f"  {'strategy':<10} {'median ms':>10} {'patch ms':>10} {'draft ms':>10} {'encoded':>8}  (last edit)")
        for strategy in EDIT_ROWS:
            r = e[strategy]
            print(f"  {strategy:<10} {r['edit_to_draft_ms']:>10.1f} {r['last_patch_ms']:>10.1f} "
                  f"{r['last_draft_ms']:>10.1f} {r['encoded']:>8}")
        print(f"  pie / recompute = {e['ratio']:.3f}; pie+defer / pie = {e['defer_ratio']:.3f}")
    if "idle" in parts:
        r = results["idle"] = asyncio.run(idle_refresh(args, "".join(lines[:args.edit_lines])))
        print(f"idle refresh after an insertion near the top ({r['tokens']} tokens, {r['stale_tokens']} stale, "
              f"{args.model}, idle_refresh_ms {r['idle_ms']}):")
        print(f"  exact again {r['converge_ms']:.0f} ms after the idle wait ({r['tokens_per_s']:.0f} tokens/s)")
        print(f"  draft requested mid-refresh {r['refreshing']:.1f} ms vs idle refresh off "
              f"{r['idle refresh off']:.1f} ms (median of {args.repeats})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
