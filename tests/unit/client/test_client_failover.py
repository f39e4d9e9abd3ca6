"""Client over several routers: round robin, failover without waiting, a router left alone
after it fails and probed before it gets requests again, and only all-down waits."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from pytei.client import Client
from pytei.errors import TEIConnectionError, TEIValidationError


def embeds(server: Any) -> int:
    return sum(1 for r in server.requests if r.path == "/embed")


def test_requests_go_round_robin_over_the_routers(make_server: Callable[..., Any], make_client: Callable[..., Client]) -> None:
    a, b = make_server(), make_server()
    client = make_client([a.url, b.url], max_client_batch_size=32)
    for i in range(6):
        client.embed(f"text {i}")
    assert (embeds(a), embeds(b)) == (3, 3)


def test_a_stopped_router_fails_over_at_once_and_is_left_alone(
    make_server: Callable[..., Any], make_client: Callable[..., Client], sleeps: Any
) -> None:
    a, b = make_server(), make_server()
    client = make_client([a.url, b.url], max_client_batch_size=32)
    client.embed("warm")  # both answered once: a refusal afterwards is a restart
    client.embed("warm")
    a.stop()
    for i in range(10):
        assert client.embed(f"text {i}").vectors.shape == (1, 8)
    assert sleeps.delays == []  # failover, not retry: nobody waited
    assert client._transport.failovers == 1  # a is left alone after its first failure
    assert embeds(b) == 11


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_router_answering_unavailable_fails_over(
    fs: ModuleType, make_server: Callable[..., Any], make_client: Callable[..., Client], sleeps: Any, status: int
) -> None:
    a, b = make_server(), make_server()
    a.push("/embed", fs.Fault(status=status, body={"error": "down", "error_type": "Unhealthy"}))
    client = make_client([a.url, b.url], max_client_batch_size=32)
    assert client.embed("hello").vectors.shape == (1, 8)
    assert sleeps.delays == [] and embeds(b) == 1


def test_a_request_error_is_not_failed_over(fs: ModuleType, make_server: Callable[..., Any], make_client: Callable[..., Client]) -> None:
    a, b = make_server(), make_server()
    a.push("/embed", fs.Fault(status=422, body={"error": "too long", "error_type": "Validation"}))
    client = make_client([a.url, b.url], max_client_batch_size=32)
    with pytest.raises(TEIValidationError):
        client.embed("hello")
    assert embeds(b) == 0  # the same request would fail there too


def test_a_router_that_was_down_answers_health_before_it_gets_requests(
    fs: ModuleType, make_server: Callable[..., Any], make_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytei.client import _transport

    monkeypatch.setattr(_transport, "_DOWN_FIRST", 0.0)  # back at once, but only through /health
    a, b = make_server(), make_server()
    a.push("/embed", fs.Fault(status=503, body={"error": "down", "error_type": "Unhealthy"}))
    a.push("/health", fs.Fault(status=503, body=""))
    client = make_client([a.url, b.url], max_client_batch_size=32)
    client.embed("one")  # a: 503 -> b
    client.embed("two")  # a's /health 503 -> b
    client.embed("three")  # a's /health 200 -> a
    assert [r.path for r in a.requests] == ["/embed", "/health", "/health", "/embed"]
    assert embeds(b) == 2


def test_every_router_down_is_one_error_naming_them(make_server: Callable[..., Any], make_client: Callable[..., Client]) -> None:
    a, b = make_server(), make_server()
    urls = [a.url, b.url]
    a.stop()
    b.stop()
    client = make_client(urls, max_client_batch_size=32)
    with pytest.raises(TEIConnectionError) as raised:
        client.embed("hello")
    assert "could not connect" in raised.value.message or "every router is down" in raised.value.message


def test_bad_lists_of_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="empty list"):
        Client([])
    with pytest.raises(ValueError, match="same router twice"):
        Client(["http://127.0.0.1:1", "http://127.0.0.1:1/"])
    with pytest.raises(ValueError, match="http"):
        Client(["http://127.0.0.1:1", "ftp://x"])
