"""Two reports side by side: ratios, and whether a difference is bigger than run-to-run noise.

The noise rule (documented in ``pytei bench compare --help``): every run records, per whole
second of its measurement window, the number of successful requests and their mean latency.
For throughput and mean latency, the per-second samples of run A and run B are resampled with
replacement (bootstrap, 2000 rounds, fixed seed) and the 95% interval of the difference of
the two means is formed.  The difference is *real* when that interval excludes zero; the
verdict then says whether B is better or worse.  With fewer than 3 whole seconds in either run
there is no verdict.  Percentiles have no per-second samples, so they get ratios only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rich.table import Table

from pytei.bench.report import BenchReport, RunResult

__all__ = ["Comparison", "ComparisonRow", "Verdict", "compare_reports", "comparison_table", "noise_test"]

Verdict = Literal["better", "worse", "noise", "n/a"]
_ROUNDS = 2000
_MIN_INTERVALS = 3


@dataclass(frozen=True)
class ComparisonRow:
    run: str
    metric: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a
    verdict: Verdict
    noise_pct: float | None  # half-width of the 95% interval, in % of A's mean

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "ratio": self.ratio,
            "verdict": self.verdict,
            "noise_pct": self.noise_pct,
        }


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    rows: tuple[ComparisonRow, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "rows": [r.to_json() for r in self.rows], "notes": list(self.notes)}


def noise_test(
    a: Sequence[float], b: Sequence[float], *, higher_is_better: bool, seed: int = 0
) -> tuple[Verdict, float | None]:
    """Bootstrap the difference of means; (verdict, half-width of the 95% interval in % of A)."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if len(xa) < _MIN_INTERVALS or len(xb) < _MIN_INTERVALS or xa.mean() == 0:
        return "n/a", None
    rng = np.random.default_rng(seed)
    means_a = xa[rng.integers(0, len(xa), size=(_ROUNDS, len(xa)))].mean(axis=1)
    means_b = xb[rng.integers(0, len(xb), size=(_ROUNDS, len(xb)))].mean(axis=1)
    low, high = np.percentile(means_b - means_a, [2.5, 97.5])
    noise = float((high - low) / 2 / abs(xa.mean()) * 100)
    if low <= 0 <= high:
        return "noise", noise
    increased = low > 0
    return ("better" if increased == higher_is_better else "worse"), noise


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def _pairs(a: BenchReport, b: BenchReport) -> tuple[list[tuple[RunResult, RunResult]], list[str]]:
    labels_a = [run.label for run in a.runs]
    labels_b = [run.label for run in b.runs]
    notes: list[str] = []
    if labels_a == labels_b:
        return list(zip(a.runs, b.runs, strict=True)), notes
    common = [label for label in labels_a if label in labels_b]
    if common:
        by_b = {run.label: run for run in b.runs}
        pairs = [(run, by_b[run.label]) for run in a.runs if run.label in by_b]
        notes.append(f"compared the load levels both runs have: {', '.join(common)}")
        return pairs, notes
    notes.append(f"load levels differ ({', '.join(labels_a)} vs {', '.join(labels_b)}): compared in order")
    return list(zip(a.runs, b.runs, strict=False)), notes


def compare_reports(a: BenchReport, b: BenchReport, *, a_name: str = "A", b_name: str = "B") -> Comparison:
    pairs, notes = _pairs(a, b)
    for key in ("task", "batch_size", "tokens_description"):
        if a.workload.get(key) != b.workload.get(key):
            notes.append(f"workloads differ in {key}: {a.workload.get(key)!r} vs {b.workload.get(key)!r}")
    rows: list[ComparisonRow] = []
    for run_a, run_b in pairs:
        label = run_a.label if run_a.label == run_b.label else f"{run_a.label}|{run_b.label}"
        verdict, noise = noise_test(
            run_a.intervals.completed, run_b.intervals.completed, higher_is_better=True
        )
        for metric, va, vb in (
            ("requests/s", run_a.throughput.requests_per_s, run_b.throughput.requests_per_s),
            ("texts/s", run_a.throughput.texts_per_s, run_b.throughput.texts_per_s),
            ("tokens/s", run_a.throughput.tokens_per_s, run_b.throughput.tokens_per_s),
        ):
            known = va is not None and vb is not None
            rows.append(
                ComparisonRow(
                    label,
                    metric,
                    va,
                    vb,
                    _ratio(va, vb),
                    verdict if known else "n/a",
                    noise if known else None,
                )
            )
        lat_verdict, lat_noise = noise_test(_weighted(run_a), _weighted(run_b), higher_is_better=False)
        rows.append(
            ComparisonRow(
                label,
                "mean ms",
                run_a.latency.mean,
                run_b.latency.mean,
                _ratio(run_a.latency.mean, run_b.latency.mean),
                lat_verdict,
                lat_noise,
            )
        )
        for key in ("p50", "p90", "p99", "p99.9"):
            va, vb = run_a.latency[key], run_b.latency[key]
            rows.append(ComparisonRow(label, f"{key} ms", va, vb, _ratio(va, vb), "n/a", None))
        ea = run_a.error_count / max(run_a.issued, 1)
        eb = run_b.error_count / max(run_b.issued, 1)
        rows.append(ComparisonRow(label, "error rate", ea, eb, _ratio(ea, eb), "n/a", None))
    return Comparison(a_name, b_name, tuple(rows), tuple(notes))


def _weighted(run: RunResult) -> list[float]:
    # Seconds with no successes have no mean latency; they are left out, not counted as 0 ms.
    return [m for m, n in zip(run.intervals.latency_mean_ms, run.intervals.completed, strict=True) if n]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def comparison_table(comparison: Comparison) -> Table:
    table = Table(title=f"A = {comparison.a}\nB = {comparison.b}", title_justify="left")
    for name, justify in (("load", "left"), ("metric", "left"), ("A", "right"), ("B", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("B/A", justify="right")
    table.add_column("noise ±%", justify="right")
    table.add_column("verdict")
    previous = None
    for row in comparison.rows:
        style = {"better": "green", "worse": "red"}.get(row.verdict)
        table.add_row(
            row.run if row.run != previous else "",
            row.metric,
            _fmt(row.a),
            _fmt(row.b),
            "-" if row.ratio is None else f"{row.ratio:.3f}",
            "-" if row.noise_pct is None else f"{row.noise_pct:.1f}",
            row.verdict if row.verdict != "n/a" else "",
            style=style,
        )
        previous = row.run
    if comparison.notes:
        table.caption = "; ".join(comparison.notes)
        table.caption_justify = "left"
    return table
