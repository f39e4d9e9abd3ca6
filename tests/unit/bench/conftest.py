"""A small fault-injecting TEI look-alike on 127.0.0.1 for the bench tests.

It answers ``/info`` and ``/tokenize`` like TEI (whitespace tokens plus [CLS]/[SEP]) and every
other POST with what ``behavior`` says: a delay, a status (or a cycle of them), TEI's timing
headers, chunked or close-delimited bodies, ``Connection: close``, connection resets, or no
answer at all.  It runs its own event loop in a thread, so the engine under test (which runs
its own loop) talks to it over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest

TEI_HEADERS = {
    "x-compute-type": "gpu+optimized",
    "x-compute-time": "5",
    "x-compute-characters": "11",
    "x-compute-tokens": "7",
    "x-total-time": "5",
    "x-tokenization-time": "1",
    "x-queue-time": "2",
    "x-inference-time": "3",
}


@dataclass
class Behavior:
    delay: float = 0.0
    status: int = 200
    statuses: list[int] | None = None  # cycled per answered request
    headers: dict[str, str] = field(default_factory=lambda: dict(TEI_HEADERS))
    body: bytes = b"[[0.1,0.2,0.3]]"
    chunked: bool = False
    close: bool = False  # "Connection: close" and close after each response
    no_length: bool = False  # body delimited by closing the connection
    reset_every: int = 0  # abort the connection instead of answering every Nth request
    hang: bool = False  # never answer


def _info(port: int) -> dict[str, Any]:
    return {
        "model_id": "fake/MiniLM",
        "model_sha": None,
        "model_dtype": "float32",
        "model_type": {"embedding": {"pooling": "mean"}},
        "max_concurrent_requests": 512,
        "max_input_length": 256,
        "max_batch_tokens": 16384,
        "max_batch_requests": None,
        "max_client_batch_size": 32,
        "auto_truncate": False,
        "tokenization_workers": 1,
        "version": "1.9.3",
        "sha": "06670157fb6c1523482219bdb2d1660277d38088",
        "docker_label": None,
        "served_model_name": "fake-minilm",
    }


def _tokenize(texts: list[str]) -> list[list[dict[str, Any]]]:
    out = []
    for text in texts:
        tokens = [{"id": 101, "text": "[CLS]", "special": True}]
        tokens += [{"id": 1000 + i, "text": w, "special": False} for i, w in enumerate(text.split())]
        tokens.append({"id": 102, "text": "[SEP]", "special": True})
        out.append(tokens)
    return out


class _Handler(asyncio.Protocol):
    def __init__(self, server: FakeTEI) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body = b""
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.server.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.abort()

    def on_message_begin(self) -> None:
        self.url, self.body, self.headers = b"", b"", {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        server = self.server
        path = self.url.decode()
        method = self.parser.get_method().decode()
        server.paths[f"{method} {path}"] += 1
        server.auth_seen.add(self.headers.get(b"authorization", b"").decode())
        if server.api_key and self.headers.get(b"authorization") != f"Bearer {server.api_key}".encode():
            self.respond(401, b"", {})
            return
        if path.endswith("/info"):
            self.respond(200, json.dumps(server.info).encode(), {"content-type": "application/json"})
        elif path.endswith("/tokenize"):
            inputs = json.loads(self.body)["inputs"]
            texts = [inputs] if isinstance(inputs, str) else inputs
            self.respond(200, json.dumps(_tokenize(texts)).encode(), {"content-type": "application/json"})
        elif method == "POST":
            server.load_requests += 1
            server.bodies.append(self.body)
            self.load()
        else:
            self.respond(200, b"", {})

    def load(self) -> None:
        b = self.server.behavior
        number = self.server.load_requests
        assert self.transport is not None
        if b.reset_every and number % b.reset_every == 0:
            self.transport.abort()
            return
        if b.hang:
            return
        status = b.statuses[(number - 1) % len(b.statuses)] if b.statuses else b.status
        body = b.body if 200 <= status < 300 else b'{"error":"boom","error_type":"Backend"}'
        if b.delay:
            asyncio.get_running_loop().call_later(b.delay, self.respond, status, body, b.headers)
        else:
            self.respond(status, body, b.headers)

    def respond(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        b = self.server.behavior
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
        close = b.close or b.no_length
        if close:
            lines.append("connection: close")
        if b.chunked and not b.no_length:
            lines.append("transfer-encoding: chunked")
            half = len(body) // 2
            payload = b"".join(
                f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]) if p
            )
            payload += b"0\r\n\r\n"
        else:
            if not b.no_length:
                lines.append(f"content-length: {len(body)}")
            payload = body
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        if close:
            self.transport.close()


class FakeTEI:
    def __init__(self) -> None:
        self.behavior = Behavior()
        self.paths: Counter[str] = Counter()
        self.auth_seen: set[str] = set()
        self.bodies: list[bytes] = []
        self.load_requests = 0
        self.connections = 0
        self.transports: set[asyncio.Transport] = set()
        self.api_key: str | None = None
        self.port = 0
        self.info: dict[str, Any] = {}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        async def listen() -> asyncio.base_events.Server:
            return await self._loop.create_server(lambda: _Handler(self), "127.0.0.1", 0)

        self._server = self._loop.run_until_complete(listen())
        self.port = self._server.sockets[0].getsockname()[1]
        self.info = _info(self.port)
        self._thread.start()

    def stop(self) -> None:
        assert self._server is not None
        server = self._server

        async def close() -> None:
            server.close()
            # Connections accepted just before the close get their transports a little later.
            for _ in range(5):
                for transport in list(self.transports):
                    transport.abort()
                await asyncio.sleep(0.002)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def fake_tei() -> Iterator[FakeTEI]:
    server = FakeTEI()
    server.start()
    try:
        yield server
    finally:
        server.stop()
