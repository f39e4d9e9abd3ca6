"""Fixtures for the client's unit tests: a fault-injecting TEI look-alike and clients of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from pytei.client import Client, RetryPolicy
from tests.unit.client import fault_server


@pytest.fixture(scope="session")
def fs() -> ModuleType:
    """The fault_server module (Fault, FaultServer, vector, sparse, rerank_score...)."""
    return fault_server


@pytest.fixture
def make_server(fs: ModuleType) -> Iterator[Callable[..., Any]]:
    servers: list[Any] = []

    def make(**kwargs: Any) -> Any:
        server = fs.FaultServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Any]) -> Any:
    return make_server()


class SleepRecorder:
    """An injectable sleep: records the delays, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(sleeps: SleepRecorder) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(url: str, **kwargs: Any) -> Client:
        kwargs.setdefault("retries", RetryPolicy(max_retries=3, sleep=sleeps, random=lambda: 0.5))
        kwargs.setdefault("timeout", (2.0, 5.0))
        client = Client(url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(server: Any, make_client: Callable[..., Client]) -> Client:
    return make_client(server.url)
