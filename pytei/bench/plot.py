"""Pictures of a report: latency CDFs, and for sweeps throughput against latency.

Drawn on a bare ``matplotlib.figure.Figure`` (the Agg canvas, no pyplot state), so plotting
works without a display and does not disturb a caller's own figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytei.bench.report import BenchReport
from pytei.errors import BenchError

__all__ = ["plot_report"]


def _figure(panels: int) -> Any:
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise BenchError("--plot needs matplotlib", hint="pip install 'pytei[plot]'") from exc
    return Figure(figsize=(6.4 * panels, 4.8), layout="constrained")


def plot_report(report: BenchReport, path: Path) -> Path:
    """Write the plot (format from the suffix, PNG by default) and return its path."""
    runs = [run for run in report.runs if run.latency.count]
    if not runs:
        raise BenchError("nothing to plot: no request succeeded")
    sweep = len(runs) > 1
    figure = _figure(2 if sweep else 1)
    axes = figure.subplots(1, 2) if sweep else [figure.subplots()]
    cdf = axes[0]
    lowest, highest = float("inf"), 0.0
    for run in runs:
        values, fractions = run.latency.histogram().cdf_ms()
        cdf.step(values, fractions, where="post", label=run.label)
        lowest, highest = min(lowest, values[0]), max(highest, values[-1])
    if highest > 20 * max(lowest, 1e-3):
        from matplotlib.ticker import LogLocator, ScalarFormatter  # noqa: PLC0415 - optional dependency

        cdf.set_xscale("log")
        # Plain numbers at 1-2-5 steps; matplotlib's minor labels (3x10^1...) overlap.
        cdf.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        cdf.xaxis.set_major_formatter(ScalarFormatter())
        cdf.xaxis.set_minor_formatter("")
    for level in (0.5, 0.9, 0.99):
        cdf.axhline(level, color="0.8", linewidth=0.8, zorder=0)
    cdf.set_xlabel("latency (ms)")
    cdf.set_ylabel("fraction of requests at or below")
    cdf.set_ylim(0, 1.01)
    cdf.set_title("client latency CDF")
    cdf.legend(fontsize="small")
    if sweep:
        curve = axes[1]
        throughput = [run.throughput.requests_per_s for run in runs]
        for key, marker in (("p50", "o-"), ("p99", "s--")):
            curve.plot(throughput, [run.latency[key] for run in runs], marker, label=key)
        for run, x in zip(runs, throughput, strict=True):
            curve.annotate(
                run.label, (x, run.latency["p50"]), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
        curve.set_xlabel("throughput (requests/s)")
        curve.set_ylabel("latency (ms)")
        curve.set_title("throughput vs latency")
        curve.legend(fontsize="small")
    info = report.target.get("info") or {}
    # A model directory's name, not its path on this machine (plots end up in reports).
    subject = Path(str(info.get("model_id") or "")).name or report.target.get("url")
    figure.suptitle(f"pytei bench · {report.workload.get('task')} · {subject}", fontsize="medium")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    except OSError as exc:
        raise BenchError(f"cannot write the plot {path}: {exc.strerror}") from exc
    return path
