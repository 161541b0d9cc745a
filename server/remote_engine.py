"""The engine on a pool (`kvsplice serve --engine URL`): the DocumentEngine API (kvsplice.pool.host)
over HTTP to a `kvsplice pool serve` deployment, with the standard library only (an editor's
machine needs no Ray).

Each call is one POST of JSON to `URL/<operation>`, made on the model worker's thread and
answered before the next. What crosses is what the engine API takes: open(text), edit(range, new
text, digest after), complete(cursor, digest, stop rule, ...), refresh, close. A whole text
crosses only to (re)open a document. Edits wait, in order, for their document's next request and
cross with it, so typing costs no round trip and an edit followed by a draft costs one. They are
numbered from the document's (re)open and sent again until an answer says the replica took them
(a request cancelled on the way may or may not have reached it); at most MAX_PENDING_EDITS wait,
then they go alone. Every request
for a document carries the routing header Ray Serve reads (`serve_multiplexed_model_id`), the
hash of this server's id and the document's uri, and the pool sends it to the replica that holds
that document (kvsplice.pool.routing).

Failures: a replica that does not hold the document, or holds another text, answers "unknown",
and so counts a replica that died during the request (Serve's plain 500, a reset connection):
the worker re-opens the document from the editor's text and retries once. A pool that cannot be
reached at all raises EngineUnavailable (the server answers RequestFailed). Cancelling a draft,
and a user's job waiting behind background work, closes the connection: Serve then cancels the
request on the replica, whose decode stops before its next token.
"""
from __future__ import annotations

import http.client
import json
import secrets
import select
import socket
import time
from collections import Counter
from typing import Callable
from urllib.parse import urlsplit

from tree_sitter import Parser

from kvsplice.engine import Cancelled, MemoryBudgetError
from kvsplice.pool.host import Changes, EngineUnavailable, Reopen, UnknownDocument, digest

from .syntax import GRAMMARS, BraceStop, IndentStop, Stop, grammar

ROUTING_HEADER = "serve_multiplexed_model_id"  # what Serve's proxy hands to the request router
TIMEOUT_S = 600.0  # longest wait for one answer (a re-open of a large window on a busy CPU pool)
POLL_S = 0.02  # how often a waiting call asks whether it is cancelled
KEEP_ALIVE_S = 2.0  # reuse a connection idle at most this long (the proxy closes idle ones after 5 s)
MAX_PENDING_EDITS = 64  # edits of one document that wait for its next request; then they go alone
ERRORS = {"unknown": UnknownDocument, "cancelled": Cancelled, "memory": MemoryBudgetError, "invalid": ValueError}


