"""`kvsplice bench pool`: simulated editors against a Ray Serve pool on this machine.

Each editor is the server's model worker with a remote engine (`kvsplice serve --engine URL`,
without the LSP transport): it opens --docs files of the Python standard library, then for
--rounds rounds, in each document in turn, types a line (`x3 = ` at a line start in the file's
middle third) and asks for a draft at its end, as an editor does after a keystroke. All editors
run at once, without think time (a closed loop: the pool is saturated).

For each replica count R and routing: requests/s (the pool's, all operations) and drafts/s,
edit -> draft latency p50 / p99 (from the edit's submission to the draft), the affinity hit rate
(requests that found their document's session with the editor's text on the replica they
reached), re-opens (drafts that had to carry the whole text) and how many documents each replica
held. Routings: `affinity` (the
product's, routing.py), `random` (no affinity) and `multiplex` (Serve's model multiplexing: every
request registers its document id on the replica it reached, and Serve's default router prefers
replicas that registered it).

Then the remote hop: a request with nothing to do (the next slice of an encoded document's first
encode) against an in-process Host and against a one-replica pool, p50 each; and one editor's
edit -> draft p50, in-process vs the pool.
Prints a table; `--json PATH` also writes the numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import sysconfig
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import ray
import torch
from ray import serve
from ray.serve.config import RequestRouterConfig

from kvsplice.engine import Engine
from kvsplice.pool.deployment import PoolConfig, Replica, deploy
from kvsplice.pool.host import Host
from kvsplice.server.documents import Edit
from kvsplice.server.remote_engine import RemoteEngine, bind_stop
from kvsplice.server.settings import Settings
from kvsplice.server.worker import DraftJob, ModelWorker

FILES = ["textwrap.py", "colorsys.py", "bisect.py", "fnmatch.py", "shlex.py", "glob.py", "heapq.py",
         "keyword.py", "netrc.py", "sched.py", "tabnanny.py", "queue.py", "abc.py", "numbers.py",
         "getopt.py", "copy.py"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvsplice bench pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--editors", type=int, default=4)
    p.add_argument("--docs", type=int, default=2, help="documents per editor")
    p.add_argument("--rounds", type=int, default=5, help="edit + draft rounds per document")
    p.add_argument("--replicas", default="1,2", help="replica counts, comma-separated")
    p.add_argument("--routing", default="affinity,random,multiplex", help="routings, comma-separated")
    p.add_argument("--context-tokens", type=int, default=1024, help="each document's window")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--cpus", type=float, default=2, help="CPUs of the local Ray instance, shared by the replicas")
    p.add_argument("--hop-requests", type=int, default=100, help="edit requests per side for the hop overhead")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


class MultiplexedReplica(Replica):
    """Serve's model multiplexing, as `kvsplice pool` would use it: the document id is the model id."""

    @serve.multiplexed(max_num_models_per_replica=PoolConfig().max_documents)
    async def _register(self, key: str) -> str:
        return key

    async def __call__(self, request):
        if key := serve.get_multiplexed_model_id():
            await self._register(key)
        return await super().__call__(request)


