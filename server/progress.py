"""`$/progress` for work the user waits on: the model load and each document's first encode.

A token is created only where the client takes work-done progress (and agrees to the create
request); otherwise every call here does nothing, so callers need not care.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from lsprotocol import types

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, server, token: str | None):
        self.server, self.token = server, token

    @classmethod
    async def begin(cls, server, title: str, message: str = "", percentage: int | None = None) -> "Progress":
        token = None
        window = server.client_capabilities.window
        if window is not None and window.work_done_progress:
            try:
                await server.work_done_progress.create_async(candidate := str(uuid.uuid4()))
                token = candidate
            except Exception as exc:  # the client refused: work on without a progress bar
                log.warning("window/workDoneProgress/create failed: %s", exc)
        if token:
            server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=title, message=message, percentage=percentage))
        return cls(server, token)

    def report(self, message: str, percentage: int | None = None) -> None:
        if self.token:
            self.server.work_done_progress.report(self.token, types.WorkDoneProgressReport(
                message=message, percentage=percentage))

    def end(self, message: str) -> None:
        if self.token:
            self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self.token = None


class EncodeProgress:
    """A document's first encode as `$/progress`, fed with the stats the model worker publishes
    after each slice: begun at the first that is not ready, ended at the first that is (or when
    `stop` is called: the document closed or was opened anew)."""

    def __init__(self, server, uri: str):
        self.server, self.uri = server, uri
        self.latest: dict | None = None
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    def update(self, snapshot: dict) -> None:
        self.latest = snapshot
        self.changed.set()

    def stop(self) -> None:
        self.latest = None
        self.changed.set()

    async def _run(self) -> None:
        name = self.uri.rstrip("/").rsplit("/", 1)[-1]
        progress = await Progress.begin(self.server, f"kvsplice: encoding {name}", *self._message())
        while self.latest is not None and not self.latest["ready"]:
            await self.changed.wait()
            self.changed.clear()
            if self.latest is not None and not self.latest["ready"]:
                progress.report(*self._message())
        progress.end(f"{self.latest['tokens']} tokens ready" if self.latest else "stopped")

    def _message(self) -> tuple[str, int | None]:
        encoding = self.latest and self.latest["encoding"]
        if not encoding:
            return "", None
        return f"{encoding['done']}/{encoding['total']} tokens", 100 * encoding["done"] // max(1, encoding["total"])
