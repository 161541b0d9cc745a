"""`kvsplice pool serve`: a Ray Serve deployment whose replicas each hold an Engine and many
editors' documents (a Host), behind Serve's HTTP proxy at `http://HOST:PORT/kvsplice`.

A request is `POST /kvsplice/<operation>` with a JSON body (the client is the server's
remote_engine.py); its answer is `{"result", "changes", "replica"}`, or `{"error": unknown |
cancelled | memory | invalid | internal, "message", "changes", "replica"}` with a 4xx/5xx status.
Requests for a document go to the replica that holds it (routing.py). On a replica, every
operation runs on one model thread (jobs.py) in arrival order; opens, edits and drafts are urgent,
so first-encode slices and refreshes from any editor give way to them between two layers. When
the client goes away (a cancelled draft), Serve cancels the request here: its edits are applied
all the same, and the decode stops before its next token.

Stop rules arrive as data and are bound to the document's text by `bind_stop`, which the caller
gives (the server side owns the syntax trees): the pool imports the engine only.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Callable

import torch
from ray import serve
from ray.serve.config import RequestRouterConfig
from starlette.requests import Request
from starlette.responses import JSONResponse

from kvsplice.engine import Cancelled, Engine, MemoryBudgetError

from .host import Host, Reopen, Stop, UnknownDocument
from .jobs import ModelThread
from .routing import ROUTERS

log = logging.getLogger(__name__)
# Each operation's body: field -> type (bool is not an int here). Every operation on a document
# also takes "edits": the document's edits that the client has not seen answered yet, numbered
# from its (re)open ({seq, start, end, text, check} each); those the session has not taken are
# applied in order before the operation, and every answer says how many it took ("applied").
OPERATIONS = {
    "open": {"text": str, "options": dict},
    "encode": {"budget": int},
    "edit": {},
    "complete": {"check": str, "cursor": int, "stop": object, "max_new_tokens": int, "n": int, "speculate": int},
    "refresh": {"budget": int},
    "close": {},
    "text": {},
}
DOCUMENT = {"doc": str, "owner": str, "edits": list}
EDIT = {"seq": int, "start": int, "end": int, "text": str, "check": str}
CONSTRUCTOR_RETRIES = 2  # per replica: a model that does not load fails the deploy soon, with its error
URGENT = {"open", "edit", "complete"}  # what an editor waits on
STATUS = {UnknownDocument: (404, "unknown"), Cancelled: (409, "cancelled"), MemoryBudgetError: (507, "memory"),
          ValueError: (400, "invalid")}


@dataclass(frozen=True)
class PoolConfig:
    """What `kvsplice pool serve` deploys: flags, or a JSON file of these keys."""

    model: str = "smollm2-135m"
    replicas: int = 1
    num_gpus: float = 0.0  # per replica; > 0 places replicas on GPU nodes and defaults device to cuda
    num_cpus: float = 1.0  # per replica
    device: str = ""  # "": cuda when num_gpus > 0, else cpu
    dtype: str = "float32"
    quant: str = "auto"
    threads: int = 1  # torch CPU threads per replica
    memory_budget_mb: float = 2048  # KV caches per replica
    max_documents: int = 1024  # sessions per replica; least recently used are closed first
    max_ongoing_requests: int = 256  # per replica: editors waiting on it, roughly
    routing: str = "affinity"  # or "random" (the benchmark's baseline)
    host: str = "127.0.0.1"  # where Serve's HTTP proxy listens (0.0.0.0 for other machines)
    port: int = 8000
    name: str = "kvsplice"  # the Serve application, and the URL's path

    def __post_init__(self):
        for key in ("replicas", "max_documents", "max_ongoing_requests", "port"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"pool setting {key!r} must be a positive integer, got {getattr(self, key)!r}")
        for key in ("num_gpus", "num_cpus", "memory_budget_mb", "threads"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) < 0:
                raise ValueError(f"pool setting {key!r} must be a number, 0 or more, got {getattr(self, key)!r}")
        if self.routing not in ROUTERS:
            raise ValueError(f"pool setting 'routing' must be one of {', '.join(ROUTERS)}, got {self.routing!r}")
        if not self.name.isidentifier():
            raise ValueError(f"pool setting 'name' must be a plain identifier, got {self.name!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "PoolConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown pool settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/{self.name}"


class Replica:
    """One Engine and its Host; operations run on one model thread."""

    def __init__(self, config: PoolConfig, bind_stop: Callable[[object, str], Stop]):
        if config.threads:
            torch.set_num_threads(config.threads)
        device = config.device or ("cuda" if config.num_gpus else "cpu")
        engine = Engine.load(config.model, device=device, dtype=config.dtype, quant=config.quant,
                             memory_budget_mb=config.memory_budget_mb)
        self.host = Host(engine, config.max_documents, bind_stop)
        self.thread = ModelThread("kvsplice-replica")
        self.id = serve.get_replica_context().replica_id.unique_id
        self.info = {"model": engine.name, "device": str(engine.device), "quant": engine.quant,
                     "dtype": str(engine.dtype).removeprefix("torch."), "replica": self.id}

    async def __call__(self, request: Request) -> JSONResponse:
        op = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if op == "info":
            return JSONResponse({"result": self.info, "replica": self.id})
        try:
            body = _checked(op, await request.json())
        except ValueError as exc:
            return JSONResponse({"error": "invalid", "message": str(exc), "replica": self.id}, 400)
        stopped = threading.Event()
        job = self.thread.submit(self._run, op, body, stopped, urgent=op in URGENT)
        try:
            status, reply = await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:  # the client went away: the job still applies the request's
            stopped.set()               # edits, and a decode stops before its next token
            raise
        return JSONResponse(reply, status)

    def _run(self, op: str, body: dict, stopped: threading.Event) -> tuple[int, dict]:
        """On the model thread: the operation, then the stats it changed for the caller's documents."""
        try:
            for edit in body["edits"]:  # even when the client went away: edits are never lost
                if edit["seq"] > self.host.applied(body["doc"]):
                    self.host.edit(body["doc"], edit["start"], edit["end"], edit["text"], edit["check"])
            if stopped.is_set():
                raise Cancelled("the client went away")
            status, reply = 200, {"result": getattr(self, f"_{op}")(body, stopped)}
        except tuple(STATUS) as exc:
            status, kind = next(STATUS[kind] for kind in STATUS if isinstance(exc, kind))
            reply = {"error": kind, "message": str(exc)}
        except Exception as exc:  # a bug: said as such, and the replica serves on
            log.exception("%s failed", op)
            status, reply = 500, {"error": "internal", "message": f"{type(exc).__name__}: {exc}"}
        reply["changes"] = {doc: {**stats, "replica": self.id}
                            for doc, stats in self.host.take_changes(body["owner"]).items()}
        reply["replica"] = self.id
        if self.host.text(body["doc"]) is not None:
            reply["applied"] = self.host.applied(body["doc"])
        return status, reply

    def _interrupt(self, stopped: threading.Event) -> Callable[[], bool]:
        return lambda: stopped.is_set() or self.thread.queued()

    def _open(self, body: dict, stopped: threading.Event) -> None:
        self.host.open(body["doc"], body["text"], body["options"], body["owner"])

    def _encode(self, body: dict, stopped: threading.Event) -> bool:
        return self.host.encode(body["doc"], body["budget"], self._interrupt(stopped))

    def _edit(self, body: dict, stopped: threading.Event) -> None:
        """Nothing more: the request's edits are applied before every operation."""

    def _complete(self, body: dict, stopped: threading.Event) -> list[str]:
        reopen = body.get("reopen")
        if reopen is not None:
            if not (isinstance(reopen, dict) and isinstance(reopen.get("text"), str)
                    and isinstance(reopen.get("options"), dict) and len(reopen) == 2):
                raise ValueError('reopen must be {"text": string, "options": object}')
            reopen = Reopen(reopen["text"], reopen["options"], body["owner"])
        return self.host.complete(body["doc"], body["check"], body["cursor"], body["stop"],
                                  max_new_tokens=body["max_new_tokens"], n=body["n"], speculate=body["speculate"],
                                  cancelled=stopped.is_set, reopen=reopen)

    def _refresh(self, body: dict, stopped: threading.Event) -> int:
        return self.host.refresh(body["doc"], body["budget"], self._interrupt(stopped))

    def _close(self, body: dict, stopped: threading.Event) -> None:
        self.host.close(body["doc"])

    def _text(self, body: dict, stopped: threading.Event) -> str | None:
        return self.host.text(body["doc"])


