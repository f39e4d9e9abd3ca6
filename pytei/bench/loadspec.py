"""What a load run is asked to do (:class:`LoadSpec`) and what it measured (:class:`RunStats`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pytei.bench.histogram import LatencyHistogram
from pytei.errors import BenchError

__all__ = ["SERVER_HEADERS", "LoadSpec", "Progress", "RunStats"]

# TEI's timing headers (ms) and the names the results use for them.
SERVER_HEADERS: Mapping[bytes, str] = {
    b"x-total-time": "total",
    b"x-tokenization-time": "tokenization",
    b"x-queue-time": "queue",
    b"x-inference-time": "inference",
}


@dataclass(frozen=True)
class LoadSpec:
    """How to load: exactly one of ``concurrency`` (closed loop) and ``rate`` (open loop)."""

    concurrency: int | None = None
    rate: float | None = None
    duration: float = 10.0
    requests: int | None = None
    warmup: float = 0.0
    timeout: float = 30.0
    max_connections: int = 256
    late_after_ms: float = 2.0

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise BenchError("give either a concurrency (closed loop) or a rate (open loop), not both")
        if self.concurrency is not None and self.concurrency < 1:
            raise BenchError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise BenchError(f"rate must be positive, got {self.rate}")
        if not self.duration > 0:
            raise BenchError(f"duration must be positive, got {self.duration}")
        if self.requests is not None and self.requests < 1:
            raise BenchError(f"requests must be at least 1, got {self.requests}")
        if self.warmup < 0 or not self.timeout > 0 or self.max_connections < 1 or self.late_after_ms < 0:
            raise BenchError("warmup must be >= 0; timeout, max connections and late threshold positive")

    @property
    def mode(self) -> Literal["closed", "open"]:
        return "closed" if self.concurrency is not None else "open"


@dataclass
class RunStats:
    """What one run measured (only requests due inside the measurement window)."""

    spec: LoadSpec
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    schedule_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    server: dict[str, LatencyHistogram] = field(default_factory=dict)
    issued: int = 0
    succeeded: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    late: int = 0
    waited: int = 0
    texts: int = 0
    tokens: int = 0
    server_tokens: int = 0
    elapsed_s: float = 0.0
    connections_opened: int = 0
    max_connections_used: int = 0
    interval_completed: list[int] = field(default_factory=list)
    interval_latency_ms: list[float] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return self.succeeded + sum(self.errors.values())


@dataclass(frozen=True)
class Progress:
    phase: Literal["warmup", "measure", "drain"]
    elapsed_s: float
    completed: int
    errors: int
