"""LSP base-protocol framing read from a byte stream, forgiving wherever the input is unambiguous.

pygls' reader accepts only `Content-Length: N\\r\\n` exactly and never finds its way back once a
frame is wrong, which leaves a server alive but deaf. `Framer` instead:
- takes header names in any case, with or without a space after the colon, lines ending in
  CRLF or LF alone, and ignores headers other than Content-Length;
- treats anything else where a header should be as garbage, skips it to the next Content-Length
  header (also one in the middle of a line: `}}Content-Length: 5`) and reports what it skipped;
- ends a body early where its Content-Length was too long: at a Content-Length header inside it
  (no JSON text can hold one: it would need a raw line break inside a string), or as soon as the
  bytes so far are a whole JSON object (more could only make the body invalid). A too-short
  Content-Length gives a body that is not JSON (the caller answers Parse error) followed by
  garbage up to the next header.

`read_stdin` feeds it from a pipe on a daemon thread, so that a blocked read never keeps the
process alive.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import BinaryIO

HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n")
CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?\n", re.IGNORECASE)
CHUNK = 1 << 16


@dataclass(frozen=True)
class Garbage:
    """Bytes that were neither headers nor a body, skipped to find the next frame."""

    data: bytes


class Framer:
    """Bytes in (`feed`), frame bodies and skipped garbage out, in stream order."""

    def __init__(self):
        self._buffer = bytearray()
        self._length: int | None = None  # the Content-Length of the header block being read
        self._in_body = False
        self._scanned = 0  # body bytes already searched for an embedded header

    def feed(self, data: bytes) -> list[bytes | Garbage]:
        self._buffer += data
        out: list[bytes | Garbage] = []
        while (item := self._next()) is not None:
            out.append(item)
        return out

    def _next(self) -> bytes | Garbage | None:
        """The next body or garbage, or None until more bytes arrive."""
        buf = self._buffer
        while not self._in_body:
            end = buf.find(b"\n")
            if end < 0:
                return None
            line = bytes(buf[:end + 1])
            header = HEADER.fullmatch(line)
            is_length = header is not None and header[1].lower() == b"content-length"
            if not line.strip():  # the header block ends, or a stray blank line between frames
                del buf[:end + 1]
                if self._length is not None:
                    self._in_body, self._scanned = True, 0
            elif header and (not is_length or header[2].isdigit()):
                del buf[:end + 1]
                if is_length:
                    self._length = int(header[2])
            else:
                self._length = None
                found = CONTENT_LENGTH.search(buf, 1)
                skip = found.start() if found else buf.rfind(b"\n") + 1
                garbage = bytes(buf[:skip])
                del buf[:skip]
                return Garbage(garbage)
        return self._body()

    def _body(self) -> bytes | None:
        buf, length = self._buffer, self._length
        end = None
        if buf.find(b"\n", self._scanned) >= 0:  # only a line break that arrived can end a header
            found = CONTENT_LENGTH.search(buf, buf.rfind(b"\n", 0, self._scanned) + 1)
            if found and found.start() < length:
                end = found.start()
        if end is None and len(buf) >= length:
            end = length
        if end is None and buf[-64:].rstrip().endswith(b"}") and _is_object(buf):
            end = len(buf)
        if end is None:
            self._scanned = len(buf)
            return None
        body = bytes(buf[:end])
        del buf[:end]
        self._in_body, self._length = False, None
        return body


def _is_object(data: bytearray) -> bool:
    try:
        return isinstance(json.loads(data.decode()), dict)
    except (ValueError, RecursionError):
        return False


def read_stdin(stream: BinaryIO) -> "asyncio.Queue[bytes]":
    """A queue of the stream's chunks as they arrive, b"" at its end, filled by a daemon thread
    (must be called on the event loop that reads the queue)."""
    loop, chunks = asyncio.get_running_loop(), asyncio.Queue()
    fd = stream.fileno()

    def pump() -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            loop.call_soon_threadsafe(chunks.put_nowait, data)
            if not data:
                return

    threading.Thread(target=pump, name="kvsplice-stdin", daemon=True).start()
    return chunks