class RemoteEngine:
    """`owner` (random per server) keeps this server's documents apart from other editors' on a
    shared replica. `counts`: requests, "unknown" answers (a replica without the document's
    text), and re-opens (drafts that carried the text)."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineUnavailable(f"the engine URL must be http://HOST:PORT/PREFIX of `kvsplice pool serve`, "
                                    f"got {url!r}")
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._address = (parts.hostname, parts.port)
        self._prefix = parts.path.rstrip("/")
        self.owner = secrets.token_hex(8)
        self.counts: Counter[str] = Counter()
        self.replicas: dict[str, set[str]] = {}  # per document: every replica that answered for it
        self.reopens: Counter[str] = Counter()  # per document
        self._changes: Changes = {}
        self._edits: dict[str, list[dict]] = {}  # per document: edits no answer confirmed yet, in order
        self._numbered: Counter[str] = Counter()  # per document: edits since its (re)open
        self._conn: http.client.HTTPConnection | None = None
        self._idle_since = 0.0
        info = self._call("info", None, {})
        self.name, self.dtype, self.quant = info["model"], info["dtype"], info["quant"]
        self.device = f"{info['device']} at {self.url}"

    # -- the DocumentEngine API --------------------------------------------------------------

    def open(self, doc: str, text: str, options: dict, owner: str = "") -> None:
        self._forget_edits(doc)
        self._call("open", doc, {"text": text, "options": options})

    def encode(self, doc: str, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> bool:
        return self._call("encode", doc, {"budget": budget_tokens}, interrupt)

    def edit(self, doc: str, start: int, end: int, new_text: str, check: str) -> None:
        """Kept for the document's next request (see the module docstring)."""
        self._numbered[doc] += 1
        edits = self._edits.setdefault(doc, [])
        edits.append({"seq": self._numbered[doc], "start": start, "end": end, "text": new_text, "check": check})
        if len(edits) >= 4 * MAX_PENDING_EDITS:  # unconfirmed again and again: the pool is away
            self._lost(doc, f"{len(edits)} edits were never confirmed")
        if len(edits) >= MAX_PENDING_EDITS:
            self._call("edit", doc, {})

    def complete(self, doc: str, check: str, cursor: int, stop: Stop, *, max_new_tokens: int, n: int,
                 speculate: int, cancelled: Callable[[], bool] | None = None,
                 reopen: Reopen | None = None) -> list[str]:
        body = {"check": check, "cursor": cursor, "stop": wire_stop(stop), "max_new_tokens": max_new_tokens,
                "n": n, "speculate": speculate}
        if reopen is not None:  # its text has every edit so far
            self._forget_edits(doc)
            self.counts["reopens"] += 1
            self.reopens[doc] += 1
            body["reopen"] = {"text": reopen.text, "options": reopen.options}
        return self._call("complete", doc, body, cancelled)

    def refresh(self, doc: str, budget_tokens: int, interrupt: Callable[[], bool] | None = None) -> int:
        return self._call("refresh", doc, {"budget": budget_tokens}, interrupt)

    def close(self, doc: str) -> None:
        self.replicas.pop(doc, None)
        self.reopens.pop(doc, None)
        self._changes.pop(doc, None)
        self._forget_edits(doc)
        try:
            self._call("close", doc, {})
        except UnknownDocument:
            pass  # its replica is gone: nothing to close

    def set_budget(self, memory_budget_mb: float) -> None:
        """The pool's memory budget is the pool's (`kvsplice pool serve --memory-budget-mb`)."""

    def text(self, doc: str) -> str | None:
        try:
            return self._call("text", doc, {})
        except UnknownDocument:
            return None

    def take_changes(self, owner: str = "") -> Changes:
        taken, self._changes = self._changes, {}
        return taken

    # -- the wire ----------------------------------------------------------------------------

    def _call(self, op: str, doc: str | None, body: dict, stop: Callable[[], bool] | None = None):
        """One request (with the document's waiting edits) and its answer's result; raises what
        the replica raised (ERRORS)."""
        headers = {"Content-Type": "application/json"}
        if doc is not None:
            key = f"{self.owner}/{doc}"
            body = {**body, "doc": key, "owner": self.owner, "edits": self._edits.get(doc, [])}
            headers[ROUTING_HEADER] = digest(key)
            self.counts["requests"] += 1
        status, data = self._exchange(op, json.dumps(body).encode(), headers, stop)
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or (status != 200 and "error" not in reply):
            why = f"{status} {data[:200].decode(errors='replace')}"
            if doc is not None and status >= 500:
                self._lost(doc, f"the pool's replica failed during {op} ({why})")
            raise EngineUnavailable(f"the engine pool at {self.url} answered {op} with {why}")
        if doc is not None:
            self._take(doc, reply)
        if status == 200:
            return reply.get("result")
        if reply["error"] == "unknown":
            self.counts["unknown"] += 1
            self._forget_edits(doc)  # the document is re-opened from its text
        raise ERRORS.get(reply["error"], EngineUnavailable)(reply.get("message", reply["error"]))

    def _exchange(self, op: str, payload: bytes, headers: dict, stop: Callable[[], bool] | None) -> tuple[int, bytes]:
        """Send, wait (asking `stop` every POLL_S; True closes the connection: Cancelled), read."""
        try:
            conn = self._connection()
            conn.request("POST", f"{self._prefix}/{op}", payload, headers)
            deadline = time.monotonic() + self.timeout_s
            while not select.select([conn.sock], [], [], POLL_S)[0]:
                if stop is not None and stop():
                    self._disconnect()
                    raise Cancelled("cancelled while the pool worked on it")
                if time.monotonic() > deadline:
                    self._disconnect()
                    raise EngineUnavailable(f"the engine pool at {self.url} did not answer {op} "
                                            f"within {self.timeout_s:.0f} s")
            response = conn.getresponse()
            data = response.read()
        except (ConnectionRefusedError, socket.gaierror, socket.timeout) as exc:
            self._disconnect()
            raise EngineUnavailable(f"the engine pool at {self.url} cannot be reached: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._disconnect()
            return 502, f"connection lost: {type(exc).__name__}: {exc}".encode()
        if response.will_close:
            self._disconnect()
        self._idle_since = time.monotonic()
        return response.status, data

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is not None and time.monotonic() - self._idle_since > KEEP_ALIVE_S:
            self._disconnect()
        if self._conn is None:
            self._conn = self._connection_class(*self._address, timeout=self.timeout_s)
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _forget_edits(self, doc: str) -> None:
        self._edits.pop(doc, None)
        self._numbered.pop(doc, None)

    def _lost(self, doc: str, why: str) -> None:
        self.counts["unknown"] += 1
        self._forget_edits(doc)
        raise UnknownDocument(f"{doc}: {why}")

    def _take(self, doc: str, reply: dict) -> None:
        """Keep the answer's stats (keyed by this server's uris) and who answered; forget the
        edits it took."""
        if isinstance(reply.get("applied"), int) and doc in self._edits:
            self._edits[doc] = [e for e in self._edits[doc] if e["seq"] > reply["applied"]]
        replica = reply.get("replica")
        prefix = f"{self.owner}/"
        for key, stats in (reply.get("changes") or {}).items():
            uri = key[len(prefix):] if key.startswith(prefix) else None
            if uri is None or (uri != doc and uri not in self.replicas):
                continue
            seen = self.replicas.setdefault(uri, set())
            seen.add(stats.get("replica", replica))
            self._changes[uri] = {**stats, "pool": {"replica": stats.get("replica", replica),
                                                    "replicas": sorted(seen), "reopens": self.reopens[uri]}}


# -- stop rules on the wire --------------------------------------------------------------------

def wire_stop(stop: Stop) -> object:
    """A stop rule as JSON. A brace block's rule holds a syntax tree of the whole document; it
    crosses as where it applies, and the replica rebuilds it from the text it holds (the same as
    the editor's: the digest says so; a fresh parse equals the kept tree, test_documents)."""
    if stop == "line":
        return "line"
    if isinstance(stop, IndentStop):
        return {"indent": stop.header_width, "max_lines": stop.max_lines}
    if isinstance(stop, BraceStop):
        language_id = next(lid for lid in GRAMMARS if grammar(lid) is stop.language)
        return {"brace": language_id, "at": stop.at, "at_point": list(stop.at_point), "closed": stop.closed,
                "max_lines": stop.max_lines}
    raise ValueError(f"a remote engine takes the server's stop rules only, not {stop!r}")


def bind_stop(spec: object, text: str) -> Stop:
    """The stop rule `wire_stop` sent, against the document's text (on a replica)."""
    if spec == "line":
        return "line"
    if isinstance(spec, dict) and _fields(spec, indent=int, max_lines=int):
        return IndentStop(spec["indent"], spec["max_lines"])
    if isinstance(spec, dict) and _fields(spec, brace=str, at=int, at_point=list, closed=bool, max_lines=int) \
            and grammar(spec["brace"]) is not None and len(spec["at_point"]) == 2:
        language, source = grammar(spec["brace"]), text.encode()
        return BraceStop(language, Parser(language).parse(source), source, spec["at"], tuple(spec["at_point"]),
                         spec["closed"], spec["max_lines"])
    raise ValueError(f"not a stop rule: {spec!r} (expected \"line\", {{indent, max_lines}} or "
                     "{brace, at, at_point, closed, max_lines})")


def _fields(spec: dict, **kinds: type) -> bool:
    return set(spec) == set(kinds) and all(isinstance(spec[k], kind) and (kind is bool) == isinstance(spec[k], bool)
                                           for k, kind in kinds.items())
