"""Latency histograms: HDR histograms in microseconds with 3 significant digits.

A percentile read from one is the top of the bucket that holds it, so it is never below the
true sample percentile and at most 0.1% (plus 1 µs) above it.  Histograms merge exactly and
travel in JSON as HdrHistogram's compressed base64 form, so a saved run can be re-read,
re-plotted and merged with another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["PERCENTILES", "LatencyHistogram", "LatencySummary"]

# What every summary reports, in percent.
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)

_LOWEST_US = 1
# One hour: nothing a bounded run can measure is longer; larger values are clamped.
_HIGHEST_US = 3_600_000_000
_DIGITS = 3


def _key(percentile: float) -> str:
    return f"p{percentile:g}"


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds; ``percentiles`` maps ``"p50"``, ``"p99.9"``... to values."""

    count: int
    min: float
    mean: float
    stddev: float
    max: float
    percentiles: Mapping[str, float]
    encoded: str

    def __getitem__(self, name: str) -> float:
        return self.percentiles[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min": self.min,
            "mean": self.mean,
            "stddev": self.stddev,
            **dict(self.percentiles),
            "max": self.max,
            "hdr": self.encoded,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencySummary:
        return cls(
            count=int(data["count"]),
            min=float(data["min"]),
            mean=float(data["mean"]),
            stddev=float(data["stddev"]),
            max=float(data["max"]),
            percentiles={_key(p): float(data[_key(p)]) for p in PERCENTILES},
            encoded=str(data["hdr"]),
        )

    def histogram(self) -> LatencyHistogram:
        return LatencyHistogram.decode(self.encoded)


class LatencyHistogram:
    """Values are recorded in microseconds (``record_ns`` converts); reads are in ms."""

    __slots__ = ("_h", "_sq", "_sum")

    def __init__(self, _h: HdrHistogram | None = None) -> None:
        self._h = _h if _h is not None else HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        # Exact moments of what was recorded here (HdrHistogram's own walk every bucket in
        # Python); None for a decoded histogram, which falls back to HdrHistogram's.
        self._sum: int | None = 0 if _h is None else None
        self._sq: int | None = 0 if _h is None else None

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def record_us(self, value_us: int, count: int = 1) -> None:
        # Negative values count as 0 and too-large ones are clamped, so a recorded event is
        # never silently dropped from the count (TEI reports 0 ms for fast phases).
        value = min(max(value_us, 0), _HIGHEST_US)
        self._h.record_value(value, count)
        if self._sum is not None and self._sq is not None:
            self._sum += value * count
            self._sq += value * value * count

    def record_ns(self, value_ns: int) -> None:
        self.record_us((value_ns + 500) // 1000)

    def record_ms(self, value_ms: float) -> None:
        self.record_us(round(value_ms * 1000.0))

    def record_many_us(self, values: Iterable[int]) -> None:
        for value in values:
            self.record_us(value)

    def merge(self, other: LatencyHistogram) -> None:
        self._h.add(other._h)
        if self._sum is None or self._sq is None or other._sum is None or other._sq is None:
            self._sum = self._sq = None
        else:
            self._sum += other._sum
            self._sq += other._sq

    @classmethod
    def merged(cls, histograms: Sequence[LatencyHistogram]) -> LatencyHistogram:
        out = cls()
        for histogram in histograms:
            out.merge(histogram)
        return out

    def percentile_us(self, percentile: float) -> int:
        if not self.count:
            return 0
        return int(self._h.get_value_at_percentile(percentile))

    def percentiles_ms(self, percentiles: Sequence[float]) -> dict[float, float]:
        """Several percentiles in one pass over the counts (ms)."""
        if not self.count:
            return dict.fromkeys(percentiles, 0.0)
        values = self._h.get_percentile_to_value_dict(list(percentiles))
        return {p: values[p] / 1000.0 for p in percentiles}

    def min_ms(self) -> float:
        return self._h.get_min_value() / 1000.0 if self.count else 0.0

    def max_ms(self) -> float:
        return self._h.get_max_value() / 1000.0 if self.count else 0.0

    def mean_ms(self) -> float:
        if not self.count:
            return 0.0
        if self._sum is not None:
            return self._sum / self.count / 1000.0
        return float(self._h.get_mean_value()) / 1000.0

    def stddev_ms(self) -> float:
        if not self.count:
            return 0.0
        if self._sum is not None and self._sq is not None:
            mean = self._sum / self.count
            return math.sqrt(max(self._sq / self.count - mean * mean, 0.0)) / 1000.0
        return float(self._h.get_stddev()) / 1000.0

    def encode(self) -> str:
        data = self._h.encode()
        return data.decode("ascii") if isinstance(data, bytes) else str(data)

    @classmethod
    def decode(cls, encoded: str) -> LatencyHistogram:
        return cls(HdrHistogram.decode(encoded.encode("ascii")))

    def cdf_ms(self, points: int = 200) -> tuple[list[float], list[float]]:
        """(latency ms, fraction at or below) at log-spaced quantiles, for plotting."""
        if not self.count:
            return [], []
        # Denser near the tail: quantiles 1 - 10**-x for x up to 5 (p99.999).
        quantiles = sorted({min(100.0, 100.0 * (1.0 - 10 ** (-5.0 * i / points))) for i in range(points + 1)})
        values = self._h.get_percentile_to_value_dict(quantiles)
        return [values[q] / 1000.0 for q in quantiles], [q / 100.0 for q in quantiles]

    def summary(self) -> LatencySummary:
        values = self.percentiles_ms(PERCENTILES)
        return LatencySummary(
            count=self.count,
            min=self.min_ms(),
            mean=self.mean_ms(),
            stddev=self.stddev_ms(),
            max=self.max_ms(),
            percentiles={_key(p): values[p] for p in PERCENTILES},
            encoded=self.encode(),
        )
