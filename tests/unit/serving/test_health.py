"""`pytei health URL`: what it prints for a healthy router, and each failure reason."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from pytei.cli import main
from pytei.serving.health import model_type_of, normalize_url
from tests.support.serving import free_port

INFO = {
    "model_id": "sentence-transformers/all-MiniLM-L6-v2",
    "model_sha": None,
    "model_dtype": "float32",
    "served_model_name": "all-MiniLM-L6-v2",
    "model_type": {"embedding": {"pooling": "mean"}},
    "max_concurrent_requests": 512,
    "max_input_length": 256,
    "max_batch_tokens": 16384,
    "max_batch_requests": 4,
    "max_client_batch_size": 32,
    "auto_truncate": True,
    "tokenization_workers": 1,
    "version": "1.9.3",
    "sha": "06670157fb6c",
    "docker_label": None,
}


@dataclass
class Router:
    """A minimal HTTP stand-in whose answers the test sets."""

    port: int
    health_status: int = 200
    api_key: str | None = None
    info: dict[str, object] = field(default_factory=lambda: dict(INFO))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve_router(router: Router) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                status, body = router.health_status, b""
            elif self.path == "/info":
                wanted = router.api_key and self.headers.get("Authorization") != f"Bearer {router.api_key}"
                status, body = (401, b"") if wanted else (200, json.dumps(router.info).encode())
            else:
                status, body = 404, b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", router.port), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


@pytest.fixture
def router() -> Iterator[Router]:
    state = Router(port=free_port())
    server = serve_router(state)
    yield state
    server.shutdown()
    server.server_close()


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    return run


def test_healthy_json(cli: Cli, router: Router) -> None:
    code, out, _ = cli("health", router.url, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["healthy"] is True
    assert report["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert report["model_type"] == "embedding" and report["pooling"] == "mean"
    assert report["max_input_length"] == 256
    assert report["max_batch_tokens"] == 16384
    assert report["max_client_batch_size"] == 32
    assert report["version"] == "1.9.3" and report["sha"] == "06670157fb6c"


def test_healthy_table(cli: Cli, router: Router) -> None:
    code, out, _ = cli("health", router.url.removeprefix("http://"))  # scheme optional
    assert code == 0
    for text in ("healthy", "all-MiniLM-L6-v2", "embedding (mean pooling)", "16384", "1.9.3", "06670157fb6c"):
        assert text in out


def test_refused(cli: Cli) -> None:
    code, out, err = cli("health", f"http://127.0.0.1:{free_port()}", "--json")
    assert code == 22
    assert json.loads(out)["reason"] == "refused"
    assert "connection refused" in err


def test_unhealthy_503(cli: Cli, router: Router) -> None:
    router.health_status = 503
    code, out, err = cli("health", router.url, "--json")
    assert code == 22 and json.loads(out)["reason"] == "unhealthy"
    assert "503" in err


def test_auth_needed(cli: Cli, router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    router.api_key = "right"
    code, out, err = cli("health", router.url, "--json")
    assert code == 22 and json.loads(out)["reason"] == "auth"
    assert "needs an API key" in err and "PYTEI_API_KEY" in err
    code, out, err = cli("health", router.url, "--json", "--api-key", "wrong")
    assert code == 22 and "refused" in err
    monkeypatch.setenv("PYTEI_API_KEY", "right")
    assert cli("health", router.url)[0] == 0


def test_timeout(cli: Cli) -> None:
    # Listening (connect succeeds) but never answering: a wedged router.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        started = time.monotonic()
        code, out, _ = cli("health", f"127.0.0.1:{sock.getsockname()[1]}", "--timeout", "0.3", "--json")
    assert code == 22 and json.loads(out)["reason"] == "timeout"
    assert time.monotonic() - started < 3


def test_not_a_tei_router(cli: Cli, router: Router) -> None:
    router.health_status = 404
    code, out, _ = cli("health", router.url, "--json")
    assert code == 22 and json.loads(out)["reason"] == "error"


def test_wait_until_healthy(cli: Cli) -> None:
    state = Router(port=free_port())
    servers: list[http.server.ThreadingHTTPServer] = []
    timer = threading.Timer(0.4, lambda: servers.append(serve_router(state)))
    timer.start()
    try:
        started = time.monotonic()
        code, _, err = cli("health", state.url, "--wait", "10")
        assert code == 0, err
        assert 0.3 < time.monotonic() - started < 5
    finally:
        timer.join()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_wait_gives_up(cli: Cli) -> None:
    started = time.monotonic()
    code, _, err = cli("health", f"127.0.0.1:{free_port()}", "--wait", "0.5")
    assert code == 22 and "after waiting 0.5s" in err
    assert 0.4 < time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [
        ({"embedding": {"pooling": "cls"}}, ("embedding", "cls")),
        ({"embedding": {"pooling": "splade"}}, ("splade", "splade")),
        ({"reranker": {"id2label": {"0": "LABEL_0"}}}, ("reranker", None)),
        ({"classifier": {"id2label": {"0": "a", "1": "b"}}}, ("classifier", None)),
        ("weird", ("unknown", None)),
    ],
)
def test_model_type_of(model_type: object, expected: tuple[str, str | None]) -> None:
    assert model_type_of({"model_type": model_type}) == expected


def test_normalize_url() -> None:
    assert normalize_url("127.0.0.1:8080/") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="not an http"):
        normalize_url("ftp://x")
