"""Two editors share a 2-replica Ray Serve pool (a local Ray instance, a tiny model): every draft
equals the in-process engine's, every document's requests land on one replica, and killing that
replica mid-session loses no request and no edit.

Three real `kvsplice serve` processes: two with `--engine URL` (two users, three documents each)
and one in-process twin that gets every document, edit and request too. Sessions use the exact
strategy (recompute) and windows that hold whole documents, so that a document re-opened after
the kill must still draft what the twin, which never lost it, drafts.
"""
import asyncio
import socket
import sys
import sysconfig
from pathlib import Path

import pytest
import pytest_asyncio
import ray
from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client
from ray import serve

from kvsplice.pool.deployment import PoolConfig, deploy
from kvsplice.server.remote_engine import bind_stop
from test_server_lsp import ClientDoc, request, stop_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = [sys.executable, "-m", "kvsplice.server.cli", "serve"]
FILES = ["colorsys.py", "bisect.py", "keyword.py", "fnmatch.py", "glob.py", "shlex.py"]
OPTIONS = {"threads": 1, "idle_refresh_ms": 0, "strategy": "recompute", "refresh_tokens": 0, "tail_tokens": 0,
           "defer": False, "context_tokens": 3072, "max_new_tokens": 12}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pool(tiny_model_dir):
    """Two replicas of the tiny model on a Ray instance of this test's own; yields the URL."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = PoolConfig(model=str(tiny_model_dir()), replicas=2, num_cpus=0.5, port=free_port())
        yield deploy(config, bind_stop)
    finally:
        serve.shutdown()
        ray.shutdown()


async def start(model, *args: str):
    client = make_test_lsp_client()
    await client.start_io(*SERVER, *args)
    await client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options={"model": str(model), **OPTIONS}))
    return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def editors(pool, tiny_model_dir):
    """Two users on the pool and the in-process twin; each user's documents, paired with the twin's."""
    clients = [await start(tiny_model_dir(), "--engine", pool) for _ in range(2)]
    twin = await start(tiny_model_dir())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pairs = []
    for i, name in enumerate(FILES):
        text = stdlib.joinpath(name).read_text()[:2500]
        pairs.append((ClientDoc(clients[i % 2], text), ClientDoc(twin, text)))
    yield pairs
    for client in (*clients, twin):
        await stop_server(client)


async def step(pair: tuple[ClientDoc, ClientDoc], n: int) -> None:
    """One edit and one draft, on a document and its twin: the drafts must be equal."""
    doc, twin = pair
    at = doc.text.index("\n", (n * 397) % (len(doc.text) - 200)) + 1
    for d in pair:
        d.change((at, at, f"x{n} = {n}\n"))
    cursor = at + len(f"x{n} = ")
    pending = asyncio.ensure_future(doc.inline(cursor))
    expected = await twin.inline(cursor)
    assert [i.insert_text for i in await pending] == [i.insert_text for i in expected]


async def pool_stats(doc: ClientDoc):
    return (await doc.stats()).pool


async def test_each_document_stays_on_one_replica_and_drafts_as_in_process(editors):
    for n in range(3):
        for pair in editors:
            await step(pair, n)
    for doc, twin in editors:
        placed = await pool_stats(doc)
        assert placed.replicas == [placed.replica] and placed.reopens == 0
        await doc.assert_in_step()


async def test_a_killed_replica_costs_a_reopen_and_loses_no_request_or_edit(editors):
    doc, twin = editors[0]
    victim = (await pool_stats(doc)).replica
    moved = [pair for pair in editors if (await pool_stats(pair[0])).replica == victim]
    cursor = doc.text.index("\n", len(doc.text) // 2) + 1
    in_flight = asyncio.ensure_future(doc.inline(cursor))  # sent, then its replica dies
    name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(victim))
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    assert [i.insert_text for i in await in_flight] == [i.insert_text for i in await twin.inline(cursor)]
    for n in range(3, 5):
        for pair in editors:
            await step(pair, n)
    for doc, twin in editors:
        await doc.assert_in_step()  # the pool's session holds the editor's text: no edit lost
    for doc, _ in moved:  # re-opened elsewhere from the editor's text
        placed = await pool_stats(doc)
        assert placed.replica != victim and placed.reopens >= 1
    shown = await request(editors[0][0].client, "kvsplice/stats", None)
    assert shown.ready and shown.device.startswith("cpu at http://127.0.0.1:")
