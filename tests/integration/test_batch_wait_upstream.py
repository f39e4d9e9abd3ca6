"""Patch 0009 on the real engine and router: with a batch wait, two closed-loop callers share
forward passes (TEI's own batch-size metric says so); a lone caller is not held back by the wait.
That without a wait they alternate in batches of one is upstream's behaviour, shown by
benchmarks/bench_inprocess.py --batch-wait (TEI's metric cannot show it: it records empty
prefetches as batches of 0)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytei.client import Client
from pytei.client.metrics import Metrics
from pytei.config import load_settings
from tests.integration.conftest import _upstream_env, build_engine, build_router, pytei_cli

pytestmark = pytest.mark.upstream

CALLS = 150
# Longer than a call of the cpu build takes here (~17 ms for a short text), so a caller held for
# the wait would show in its latency, and HTTP clients' round trips fit in it
WAIT_US = 40_000


def _batches(metrics: Metrics) -> tuple[float, float]:
    histogram = metrics.histogram("te_batch_next_size")
    assert histogram is not None, "TEI's te_batch_next_size histogram is missing"
    return histogram.sum, histogram.count


def _mean_batch(before: Metrics, after: Metrics) -> float:
    """Texts per te_batch_next_size record.  TEI also records empty batches (0), so this can
    only understate: a mean near 2 for two callers means batches of two."""
    (s0, n0), (s1, n1) = _batches(before), _batches(after)
    assert n1 > n0
    return (s1 - s0) / (n1 - n0)


def _closed_loop(engines: list[Any], calls: int) -> None:
    def work(engine: Any, k: int) -> None:
        for i in range(calls):
            engine.embed(f"caller {k} sends text number {i}")

    workers = [threading.Thread(target=work, args=(e, k)) for k, e in enumerate(engines)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _lone_latency_ms(engine: Any, calls: int = 60) -> float:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        engine.embed(f"a lone caller's text {i}")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def test_two_engine_threads_share_batches_with_a_wait_and_a_lone_caller_is_not_held(minilm_dir: Path) -> None:
    from pytei.local import LocalEngine

    profile = build_engine("cpu")
    settings = load_settings(env=_upstream_env())
    means: dict[int, float] = {}
    lone: dict[int, float] = {}
    for wait in (0, WAIT_US):
        with LocalEngine(str(minilm_dir), profile=profile, batch_wait_us=wait, settings=settings) as engine:
            engine.embed("warm up")
            before = engine.metrics()
            _closed_loop([engine, engine], CALLS)
            means[wait] = _mean_batch(before, engine.metrics())
            lone[wait] = _lone_latency_ms(engine)
    assert means[WAIT_US] > 1.7, f"with a wait both callers share a batch: mean batch {means[WAIT_US]:.2f}"
    # a lone caller is the one expected back, so it is not held for the wait (40 ms)
    assert lone[WAIT_US] < lone[0] * 1.25 + 1.0, lone


def test_serve_batch_wait_reaches_the_router(minilm_dir: Path) -> None:
    binary = build_router("cpu")
    args = [
        "--model-id",
        str(minilm_dir),
        "--name",
        "it-wait",
        "--binary",
        str(binary),
        "--batch-wait-us",
        str(WAIT_US),
    ]
    started = pytei_cli("serve", "--port", "auto", "--detach", "--json", *args, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    url = json.loads(started.stdout)[0]["url"]
    try:
        clients = [Client(url), Client(url)]
        clients[0].embed("warm up")
        before = clients[0].metrics()
        _closed_loop(clients, CALLS)
        mean = _mean_batch(before, clients[0].metrics())
        for client in clients:
            client.close()
    finally:
        pytei_cli("stop", "it-wait", timeout=120)
    assert mean > 1.7, f"two closed-loop HTTP clients with --batch-wait-us: mean batch {mean:.2f}"
