"""The load engine against the fake TEI on loopback: counts, bounds, errors, open-loop accounting."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import pytest

from pytei.bench.endpoint import Request, Target, build_request
from pytei.bench.loadgen import run_load
from pytei.bench.loadspec import LoadSpec, RunStats
from pytei.errors import BenchError

if TYPE_CHECKING:
    from tests.unit.bench.conftest import FakeTEI


def _requests(url: str, tokens: int = 0) -> list[Request]:
    target = Target.from_url(url)
    return [build_request(target, "/embed", b'{"inputs":"hello world"}', texts=1, tokens=tokens)]


def _run(url: str, **spec: Any) -> RunStats:
    return run_load(Target.from_url(url), _requests(url, tokens=4), LoadSpec(**spec))


def test_closed_loop_sends_exactly_the_requested_count(fake_tei: FakeTEI) -> None:
    stats = _run(fake_tei.url, concurrency=4, requests=200, warmup=0.0, duration=10.0)
    assert stats.issued == 200
    assert stats.succeeded == 200
    assert stats.errors == {}
    assert fake_tei.load_requests == 200
    assert stats.latency.count == 200
    assert stats.texts == 200 and stats.tokens == 800
    assert stats.max_connections_used == 4


def test_closed_loop_duration_bound_and_rate(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.delay = 0.01
    start = time.monotonic()
    stats = _run(fake_tei.url, concurrency=2, duration=0.5, warmup=0.0)
    took = time.monotonic() - start
    assert took < 1.5
    assert stats.elapsed_s == pytest.approx(0.5)
    # 2 connections x 0.5 s / 10 ms = at most ~100 requests; a loaded CI box does fewer.
    assert 20 <= stats.succeeded <= 110
    assert stats.latency.percentile_us(50) >= 10_000


def test_warmup_is_sent_but_not_counted(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.delay = 0.01
    stats = _run(fake_tei.url, concurrency=1, duration=0.3, warmup=0.3)
    assert stats.succeeded > 0
    # The server saw the warm-up requests too; the results did not.
    assert fake_tei.load_requests > stats.issued + 5
    assert stats.latency.count == stats.succeeded


def test_server_timing_headers_become_histograms(fake_tei: FakeTEI) -> None:
    stats = _run(fake_tei.url, concurrency=2, requests=50, warmup=0.0)
    assert stats.server["total"].percentile_us(50) == pytest.approx(5000, rel=0.002)
    assert stats.server["tokenization"].percentile_us(50) == pytest.approx(1000, rel=0.002)
    assert stats.server["queue"].percentile_us(99) == pytest.approx(2000, rel=0.002)
    assert stats.server["inference"].count == 50
    assert stats.server_tokens == 7 * 50


def test_status_errors_are_classified(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.statuses = [200, 429, 503, 200]
    stats = _run(fake_tei.url, concurrency=1, requests=40, warmup=0.0)
    assert stats.succeeded == 20
    assert stats.errors == {"http_429": 10, "http_503": 10}
    # Only successes are in the latency histogram and the server breakdown.
    assert stats.latency.count == 20
    assert stats.server["total"].count == 20


def test_timeouts_are_counted_and_bounded(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.hang = True
    start = time.monotonic()
    stats = _run(fake_tei.url, concurrency=2, duration=0.3, warmup=0.0, timeout=0.2)
    assert time.monotonic() - start < 2.0
    assert stats.succeeded == 0
    assert stats.errors.get("timeout", 0) >= 2
    assert stats.completed == stats.issued


def test_refused_connections_are_errors_not_a_busy_loop() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    start = time.monotonic()
    stats = _run(f"http://127.0.0.1:{port}", concurrency=2, duration=0.3, warmup=0.0, timeout=1.0)
    assert time.monotonic() - start < 2.0
    assert stats.succeeded == 0
    # Retries are spaced (50 ms), so a refusing server costs a bounded number of attempts.
    assert 2 <= stats.errors["connection"] <= 2 * (0.3 / 0.05 + 2)


def test_resets_are_connection_errors_and_the_run_reconnects(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.reset_every = 3
    stats = _run(fake_tei.url, concurrency=1, requests=30, warmup=0.0)
    assert stats.errors == {"connection": 10}
    assert stats.succeeded == 20
    assert stats.connections_opened >= 11


@pytest.mark.parametrize("mode", ["close", "chunked", "no_length"])
def test_response_framings(fake_tei: FakeTEI, mode: str) -> None:
    setattr(fake_tei.behavior, mode, True)
    stats = _run(fake_tei.url, concurrency=2, requests=30, warmup=0.0)
    assert stats.succeeded == 30, stats.errors
    if mode in ("close", "no_length"):
        assert stats.connections_opened >= 30


def test_open_loop_keeps_the_rate(fake_tei: FakeTEI) -> None:
    stats = _run(fake_tei.url, rate=200.0, duration=0.5, warmup=0.0)
    assert stats.issued == 100
    assert stats.succeeded == 100
    # Connections are opened on demand: each request that found none free opened one.
    assert stats.waited <= stats.connections_opened
    assert stats.schedule_lag.count == 100


def test_open_loop_counts_late_requests_against_a_slow_server(fake_tei: FakeTEI) -> None:
    # 200 req/s offered, 2 connections x 20 ms = 100 req/s served: the backlog grows.
    fake_tei.behavior.delay = 0.02
    stats = _run(fake_tei.url, rate=200.0, duration=0.5, warmup=0.0, max_connections=2, timeout=5.0)
    assert stats.issued == 100
    assert stats.succeeded == 100  # every due request was sent eventually, none skipped
    assert stats.max_connections_used == 2
    assert stats.waited >= 90
    assert stats.late >= 80
    # Latency runs from the due time, so it includes the wait: request i finishes near
    # i/100 s but was due at i/200 s, so the median is ~250 ms and the last ~500 ms.
    assert stats.latency.max_ms() > 400
    assert stats.latency.percentile_us(50) > 150_000
    assert stats.schedule_lag.max_ms() > 350
    # The server itself still says it took 5 ms.
    assert stats.server["total"].max_ms() == pytest.approx(5.0, rel=0.01)


def test_open_loop_queue_timeout_bounds_the_backlog(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.delay = 0.2
    start = time.monotonic()
    stats = _run(fake_tei.url, rate=100.0, duration=0.5, warmup=0.0, max_connections=1, timeout=0.3)
    assert time.monotonic() - start < 2.0
    assert stats.issued == 50
    assert stats.errors.get("queue_timeout", 0) > 20
    assert stats.completed == stats.issued


def test_requests_bound_stops_at_the_time_limit(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.delay = 0.01
    start = time.monotonic()
    stats = _run(fake_tei.url, concurrency=1, requests=1_000_000, duration=0.3, warmup=0.0)
    assert time.monotonic() - start < 1.5
    assert 5 <= stats.issued <= 31


def test_per_second_intervals(fake_tei: FakeTEI) -> None:
    fake_tei.behavior.delay = 0.005
    stats = _run(fake_tei.url, concurrency=2, duration=2.0, warmup=0.0)
    assert len(stats.interval_completed) == 2
    assert sum(stats.interval_completed) <= stats.succeeded
    assert min(stats.interval_completed) > 0
    assert all(5.0 <= m < 1000 for m in stats.interval_latency_ms)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(BenchError):
        LoadSpec()
    with pytest.raises(BenchError):
        LoadSpec(concurrency=2, rate=10.0)
    with pytest.raises(BenchError):
        LoadSpec(concurrency=0)
    with pytest.raises(BenchError):
        LoadSpec(rate=-1.0)
    with pytest.raises(BenchError):
        Target.from_url("https://127.0.0.1:8080")


def test_target_and_request_encoding() -> None:
    target = Target.from_url("http://127.0.0.1:9000/prefix/")
    assert target == Target("127.0.0.1", 9000, "/prefix")
    request = build_request(target, "/embed", b"{}", headers={"Authorization": "Bearer k"})
    head, _, body = request.data.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /prefix/embed HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n")
    assert b"Content-Length: 2" in head and b"Authorization: Bearer k" in head
    assert body == b"{}"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_event_loops_carry_the_load(fake_tei: FakeTEI, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # uvloop (used when installed, as on the GPU machine) hands over transports that are not
    # asyncio.Transport subclasses
    from pytei.bench import loadgen

    if loop == "asyncio":
        monkeypatch.setattr(loadgen, "_uvloop_new_event_loop", lambda: None)
    assert loadgen.event_loop_name() == loop
    stats = _run(fake_tei.url, concurrency=4, requests=100, warmup=0.0, duration=10.0)
    assert (stats.succeeded, stats.errors) == (100, {})
