"""The load engine: a lean HTTP/1.1 keep-alive client on ``asyncio.Protocol`` and httptools.

Everything per request happens in protocol callbacks (no task or future per request), the
request bytes are encoded once up front, and each connection has at most one request in
flight, so one core drives thousands of requests per second.

Two disciplines:

- closed loop (``concurrency=N``): N connections, each sends its next request as soon as the
  previous response is complete.  Latency runs from the send.
- open loop (``rate=R``): requests are *due* at ``t0 + i/R`` whatever the server does.
  Latency runs from the due time, so time a request spent waiting in the generator (for a
  free connection, or for a late event loop) is part of its latency: no coordinated
  omission.  A request sent more than ``late_after_ms`` after its due time is counted as late;
  one that found every connection busy is counted as waited and queued, never skipped.
  Connections are opened on demand up to ``max_connections``.

A request belongs to the results when it was due (closed loop: sent) inside the measurement
window ``[t0 + warmup, t0 + warmup + duration)``; requests before it are warm-up.  Every run is
bounded: no request is due after the window (or after ``requests`` measured ones), and the run
ends at the latest ``timeout`` after the window, counting whatever is still unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import resource
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

from pytei.bench._conn import Connection
from pytei.bench.endpoint import Request, Target
from pytei.bench.histogram import LatencyHistogram
from pytei.bench.loadspec import SERVER_HEADERS, LoadSpec, Progress, RunStats
from pytei.errors import BenchError

__all__ = ["event_loop_name", "run_load", "run_load_async"]

logger = logging.getLogger(__name__)

_TOKENS_HEADER = b"x-compute-tokens"
_CONNECT_RETRY_S = 0.05
_TICK_S = 0.05
_NS = 1_000_000_000


class _LoadRunner:
    def __init__(
        self,
        target: Target,
        requests: Sequence[Request],
        spec: LoadSpec,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        if not requests:
            raise BenchError("nothing to send: the workload has no requests")
        self.loop = asyncio.get_running_loop()
        self.target = target
        self.requests = list(requests)
        self.spec = spec
        self.progress = progress
        self.stats = RunStats(
            spec=spec, server={name: LatencyHistogram() for name in SERVER_HEADERS.values()}
        )
        self.server_hists = [(header, self.stats.server[name]) for header, name in SERVER_HEADERS.items()]
        self.open_loop = spec.rate is not None
        self.conns: set[Connection] = set()
        self.idle: list[Connection] = []
        self.pending: deque[int] = deque()
        self.connecting = 0
        self.live = 0  # transports whose connection_lost has not run yet
        self.connect_tasks: set[asyncio.Task[Any]] = set()
        self.inflight = 0
        self.next_index = 0
        self.sending_over = False
        self.stopped_by_window = False
        self.last_done_ns = 0
        self.last_progress_ns = 0
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.timeout_ns = int(spec.timeout * _NS)
        self.late_ns = int(spec.late_after_ms * 1_000_000)
        limit = _connection_limit()
        self.max_conns = min(spec.concurrency or spec.max_connections, limit)
        if spec.concurrency is not None and spec.concurrency > limit:
            raise BenchError(
                f"concurrency {spec.concurrency} needs more open files than allowed ({limit})",
                hint="raise `ulimit -n` or lower --concurrency",
            )
        self.t0 = self.t_measure = self.t_end = self.deadline = 0

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> RunStats:
        self.t0 = time.perf_counter_ns()
        self.t_measure = self.t0 + int(self.spec.warmup * _NS)
        self.t_end = self.t_measure + int(self.spec.duration * _NS)
        self.deadline = self.t_end + self.timeout_ns + _NS // 2
        self.last_progress_ns = self.t0
        ticker = self.loop.call_later(_TICK_S, self.tick)
        scheduler: asyncio.Task[None] | None = None
        try:
            if self.open_loop:
                scheduler = self.loop.create_task(self.schedule())
            else:
                for _ in range(self.max_conns):
                    self.open()
            # The ticker ends every run by the deadline; this bound only guards against a bug
            # in a callback stopping the ticker.
            limit = (self.deadline - self.t0) / _NS + 5.0
            try:
                await asyncio.wait_for(asyncio.shield(self.finished), limit)
            except TimeoutError:
                logger.warning("load run did not finish by its deadline; counting the rest as unfinished")
                self.give_up()
        finally:
            ticker.cancel()
            if scheduler is not None:
                scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scheduler
            await self.shutdown()
        return self.finish_stats()

    async def schedule(self) -> None:
        assert self.spec.rate is not None
        period = _NS / self.spec.rate
        i = 0
        while True:
            now = time.perf_counter_ns()
            while (due := self.t0 + int(i * period)) <= now:
                if due >= self.t_end or (
                    self.spec.requests is not None
                    and due >= self.t_measure
                    and self.stats.issued >= self.spec.requests
                ):
                    self.stopped_by_window = due >= self.t_end
                    self.sending_over = True
                    self.check_done()
                    return
                i += 1
                self.dispatch(due)
            await asyncio.sleep((due - time.perf_counter_ns()) / _NS)

    def dispatch(self, due: int) -> None:
        measured = due >= self.t_measure
        if measured:
            self.stats.issued += 1
        self.pending.append(due)
        if self.idle:
            self.feed(self.idle.pop())
            return
        if measured:
            self.stats.waited += 1
        if len(self.conns) + self.connecting < self.max_conns:
            self.open()

    def take(self, now: int) -> tuple[int, bool] | None:
        """The next request to send now: (due time, measured), or None."""
        if self.open_loop:
            if not self.pending:
                return None
            due = self.pending.popleft()
            return due, due >= self.t_measure
        if self.sending_over:
            return None
        if now >= self.t_end:
            self.stopped_by_window = True
            self.sending_over = True
            return None
        measured = now >= self.t_measure
        if measured:
            if self.spec.requests is not None and self.stats.issued >= self.spec.requests:
                self.sending_over = True
                return None
            self.stats.issued += 1
        return now, measured

    def feed(self, conn: Connection) -> None:
        now = time.perf_counter_ns()
        nxt = self.take(now)
        if nxt is None:
            self.idle.append(conn)
            self.check_done()
            return
        due, measured = nxt
        request = self.requests[self.next_index % len(self.requests)]
        self.next_index += 1
        self.inflight += 1
        if measured and self.open_loop:
            lag = now - due
            self.stats.schedule_lag.record_ns(lag)
            if lag > self.late_ns:
                self.stats.late += 1
        conn.send(request, due, measured)

    # ---- connections --------------------------------------------------------------------

    def open(self) -> None:
        self.connecting += 1
        self.stats.connections_opened += 1
        task = self.loop.create_task(self.connect())
        self.connect_tasks.add(task)
        task.add_done_callback(self.connect_tasks.discard)

    async def connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: Connection(self), self.target.host, self.target.port)
        except OSError as exc:
            self.connecting -= 1
            logger.debug("connect to %s failed: %s", self.target.authority, exc)
            self.connect_failed()
        else:
            self.connecting -= 1

    def connect_failed(self) -> None:
        # The request this connection was for fails visibly; retrying later keeps a refusing
        # server from turning the generator into a busy loop.
        nxt = self.take(time.perf_counter_ns())
        if nxt is not None and nxt[1]:
            self.error("connection")
        if not self.sending_over or self.pending:
            self.loop.call_later(_CONNECT_RETRY_S, self.reopen)
        self.check_done()

    def reopen(self) -> None:
        if self.finished.done():
            return
        if self.open_loop:
            if self.pending and len(self.conns) + self.connecting < self.max_conns:
                self.open()
        elif not self.sending_over:
            self.open()

    def on_ready(self, conn: Connection) -> None:
        if self.finished.done():
            conn.close()
            return
        self.conns.add(conn)
        self.stats.max_connections_used = max(self.stats.max_connections_used, len(self.conns))
        self.feed(conn)

    def on_lost(self, conn: Connection) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            if conn.headers_done and not conn.framed:
                # A body delimited by closing the connection is complete now.
                self.on_response(conn, conn.parser.get_status_code(), False)
            else:
                self.fail(conn, "connection")
        if self.finished.done():
            return
        if self.open_loop:
            self.reopen()
        elif not self.sending_over:
            self.open()
        self.check_done()

    def on_failure(self, conn: Connection, kind: str) -> None:
        if conn.busy:
            self.fail(conn, kind)
        conn.close(abort=True)

    def fail(self, conn: Connection, kind: str) -> None:
        conn.busy = False
        self.inflight -= 1
        if conn.measured:
            self.error(kind)
            self.last_done_ns = time.perf_counter_ns()

    def error(self, kind: str) -> None:
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1

    # ---- responses ----------------------------------------------------------------------

    def on_response(self, conn: Connection, status: int, keep_alive: bool) -> None:
        if not conn.busy:
            return  # a response nobody asked for (or to a request already timed out)
        now = time.perf_counter_ns()
        conn.busy = False
        self.inflight -= 1
        if conn.measured:
            self.last_done_ns = now
            stats = self.stats
            if 200 <= status < 300:
                latency = now - conn.due_ns
                stats.latency.record_ns(latency)
                stats.succeeded += 1
                request = conn.request
                assert request is not None
                stats.texts += request.texts
                stats.tokens += request.tokens
                second = (now - self.t_measure) // _NS
                if second >= 0:
                    while len(stats.interval_completed) <= second:
                        stats.interval_completed.append(0)
                        stats.interval_latency_ms.append(0.0)
                    stats.interval_completed[second] += 1
                    stats.interval_latency_ms[second] += latency / 1e6
                if conn.xh:
                    self.record_headers(conn.xh)
            else:
                self.error(f"http_{status}")
        if keep_alive and not self.finished.done():
            self.feed(conn)
        else:
            conn.close()
            self.check_done()

    def record_headers(self, headers: dict[bytes, bytes]) -> None:
        for name, histogram in self.server_hists:
            value = headers.get(name)
            if value is not None:
                with contextlib.suppress(ValueError):
                    histogram.record_ms(float(value))
        tokens = headers.get(_TOKENS_HEADER)
        if tokens is not None:
            with contextlib.suppress(ValueError):
                self.stats.server_tokens += int(tokens)

    # ---- time keeping -------------------------------------------------------------------

    def tick(self) -> None:
        now = time.perf_counter_ns()
        for conn in [c for c in self.conns if c.busy and now - c.sent_ns > self.timeout_ns]:
            self.fail(conn, "timeout")
            conn.close(abort=True)
        while self.pending and now - self.pending[0] > self.timeout_ns:
            if self.pending.popleft() >= self.t_measure:
                # Due so long ago that no connection freed up in time: a failure, not a skip.
                self.error("queue_timeout")
        if not self.open_loop and not self.sending_over and now >= self.t_end:
            self.stopped_by_window = True
            self.sending_over = True
        if now >= self.deadline:
            self.give_up()
        self.report_progress(now)
        self.check_done()
        if not self.finished.done():
            self.loop.call_later(_TICK_S, self.tick)

    def give_up(self) -> None:
        self.sending_over = True
        for conn in list(self.conns):
            if conn.busy:
                self.fail(conn, "unfinished")
        while self.pending:
            if self.pending.popleft() >= self.t_measure:
                self.error("unfinished")

    def report_progress(self, now: int) -> None:
        if self.progress is None or now - self.last_progress_ns < _NS:
            return
        self.last_progress_ns = now
        phase: Literal["warmup", "measure", "drain"] = (
            "warmup" if now < self.t_measure else ("drain" if self.sending_over else "measure")
        )
        errors = sum(self.stats.errors.values())
        self.progress(Progress(phase, (now - self.t0) / _NS, self.stats.succeeded + errors, errors))

    def check_done(self) -> None:
        if self.sending_over and self.inflight <= 0 and not self.pending and not self.finished.done():
            self.finished.set_result(None)

    async def shutdown(self) -> None:
        for task in list(self.connect_tasks):
            task.cancel()
        if self.connect_tasks:
            await asyncio.gather(*self.connect_tasks, return_exceptions=True)
        for conn in list(self.conns):
            conn.close()
        # Let connection_lost run (it closes the sockets) so no transport outlives the run.
        for _ in range(200):
            if self.live <= 0:
                break
            await asyncio.sleep(0.001)

    def finish_stats(self) -> RunStats:
        stats = self.stats
        if self.stopped_by_window or self.spec.requests is None:
            window_ns = self.t_end - self.t_measure
        else:
            window_ns = max(self.last_done_ns - self.t_measure, 1)
        stats.elapsed_s = window_ns / _NS
        # Only whole seconds inside the window are comparable samples.
        full = int(window_ns // _NS)
        del stats.interval_completed[full:]
        del stats.interval_latency_ms[full:]
        stats.interval_completed.extend([0] * (full - len(stats.interval_completed)))
        stats.interval_latency_ms.extend([0.0] * (full - len(stats.interval_latency_ms)))
        stats.interval_latency_ms = [
            total / count if count else 0.0
            for total, count in zip(stats.interval_latency_ms, stats.interval_completed, strict=True)
        ]
        return stats


def _connection_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(1, soft - 64)


def _uvloop_new_event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def event_loop_name() -> str:
    """The event loop the engine runs on: uvloop when installed, else asyncio's."""
    return "uvloop" if _uvloop_new_event_loop() is not None else "asyncio"


async def run_load_async(
    target: Target,
    requests: Sequence[Request],
    spec: LoadSpec,
    *,
    progress: Callable[[Progress], None] | None = None,
) -> RunStats:
    """One run on the running event loop; requests are sent round-robin."""
    return await _LoadRunner(target, requests, spec, progress).run()


def run_load(
    target: Target,
    requests: Sequence[Request],
    spec: LoadSpec,
    *,
    progress: Callable[[Progress], None] | None = None,
) -> RunStats:
    """One run on a fresh event loop (uvloop when installed)."""
    coro: Coroutine[Any, Any, RunStats] = run_load_async(target, requests, spec, progress=progress)
    with asyncio.Runner(loop_factory=_uvloop_new_event_loop()) as runner:
        return runner.run(coro)
