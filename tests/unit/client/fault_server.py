"""A small TEI look-alike on 127.0.0.1 that can be told to misbehave, for the client's unit tests.

It answers every route with the shapes, status codes, error bodies and ``x-*`` headers that
the pinned router (v1.9.3, router/src/http/{server,types}.rs) sends, computed from the input
deterministically (so tests can predict values and order), and enforces the router's
``max_client_batch_size``, ``--api-key`` and ``--payload-limit`` rules.  Faults are scripted
per route: a queue of :class:`Fault` consumed one per request (429 with Retry-After, 503,
a reset before or in the middle of the response, a slow answer, any canned response).

Used by tests/unit/client/conftest.py (loaded by file path, so it works whatever the test
package layout) and runnable on its own for benchmark smoke tests:
``python tests/unit/client/fault_server.py --port 8090``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, cast

import numpy as np

DIM = 8
VOCAB = 30522
LABELS = {"0": "NEGATIVE", "1": "POSITIVE"}

INFO: dict[str, Any] = {  # the shape of a real /info (all-MiniLM-L6-v2 on candle CPU)
    "model_id": "/models/all-MiniLM-L6-v2",
    "model_sha": None,
    "model_dtype": "float32",
    "served_model_name": "/models/all-MiniLM-L6-v2",
    "model_type": {"embedding": {"pooling": "mean"}},
    "max_concurrent_requests": 512,
    "max_input_length": 256,
    "max_batch_tokens": 16384,
    "max_batch_requests": 4,
    "max_client_batch_size": 32,
    "auto_truncate": True,
    "tokenization_workers": 1,
    "version": "1.9.3",
    "sha": None,
    "docker_label": None,
}

# 35 geometric buckets x1.5 from 1.5e-5 s, as router/src/prometheus.rs builds them
DURATION_BUCKETS = [1e-5 * 1.5 ** (i + 1) for i in range(35)]


def vector(text: str, normalize: bool = True, dim: int = DIM) -> np.ndarray:
    """The embedding this server returns for ``text``."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    v = rng.standard_normal(DIM).astype(np.float32)[:dim]
    return v / np.linalg.norm(v) if normalize else v


def words(text: str) -> list[str]:
    return text.split()


def token_id(word: str) -> int:
    return 1000 + zlib.crc32(word.encode()) % 20000


def sparse(text: str) -> list[dict[str, float]]:
    weights: dict[int, float] = {}
    for w in words(text):
        weights[token_id(w)] = round(weights.get(token_id(w), 0.0) + 0.5 + len(w) / 10, 3)
    return [{"index": i, "value": weights[i]} for i in sorted(weights)]


def rerank_score(query: str, text: str) -> float:
    """Word overlap, broken by length: deterministic and easy to predict in tests."""
    shared = len(set(words(query)) & set(words(text)))
    score: float = round(1 / (1 + np.exp(-(shared - len(text) / 1000))), 6)
    return score


@dataclass
class Fault:
    """What to do instead of (or before) the normal answer, for one request."""

    status: int | None = None  # answer this status with ``body``/``headers``
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # RST the connection before answering
    reset_mid_body: bool = False  # send headers and half the body, then RST
    delay: float = 0.0  # sleep first (then the normal answer, or the canned one)


class _Reply(Exception):  # not an error: an early answer
    """Raised by input checks to answer at once with (status, headers, body)."""


@dataclass
class Ok:
    """A route's success: the JSON body and what the x-* headers report."""

    data: Any
    chars: int
    tokens: int
    batch: bool
    timed: bool = True  # /tokenize and /decode send no x-* headers and count in no metric


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    started: float
    finished: float = 0.0
    client_port: int = 0


