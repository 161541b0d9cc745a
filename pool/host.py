"""Documents' sessions on one engine, keyed by document id: what `kvsplice serve` runs in-process,
and what every replica of the pool (deployment.py) holds for many editors at once.

`DocumentEngine` is the interface the server's model worker uses; `Host` implements it over an
`Engine`, and the server's `RemoteEngine` over HTTP to a pool of Hosts. The caller keeps each
document's authoritative text: every call that reads or changes a session names the text it must
hold by `digest`, and a host that does not hold the document, or holds another text (a lost
replica, an eviction, a missed edit), raises `UnknownDocument` instead of answering from it. The
caller then re-opens it from its text and retries once, so a draft never comes from a cache of a
text the editor does not show.

Stats: `take_changes(owner)` gives, after each call, the stats of the document it touched and of
the owner's other documents whose cache the memory budget dropped meanwhile. Owners keep editors
apart on a shared replica; in-process there is one, "".
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol, Union

from kvsplice.engine import Engine, ModelLoadError, Session

log = logging.getLogger(__name__)
Stop = Union[str, Callable[[str], "int | None"]]
Changes = dict[str, dict]  # document id -> its stats, {**Session.stats(), "cached": bool}


def digest(text: str) -> str:
    """What names a text on the wire: 128 bits of BLAKE2b over its UTF-8."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class UnknownDocument(LookupError):
    """The engine does not hold this document, or not with the text the caller named: re-open it
    from the caller's text and retry once."""


class EngineUnavailable(ModelLoadError):
    """The engine cannot serve now: its pool is unreachable, or lost a document again right after
    re-opening it. (A ModelLoadError, so that the server answers RequestFailed with the reason.)"""


@dataclass(frozen=True)
class Reopen:
    """What a draft carries when it retries: the document's text and session options."""

    text: str
    options: dict
    owner: str = ""