def documents(editor: int, count: int) -> list[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = [FILES[(editor * count + i) % len(FILES)] for i in range(count)]
    return [(f"file:///editor{editor}/{name}", stdlib.joinpath(name).read_text()) for name in names]


async def editor(worker: ModelWorker, settings: Settings, docs: list[tuple[str, str]], rounds: int) -> list[float]:
    """Open the documents, then type a line and draft at its end, round after round; the edit ->
    draft latencies in ms."""
    texts = dict(docs)
    await worker.load(settings)
    for uri, text in docs:
        worker.open(uri, text, settings)
    latencies = []
    for r in range(rounds):
        for uri in texts:
            text = texts[uri]
            at = text.index("\n", len(text) // 3 + (r * 211) % (len(text) // 3)) + 1
            typed = f"x{r} = "
            texts[uri] = text = text[:at] + typed + "\n" + text[at:]
            t0 = time.perf_counter()
            worker.edit(uri, Edit(at, at, typed + "\n"), text, settings)
            await worker.complete(DraftJob(asyncio.get_running_loop()), uri, text, at + len(typed), "line", settings)
            latencies.append((time.perf_counter() - t0) * 1e3)
    return latencies


async def editors(url: str | None, args: argparse.Namespace, count: int) -> dict:
    settings = Settings(model=args.model, threads=1, context_tokens=args.context_tokens,
                        max_new_tokens=args.max_new_tokens)
    workers = [ModelWorker(url) for _ in range(count)]
    try:
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(editor(w, settings, documents(i, args.docs), args.rounds)
                                      for i, w in enumerate(workers)))
        wall = time.perf_counter() - t0
        engines = [w.engine for w in workers if isinstance(w.engine, RemoteEngine)]
        counts = {k: sum(e.counts[k] for e in engines) for k in ("requests", "unknown", "reopens")}
        held = Counter(replica for e in engines for seen in e.replicas.values() for replica in seen)
    finally:
        for w in workers:
            w.shutdown()
    latencies = sorted(ms for run in runs for ms in run)
    return {"documents_per_replica": sorted(held.values(), reverse=True), "drafts": len(latencies),
            "wall_s": wall, "drafts_per_s": len(latencies) / wall, "requests_per_s": counts["requests"] / wall,
            **counts, "affinity_hit_rate": 1 - counts["unknown"] / counts["requests"] if counts["requests"] else None,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def hop(engine, requests: int) -> float:
    """p50 ms of a request that finds nothing to do (the next slice of an encoded document's
    first encode): what a request costs besides the model's work."""
    text = documents(0, 1)[0][1]
    engine.open("hop", text, Settings(context_tokens=1024).session_options())
    while not engine.encode("hop", 4096):
        pass
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        engine.encode("hop", 1)
        times.append((time.perf_counter() - t0) * 1e3)
    engine.close("hop")
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.getLogger("kvsplice.server.worker").setLevel(logging.ERROR)  # re-opens are counted, not logged
    routings = args.routing.split(",")
    if set(routings) - {"affinity", "random", "multiplex"}:
        raise SystemExit(f"unknown --routing {args.routing!r}: choose from affinity, random, multiplex")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results: dict = {"model": args.model, "editors": args.editors, "docs": args.docs, "rounds": args.rounds,
                     "context_tokens": args.context_tokens, "runs": []}
    print(f"{args.editors} editors x {args.docs} documents x {args.rounds} rounds, {args.model}, "
          f"window {args.context_tokens} tokens, drafts of at most {args.max_new_tokens} tokens")
    print(f"{'R':>2} {'routing':<10} {'req/s':>7} {'drafts/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'hit rate':>8} "
          f"{'re-opens':>8} {'requests':>8}  documents per replica")
    try:
        for replicas in map(int, args.replicas.split(",")):
            for routing in routings:
                # an application of its own per run: Serve's proxy keeps a deployment's router
                config = PoolConfig(model=args.model, replicas=replicas, num_cpus=args.cpus / replicas,
                                    routing="random" if routing == "random" else "affinity", port=port,
                                    name=f"kvsplice_{replicas}_{routing}")
                variant = {"replica": MultiplexedReplica, "router": RequestRouterConfig().request_router_class} \
                    if routing == "multiplex" else {}
                url = deploy(config, bind_stop, **variant)
                row = {"replicas": replicas, "routing": routing,
                       **asyncio.run(editors(url, args, args.editors))}
                results["runs"].append(row)
                print(f"{replicas:>2} {routing:<10} {row['requests_per_s']:>7.1f} {row['drafts_per_s']:>8.2f} "
                      f"{row['p50_ms']:>8.0f} {row['p99_ms']:>8.0f} {row['affinity_hit_rate']:>8.3f} "
                      f"{row['reopens']:>8} {row['requests']:>8}  {'/'.join(map(str, row['documents_per_replica']))}",
                      flush=True)
                serve.delete(config.name)
        config = PoolConfig(model=args.model, replicas=1, num_cpus=args.cpus, port=port)
        url = deploy(config, bind_stop)
        pool_request = hop(RemoteEngine(url), args.hop_requests)
        pool_one = asyncio.run(editors(url, args, 1))
        # in-process while the idle pool still runs, so that both sides share the machine alike
        torch.set_num_threads(1)
        local_request = hop(Host(Engine.load(args.model)), args.hop_requests)
        local_one = asyncio.run(editors(None, args, 1))
        serve.delete(config.name)
    finally:
        serve.shutdown()
        ray.shutdown()
    results["hop"] = {"request_p50_ms": {"in_process": local_request, "pool": pool_request},
                      "one_editor_edit_to_draft_p50_ms": {"in_process": local_one["p50_ms"],
                                                          "pool": pool_one["p50_ms"]},
                      "config": asdict(config)}
    print(f"remote hop: a request p50 {local_request:.2f} ms in-process, {pool_request:.2f} ms on the pool "
          f"(+{pool_request - local_request:.2f} ms per request); one editor's edit -> draft p50 "
          f"{local_one['p50_ms']:.0f} ms in-process, {pool_one['p50_ms']:.0f} ms on a 1-replica pool")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
