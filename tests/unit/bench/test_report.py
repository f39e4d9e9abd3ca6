"""The report's JSON schema (golden keys, round trip), tables, plots and comparisons."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from pytei.bench.compare import compare_reports, comparison_table, noise_test
from pytei.bench.histogram import LatencyHistogram
from pytei.bench.loadspec import LoadSpec, RunStats
from pytei.bench.plot import plot_report
from pytei.bench.report import SCHEMA_VERSION, BenchReport, RunResult, results_table, server_table
from pytei.errors import BenchError

# The JSON interface: changing any of these lists is a schema change (bump SCHEMA_VERSION).
GOLDEN_TOP = ["schema_version", "created_at", "tool", "host", "target", "workload", "load", "runs"]
GOLDEN_RUN = [
    "mode",
    "concurrency",
    "rate",
    "elapsed_s",
    "issued",
    "succeeded",
    "errors",
    "late",
    "waited",
    "connections",
    "throughput",
    "latency_ms",
    "schedule_lag_ms",
    "server_ms",
    "intervals",
]
GOLDEN_THROUGHPUT = ["requests_per_s", "texts_per_s", "tokens_per_s", "tokens_source", "server_tokens_per_s"]
GOLDEN_SUMMARY = ["count", "min", "mean", "stddev", "p50", "p90", "p95", "p99", "p99.9", "max", "hdr"]
GOLDEN_INTERVALS = ["seconds", "completed", "latency_mean_ms"]


def make_run(
    *,
    concurrency: int | None = 4,
    rate: float | None = None,
    rps: float = 1000.0,
    latency_ms: float = 4.0,
    seconds: int = 10,
    seed: int = 0,
    server: bool = True,
) -> RunResult:
    rng = np.random.default_rng(seed)
    spec = LoadSpec(concurrency=concurrency, rate=rate, duration=float(seconds))
    stats = RunStats(spec=spec)
    per_second = np.maximum(rng.normal(rps, rps * 0.02, seconds), 1).astype(int)
    latencies = rng.gamma(8.0, latency_ms / 8.0, int(per_second.sum())) * 1000
    stats.latency.record_many_us(int(v) for v in latencies)
    if rate is not None:
        stats.schedule_lag.record_many_us(int(v) for v in rng.exponential(300, 100))
        stats.late = 3
    if server:
        for name, share in (("total", 0.9), ("tokenization", 0.1), ("queue", 0.2), ("inference", 0.6)):
            histogram = LatencyHistogram()
            histogram.record_many_us(int(v * share) for v in latencies[:2000])
            stats.server[name] = histogram
    stats.issued = stats.succeeded = int(per_second.sum())
    stats.errors = {"http_429": 2}
    stats.issued += 2
    stats.texts = stats.succeeded * 8
    stats.tokens = stats.texts * 32
    stats.elapsed_s = float(seconds)
    stats.max_connections_used = concurrency or 8
    stats.interval_completed = [int(v) for v in per_second]
    means = []
    start = 0
    for n in per_second:
        means.append(float(latencies[start : start + n].mean() / 1000))
        start += n
    stats.interval_latency_ms = means
    return RunResult.from_stats(stats, tokens_known=True)


def make_report(runs: list[RunResult], *, sweep: bool = False) -> BenchReport:
    return BenchReport(
        created_at="2026-01-01T00:00:00+00:00",
        tool={"name": "pytei", "version": "0.0.0", "python": "3.11", "event_loop": "asyncio"},
        host={"platform": "linux", "machine": "x86_64", "cpu_count": 2, "argv": []},
        target={"url": "http://127.0.0.1:8080", "info": {"model_id": "m"}, "manifest": None},
        workload={"task": "embed", "batch_size": 8, "tokens_description": "32 tokens"},
        load={"mode": "closed", "sweep": {"parameter": "concurrency", "values": [1, 2]} if sweep else None},
        runs=tuple(runs),
    )


def test_json_schema_is_stable() -> None:
    report = make_report([make_run(), make_run(concurrency=None, rate=50.0)])
    data = report.to_json()
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert list(data) == GOLDEN_TOP
    closed, opened = data["runs"]
    assert list(closed) == GOLDEN_RUN
    assert list(closed["throughput"]) == GOLDEN_THROUGHPUT
    assert list(closed["latency_ms"]) == GOLDEN_SUMMARY
    assert list(closed["intervals"]) == GOLDEN_INTERVALS
    assert sorted(closed["server_ms"]) == ["inference", "queue", "tokenization", "total"]
    assert all(list(v) == GOLDEN_SUMMARY for v in closed["server_ms"].values())
    assert closed["schedule_lag_ms"] is None
    assert list(opened["schedule_lag_ms"]) == GOLDEN_SUMMARY
    assert (opened["mode"], opened["rate"], opened["concurrency"]) == ("open", 50.0, None)


def test_json_round_trip(tmp_path: Path) -> None:
    report = make_report([make_run(), make_run(concurrency=8, seed=1)], sweep=True)
    path = tmp_path / "r.json"
    report.save(path)
    back = BenchReport.load_file(path)
    assert back == report
    assert back.to_json() == json.loads(path.read_text())
    assert back.runs[0].latency.histogram().count == report.runs[0].latency.count


def test_other_schema_versions_are_refused(tmp_path: Path) -> None:
    data = make_report([make_run()]).to_json()
    data["schema_version"] = 99
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BenchError, match="schema version 1"):
        BenchReport.load_file(path)
    del data["schema_version"]
    with pytest.raises(BenchError):
        BenchReport.from_json(data)
    data["schema_version"] = 1
    data["runs"][0]["intervals"]["completed"].append(5)
    with pytest.raises(BenchError, match="differ in length"):
        BenchReport.from_json(data)
    del data["runs"][0]["latency_ms"]
    with pytest.raises(BenchError, match="not a valid"):
        BenchReport.from_json(data)


def test_throughput_figures() -> None:
    run = make_run(rps=1000, seconds=10)
    assert run.throughput.requests_per_s == pytest.approx(run.succeeded / 10)
    assert run.throughput.texts_per_s == pytest.approx(8 * run.throughput.requests_per_s)
    assert run.throughput.tokens_per_s == pytest.approx(32 * run.throughput.texts_per_s)
    assert run.throughput.tokens_source == "client"


def _render(table: Table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_tables_show_percentiles_and_the_server_breakdown() -> None:
    report = make_report([make_run(), make_run(concurrency=None, rate=50.0)])
    text = _render(results_table(report))
    for column in ("req/s", "p50", "p99.9", "max", "late", "http_429:2", "latency in ms"):
        assert column in text
    assert "c=4" in text and "r=50/s" in text
    breakdown = server_table(report)
    assert breakdown is not None
    text = _render(breakdown)
    for column in ("client", "tokenization", "queue", "inference", "total"):
        assert column in text
    assert server_table(make_report([make_run(server=False)])) is None


def test_plot_files_are_png(tmp_path: Path) -> None:
    single = plot_report(make_report([make_run()]), tmp_path / "single.png")
    sweep = plot_report(
        make_report([make_run(concurrency=c, rps=500 * c, seed=c) for c in (1, 2, 4)], sweep=True),
        tmp_path / "sub" / "sweep.png",
    )
    for path in (single, sweep):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_noise_test_verdicts() -> None:
    rng = np.random.default_rng(0)
    a = cast("Sequence[float]", rng.normal(1000, 20, 10))
    same = cast("Sequence[float]", rng.normal(1000, 20, 10))
    more = cast("Sequence[float]", rng.normal(1100, 20, 10))
    assert noise_test(a, same, higher_is_better=True)[0] == "noise"
    assert noise_test(a, more, higher_is_better=True)[0] == "better"
    assert noise_test(a, more, higher_is_better=False)[0] == "worse"
    _, noise = noise_test(a, same, higher_is_better=True)
    assert noise is not None and 0.5 < noise < 5
    assert noise_test(a[:2], more, higher_is_better=True) == ("n/a", None)


def test_compare_ratios_and_verdicts() -> None:
    a = make_report([make_run(seed=1)])
    same = make_report([make_run(seed=2)])
    faster = make_report([make_run(seed=3, rps=1200, latency_ms=3.0)])
    rows = {r.metric: r for r in compare_reports(a, same).rows}
    assert rows["requests/s"].verdict == "noise"
    assert rows["requests/s"].ratio == pytest.approx(1.0, abs=0.03)
    rows = {r.metric: r for r in compare_reports(a, faster).rows}
    assert rows["requests/s"].verdict == "better"
    assert rows["requests/s"].ratio == pytest.approx(1.2, rel=0.03)
    assert rows["mean ms"].verdict == "better"
    assert rows["p50 ms"].ratio == pytest.approx(0.75, rel=0.05)
    assert rows["p99 ms"].verdict == "n/a"
    back = compare_reports(faster, a)
    assert {r.metric: r.verdict for r in back.rows}["requests/s"] == "worse"
    assert "B/A" in _render(comparison_table(back))


def test_compare_matches_load_levels() -> None:
    a = make_report([make_run(concurrency=c, seed=c) for c in (1, 2, 4)], sweep=True)
    b = make_report([make_run(concurrency=c, seed=c + 10) for c in (2, 4, 8)], sweep=True)
    comparison = compare_reports(a, b)
    assert sorted({r.run for r in comparison.rows}) == ["c=2", "c=4"]
    assert comparison.notes