def _error(status: int, message: str, error_type: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": message, "error_type": error_type}).encode()
    return status, {"Content-Type": "application/json"}, body


class FaultServer:
    """The server.  ``with FaultServer() as s: s.url``; script faults with :meth:`push`."""

    def __init__(
        self,
        *,
        info: dict[str, Any] | None = None,
        api_key: str | None = None,
        payload_limit: int = 2_000_000,
        delay: Callable[[Recorded], float] | None = None,
        port: int = 0,
    ) -> None:
        self.info = {**INFO, **(info or {})}
        self.api_key = api_key
        self.payload_limit = payload_limit
        self.delay = delay
        # a fault chosen from the request itself (e.g. fail the batch holding one text)
        self.on_request: Callable[[Recorded], Fault | None] | None = None
        self.requests: list[Recorded] = []
        self.keep_requests = True
        self.in_flight = 0
        self._connections: set[socket.socket] = set()
        self.max_in_flight = 0
        self._faults: dict[str, collections.deque[Fault]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._durations: list[float] = []
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="fault-server", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed router: no listener and every open connection closed."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def push(self, path: str, *faults: Fault) -> None:
        """Queue faults for ``path``; each request to it consumes one, then answers normally."""
        with self._lock:
            self._faults[path].extend(faults)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # --- dispatch ----------------------------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = Recorded(
            handler.command,
            handler.path,
            dict(handler.headers.items()),
            body,
            parsed,
            time.monotonic(),
            client_port=handler.client_address[1],
        )
        with self._lock:
            if self.keep_requests:
                self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            queue = self._faults.get(handler.path)
            fault = queue.popleft() if queue else None
        if fault is None and self.on_request is not None:
            try:
                fault = self.on_request(record)
            except Exception as exc:  # noqa: BLE001 - a bug in the test's hook: answer 500, keep the socket
                fault = Fault(status=500, body=repr(exc))
        try:
            self._answer(handler, record, fault)
        finally:
            with self._lock:
                self.in_flight -= 1
                record.finished = time.monotonic()

    def _answer(self, handler: _Handler, record: Recorded, fault: Fault | None) -> None:
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.reset:
            handler.reset()
            return
        if fault is not None and fault.status is not None:
            payload = fault.body
            if isinstance(payload, dict | list):
                payload = json.dumps(payload).encode()
            elif isinstance(payload, str):
                payload = payload.encode()
            handler.send(fault.status, {"Content-Type": "application/json", **fault.headers}, payload or b"")
            return
        if self.delay is not None:
            time.sleep(self.delay(record))
        try:
            status, headers, payload = self._route(record)
        except Exception as exc:  # noqa: BLE001 - a bug in this server: answer 500, do not hang the test
            status, headers, payload = 500, {"Content-Type": "text/plain"}, repr(exc).encode()
        if fault is not None and fault.reset_mid_body:
            handler.send_partial(status, headers, payload)
            return
        handler.send(status, headers, payload)

    def _route(self, r: Recorded) -> tuple[int, dict[str, str], bytes]:
        if len(r.body) > self.payload_limit:  # axum DefaultBodyLimit: plain text
            return (
                413,
                {"Content-Type": "text/plain; charset=utf-8"},
                b"Failed to buffer the request body: length limit exceeded",
            )
        public = r.path in ("/health", "/", "/ping", "/metrics")
        if (
            self.api_key is not None
            and not public
            and r.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            return 401, {}, b""
        if r.method == "GET":
            if r.path in ("/health", "/ping"):
                return 200, {}, b""
            if r.path == "/info":
                return 200, {"Content-Type": "application/json"}, json.dumps(self.info).encode()
            if r.path == "/metrics":
                return 200, {"Content-Type": "text/plain"}, self.render_metrics().encode()
            return 404, {}, b""
        handler = getattr(self, "_post_" + r.path.strip("/").replace("/", "_"), None)
        if handler is None:
            return 404, {}, b""
        if not isinstance(r.json, dict):  # axum Json rejection: plain text
            return 422, {"Content-Type": "text/plain; charset=utf-8"}, b"Failed to deserialize the JSON body"
        started = time.perf_counter()
        try:
            result = handler(r.json)
        except _Reply as reply:
            return cast("tuple[int, dict[str, str], bytes]", reply.args)
        if not isinstance(result, Ok):
            return cast("tuple[int, dict[str, str], bytes]", result)
        data, chars, tokens, batch = result.data, result.chars, result.tokens, result.batch
        if not result.timed:
            return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()
        elapsed = int((time.perf_counter() - started) * 1000)
        with self._lock:
            self._counts["batch" if batch else "single"] += 1
            self._durations.append(time.perf_counter() - started)
        headers = {
            "Content-Type": "application/json",
            "x-compute-type": "gpu+optimized",
            "x-compute-time": str(elapsed),
            "x-compute-characters": str(chars),
            "x-compute-tokens": str(tokens),
            "x-total-time": str(elapsed),
            "x-tokenization-time": "0",
            "x-queue-time": "1",
            "x-inference-time": "2",
        }
        return 200, headers, json.dumps(data).encode()

    # --- routes: each returns (data, characters, tokens, was_batch) or an error tuple ---------

    def _check_batch(self, n: int) -> tuple[int, dict[str, str], bytes] | None:
        if n == 0:
            return _error(400, "`inputs` cannot be empty", "Empty")
        limit = self.info["max_client_batch_size"]
        if n > limit:
            return _error(422, f"batch size {n} > maximum allowed batch size {limit}", "Validation")
        return None

    def _inputs(self, body: dict[str, Any], key: str = "inputs") -> tuple[list[str], bool]:
        """(texts, was a batch), or raise the router's error as a :class:`_Reply`."""
        value = body.get(key)
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _Reply(
                422, {"Content-Type": "text/plain; charset=utf-8"}, b"Failed to deserialize the JSON body"
            )
        error = self._check_batch(len(texts)) if not isinstance(value, str) else None
        if error:
            raise _Reply(*error)
        n = self.info["max_input_length"]
        if body.get("truncate") is False and any(len(words(t)) > n for t in texts):
            message = f"Input validation error: `inputs` must have less than {n} tokens. Given: {n + 1}"
            raise _Reply(*_error(422, message, "Validation"))
        return texts, not isinstance(value, str)

    def _kind(self) -> str:
        ((name, detail),) = self.info["model_type"].items()
        return "splade" if name == "embedding" and detail["pooling"] == "splade" else name

    def _post_embed(self, body: dict[str, Any]) -> Any:
        texts, batch = self._inputs(body)
        if self._kind() == "splade" and body.get("normalize", True):
            return _error(424, "Backend error: `normalize` is not available for SPLADE models", "Backend")
        if self._kind() not in ("embedding", "splade"):
            return _error(424, "Backend error: Model is not an embedding model", "Backend")
        dims = body.get("dimensions")
        if dims is not None and not 0 < dims <= DIM:
            return _error(422, "Input validation error: `dimensions` should be positive", "Validation")
        data = [vector(t, body.get("normalize", True), dims or DIM).tolist() for t in texts]
        return Ok(data, sum(map(len, texts)), sum(len(words(t)) + 2 for t in texts), batch)

    def _post_embed_all(self, body: dict[str, Any]) -> Any:
        texts, batch = self._inputs(body)
        data = [[vector(w, False).tolist() for w in ["[CLS]", *words(t), "[SEP]"]] for t in texts]
        return Ok(data, sum(map(len, texts)), sum(len(words(t)) + 2 for t in texts), batch)

    def _post_embed_sparse(self, body: dict[str, Any]) -> Any:
        texts, batch = self._inputs(body)
        if self._kind() != "splade":
            return _error(
                424, "Backend error: Model is not an embedding model with SPLADE pooling", "Backend"
            )
        return Ok([sparse(t) for t in texts], sum(map(len, texts)), sum(len(words(t)) for t in texts), batch)

    def _post_v1_embeddings(self, body: dict[str, Any]) -> Any:
        try:
            texts, batch = self._inputs(body, "input")
        except _Reply as reply:
            status, headers, payload = reply.args
            error = json.loads(payload) if payload.startswith(b"{") else None
            if error:  # the OpenAI route's own error shape
                payload = json.dumps(
                    {"message": error["error"], "code": status, "type": error["error_type"]}
                ).encode()
            return status, headers, payload
        dims = body.get("dimensions")
        data = []
        for i, t in enumerate(texts):
            v = vector(t, True, dims or DIM)
            if body.get("encoding_format") == "base64":
                embedding: Any = base64.b64encode(v.astype("<f4").tobytes()).decode()
            else:
                embedding = v.tolist()
            data.append({"object": "embedding", "embedding": embedding, "index": i})
        tokens = sum(len(words(t)) + 2 for t in texts)
        response = {
            "object": "list",
            "data": data,
            "model": self.info["served_model_name"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Ok(response, sum(map(len, texts)), tokens, batch)

    def _post_rerank(self, body: dict[str, Any]) -> Any:
        texts = body.get("texts") or []
        if not texts:
            return _error(400, "`texts` cannot be empty", "Empty")
        if self._kind() != "reranker":
            return _error(424, "Backend error: model is not a re-ranker model", "Backend")
        error = self._check_batch(len(texts))
        if error:
            return error
        ranks: list[dict[str, Any]] = [
            {"index": i, "score": rerank_score(body["query"], t)} for i, t in enumerate(texts)
        ]
        if body.get("return_text"):
            for rank in ranks:
                rank["text"] = texts[rank["index"]]
        # the router's sort: ascending (stable) then reversed
        ranks = sorted(ranks, key=lambda r: r["score"])[::-1]
        return Ok(ranks, sum(map(len, texts)), len(texts), True)

    def _predictions(self, seq: list[str]) -> list[dict[str, Any]]:
        score = (
            rerank_score(seq[0], seq[-1]) if len(seq) == 2 else (zlib.crc32(seq[0].encode()) % 1000) / 1000
        )
        if self._kind() == "reranker":
            return [{"score": score, "label": "LABEL_0"}]
        preds: list[dict[str, Any]] = [
            {"score": round(1 - score, 6), "label": LABELS["0"]},
            {"score": score, "label": LABELS["1"]},
        ]
        return sorted(preds, key=lambda p: p["score"])[::-1]

    def _post_predict(self, body: dict[str, Any]) -> Any:
        if self._kind() not in ("classifier", "reranker"):
            return _error(424, "Backend error: Model is not a classifier model", "Backend")
        inputs: Any = body.get("inputs")
        if isinstance(inputs, str):
            return Ok(self._predictions([inputs]), len(inputs), 1, False)
        if isinstance(inputs, list) and inputs and all(isinstance(s, str) for s in inputs):
            if len(inputs) > 2:
                return (
                    422,
                    {"Content-Type": "text/plain"},
                    b"Failed to deserialize the JSON body: invalid length 3",
                )
            return Ok(self._predictions(inputs), sum(map(len, inputs)), 2, False)
        error = self._check_batch(len(inputs or []))
        if error:
            return error
        return Ok([self._predictions(seq) for seq in inputs], 1, len(inputs), True)

    def _post_similarity(self, body: dict[str, Any]) -> Any:
        inputs = body["inputs"]
        sentences = inputs["sentences"]
        if not sentences:
            return _error(400, "`inputs.sentences` cannot be empty", "Empty")
        error = self._check_batch(len(sentences) + 1)
        if error:
            return error
        source = vector(inputs["source_sentence"])
        scores = [float(np.dot(source, vector(s))) for s in sentences]
        return Ok(scores, len(inputs["source_sentence"]), len(sentences) + 1, True)

    def _post_tokenize(self, body: dict[str, Any]) -> Any:
        texts, _ = self._inputs(body)
        out = []
        for text in texts:
            tokens: list[dict[str, Any]] = []
            special = body.get("add_special_tokens", True)
            if special:
                tokens.append({"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None})
            pos = 0
            for w in words(text):
                start = text.index(w, pos)
                pos = start + len(w)
                tokens.append({"id": token_id(w), "text": w, "special": False, "start": start, "stop": pos})
            if special:
                tokens.append({"id": 102, "text": "[SEP]", "special": True, "start": None, "stop": None})
            out.append(tokens)
        return Ok(out, 0, 0, True, timed=False)

    def _post_decode(self, body: dict[str, Any]) -> Any:
        ids = body["ids"]
        single = not ids or isinstance(ids[0], int)
        seqs = [ids] if single else ids
        if not single and (error := self._check_batch(len(seqs))) is not None:
            return error
        skip = body.get("skip_special_tokens", True)
        names = {101: "[CLS]", 102: "[SEP]"}
        texts = [" ".join(names.get(i, f"tok{i}") for i in seq if not (skip and i in names)) for seq in seqs]
        return Ok(texts, 0, 0, True, timed=False)

    # --- metrics -----------------------------------------------------------------------------

    def render_metrics(self) -> str:
        """``/metrics`` as metrics-exporter-prometheus renders it (TYPE lines, blank separators)."""
        with self._lock:
            counts = dict(self._counts)
            durations = list(self._durations)
        if not counts:
            return ""  # TEI registers metrics on first use
        lines = ["# TYPE te_request_count counter"]
        lines += [f'te_request_count{{method="{m}"}} {n}' for m, n in sorted(counts.items())]
        lines += ["", "# TYPE te_request_success counter"]
        lines += [f'te_request_success{{method="{m}"}} {n}' for m, n in sorted(counts.items())]
        lines += [
            "",
            "# TYPE te_queue_size gauge",
            "te_queue_size 0",
            "",
            "# TYPE te_request_duration histogram",
        ]
        for bound in DURATION_BUCKETS:
            lines.append(f'te_request_duration_bucket{{le="{bound!r}"}} {sum(d <= bound for d in durations)}')
        lines.append(f'te_request_duration_bucket{{le="+Inf"}} {len(durations)}')
        lines.append(f"te_request_duration_sum {sum(durations)!r}")
        lines.append(f"te_request_duration_count {len(durations)}")
        return "\n".join(lines) + "\n\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 makes bursts of connects wait for SYN retries
    owner: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away (a timeout test, a reset): not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the router: the client's pool is exercised
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stalls
    server: _Server

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner._connections.add(self.connection)

    def send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_partial(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.reset()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed or killed router would."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def finish(self) -> None:
        with self.server.owner._lock:
            self.server.owner._connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the socket was reset on purpose
            super().finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument("--max-client-batch-size", type=int, default=32)
    args = parser.parse_args()
    server = FaultServer(
        info={"max_client_batch_size": args.max_client_batch_size},
        delay=(lambda _r: args.latency_ms / 1000) if args.latency_ms else None,
        port=args.port,
    )
    server.keep_requests = False  # a long benchmark would otherwise keep every body
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