class DocumentEngine(Protocol):
    """What the server's model worker needs of an engine, in-process (`Host`) or remote. Calls
    run on one thread, in order; `interrupt` and `cancelled` are asked between layers / tokens."""

    name: str
    quant: str

    @property
    def device(self) -> object: ...

    @property
    def dtype(self) -> object: ...

    def open(self, doc: str, text: str, options: dict, owner: str = "") -> None:
        """Make (or remake) the document's session; it is tokenized, not encoded yet."""

    def encode(self, doc: str, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> bool:
        """Encode the next slice of its first encode; True once its window is encoded."""

    def edit(self, doc: str, start: int, end: int, new_text: str, check: str) -> None:
        """Splice an edit; `check` is the digest of the text after it."""

    def complete(self, doc: str, check: str, cursor: int, stop: Stop, *, max_new_tokens: int, n: int,
                 speculate: int, cancelled: Callable[[], bool] | None = None,
                 reopen: Reopen | None = None) -> list[str]:
        """Drafts at `cursor` of the text whose digest is `check` (re-opened first with `reopen`)."""

    def refresh(self, doc: str, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> int:
        """Re-encode up to `budget_tokens` stale tokens; how many became exact."""

    def close(self, doc: str) -> None: ...

    def set_budget(self, memory_budget_mb: float) -> None: ...

    def text(self, doc: str) -> str | None:
        """The session's text (for tests of the sync path), None if there is none."""

    def take_changes(self, owner: str = "") -> Changes: ...


class Host:
    """Sessions on one Engine. `max_documents` bounds how many it keeps (least recently used are
    closed first; their owners re-open them on next use); the engine's memory budget bounds
    their caches. `bind_stop(stop, text)` turns a stop rule that arrived as data into a callable
    against the document's text (a pool's replicas get it from the server side, which owns the
    syntax trees)."""

    def __init__(self, engine: Engine, max_documents: int | None = None,
                 bind_stop: Callable[[object, str], Stop] | None = None):
        if max_documents is not None and max_documents < 1:
            raise ValueError(f"max_documents must be at least 1, got {max_documents}")
        self.engine, self.max_documents, self.bind_stop = engine, max_documents, bind_stop
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._owners: dict[str, str] = {}
        self._applied: dict[str, int] = {}  # edits applied to each session since it was opened
        self._resident: dict[str, bool] = {}  # each cache's residency when its stats were recorded
        self._changes: Changes = {}  # stats recorded and not taken yet

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def device(self):
        return self.engine.device

    @property
    def dtype(self):
        return self.engine.dtype

    @property
    def quant(self) -> str:
        return self.engine.quant

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, doc: str, text: str, options: dict, owner: str = "") -> None:
        self._drop(doc)
        try:
            self._sessions[doc] = self.engine.open_session(text, encode=False, **options)
        except TypeError as exc:  # an option the engine does not take
            raise ValueError(f"cannot open {doc}: {exc}") from None
        self._owners[doc] = owner
        self._applied[doc] = 0
        while self.max_documents is not None and len(self._sessions) > self.max_documents:
            self._drop(next(iter(self._sessions)))
        self._record(doc)

    def encode(self, doc: str, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> bool:
        """Background work: it never evicts another cache, nor makes this one recently used."""
        session = self._session(doc)
        try:
            with self.engine.memory.without_eviction():
                session.encode_missing(budget_tokens, interrupt=interrupt)
        finally:
            self._record(doc)
        return not session.window.missing

    def edit(self, doc: str, start: int, end: int, new_text: str, check: str) -> None:
        session = self._session(doc)
        try:
            session.edit(start, end, new_text)
        except ValueError:
            log.exception("edit of %s failed; its session is dropped", doc)
        if digest(session.text) != check:
            self._drop(doc)
            raise UnknownDocument(f"{doc} is out of step after an edit")
        self._applied[doc] += 1
        self._sessions.move_to_end(doc)
        self._record(doc)

    def complete(self, doc: str, check: str, cursor: int, stop: Stop, *, max_new_tokens: int, n: int,
                 speculate: int, cancelled: Callable[[], bool] | None = None,
                 reopen: Reopen | None = None) -> list[str]:
        if reopen is not None:
            self.open(doc, reopen.text, reopen.options, reopen.owner)
        session = self._session(doc, check)
        self._sessions.move_to_end(doc)
        try:
            if self.bind_stop is not None:
                stop = self.bind_stop(stop, session.text)
            return session.complete(cursor, max_new_tokens=max_new_tokens, n=n, stop=stop, cancelled=cancelled,
                                    speculate=speculate)
        finally:
            self._record(doc)

    def refresh(self, doc: str, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> int:
        """Background work, like `encode`."""
        session = self._session(doc)
        try:
            with self.engine.memory.without_eviction():
                return session.refresh(budget_tokens, interrupt=interrupt)
        finally:
            self._record(doc)

    def close(self, doc: str) -> None:
        self._drop(doc)

    def set_budget(self, memory_budget_mb: float) -> None:
        self.engine.memory.limit = memory_budget_mb * 2**20

    def text(self, doc: str) -> str | None:
        session = self._sessions.get(doc)
        return session.text if session is not None else None

    def applied(self, doc: str) -> int:
        """How many edits the document's session took since it was opened (a remote caller
        numbers its edits so, and sends again those it did not see answered)."""
        self._session(doc)
        return self._applied[doc]

    def take_changes(self, owner: str = "") -> Changes:
        taken = {doc: stats for doc, stats in self._changes.items() if self._owners.get(doc) == owner}
        for doc in taken:
            del self._changes[doc]
        return taken

    def _session(self, doc: str, check: str | None = None) -> Session:
        session = self._sessions.get(doc)
        if session is None:
            raise UnknownDocument(f"{doc} is not open here")
        if check is not None and digest(session.text) != check:
            raise UnknownDocument(f"{doc} holds another text than the editor's")
        return session

    def _record(self, doc: str) -> None:
        """doc's stats, and those of any other session whose cache the budget dropped meanwhile."""
        for other, session in self._sessions.items():
            resident = session.window.resident
            if other == doc or self._resident.get(other) != resident:
                self._changes[other] = {**session.stats(), "cached": resident}
                self._resident[other] = resident

    def _drop(self, doc: str) -> None:
        session = self._sessions.pop(doc, None)
        if session is not None:
            session.close()
        for table in (self._owners, self._applied, self._resident, self._changes):
            table.pop(doc, None)
