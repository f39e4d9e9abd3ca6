"""``pytei bench``: load generation, HDR latency histograms, reports, plots and comparisons.

Library use::

    from pytei.bench import BenchConfig, LoadSpec, run_benchmark
    report = run_benchmark(BenchConfig(url="http://127.0.0.1:8080", load=LoadSpec(concurrency=4)))
    report.save(Path("run.json"))
"""

from pytei.bench.compare import Comparison, ComparisonRow, compare_reports, comparison_table, noise_test
from pytei.bench.endpoint import Request, Target, build_request
from pytei.bench.histogram import PERCENTILES, LatencyHistogram, LatencySummary
from pytei.bench.loadgen import run_load, run_load_async
from pytei.bench.loadspec import LoadSpec, Progress, RunStats
from pytei.bench.plot import plot_report
from pytei.bench.report import (
    SCHEMA_VERSION,
    BenchReport,
    Intervals,
    RunResult,
    Throughput,
    results_table,
    server_table,
)
from pytei.bench.runner import BenchConfig, Prepared, Sweep, prepare, run_benchmark
from pytei.bench.target import ServedRouter, fetch_info, serve_router
from pytei.bench.texts import (
    LocalTokenizer,
    RouterTokenizer,
    TokenCounter,
    TokenSpec,
    read_texts,
    synthetic_texts,
)
from pytei.bench.workloads import ROUTES, TASKS, Workload, build_workload, check_against_info

__all__ = [
    "PERCENTILES",
    "ROUTES",
    "SCHEMA_VERSION",
    "TASKS",
    "BenchConfig",
    "BenchReport",
    "Comparison",
    "ComparisonRow",
    "Intervals",
    "LatencyHistogram",
    "LatencySummary",
    "LoadSpec",
    "LocalTokenizer",
    "Prepared",
    "Progress",
    "Request",
    "RouterTokenizer",
    "RunResult",
    "RunStats",
    "ServedRouter",
    "Sweep",
    "Target",
    "Throughput",
    "TokenCounter",
    "TokenSpec",
    "Workload",
    "build_request",
    "build_workload",
    "check_against_info",
    "compare_reports",
    "comparison_table",
    "fetch_info",
    "noise_test",
    "plot_report",
    "prepare",
    "read_texts",
    "results_table",
    "run_benchmark",
    "run_load",
    "run_load_async",
    "serve_router",
    "server_table",
    "synthetic_texts",
]