def _checked(op: str, body: object) -> dict:
    """The body if it has the operation's fields with their types (a draft may add reopen)."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}; operations: info, {', '.join(OPERATIONS)}")
    _fields(op, body, {**DOCUMENT, **OPERATIONS[op]}, {"reopen"} if op == "complete" else set())
    for edit in body["edits"]:
        _fields(f"{op}'s edit", edit, EDIT)
    return body


def _fields(what: str, value: object, fields: dict, optional: set = frozenset()) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{what} takes a JSON object, got {type(value).__name__}")
    missing, extra = sorted(set(fields) - set(value)), sorted(set(value) - set(fields) - optional)
    if missing or extra:
        raise ValueError(f"{what}: missing fields {missing}, unknown fields {extra}")
    for key, kind in fields.items():
        if not isinstance(value[key], kind) or (kind is int and isinstance(value[key], bool)):
            raise ValueError(f"{what}: field {key!r} must be {kind.__name__}, got {value[key]!r}")


def application(config: PoolConfig, bind_stop: Callable[[object, str], Stop], replica: type = Replica,
                router: type | str | None = None):
    """The Serve application: `config.replicas` replicas of `replica`, routed by `router` (default:
    `config.routing`'s; `kvsplice bench pool` also measures Serve's own with a multiplexed replica)."""
    deployment = serve.deployment(replica, name="Replica").options(
        num_replicas=config.replicas, max_ongoing_requests=config.max_ongoing_requests,
        max_constructor_retry_count=CONSTRUCTOR_RETRIES,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        request_router_config=RequestRouterConfig(request_router_class=router or ROUTERS[config.routing]))
    return deployment.bind(config, bind_stop)


def deploy(config: PoolConfig, bind_stop: Callable[[object, str], Stop], **variant) -> str:
    """Run the pool on the Ray instance this process is connected to (ray.init first), replacing
    one of the same name; returns its URL once every replica has loaded the model. `variant`:
    `application`'s replica and router."""
    serve.start(http_options={"host": config.host, "port": config.port},
                logging_config={"enable_access_log": False})
    serve.run(application(config, bind_stop, **variant), name=config.name, route_prefix=f"/{config.name}")
    return config.url
