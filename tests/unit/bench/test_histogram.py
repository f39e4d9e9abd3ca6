"""HDR histogram percentiles against numpy on known distributions, within HDR's precision."""

from __future__ import annotations

import numpy as np
import pytest

from pytei.bench.histogram import PERCENTILES, LatencyHistogram, LatencySummary

# 3 significant digits: a bucket spans at most 1/1024 of its value (and 1 µs at the bottom).
_REL = 1 / 1024


def _samples(kind: str, n: int = 50_000) -> np.ndarray:
    rng = np.random.default_rng(42)
    if kind == "uniform":
        us = rng.uniform(1_000, 50_000, n)
    elif kind == "exponential":
        us = 500 + rng.exponential(8_000, n)
    else:  # bimodal: a fast mode and a slow tail mode, like cache hits and misses
        us = np.concatenate([rng.normal(2_000, 200, n * 9 // 10), rng.normal(40_000, 4_000, n - n * 9 // 10)])
    return np.maximum(np.rint(us), 1).astype(np.int64)


def _filled(values: np.ndarray) -> LatencyHistogram:
    histogram = LatencyHistogram()
    histogram.record_many_us(int(v) for v in values)
    return histogram


@pytest.mark.parametrize("kind", ["uniform", "exponential", "bimodal"])
def test_percentiles_match_numpy_within_hdr_precision(kind: str) -> None:
    values = _samples(kind)
    histogram = _filled(values)
    assert histogram.count == len(values)
    ordered = np.sort(values)
    for p in (*PERCENTILES, 25.0, 75.0, 99.99):
        # Nearest rank (numpy's "inverted_cdf"), with the rank rounded as HDR rounds it, so a
        # float like 0.999 * 50_000 = 49950.000000000007 does not move it to the next sample.
        rank = max(1, int(p * len(values) / 100 + 0.5))
        exact = float(ordered[rank - 1])
        assert exact == pytest.approx(float(np.percentile(values, p * (1 - 1e-12), method="inverted_cdf")))
        got = histogram.percentile_us(p)
        # HDR reports the top of the bucket holding the sample percentile.
        assert exact <= got <= exact * (1 + _REL) + 1, (kind, p, exact, got)
    got_ms = histogram.percentiles_ms(PERCENTILES)
    for p in PERCENTILES:
        assert got_ms[p] == histogram.percentile_us(p) / 1000
    assert histogram.mean_ms() == pytest.approx(values.mean() / 1000, rel=_REL)
    assert histogram.stddev_ms() == pytest.approx(values.std() / 1000, rel=0.01)
    assert histogram.max_ms() == pytest.approx(values.max() / 1000, rel=_REL)
    assert histogram.min_ms() == pytest.approx(values.min() / 1000, rel=_REL)


def test_bimodal_percentiles_land_in_the_right_mode() -> None:
    histogram = _filled(_samples("bimodal"))
    assert histogram.percentile_us(50) < 3_000
    assert histogram.percentile_us(89) < 3_000
    assert histogram.percentile_us(95) > 30_000


def test_merge_equals_recording_everything_in_one() -> None:
    values = _samples("exponential")
    half = len(values) // 2
    merged = LatencyHistogram.merged([_filled(values[:half]), _filled(values[half:])])
    whole = _filled(values)
    assert merged.count == whole.count
    assert merged.percentiles_ms(PERCENTILES) == whole.percentiles_ms(PERCENTILES)
    assert merged.max_ms() == whole.max_ms()


def test_encode_decode_round_trip() -> None:
    histogram = _filled(_samples("uniform"))
    back = LatencyHistogram.decode(histogram.encode())
    assert back.count == histogram.count
    assert back.percentiles_ms(PERCENTILES) == histogram.percentiles_ms(PERCENTILES)


def test_nanoseconds_round_to_microseconds_and_extremes_are_kept() -> None:
    histogram = LatencyHistogram()
    histogram.record_ns(1_499)  # 1 µs
    histogram.record_ns(0)  # TEI reports fast phases as 0 ms: counted as 0
    histogram.record_us(10**13)  # beyond an hour: clamped, still counted
    assert histogram.count == 3
    assert histogram.percentile_us(50) == 1
    assert histogram.min_ms() == 0.0
    assert histogram.max_ms() == pytest.approx(3_600_000, rel=_REL)


def test_empty_histogram_reads_as_zero() -> None:
    summary = LatencyHistogram().summary()
    assert summary.count == 0
    assert summary["p99"] == 0.0 and summary.max == 0.0


def test_summary_json_round_trip_and_keys() -> None:
    summary = _filled(_samples("exponential", 5_000)).summary()
    data = summary.to_json()
    assert list(data) == ["count", "min", "mean", "stddev", "p50", "p90", "p95", "p99", "p99.9", "max", "hdr"]
    assert LatencySummary.from_json(data) == summary
    assert summary.histogram().count == 5_000


def test_cdf_is_monotonic_and_ends_at_the_max() -> None:
    histogram = _filled(_samples("bimodal", 10_000))
    values, fractions = histogram.cdf_ms()
    assert values == sorted(values) and fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] > 0.9999
    assert values[-1] <= histogram.max_ms()
