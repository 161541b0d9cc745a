"""The model thread's idle refresh gives way to the jobs the user waits on; each job publishes
its session's stats for the event loop."""
import asyncio
import textwrap
import threading
from pathlib import Path

import pytest

from kvsplice.server.documents import Edit
from kvsplice.server.settings import Settings
from kvsplice.server.worker import ModelWorker

TEXT = Path(textwrap.__file__).read_text()[:3000]
pytestmark = pytest.mark.asyncio


async def encoded(worker: ModelWorker, uri: str) -> None:
    """Wait until the document's first encode, in slices behind the queue, is done."""
    while not (worker.published.get(uri) or {}).get("ready"):
        await worker.session_text(uri)  # one more job through the queue


async def test_a_queued_edit_stops_an_idle_refresh_between_layers(tiny_model_dir):
    worker = ModelWorker()
    settings = Settings(model=str(tiny_model_dir("llama", layers=3)), threads=1, refresh_tokens=0,
                        tail_tokens=0)
    try:
        await worker.load(settings)
        worker.open("file:///a.py", TEXT, settings)
        await encoded(worker, "file:///a.py")
        text = "import os\n" + TEXT
        worker.edit("file:///a.py", Edit(0, 0, "import os\n"), text, settings)
        await worker.session_text("file:///a.py")  # queued after the edit: it ran
        stale = worker.published["file:///a.py"]["stale"]
        assert stale > 100

        gate = threading.Event()  # holds the model thread so the next jobs queue up behind it
        held = asyncio.wrap_future(worker._pool.submit(gate.wait))
        refresh = worker.refresh(10_000)
        worker.edit("file:///a.py", Edit(0, 0, "# x\n"), "# x\n" + text, settings)
        gate.set()
        await held
        assert await refresh == 0, "the refresh found an edit waiting and stopped before any layer"
        await worker.session_text("file:///a.py")
        assert worker.published["file:///a.py"]["stale"] >= stale

        published = []
        while await worker.refresh(64):  # nothing waiting: it runs to the end
            published.append(worker.published["file:///a.py"]["stale"])
        assert published == sorted(published, reverse=True) and published[-1] == 0 < published[0]
        assert await worker.session_text("file:///a.py") == "# x\n" + text
        worker.close("file:///a.py")
        await worker.session_text("file:///a.py")
        assert "file:///a.py" not in worker.published
    finally:
        worker.shutdown()
