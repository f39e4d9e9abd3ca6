"""One keep-alive HTTP/1.1 connection of the load engine: at most one request in flight, the
response parsed by httptools in protocol callbacks (no task or future per request)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

import httptools

if TYPE_CHECKING:
    from pytei.bench.endpoint import Request
    from pytei.bench.loadgen import _LoadRunner

__all__ = ["Connection"]


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, engine: _LoadRunner) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False
        self.measured = False
        self.request: Request | None = None
        self.due_ns = 0
        self.sent_ns = 0
        self.xh: dict[bytes, bytes] = {}
        self.framed = False  # the response says how long it is (length or chunked)
        self.headers_done = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport has asyncio.Transport's methods but is not its subclass
        self.transport = cast(asyncio.Transport, transport)
        self.engine.live += 1
        self.engine.on_ready(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.engine.on_failure(self, "protocol")

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.live -= 1
        self.engine.on_lost(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.xh = {}
        self.framed = False
        self.headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        first = name[:1]
        if first in (b"x", b"X"):
            self.xh[name.lower()] = value
        elif first in (b"c", b"C", b"t", b"T"):
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.engine.on_response(self, self.parser.get_status_code(), self.parser.should_keep_alive())

    def send(self, request: Request, due_ns: int, measured: bool) -> None:
        assert self.transport is not None
        self.busy = True
        self.request = request
        self.due_ns = due_ns
        self.measured = measured
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(request.data)

    def close(self, *, abort: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
