"""The Prometheus parser on text shaped like TEI's /metrics (metrics-exporter-prometheus 0.15)."""

from __future__ import annotations

import decimal
import math
from typing import cast

import pytest

from pytei.client import Metrics, MetricsParseError, parse_metrics


def _rust_f64(x: float) -> str:
    """f64 Display as Rust prints it: shortest round-trip digits, never an exponent."""
    text = repr(x)
    return format(decimal.Decimal(text), "f") if "e" in text else text


def _buckets() -> list[float]:
    value, out = 0.00001, []
    for _ in range(35):  # router/src/prometheus.rs: 35 buckets x1.5 from 1e-5
        value *= 1.5
        out.append(value)
    return out


def tei_metrics_text() -> str:
    """A scrape after 3 single and 2 batch /embed calls and one validation failure."""
    observed = [0.0021, 0.0034, 0.0038, 0.012, 0.95]
    lines = [
        "# TYPE te_request_count counter",
        'te_request_count{method="single"} 3',
        'te_request_count{method="batch"} 3',
        "",
        "# TYPE te_request_success counter",
        'te_request_success{method="single"} 3',
        'te_request_success{method="batch"} 2',
        "",
        "# TYPE te_request_failure counter",
        'te_request_failure{err="batch_size"} 1',
        "",
        "# TYPE te_embed_count counter",
        "te_embed_count 37",
        "",
        "# TYPE te_queue_size gauge",
        "te_queue_size 0",
        "",
        "# TYPE te_request_duration histogram",
    ]
    for bound in _buckets():
        lines.append(
            f'te_request_duration_bucket{{le="{_rust_f64(bound)}"}} {sum(o <= bound for o in observed)}'
        )
    lines += [
        'te_request_duration_bucket{le="+Inf"} 5',
        f"te_request_duration_sum {_rust_f64(sum(observed))}",
        "te_request_duration_count 5",
        "",
        "# TYPE te_request_input_length histogram",
    ]
    for power in range(9):  # powers of two up to max_input_length (256)
        lines.append(f'te_request_input_length_bucket{{le="{2**power}"}} {5 if 2**power >= 8 else 0}')
    lines += [
        'te_request_input_length_bucket{le="+Inf"} 5',
        "te_request_input_length_sum 33",
        "te_request_input_length_count 5",
        "",
    ]
    return "\n".join(lines) + "\n"


def test_parses_a_tei_scrape() -> None:
    metrics = parse_metrics(tei_metrics_text())
    assert isinstance(metrics, Metrics)
    assert metrics.types == {
        "te_request_count": "counter",
        "te_request_success": "counter",
        "te_request_failure": "counter",
        "te_embed_count": "counter",
        "te_queue_size": "gauge",
        "te_request_duration": "histogram",
        "te_request_input_length": "histogram",
    }
    assert metrics.value("te_request_count", method="single") == 3
    assert metrics.total("te_request_count") == 6
    assert metrics.total("te_request_failure", err="batch_size") == 1
    assert metrics.value("te_embed_count") == 37
    assert metrics.value("te_queue_size") == 0
    assert metrics.value("te_not_there") is None and metrics.total("te_not_there") == 0
    with pytest.raises(LookupError, match="give more labels"):
        metrics.value("te_request_count")
    assert len(metrics["te_request_duration_bucket"]) == 36
    assert "te_request_duration_bucket" in metrics

    histogram = metrics.histogram("te_request_duration")
    assert histogram is not None
    assert histogram.count == 5 and histogram.sum == pytest.approx(0.9713)
    # The casts keep mypy from narrowing these (float, float) buckets to nothing on an int.
    assert histogram.buckets[0] == cast("tuple[float, float]", (pytest.approx(1.5e-5), 0))
    assert histogram.buckets[-1] == cast("tuple[float, float]", (math.inf, 5))
    assert [c for _, c in histogram.buckets] == sorted(c for _, c in histogram.buckets)  # cumulative
    assert histogram.mean == pytest.approx(0.9713 / 5)
    # rank 2.5 of 5 falls in (1e-5 * 1.5**14, 1e-5 * 1.5**15], which holds observations 2 and 3
    low, high = 0.00001 * 1.5**14, 0.00001 * 1.5**15
    assert histogram.quantile(0.5) == pytest.approx(low + (high - low) * (2.5 - 1) / (3 - 1))
    lengths = metrics.histogram("te_request_input_length")
    assert lengths is not None and lengths.quantile(1.0) == 8.0
    assert metrics.histogram("te_request_count") is None


def test_labels_escapes_timestamps_help_and_untyped() -> None:
    text = (
        '# HELP weird A "help" line with \\\\ and \\n escapes\n'
        "# TYPE weird gauge\n"
        'weird{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb",} 1.5e3 1700000000000\n'
        "# a plain comment is ignored\n"
        "bare_metric -Inf\n"
        "nan_metric NaN\n"
    )
    metrics = parse_metrics(text)
    (sample,) = metrics["weird"]
    assert sample.labels == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb"}
    assert sample.value == 1500.0 and sample.timestamp_ms == 1700000000000
    assert metrics.help["weird"] == 'A "help" line with \\ and \n escapes'
    assert metrics.types["bare_metric"] == "untyped"
    assert metrics.value("bare_metric") == -math.inf
    assert math.isnan(metrics["nan_metric"][0].value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("te_x{method=single} 1\n", "malformed labels"),
        ('te_x{method="single" 1\n', "not a sample line"),
        ("te_x one\n", "not a number"),
        ("te_x\n", "not a sample line"),
        ("# TYPE te_x countr\n", "malformed TYPE"),
        ("# TYPE te_x counter\n# TYPE te_x gauge\n", "second TYPE"),
        ('te_x{a="1"} 1\nte_x{a="1"} 2\n', "duplicate sample"),
        ('te_x{a="1",a="2"} 1\n', "repeated"),
        ("3bad 1\n", "not a sample line"),
    ],
)
def test_malformed_lines_are_refused_with_their_number(text: str, message: str) -> None:
    with pytest.raises(MetricsParseError, match=message) as caught:
        parse_metrics("# TYPE ok counter\nok 1\n" + text)
    assert "line 3" in str(caught.value) or "line 4" in str(caught.value)


def test_empty_scrape_of_a_fresh_router() -> None:
    metrics = parse_metrics("")
    assert len(metrics) == 0 and metrics.total("te_request_count") == 0
