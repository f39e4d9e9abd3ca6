"""Soak and faults against a real router under `pytei serve --detach --restart on-failure`.

    python benchmarks/bench_soak.py --minutes 10 --out benchmarks/results/soak.json

1. Capacity: pytei's load generator, closed loop at concurrency 4, 15 s, requests of 8 texts.
2. Soak: open loop at 80% of that rate for ``--minutes``; per 30 s window the p50/p99 latency
   and errors; every 5 s the resident memory of the router and of its pytei supervisor.
   Targets: 0 errors, p99 and RSS flat (last window against the first, beyond noise).
3. Faults: ``pytei.Client`` callers (retries on, as shipped) at the same rate for ``--minutes``
   (capped at 5), the router SIGKILLed at a third and at two thirds; the supervisor restarts it.
   Counted: requests sent, answered, and lost after the client's retries (target 0 lost).

The service is stopped at the end whatever happens (`pytei stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytei.bench.endpoint import Target, build_request
from pytei.bench.loadgen import run_load
from pytei.bench.loadspec import LoadSpec
from pytei.client import Client, RetryPolicy
from pytei.errors import PyteiError

NAME = "soak"
TEXTS = [
    f"Sentence {i}: the soak test keeps the router busy at a steady rate for minutes on end."
    for i in range(64)
]


def pytei(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytei", *args], capture_output=True, text=True, check=False)


def service() -> dict[str, Any]:
    listed = json.loads(pytei("ps", "--json").stdout or "[]")
    found = [s for s in listed if s.get("name") == NAME]
    if not found:
        raise SystemExit(f"service {NAME!r} is not running")
    state: dict[str, Any] = found[0]
    return state


def wait_router(old_pid: int | None, timeout: float = 120.0) -> dict[str, Any]:
    """The service once its router answers, with a pid other than ``old_pid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = service()
        if state["pid"] > 0 and state["pid"] != old_pid and pytei("health", NAME).returncode == 0:
            return state
        time.sleep(0.2)
    raise SystemExit(f"the router was not back within {timeout} s")


def rss_mb(pid: int | None) -> float | None:
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1) if pid else None
    except psutil.Error:
        return None


class Sampler(threading.Thread):
    """RSS of the router and of its supervisor every ``period`` seconds."""

    def __init__(self, period: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.period, self.stopped = period, threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            with_state = service()
            self.samples.append({
                "t": round(time.monotonic() - self.started_at, 1),
                "router_mb": rss_mb(with_state["pid"]), "supervisor_mb": rss_mb(with_state.get("supervisor_pid")),
                "pytei_mb": rss_mb(os.getpid()),
            })  # fmt: skip


def requests_for(url: str) -> list[Any]:
    target = Target.from_url(url)
    return [
        build_request(target, "/embed", json.dumps({"inputs": TEXTS[i : i + 8]}).encode(), texts=8)
        for i in range(0, len(TEXTS), 8)
    ]


def capacity(url: str) -> float:
    stats = run_load(
        Target.from_url(url), requests_for(url), LoadSpec(concurrency=4, duration=15.0, warmup=3.0)
    )
    return stats.succeeded / stats.elapsed_s


def soak(url: str, rate: float, minutes: float) -> dict[str, Any]:
    sampler = Sampler()
    sampler.start()
    windows = []
    try:
        for _ in range(max(1, round(minutes * 2))):  # 30 s windows
            stats = run_load(
                Target.from_url(url), requests_for(url), LoadSpec(rate=rate, duration=30.0, timeout=30.0)
            )
            summary = stats.latency.summary()
            windows.append({
                "issued": stats.issued, "succeeded": stats.succeeded, "errors": dict(stats.errors),
                "late": stats.late, "p50_ms": summary["p50"], "p99_ms": summary["p99"],
            })  # fmt: skip
    finally:
        sampler.stopped.set()
        sampler.join()
    return {"rate": rate, "windows": windows, "rss": sampler.samples}


def faults(url: str, rate: float, minutes: float) -> dict[str, Any]:
    """Paced callers with retries while the router is killed twice."""
    duration = min(minutes, 5.0) * 60
    callers = 4
    interval = callers / rate
    counts = {"sent": 0, "answered": 0, "lost": 0}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration
    # A restart takes a second or two: the shipped policy's backoff (0.25 s doubling, 3 resends)
    # covers up to ~1.75 s; a caller that knows it sits behind a restarting supervisor asks for
    # more resends, which is what this measures.
    policy = RetryPolicy(max_retries=8, backoff_base=0.25, backoff_max=2.0)

    def caller(k: int) -> None:
        with Client(url, retries=policy, timeout=(2.0, 30.0)) as client:
            next_at = time.monotonic() + k * interval / callers
            while time.monotonic() < stop_at:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                with lock:
                    counts["sent"] += 1
                try:
                    client.embed(TEXTS[(counts["sent"] * 8) % 56 : (counts["sent"] * 8) % 56 + 8])
                    with lock:
                        counts["answered"] += 1
                except PyteiError as exc:
                    with lock:
                        counts["lost"] += 1
                        errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for thread in threads:
        thread.start()
    kills = []
    for fraction in (1 / 3, 2 / 3):
        time.sleep(max(0.0, stop_at - duration * (1 - fraction) - time.monotonic()))
        state = service()
        os.kill(state["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        back = wait_router(state["pid"])
        kills.append({"pid": state["pid"], "new_pid": back["pid"], "back_after_s": round(time.monotonic() - killed_at, 2),
                      "restarts": back.get("restarts")})  # fmt: skip
    for thread in threads:
        thread.join()
    return {
        "rate": rate,
        "seconds": duration,
        "callers": callers,
        **counts,
        "kills": kills,
        "errors": errors[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--profile", default="", help="installed router (default: the newest)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = [
        "serve",
        "--model-id",
        args.model,
        "--name",
        NAME,
        "--port",
        "auto",
        "--detach",
        "--restart",
        "on-failure",
    ]
    if args.profile:
        start += ["--profile", args.profile]
    started = pytei(*start)
    if started.returncode != 0:
        raise SystemExit(f"pytei serve failed: {started.stderr}")
    try:
        state = wait_router(None)
        url = state["url"]
        report: dict[str, Any] = {
            "model": args.model,
            "router": state.get("binary"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        report["capacity_rps"] = round(capacity(url), 2)
        rate = report["capacity_rps"] * args.load
        print(f"capacity {report['capacity_rps']:.1f} requests/s of 8 texts; soak at {rate:.1f}", flush=True)
        report["soak"] = soak(url, rate, args.minutes)
        report["faults"] = faults(url, rate, args.minutes)
        windows = report["soak"]["windows"]
        rss = report["soak"]["rss"]
        report["summary"] = {
            "soak_errors": sum(sum(w["errors"].values()) for w in windows),
            "p99_first_last_ms": [windows[0]["p99_ms"], windows[-1]["p99_ms"]],
            "p99_median_ms": statistics.median(w["p99_ms"] for w in windows),
            "router_rss_first_last_max_mb": [rss[0]["router_mb"], rss[-1]["router_mb"], max(s["router_mb"] or 0 for s in rss)] if rss else None,
            "supervisor_rss_first_last_mb": [rss[0]["supervisor_mb"], rss[-1]["supervisor_mb"]] if rss else None,
            "fault_lost": report["faults"]["lost"], "fault_sent": report["faults"]["sent"],
        }  # fmt: skip
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(json.dumps(report["summary"], indent=2))
    finally:
        pytei("stop", NAME)


if __name__ == "__main__":
    main()
