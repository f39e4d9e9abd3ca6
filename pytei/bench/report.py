"""Benchmark results: frozen dataclasses, a versioned JSON form, and the tables the CLI prints.

The JSON form is an interface (``pytei bench compare`` and other tools read it): keys are
only ever added, and ``SCHEMA_VERSION`` changes when one is removed or changes meaning.
Latencies are milliseconds; each latency summary carries its HDR histogram (``hdr``), so a
saved report can be re-plotted and merged without the raw samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from pytei.bench.histogram import LatencySummary
from pytei.bench.loadspec import SERVER_HEADERS, RunStats
from pytei.errors import BenchError

__all__ = [
    "SCHEMA_VERSION",
    "BenchReport",
    "Intervals",
    "RunResult",
    "Throughput",
    "results_table",
    "server_table",
]

SCHEMA_VERSION = 1
# Server-side phases in the order TEI logs them.
SERVER_PHASES: tuple[str, ...] = tuple(SERVER_HEADERS.values())


@dataclass(frozen=True)
class Throughput:
    requests_per_s: float
    texts_per_s: float
    tokens_per_s: float | None
    # "client": counted before the run; "server": the sum of TEI's x-compute-tokens headers.
    tokens_source: Literal["client", "server"] | None
    # TEI's own count (x-compute-tokens) whatever the source above: a lower figure than the
    # client's means the router truncated inputs.
    server_tokens_per_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests_per_s": self.requests_per_s,
            "texts_per_s": self.texts_per_s,
            "tokens_per_s": self.tokens_per_s,
            "tokens_source": self.tokens_source,
            "server_tokens_per_s": self.server_tokens_per_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Throughput:
        server = data["server_tokens_per_s"]
        return cls(
            float(data["requests_per_s"]),
            float(data["texts_per_s"]),
            None if data["tokens_per_s"] is None else float(data["tokens_per_s"]),
            data["tokens_source"],
            None if server is None else float(server),
        )


@dataclass(frozen=True)
class Intervals:
    """Per whole second of the measurement window: successes, and their mean latency (ms)."""

    completed: tuple[int, ...]
    latency_mean_ms: tuple[float, ...]
    seconds: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "completed": list(self.completed),
            "latency_mean_ms": list(self.latency_mean_ms),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intervals:
        completed = tuple(int(v) for v in data["completed"])
        latency = tuple(float(v) for v in data["latency_mean_ms"])
        if len(completed) != len(latency):
            raise ValueError("intervals: 'completed' and 'latency_mean_ms' differ in length")
        return cls(completed, latency, float(data["seconds"]))


@dataclass(frozen=True)
class RunResult:
    """One load level: a closed loop at ``concurrency`` or an open loop at ``rate``."""

    mode: Literal["closed", "open"]
    concurrency: int | None
    rate: float | None
    elapsed_s: float
    issued: int
    succeeded: int
    errors: Mapping[str, int]
    late: int
    waited: int
    connections: int
    throughput: Throughput
    latency: LatencySummary
    schedule_lag: LatencySummary | None
    server: Mapping[str, LatencySummary]
    intervals: Intervals

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.mode == "closed" else f"r={self.rate:g}/s"

    @classmethod
    def from_stats(cls, stats: RunStats, *, tokens_known: bool) -> RunResult:
        elapsed = max(stats.elapsed_s, 1e-9)
        if tokens_known:
            tokens_per_s: float | None = stats.tokens / elapsed
            source: Literal["client", "server"] | None = "client"
        elif stats.server_tokens:
            tokens_per_s, source = stats.server_tokens / elapsed, "server"
        else:
            tokens_per_s, source = None, None
        spec = stats.spec
        return cls(
            mode=spec.mode,
            concurrency=spec.concurrency,
            rate=spec.rate,
            elapsed_s=stats.elapsed_s,
            issued=stats.issued,
            succeeded=stats.succeeded,
            errors=dict(sorted(stats.errors.items())),
            late=stats.late,
            waited=stats.waited,
            connections=stats.max_connections_used,
            throughput=Throughput(
                stats.succeeded / elapsed,
                stats.texts / elapsed,
                tokens_per_s,
                source,
                stats.server_tokens / elapsed if stats.server_tokens else None,
            ),
            latency=stats.latency.summary(),
            schedule_lag=stats.schedule_lag.summary() if spec.mode == "open" else None,
            server={name: h.summary() for name, h in stats.server.items() if h.count},
            intervals=Intervals(tuple(stats.interval_completed), tuple(stats.interval_latency_ms)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "elapsed_s": self.elapsed_s,
            "issued": self.issued,
            "succeeded": self.succeeded,
            "errors": dict(self.errors),
            "late": self.late,
            "waited": self.waited,
            "connections": self.connections,
            "throughput": self.throughput.to_json(),
            "latency_ms": self.latency.to_json(),
            "schedule_lag_ms": None if self.schedule_lag is None else self.schedule_lag.to_json(),
            "server_ms": {name: s.to_json() for name, s in self.server.items()},
            "intervals": self.intervals.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        lag = data["schedule_lag_ms"]
        return cls(
            mode=data["mode"],
            concurrency=data["concurrency"],
            rate=data["rate"],
            elapsed_s=float(data["elapsed_s"]),
            issued=int(data["issued"]),
            succeeded=int(data["succeeded"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            late=int(data["late"]),
            waited=int(data["waited"]),
            connections=int(data["connections"]),
            throughput=Throughput.from_json(data["throughput"]),
            latency=LatencySummary.from_json(data["latency_ms"]),
            schedule_lag=None if lag is None else LatencySummary.from_json(lag),
            server={str(k): LatencySummary.from_json(v) for k, v in data["server_ms"].items()},
            intervals=Intervals.from_json(data["intervals"]),
        )


@dataclass(frozen=True)
class BenchReport:
    """A whole ``pytei bench`` invocation: what ran against what, and one result per load level."""

    created_at: str
    tool: Mapping[str, Any]
    host: Mapping[str, Any]
    target: Mapping[str, Any]
    workload: Mapping[str, Any]
    load: Mapping[str, Any]
    runs: tuple[RunResult, ...]
    schema_version: int = field(default=SCHEMA_VERSION)

    @property
    def is_sweep(self) -> bool:
        return self.load.get("sweep") is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "tool": dict(self.tool),
            "host": dict(self.host),
            "target": dict(self.target),
            "workload": dict(self.workload),
            "load": dict(self.load),
            "runs": [run.to_json() for run in self.runs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "report") -> BenchReport:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BenchError(
                f"{source} is not a pytei bench report of schema version {SCHEMA_VERSION} "
                f"(found {version!r})",
                hint="re-run `pytei bench ... --output FILE` with this pytei version",
            )
        try:
            return cls(
                created_at=str(data["created_at"]),
                tool=dict(data["tool"]),
                host=dict(data["host"]),
                target=dict(data["target"]),
                workload=dict(data["workload"]),
                load=dict(data["load"]),
                runs=tuple(RunResult.from_json(run) for run in data["runs"]),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(
                f"{source} is not a valid pytei bench report ({type(exc).__name__}: {exc})"
            ) from exc

    def save(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise BenchError(f"cannot write the report to {path}: {exc.strerror}") from exc

    @classmethod
    def load_file(cls, path: Path) -> BenchReport:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchError(f"cannot read the report {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise BenchError(f"{path} is not a pytei bench report (not a JSON object)")
        return cls.from_json(data, source=str(path))


# ---- tables -------------------------------------------------------------------------------


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _errors(run: RunResult) -> str:
    if not run.errors:
        return "0"
    return " ".join(f"{kind}:{count}" for kind, count in run.errors.items())


def results_table(report: BenchReport) -> Table:
    """One row per load level: throughput, client latency percentiles, errors."""
    workload = report.workload
    title = (
        f"{workload.get('task')} {report.target.get('url')} · batch {workload.get('batch_size')}"
        f" · {workload.get('tokens_description')} · latency in ms"
    )
    table = Table(title=title, title_justify="left")
    open_loop = any(run.mode == "open" for run in report.runs)
    table.add_column("load")
    for name in ("req/s", "texts/s", "tokens/s"):
        table.add_column(name, justify="right")
    for name in ("p50", "p90", "p95", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    table.add_column("ok", justify="right")
    table.add_column("errors")
    if open_loop:
        table.add_column("late", justify="right")
        table.add_column("lag p99", justify="right")
    for run in report.runs:
        lat = run.latency
        row = [
            run.label,
            _rate(run.throughput.requests_per_s),
            _rate(run.throughput.texts_per_s),
            _rate(run.throughput.tokens_per_s) + ("*" if run.throughput.tokens_source == "server" else ""),
            *(_ms(lat[p]) for p in ("p50", "p90", "p95", "p99", "p99.9")),
            _ms(lat.max),
            str(run.succeeded),
            _errors(run),
        ]
        if open_loop:
            lag = run.schedule_lag
            row += [str(run.late), _ms(lag["p99"]) if lag is not None and lag.count else "-"]
        table.add_row(*row)
    captions = []
    if any(run.throughput.tokens_source == "server" for run in report.runs):
        captions.append("* tokens counted by the server (x-compute-tokens)")
    if open_loop:
        captions.append("open loop: latency from each request's due time; late = sent > threshold after due")
    if captions:
        table.caption = "; ".join(captions)
        table.caption_justify = "left"
    return table


def server_table(report: BenchReport) -> Table | None:
    """Client latency next to TEI's own breakdown (its x-*-time headers), as in TEI's logs."""
    if not any(run.server for run in report.runs):
        return None
    table = Table(
        title="server-side breakdown, ms (TEI x-*-time headers: whole ms; per-input means for batches)",
        title_justify="left",
    )
    table.add_column("load")
    table.add_column("stat")
    table.add_column("client", justify="right")
    for phase in SERVER_PHASES:
        table.add_column(phase, justify="right")
    for run in report.runs:
        for stat in ("mean", "p50", "p99"):
            cells = [run.label if stat == "mean" else "", stat, _ms(_stat(run.latency, stat))]
            for phase in SERVER_PHASES:
                summary = run.server.get(phase)
                cells.append("-" if summary is None else _ms(_stat(summary, stat)))
            table.add_row(*cells, end_section=stat == "p99")
    return table


def _stat(summary: LatencySummary, stat: str) -> float:
    return summary.mean if stat == "mean" else summary[stat]
