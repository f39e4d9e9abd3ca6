"""Status + body -> typed error; health semantics; the API key never leaks."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from pytei.client import Client
from pytei.errors import (
    TEIAuthError,
    TEIBackendError,
    TEIConnectionError,
    TEIError,
    TEIOverloadedError,
    TEIPayloadTooLargeError,
    TEIRequestError,
    TEITimeoutError,
    TEIUnhealthyError,
    TEIValidationError,
)

SECRET = "sk-very-secret-4711"


def no_retry(make_client: Callable[..., Client], url: str, **kwargs: Any) -> Client:
    return make_client(url, retries=0, **kwargs)


@pytest.mark.parametrize(
    ("status", "body", "cls", "error_type", "in_message"),
    [
        (
            422,
            {
                "error": "Input validation error: `inputs` must have less than 256 tokens. Given: 300",
                "error_type": "Validation",
            },
            TEIValidationError,
            "Validation",
            "must have less than 256 tokens",
        ),
        (
            422,
            {"error": "tokenizer error: bad", "error_type": "Tokenizer"},
            TEIValidationError,
            "Tokenizer",
            "bad",
        ),
        (
            424,
            {
                "error": "Backend error: Model is not an embedding model with SPLADE pooling",
                "error_type": "Backend",
            },
            TEIBackendError,
            "Backend",
            "SPLADE",
        ),
        (
            429,
            {"error": "Model is overloaded", "error_type": "Overloaded"},
            TEIOverloadedError,
            "Overloaded",
            "overloaded",
        ),
        (503, {"error": "unhealthy", "error_type": "Unhealthy"}, TEIUnhealthyError, "Unhealthy", "unhealthy"),
        (
            400,
            {"error": "`inputs` cannot be empty", "error_type": "Empty"},
            TEIRequestError,
            "Empty",
            "empty",
        ),
        (
            413,
            "Failed to buffer the request body: length limit exceeded",
            TEIPayloadTooLargeError,
            None,
            "length limit exceeded",
        ),
        (401, "", TEIAuthError, None, "(empty body)"),
        (
            415,
            "Expected request with `Content-Type: application/json`",
            TEIRequestError,
            None,
            "Content-Type",
        ),
        (500, "boom", TEIError, None, "boom"),
    ],
)
def test_status_and_body_map_to_the_error_class(
    server: Any,
    make_client: Any,
    fs: Any,
    status: int,
    body: Any,
    cls: type[TEIError],
    error_type: str | None,
    in_message: str,
) -> None:
    headers = {"Content-Type": "text/plain; charset=utf-8"} if isinstance(body, str) else {}
    server.push("/embed", fs.Fault(status=status, body=body, headers=headers))
    client = no_retry(make_client, server.url)
    with pytest.raises(cls) as caught:
        client.embed("x")
    error = caught.value
    assert type(error) is cls  # the most specific class, not just a base
    assert error.status == status
    assert error.error_type == error_type
    assert error.url == f"{server.url}/embed"
    assert in_message in str(error)
    assert f"-> {status}" in str(error)
    assert error.batch_index is None


def test_424_is_a_backend_error_not_an_unhealthy_one_and_not_retried(
    server: Any, make_client: Any, fs: Any, sleeps: Any
) -> None:
    server.push("/embed", fs.Fault(status=424, body={"error": "x", "error_type": "Backend"}))
    client = make_client(server.url)
    with pytest.raises(TEIBackendError) as caught:
        client.embed("x")
    assert not isinstance(caught.value, TEIUnhealthyError)  # the router is healthy; this request is not
    assert len(server.calls("/embed")) == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (500, "Backend", TEIBackendError),  # the kind decides, whatever the status
        (400, "Validation", TEIValidationError),
        (422, "Overloaded", TEIOverloadedError),
        (503, None, TEIUnhealthyError),  # no kind: the status decides
        (422, "NotAKind", TEIValidationError),
    ],
)
def test_error_type_is_read_before_the_status(
    server: Any, make_client: Any, fs: Any, status: int, error_type: str | None, cls: type[TEIError]
) -> None:
    body = {"error": "x"} | ({"error_type": error_type} if error_type else {})
    server.push("/embed", fs.Fault(status=status, body=body))
    with pytest.raises(cls) as caught:
        no_retry(make_client, server.url).embed("x")
    assert type(caught.value) is cls and caught.value.status == status


def test_real_router_bodies_from_the_fake(make_server: Any, make_client: Any) -> None:
    # the fake computes these as the router would: SPLADE route on a dense model, batch limit
    server = make_server(info={"max_client_batch_size": 2})
    client = no_retry(make_client, server.url, max_client_batch_size=8)  # a stale, larger limit
    with pytest.raises(TEIBackendError, match="SPLADE pooling"):
        client.embed_sparse("x")
    with pytest.raises(TEIValidationError, match="batch size 3 > maximum allowed batch size 2") as caught:
        client.embed(["a", "b", "c"])
    assert caught.value.hint is not None and "max_client_batch_size" in caught.value.hint
    with pytest.raises(TEIValidationError, match="less than 256 tokens"):
        client.embed(" ".join(["w"] * 300), truncate=False)


def test_openai_route_error_shape(make_server: Any, make_client: Any) -> None:
    server = make_server(info={"max_client_batch_size": 1})
    client = no_retry(make_client, server.url, max_client_batch_size=4)
    with pytest.raises(TEIValidationError, match="batch size 2") as caught:
        client.openai_embed(["a", "b"])
    assert caught.value.error_type == "Validation"


def test_payload_limit_gives_413_plain_text(make_server: Any, make_client: Any) -> None:
    server = make_server(payload_limit=1000)
    client = no_retry(make_client, server.url)
    with pytest.raises(TEIPayloadTooLargeError, match="length limit exceeded") as caught:
        client.embed("x" * 2000)
    assert caught.value.hint is not None and "--payload-limit" in caught.value.hint


def test_unexpected_bodies_are_tei_errors(server: Any, make_client: Any, fs: Any) -> None:
    client = no_retry(make_client, server.url)
    server.push("/embed", fs.Fault(status=200, body="<html>not json</html>"))
    with pytest.raises(TEIError, match="not JSON"):
        client.embed("x")
    server.push("/embed", fs.Fault(status=200, body=[[1.0], [2.0]]), fs.Fault(status=200, body={"a": 1}))
    with pytest.raises(TEIError, match="sent 1 inputs but got 2"):
        client.embed("x")
    with pytest.raises(TEIError, match="unexpected response"):
        client.embed("x")
    server.push("/metrics", fs.Fault(status=200, body="this is { not prometheus"))
    with pytest.raises(TEIError, match="not Prometheus text"):
        client.metrics()


# --- health ------------------------------------------------------------------------------------


def test_health_true_false_and_raise(server: Any, make_client: Any, fs: Any, sleeps: Any) -> None:
    client = make_client(server.url)
    assert client.health() is True
    server.push("/health", fs.Fault(status=503, body={"error": "unhealthy", "error_type": "Unhealthy"}))
    assert client.health() is False
    assert sleeps.delays == []  # a probe is never retried
    server.push("/health", fs.Fault(status=404, body=""))
    with pytest.raises(TEIRequestError):
        client.health()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TEIConnectionError, match="could not connect") as caught:
        make_client(f"http://127.0.0.1:{port}").health()
    assert caught.value.hint is not None and "pytei health" in caught.value.hint


def test_health_timeout_raises(server: Any, make_client: Any, fs: Any) -> None:
    server.push("/health", fs.Fault(delay=0.5))
    client = make_client(server.url, timeout=(1.0, 0.1))
    with pytest.raises(TEITimeoutError):
        client.health()


# --- secrets -----------------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_and_never_shown(
    make_server: Any, make_client: Any, fs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(api_key=SECRET)
    client = make_client(server.url, api_key=SECRET)
    assert SECRET not in repr(client) and "api_key=***" in repr(client)
    assert SECRET not in repr(vars(client)) and SECRET not in repr(vars(client._transport))
    client.embed(["a", "b"])
    assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in server.requests)

    # errors of every kind: status, reset (with its chained requests exception), timeout
    server.push(
        "/embed", fs.Fault(status=429, body={"error": "Model is overloaded", "error_type": "Overloaded"})
    )
    server.push("/embed", *[fs.Fault(reset=True)] * 4)
    server.push("/embed", fs.Fault(delay=0.4))
    errors = []
    for _ in range(3):
        with pytest.raises(TEIError) as caught:
            make_client(server.url, api_key=SECRET, retries=0, timeout=(1.0, 0.2)).embed("x")
        errors.append(caught.value)
    for error in errors:
        text = "".join(traceback.format_exception(error))
        assert SECRET not in text
        assert SECRET not in repr(error.args) and SECRET not in (error.hint or "")
        cause = error.__cause__
        assert cause is None or getattr(cause, "request", None) is None
    assert SECRET not in caplog.text
    assert any("pytei.client" in r.name for r in caplog.records)  # it does log, without the key


def test_wrong_or_missing_key_is_an_auth_error(make_server: Any, make_client: Any) -> None:
    server = make_server(api_key=SECRET)
    with pytest.raises(TEIAuthError) as caught:
        make_client(server.url).embed("x")
    assert caught.value.status == 401 and caught.value.hint is not None and "api_key" in caught.value.hint
    with pytest.raises(TEIAuthError):
        make_client(server.url, api_key="wrong").info()
    assert make_client(server.url).health() is True  # /health is public


def test_api_key_from_environment(
    make_server: Any, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(api_key=SECRET)
    monkeypatch.setenv("PYTEI_API_KEY", SECRET)
    client = make_client(server.url)
    assert client.info().kind == "embedding"
    assert SECRET not in repr(client)
    with pytest.raises(TEIAuthError):
        make_client(server.url, api_key="").info()  # "" opts out of the environment's key


def test_url_user_info_is_never_shown(server: Any, make_client: Any) -> None:
    url = server.url.replace("http://", "http://user:pa55word@")
    client = make_client(url, retries=0)
    assert "pa55word" not in repr(client)
    with pytest.raises(ValueError, match="user info"):
        Client(url, api_key="k")


def test_bad_base_url() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:8080")


def test_closed_client_refuses_calls(server: Any) -> None:
    with Client(server.url) as client:
        assert client.health()
    with pytest.raises(TEIError, match="closed"):
        client.embed("x")
