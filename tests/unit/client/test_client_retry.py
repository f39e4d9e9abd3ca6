"""Retries: which failures, how long between attempts (Retry-After, full jitter), when to stop."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from typing import Any

import pytest

from pytei.client import RetryPolicy, parse_retry_after
from pytei.errors import (
    TEIAuthError,
    TEIBackendError,
    TEIConnectionError,
    TEIOverloadedError,
    TEIPayloadTooLargeError,
    TEITimeoutError,
    TEIUnhealthyError,
    TEIValidationError,
)

OVERLOADED = {"error": "Model is overloaded", "error_type": "Overloaded"}
UNHEALTHY = {"error": "unhealthy", "error_type": "Unhealthy"}


def test_429_with_retry_after_seconds_then_success(server: Any, client: Any, fs: Any, sleeps: Any) -> None:
    server.push("/embed", *[fs.Fault(status=429, body=OVERLOADED, headers={"Retry-After": "2"})] * 2)
    result = client.embed("hello")
    assert result.vectors.shape == (1, fs.DIM)
    assert sleeps.delays == [2.0, 2.0]
    assert len(server.calls("/embed")) == 3


def test_retry_after_http_date(server: Any, client: Any, fs: Any, sleeps: Any) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.push("/embed", fs.Fault(status=429, body=OVERLOADED, headers={"Retry-After": when}))
    client.embed("hello")
    assert len(sleeps.delays) == 1 and 28.0 <= sleeps.delays[0] <= 31.0


def test_retry_after_beyond_the_cap_is_not_waited_for(
    server: Any, make_client: Any, fs: Any, sleeps: Any
) -> None:
    server.push("/embed", fs.Fault(status=503, body=UNHEALTHY, headers={"Retry-After": "3600"}))
    client = make_client(server.url, retries=RetryPolicy(max_retries=3, max_retry_after=60, sleep=sleeps))
    with pytest.raises(TEIUnhealthyError):
        client.embed("x")
    assert sleeps.delays == [] and len(server.calls("/embed")) == 1


def test_503_backoff_is_exponential_with_full_jitter(server: Any, client: Any, fs: Any, sleeps: Any) -> None:
    server.push("/embed", *[fs.Fault(status=503, body=UNHEALTHY)] * 3)
    client.embed("x")  # random() is 0.5 in these clients: half of 0.25 * 2**k
    assert sleeps.delays == [0.125, 0.25, 0.5]


def test_retries_run_out(server: Any, client: Any, fs: Any, sleeps: Any) -> None:
    server.push("/embed", *[fs.Fault(status=429, body=OVERLOADED)] * 10)
    with pytest.raises(TEIOverloadedError) as caught:
        client.embed("x")
    assert len(server.calls("/embed")) == 4  # the first attempt + max_retries=3
    assert len(sleeps.delays) == 3
    assert caught.value.status == 429


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (422, {"error": "Input validation error", "error_type": "Validation"}, TEIValidationError),
        (424, {"error": "Backend error", "error_type": "Backend"}, TEIBackendError),
        (413, "Failed to buffer the request body: length limit exceeded", TEIPayloadTooLargeError),
        (401, "", TEIAuthError),
    ],
)
def test_client_errors_are_never_retried(
    server: Any, client: Any, fs: Any, sleeps: Any, status: int, body: Any, cls: type[Exception]
) -> None:
    server.push("/embed", *[fs.Fault(status=status, body=body)] * 2)
    with pytest.raises(cls):
        client.embed("x")
    assert len(server.calls("/embed")) == 1 and sleeps.delays == []


def test_reset_before_the_response_is_retried(server: Any, client: Any, fs: Any, sleeps: Any) -> None:
    server.embed_ok = client.embed("warm")  # the router has answered this client once
    server.push("/embed", fs.Fault(reset=True), fs.Fault(reset=True))
    result = client.embed("hello")
    assert result.vectors.shape == (1, fs.DIM)
    assert len(sleeps.delays) == 2


def test_reset_in_the_middle_of_the_body_is_retried(server: Any, client: Any, fs: Any, sleeps: Any) -> None:
    server.push("/embed", fs.Fault(reset_mid_body=True))
    texts = [f"text {i}" for i in range(5)]
    result = client.embed(texts)
    assert result.vectors.shape == (5, fs.DIM)
    assert len(sleeps.delays) == 1


def test_reset_on_the_very_first_request_is_retried_too(
    server: Any, client: Any, fs: Any, sleeps: Any
) -> None:
    # a reset means the router is there (it accepted the connection): unlike "refused"
    server.push("/embed", fs.Fault(reset=True))
    client.embed("x")
    assert len(sleeps.delays) == 1


def test_read_timeout_is_not_retried(server: Any, make_client: Any, fs: Any, sleeps: Any) -> None:
    server.push("/embed", fs.Fault(delay=2.0))
    client = make_client(server.url, timeout=(1.0, 0.2))
    started = time.monotonic()
    with pytest.raises(TEITimeoutError, match="read timeout") as caught:
        client.embed("x")
    assert time.monotonic() - started < 1.5  # gave up at the timeout, not at the answer
    assert isinstance(caught.value, TimeoutError)  # the stdlib category too
    time.sleep(0.5)  # a resend, if any, would have arrived by now
    assert sleeps.delays == [] and len(server.calls("/embed")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_before_first_contact_fails_fast(make_client: Any, sleeps: Any) -> None:
    client = make_client(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(TEIConnectionError, match="could not connect") as caught:
        client.embed("x")
    assert sleeps.delays == []
    assert isinstance(caught.value, ConnectionError)


def test_connection_refused_after_contact_is_retried_until_the_router_is_back(
    make_client: Any, fs: Any
) -> None:
    port = _free_port()
    first = fs.FaultServer(port=port).start()
    restarted: list[Any] = []

    def sleep(_seconds: float) -> None:  # the router restarts while the client waits
        if len(restarted) == 0 and _seconds >= 0:
            restarted.append(None)
        elif len(restarted) == 1:
            restarted[0] = fs.FaultServer(port=port).start()
            restarted.append(True)

    client = make_client(first.url, retries=RetryPolicy(max_retries=4, sleep=sleep, random=lambda: 0.0))
    try:
        assert client.health()
        first.stop()
        result = client.embed("after restart")
        assert result.vectors.shape == (1, fs.DIM)
        assert len(restarted) == 2
    finally:
        if restarted and restarted[0] is not None:
            restarted[0].stop()


def test_connection_refused_after_contact_runs_out(server: Any, make_client: Any, sleeps: Any) -> None:
    client = make_client(server.url)
    client.health()
    server.stop()
    with pytest.raises(TEIConnectionError):
        client.embed("x")
    assert len(sleeps.delays) == 3


# --- the policy itself -------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("-1") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after(email.utils.formatdate(now + 120, usegmt=True), now=now) == pytest.approx(120)
    assert parse_retry_after(email.utils.formatdate(now - 120, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0


def test_full_jitter_bounds() -> None:
    top = RetryPolicy(backoff_base=0.5, backoff_max=3.0, random=lambda: 1.0)
    assert [top.backoff(k) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RetryPolicy(random=lambda: 0.0).backoff(4) == 0.0
    policy = RetryPolicy(backoff_base=0.1, backoff_max=1.0)
    samples = [policy.backoff(3) for _ in range(200)]
    assert all(0.0 <= s <= 0.8 for s in samples) and len(set(samples)) > 100
    assert policy.delay(3, None) is None  # max_retries=3: no fourth resend
    assert policy.delay(0, 5.0) == 5.0
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


def test_default_sleep_is_woken_by_cancellation() -> None:
    policy = RetryPolicy()
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    assert policy.wait(10.0, cancel) is False
    assert time.monotonic() - started < 2.0
    assert policy.wait(0.0, None) is True
    assert policy.wait(1.0, cancel) is False  # already cancelled: no wait at all
