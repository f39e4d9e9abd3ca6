"""The router side of the GPU benchmarks: a router started as ``pytei serve`` starts it, TEI's own
span timings read from its ``--json-output`` log, and load through pytei's load generator.

Shared by ``bench_gpu.py``, ``bench_gpu_inprocess.py`` and ``bench_single_request.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytei.bench.endpoint import Target, build_request
from pytei.bench.loadgen import run_load
from pytei.bench.loadspec import LoadSpec
from pytei.client import Client
from pytei.serving.api import serve_process
from pytei.serving.options import ServeTarget

_DURATION = re.compile(r"^([0-9.]+)(ns|µs|us|ms|s)$")
_UNIT_MS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def timing(times_ms: Sequence[float], tokens: int) -> dict[str, Any]:
    median = statistics.median(times_ms)
    return {
        "runs": len(times_ms),
        "median_ms": round(median, 4),
        "min_ms": round(min(times_ms), 4),
        "spread": round((max(times_ms) - min(times_ms)) / median, 3),
        "tokens_per_s": round(tokens / (median / 1e3)),
    }


def _ms(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def inference_times(log_path: Path, since: int) -> list[dict[str, Any]]:
    """The span timings of each successful request logged after byte ``since`` (--json-output)."""
    found = []
    with log_path.open("rb") as f:
        f.seek(since)
        for line in f:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                span = event.get("span") or {}
                if event.get("message") == "Success" and "inference_time" in span:
                    keys = ("total_time", "tokenization_time", "queue_time", "inference_time")
                    timing: dict[str, Any] = {k: _ms(span[k]) for k in keys}
                    timing["raw_inference_time"] = span["inference_time"]
                    found.append(timing)
    return found


@contextlib.contextmanager
def tei(
    model_dir: Path, profile: str, args: Sequence[str], log_path: Path, dtype: str = "float16"
) -> Iterator[tuple[str, float]]:
    started = time.monotonic()
    target = ServeTarget(
        model_id=str(model_dir), profile=profile, port="auto", log_level="info", log_file=log_path,
        router_args=("--json-output", "--dtype", dtype, *args),
    )  # fmt: skip
    with serve_process(target, ready_timeout=600) as server:
        yield server.url, time.monotonic() - started


def forward_only(url: str, log_path: Path, texts: list[str], repeats: int) -> dict[str, Any]:
    """TEI's own forward time for one request of ``texts`` (one batch), from its log."""
    import requests

    body = json.dumps({"inputs": texts, "truncate": False})
    with requests.Session() as session:
        for _ in range(5):
            session.post(
                f"{url}/embed", data=body, headers={"Content-Type": "application/json"}
            ).raise_for_status()
        time.sleep(0.2)
        since = log_path.stat().st_size
        for _ in range(repeats):
            session.post(
                f"{url}/embed", data=body, headers={"Content-Type": "application/json"}
            ).raise_for_status()
    time.sleep(0.5)  # the log pump runs behind
    spans = inference_times(log_path, since)[-repeats:]
    if len(spans) < repeats * 0.9:
        raise SystemExit(f"only {len(spans)} of {repeats} requests' timings in {log_path}")
    tokens = len(texts) * 128
    out = timing([s["inference_time"] for s in spans], tokens)
    out["server_total_median_ms"] = round(statistics.median(s["total_time"] for s in spans), 4)
    out["tokenization_median_ms"] = round(statistics.median(s["tokenization_time"] for s in spans), 4)
    out["queue_median_ms"] = round(statistics.median(s["queue_time"] for s in spans), 4)
    return out


def _batch_counters(url: str) -> tuple[float, float, float]:
    """TEI's batches so far: how many, how many texts, how many tokens."""
    with Client(url) as client:
        metrics = client.metrics()
    size, tokens = metrics.histogram("te_batch_next_size"), metrics.histogram("te_batch_next_tokens")
    if size is None or tokens is None:
        return 0.0, 0.0, 0.0
    return float(size.count), size.sum, tokens.sum


def over_http(
    url: str,
    texts: list[str],
    per_request: int,
    concurrency: int,
    duration: float,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """pytei's load generator: closed loop, ``per_request`` texts of 128 tokens per request; with
    ``log_path``, TEI's forward throughput under this load too (see the module's docstring)."""
    target = Target.from_url(url)
    requests_ = []
    for start in range(0, len(texts), per_request):
        chunk = texts[start : start + per_request]
        if len(chunk) == per_request:
            body = json.dumps({"inputs": chunk, "truncate": False}).encode()
            requests_.append(
                build_request(target, "/embed", body, texts=per_request, tokens=per_request * 128)
            )
    before = _batch_counters(url) if log_path else (0.0, 0.0, 0.0)
    since = log_path.stat().st_size if log_path else 0
    stats = run_load(
        target,
        requests_,
        LoadSpec(
            concurrency=concurrency,
            duration=duration,
            warmup=2.0,
            timeout=60.0,
            max_connections=max(256, concurrency),
        ),
    )
    latency = stats.latency.summary()
    result: dict[str, Any] = {
        "per_request": per_request,
        "concurrency": concurrency,
        "requests": stats.succeeded,
        "errors": dict(stats.errors),
        "tokens_per_s": round(stats.tokens / stats.elapsed_s) if stats.elapsed_s else 0,
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
    }
    if log_path:
        time.sleep(0.5)  # the log pump runs behind
        after = _batch_counters(url)
        batches, entries, _tokens = (a - b for a, b in zip(after, before, strict=True))
        spans = inference_times(log_path, since)
        result["mean_batch_size"] = round(entries / batches, 1) if batches else 0.0
        result["span_medians_ms"] = (
            {
                k: round(statistics.median(s[k] for s in spans), 3)
                for k in spans[0]
                if k != "raw_inference_time"
            }
            if spans
            else {}
        )
        if per_request == 1:
            result["batches"] = batches_from_spans(spans)
    return result


def batches_from_spans(spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One-text requests' spans grouped into TEI's batches by their shared inference time:
    per batch size, how many batches and their median forward time."""
    groups: dict[str, int] = {}
    for span in spans:
        groups[span["raw_inference_time"]] = groups.get(span["raw_inference_time"], 0) + 1
    by_size: dict[int, list[float]] = {}
    for raw, size in groups.items():
        by_size.setdefault(size, []).append(_ms(raw))
    return {
        str(size): {"batches": len(times), "median_ms": round(statistics.median(times), 4)}
        for size, times in sorted(by_size.items())
    }


def device_line(log_path: Path) -> str:
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "Starting" in line and "model on" in line:
            with contextlib.suppress(ValueError):
                return str(json.loads(line).get("message"))
    return "(no model line)"
