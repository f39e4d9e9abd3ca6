"""pytei.Client against the alternatives, side by side, in one run against one router.

    python benchmarks/bench_client.py --url http://127.0.0.1:8080
    python benchmarks/bench_client.py --url http://127.0.0.1:8080 --capacity 1850   # texts/s

What it measures (all on the same texts, same router, same process, one after the other):

1. Bulk: ``--texts`` short texts (20,000 by default) embedded by
   - ``pytei.Client.embed`` (split by the router's max_client_batch_size, ``--concurrency``
     requests in flight);
   - a plain sequential loop of ``requests.post`` over the same batches (what most scripts do);
   - tei-client 0.2.4 (PyPI; ``pip install tei-client==0.2.4``, not a pytei dependency): its
     sync ``HttpClient.embed`` in the same sequential loop, and its ``async_embed`` with
     ``asyncio.gather`` at the same concurrency as pytei (its most favourable use).
   Every method's vectors are checked equal to pytei's (so all did the same work) and
   throughput ratios are reported as pytei / other.
2. Per-call overhead: ``Client.embed(one_text)`` against ``requests.post(...).json()`` (a new
   connection per call, as ``requests.post`` does) and against a keep-alive
   ``requests.Session().post(...).json()``; ``--repeats`` interleaved rounds (the order of the
   three rotates every round), medians and ratios.  Target: within 5 % of raw requests.
3. Capacity: the router's best texts/s from ``pytei bench`` (run as a subprocess on the same
   texts and batch size, ``--sweep concurrency=...``, best run), or ``--capacity`` when given
   or when ``pytei bench`` is not available.  Target: pytei bulk >= 90 % of it.

Results: JSON and Markdown under ``--out`` (default benchmarks/results/), named by date.
For a smoke test without a router: ``python tests/unit/client/fault_server.py --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests

from pytei import __version__ as pytei_version
from pytei.client import Client

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "be",
    "are",
    "was",
    "an",
    "or",
    "not",
    "have",
    "has",
    "model",
    "text",
    "vector",
    "search",
    "query",
    "document",
    "embedding",
    "token",
    "router",
    "server",
    "client",
    "batch",
    "fast",
    "small",
    "quick",
    "brown",
    "fox",
    "lazy",
    "dog",
    "river",
    "bank",
    "money",
    "tree",
    "forest",
    "city",
    "music",
    "film",
    "story",
    "science",
    "data",
    "cloud",
    "light",
    "energy",
    "plant",
    "water",
    "market",
    "price",
    "growth",
    "health",
    "sleep",
    "coffee",
    "morning",
    "train",
    "station",
    "bridge",
]


def make_texts(count: int, seed: int = 0) -> list[str]:
    """Short English-like texts of 6 to 16 words, distinct, reproducible."""
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(6, 16))) for i in range(count)]


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# --- bulk ----------------------------------------------------------------------------------------


def bulk_pytei(url: str, texts: list[str], concurrency: int, batch: int) -> tuple[float, np.ndarray]:
    with Client(url, max_concurrency=concurrency, max_client_batch_size=batch) as client:
        client.embed(texts[:batch])  # warm: connections open
        seconds, result = timed(lambda: client.embed(texts))
    return seconds, result.vectors


def bulk_requests_loop(url: str, texts: list[str], batch: int) -> tuple[float, np.ndarray]:
    def run() -> np.ndarray:
        rows: list[list[float]] = []
        for part in chunks(texts, batch):
            response = requests.post(f"{url}/embed", json={"inputs": part}, timeout=120)
            response.raise_for_status()
            rows.extend(response.json())
        return np.asarray(rows, dtype=np.float32)

    return timed(run)


def bulk_tei_client_sync(url: str, texts: list[str], batch: int) -> tuple[float, np.ndarray]:
    from tei_client import HttpClient

    client = HttpClient(url, timeout=120)
    client.embed(texts[:1])  # its first call also reads /info (model type check)

    def run() -> np.ndarray:
        rows: list[list[float]] = []
        for part in chunks(texts, batch):
            rows.extend(client.embed(part))
        return np.asarray(rows, dtype=np.float32)

    return timed(run)


def bulk_tei_client_async(
    url: str, texts: list[str], batch: int, concurrency: int
) -> tuple[float, np.ndarray]:
    from tei_client import HttpClient

    client = HttpClient(url, timeout=120)
    client.embed(texts[:1])

    async def run() -> np.ndarray:
        gate = asyncio.Semaphore(concurrency)

        async def one(part: list[str]) -> list[list[float]]:
            async with gate:
                embedded: list[list[float]] = await client.async_embed(part)
                return embedded

        parts = await asyncio.gather(*(one(p) for p in chunks(texts, batch)))
        return np.asarray([row for part in parts for row in part], dtype=np.float32)

    return timed(lambda: asyncio.run(run()))


# --- per call ----------------------------------------------------------------------------------


def per_call_overhead(url: str, repeats: int, text: str = "What is deep learning?") -> dict[str, Any]:
    """Medians (ms) of one-text calls, interleaved so drift hits every method alike."""
    session = requests.Session()
    payload = {"inputs": text}
    with Client(url) as client:
        methods: dict[str, Callable[[], Any]] = {
            "pytei.Client.embed": lambda: client.embed(text),
            "requests.post": lambda: requests.post(f"{url}/embed", json=payload, timeout=60).json(),
            "requests.Session.post": lambda: session.post(f"{url}/embed", json=payload, timeout=60).json(),
        }
        for fn in methods.values():  # warm every path
            for _ in range(5):
                fn()
        samples: dict[str, list[float]] = {name: [] for name in methods}
        names = list(methods)
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(timed(methods[name])[0] * 1e3)
    session.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    client_ms = medians["pytei.Client.embed"]
    return {
        "repeats": repeats,
        "median_ms": medians,
        "p90_ms": {name: float(np.percentile(values, 90)) for name, values in samples.items()},
        "ratio_vs_requests_post": client_ms / medians["requests.post"],
        "ratio_vs_session_post": client_ms / medians["requests.Session.post"],
    }


# --- capacity ----------------------------------------------------------------------------------


def router_capacity(
    url: str, texts: list[str], batch: int, sweep: str, duration: float
) -> tuple[float | None, dict[str, Any]]:
    """The best texts/s of ``pytei bench`` on these texts, or (None, why) when it cannot run."""
    exe = shutil.which("pytei")
    command = [exe] if exe else [sys.executable, "-m", "pytei"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.txt"
        path.write_text("\n".join(texts[:4096]) + "\n", encoding="utf-8")
        argv = [
            *command,
            "bench",
            url,
            "--task",
            "embed",
            "--batch-size",
            str(batch),
            "--input-file",
            str(path),
            "--sweep",
            sweep,
            "--duration",
            str(duration),
            "--json",
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, {"argv": argv, "error": str(exc)}
    if done.returncode != 0:
        return None, {"argv": argv, "error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    try:
        report = json.loads(done.stdout)
        runs = [(run["throughput"]["texts_per_s"], run.get("concurrency")) for run in report["runs"]]
    except (ValueError, KeyError, TypeError) as exc:
        return None, {"argv": argv, "error": f"unreadable pytei bench JSON: {exc}"}
    best, at = max(runs, key=lambda r: r[0])
    return float(best), {
        "argv": argv,
        "runs": [{"texts_per_s": t, "concurrency": c} for t, c in runs],
        "best_concurrency": at,
    }


# --- report ------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# pytei.Client benchmark ({results['date']})",
        "",
        (
            f"Router: `{results['url']}` ({results['router']}); {results['texts']} texts, batch {results['batch']}, "
            f"pytei concurrency {results['concurrency']}; pytei {results['pytei_version']}, "
            f"Python {results['python']}, {results['machine']}."
        ),
        "",
        "## Bulk embed",
        "",
        "| method | seconds | texts/s | pytei / method |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in results["bulk"].items():
        if "error" in row:
            lines.append(f"| {name} | - | - | ({row['error']}) |")
        else:
            lines.append(
                f"| {name} | {row['seconds']:.2f} | {row['texts_per_s']:.0f} | {row['pytei_ratio']:.2f}x |"
            )
    overhead = results["per_call"]
    lines += [
        "",
        "## Per-call overhead (one text)",
        "",
        "| method | median ms | p90 ms |",
        "| --- | ---: | ---: |",
    ]
    for name, value in overhead["median_ms"].items():
        lines.append(f"| {name} | {value:.3f} | {overhead['p90_ms'][name]:.3f} |")
    lines += [
        "",
        (
            f"Client / requests.post: {overhead['ratio_vs_requests_post']:.3f}; "
            f"Client / Session.post: {overhead['ratio_vs_session_post']:.3f} (target: within 5 % of raw requests)."
        ),
        "",
        "## Against the router's capacity",
        "",
    ]
    capacity = results["capacity"]
    if capacity["texts_per_s"] is None:
        lines.append(f"Not measured: {capacity.get('error', 'no pytei bench and no --capacity')}.")
    else:
        lines.append(
            f"Capacity {capacity['texts_per_s']:.0f} texts/s ({capacity['source']}); pytei bulk reaches "
            f"{capacity['pytei_fraction']:.1%} of it (target: at least 90 %)."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="the router, e.g. http://127.0.0.1:8080")
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pytei (and tei-client async) requests in flight [default: pytei bench's best, else 8]",
    )
    parser.add_argument("--repeats", type=int, default=300, help="interleaved rounds of the per-call test")
    parser.add_argument(
        "--capacity", type=float, default=None, help="router capacity in texts/s (skips pytei bench)"
    )
    parser.add_argument("--sweep", default="concurrency=1,2,4,8,16,32", help="pytei bench --sweep")
    parser.add_argument("--bench-duration", type=float, default=10.0, help="pytei bench --duration per run")
    parser.add_argument("--skip-tei-client", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")

    with Client(url) as probe:
        info = probe.info()
    batch = info.max_client_batch_size
    texts = make_texts(args.texts)
    print(f"router {info.model_id} ({info.kind}), max_client_batch_size {batch}", file=sys.stderr)

    # capacity first: its best concurrency is the fair setting for pytei's bulk run
    if args.capacity is not None:
        capacity: dict[str, Any] = {"texts_per_s": args.capacity, "source": "--capacity"}
    else:
        print("capacity: pytei bench", file=sys.stderr)
        best, detail = router_capacity(url, texts, batch, args.sweep, args.bench_duration)
        capacity = {"texts_per_s": best, "source": "pytei bench", **detail}
    concurrency = args.concurrency or capacity.get("best_concurrency") or 8

    bulk: dict[str, dict[str, Any]] = {}
    print(f"bulk: pytei.Client.embed ({concurrency} in flight)", file=sys.stderr)
    seconds, reference = bulk_pytei(url, texts, concurrency, batch)
    bulk["pytei.Client.embed"] = {"seconds": seconds}
    others: list[tuple[str, Callable[[], tuple[float, np.ndarray]]]] = [
        ("requests.post loop (sequential)", lambda: bulk_requests_loop(url, texts, batch)),
    ]
    if not args.skip_tei_client:
        others += [
            ("tei-client 0.2.4 embed (sequential)", lambda: bulk_tei_client_sync(url, texts, batch)),
            (
                f"tei-client 0.2.4 async_embed (gather, {concurrency} in flight)",
                lambda: bulk_tei_client_async(url, texts, batch, concurrency),
            ),
        ]
    for name, run in others:
        print(f"bulk: {name}", file=sys.stderr)
        try:
            seconds, vectors = run()
        except Exception as exc:  # noqa: BLE001 - a missing or broken alternative is reported, not fatal
            bulk[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        if vectors.shape != reference.shape or not np.allclose(vectors, reference, atol=1e-6):
            bulk[name] = {"error": "its vectors differ from pytei's"}
            continue
        bulk[name] = {"seconds": seconds}
    pytei_rate = len(texts) / bulk["pytei.Client.embed"]["seconds"]
    for row in bulk.values():
        if "seconds" in row:
            row["texts_per_s"] = len(texts) / row["seconds"]
            row["pytei_ratio"] = pytei_rate / row["texts_per_s"]
    if capacity["texts_per_s"]:
        capacity["pytei_fraction"] = pytei_rate / capacity["texts_per_s"]

    print("per-call overhead", file=sys.stderr)
    per_call = per_call_overhead(url, args.repeats)

    now = dt.datetime.now(dt.UTC)
    results = {
        "date": now.isoformat(timespec="seconds"),
        "url": url,
        "router": f"{info.model_id} {info.version} ({info.kind})",
        "texts": len(texts),
        "batch": batch,
        "concurrency": concurrency,
        "pytei_version": pytei_version,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "bulk": bulk,
        "per_call": per_call,
        "capacity": capacity,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"client-{now.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
