"""A small, strict parser of the Prometheus text exposition format (version 0.0.4).

TEI's ``/metrics`` is rendered by ``metrics-exporter-prometheus``: ``# TYPE`` lines, counters
and gauges with labels, histograms as ``_bucket{le=...}``/``_sum``/``_count``.  Parsing that
needs ~100 lines, so pytei does not depend on ``prometheus_client`` (whose parser also
renames counters, dropping ``_total``, which would not match TEI's names).

Strict means a malformed line raises :class:`MetricsParseError` with its line number rather
than being skipped: a silently half-parsed scrape gives wrong numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pytei.errors import MetricsParseError

__all__ = ["Histogram", "Metrics", "MetricsParseError", "Sample", "parse_metrics"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(\{{.*\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$")
_LABEL_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(,|$)')
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_SUMMARY_SUFFIXES = ("_sum", "_count")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Histogram:
    """A histogram's cumulative ``buckets`` as (upper bound, count), plus its sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimated like PromQL's ``histogram_quantile``: linear within the bucket."""
        if not 0 <= q <= 1:
            raise ValueError("q must be within [0, 1]")
        if not self.buckets or self.count == 0:
            return math.nan
        rank = q * self.buckets[-1][1]
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in self.buckets:
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound  # PromQL answers the highest finite bound
                if count == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return lower_bound


@dataclass(frozen=True)
class Metrics(Mapping[str, tuple[Sample, ...]]):
    """Samples by sample name (``te_request_count``, ``te_request_duration_bucket``...).

    ``types`` maps each family (the ``# TYPE`` name) to its type; ``value`` and ``total``
    answer the common questions without walking samples.
    """

    samples: Mapping[str, tuple[Sample, ...]]
    types: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> tuple[Sample, ...]:
        return self.samples[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample of ``name`` whose labels include ``labels`` (None if none).

        Raises ``LookupError`` when several samples match: say which one with more labels.
        """
        found = [s for s in self.samples.get(name, ()) if _matches(s.labels, labels)]
        if len(found) > 1:
            raise LookupError(f"{len(found)} samples of {name} match {labels}; give more labels")
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(s.value for s in self.samples.get(name, ()) if _matches(s.labels, labels))

    def histogram(self, name: str, **labels: str) -> Histogram | None:
        """The histogram family ``name`` (without suffix) for the given labels."""
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in self.samples.get(f"{name}_bucket", ())
            if "le" in s.labels and _matches({k: v for k, v in s.labels.items() if k != "le"}, labels, True)
        ]
        total = self.value(f"{name}_sum", **labels)
        count = self.value(f"{name}_count", **labels)
        if total is None or count is None:
            return None
        return Histogram(tuple(sorted(buckets)), total, count)


def _matches(have: Mapping[str, str], want: Mapping[str, str], exact: bool = False) -> bool:
    if exact and set(have) != set(want):
        return False
    return all(have.get(k) == v for k, v in want.items())


def _unescape(value: str, *, help_text: bool = False) -> str:
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        nxt = next(chars, "")
        if nxt == "n":
            out.append("\n")
        elif nxt == "\\":
            out.append("\\")
        elif nxt == '"' and not help_text:
            out.append('"')
        else:
            out.append("\\" + nxt)  # unknown escapes are kept verbatim, as Prometheus does
    return "".join(out)


def _parse_labels(text: str, lineno: int) -> dict[str, str]:
    body = text[1:-1]
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos:].strip():
        match = _LABEL_RE.match(body, pos)
        if match is None:
            raise MetricsParseError(f"line {lineno}: malformed labels {text!r}")
        key, raw, _ = match.groups()
        if key in labels:
            raise MetricsParseError(f"line {lineno}: label {key!r} repeated")
        labels[key] = _unescape(raw)
        pos = match.end()
    return labels


def _parse_value(text: str, lineno: int) -> float:
    try:
        return float(text)  # also takes +Inf, -Inf, NaN
    except ValueError:
        raise MetricsParseError(f"line {lineno}: {text!r} is not a number") from None


def _family(name: str, types: Mapping[str, str]) -> str:
    """The ``# TYPE`` family a sample belongs to (``x_bucket`` -> ``x`` for histograms)."""
    if name in types:
        return name
    for suffixes, kind in ((_HISTOGRAM_SUFFIXES, "histogram"), (_SUMMARY_SUFFIXES, "summary")):
        for suffix in suffixes:
            base = name.removesuffix(suffix)
            if base != name and types.get(base) == kind:
                return base
    return name


def parse_metrics(text: str) -> Metrics:
    """Parse Prometheus text exposition into :class:`Metrics`."""
    samples: dict[str, list[Sample]] = {}
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if len(parts) >= 2 and parts[0] == "TYPE":
                if len(parts) != 3 or parts[2] not in _TYPES:
                    raise MetricsParseError(f"line {lineno}: malformed TYPE line {line!r}")
                if parts[1] in types:
                    raise MetricsParseError(f"line {lineno}: second TYPE line for {parts[1]}")
                types[parts[1]] = parts[2]
            elif len(parts) >= 2 and parts[0] == "HELP":
                helps[parts[1]] = _unescape(parts[2] if len(parts) == 3 else "", help_text=True)
            continue  # any other comment is ignored, as the format says
        match = _SAMPLE_RE.match(line)
        if match is None:
            raise MetricsParseError(f"line {lineno}: not a sample line: {line!r}")
        name, label_text, value_text, timestamp = match.groups()
        labels = _parse_labels(label_text, lineno) if label_text else {}
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise MetricsParseError(f"line {lineno}: duplicate sample {name}{label_text or ''}")
        seen.add(key)
        if _family(name, types) == name and name not in types:
            types.setdefault(name, "untyped")
        sample = Sample(name, labels, _parse_value(value_text, lineno), int(timestamp) if timestamp else None)
        samples.setdefault(name, []).append(sample)
    return Metrics({k: tuple(v) for k, v in samples.items()}, types, helps)
