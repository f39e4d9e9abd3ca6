"""TEI's engine in-process (pytei.LocalEngine) against the same build over HTTP, in one run.

    python benchmarks/bench_inprocess.py --profile ort --peers-python PEERS/bin/python \\
        --out benchmarks/results/inprocess_cpu.json

Same engine build for both (``pytei build --profile P`` and ``pytei build --engine --profile
P``), same model, same texts (bench_cpu_peers.py's corpus), alternated over ``--rounds``:

- per-call overhead: a short text per call, one at a time; the caller's latency minus TEI's own
  tokenization + queue + inference time for that call (the x-*-time headers over HTTP, the same
  counters in-process).  Target: in-process <= 0.2x HTTP's overhead.
- bulk: the corpus in batches of 32; HTTP at concurrency 1 and 2 (its best counts), in-process
  with one thread.  Target: >= 1.0x.
- threads: short texts from 1 and from 2 Python threads at once, in-process.  Target: 2 threads
  >= 1.6x one (the GIL is released and TEI's queue batches both threads' inputs).  LocalEngine's
  default batch wait (patch 0009) is what lets two closed-loop threads share a batch;
  ``--batch-wait 0,200,500`` measures it against TEI's own batching.
- the same corpus through sentence-transformers and onnxruntime in PEERS (cpu_peers_worker.py)
  for the ratios to each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu_peers import corpus, peer_system

from pytei import LocalEngine, serve
from pytei.cache import Cache
from pytei.client import Client
from pytei.client.metrics import Histogram
from pytei.config import load_settings
from pytei.engine import Engine
from pytei.local.engine import CALLER_TOKENIZERS_ENV
from pytei.models.for_ort import export_onnx
from pytei.models.resolve import resolve_model

SHORT = [f"short text number {i}" for i in range(400)]


def overhead(engine: Engine, texts: list[str], calls: int = 300) -> dict[str, float]:
    """Median caller-observed latency, TEI-accounted time, and their difference (ms), with
    TEI's tokenization and queue parts."""
    for text in texts[:20]:
        engine.embed(text)
    totals, accounted, tokenization, queue = [], [], [], []
    for text in texts[20 : 20 + calls]:
        started = time.perf_counter()
        result = engine.embed(text)
        totals.append((time.perf_counter() - started) * 1e3)
        t = result.timing
        accounted.append((t.tokenization_ms or 0) + (t.queue_ms or 0) + (t.inference_ms or 0))
        tokenization.append(t.tokenization_ms or 0)
        queue.append(t.queue_ms or 0)
    diffs = [a - b for a, b in zip(totals, accounted, strict=True)]
    return {
        "latency_ms": statistics.median(totals),
        "tei_ms": statistics.median(accounted),
        "overhead_ms": statistics.median(diffs),
        "tokenization_ms": statistics.median(tokenization),
        "queue_ms": statistics.median(queue),
    }


def bulk(engines: list[Engine], texts: list[str], passes: int = 3) -> list[float]:
    """texts/s of the corpus in batches of 32, one engine (client) per thread."""
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    rates = []
    for _ in range(passes):
        started = time.perf_counter()

        def work(k: int) -> None:
            for j in range(k, len(batches), len(engines)):
                engines[k].embed(batches[j])

        with ThreadPoolExecutor(len(engines)) as pool:
            list(pool.map(work, range(len(engines))))
        rates.append(len(texts) / (time.perf_counter() - started))
    return rates


def threads(engine: Engine, count: int, seconds: float = 5.0, texts: list[str] = SHORT) -> float:
    """Texts (short ones by default) per second with ``count`` threads calling ``engine`` at once."""
    stop = time.monotonic() + seconds
    done = [0] * count

    def work(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            engine.embed(texts[i % len(texts)])
            done[k] += 1
            i += count

    workers = [threading.Thread(target=work, args=(k,)) for k in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / seconds


def gil_probe(engine: Engine, seconds: float = 3.0) -> dict[str, float]:
    """A pure-Python loop's rate alone and beside a thread calling the engine: near 1.0 means
    the GIL is released while TEI works (with one ORT thread, so a core is left for Python)."""

    def count() -> float:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n / seconds

    engine.embed("warm")
    alone = count()
    stop, calls = threading.Event(), [0]

    def work() -> None:
        while not stop.is_set():
            engine.embed("a short text to embed")
            calls[0] += 1

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.5)
    beside = count()
    stop.set()
    worker.join()
    return {
        "python_loop_ratio": round(beside / alone, 3),
        "engine_calls_per_s": round(calls[0] / (seconds + 0.5), 1),
    }


def round_of(profile: str, model_id: str, texts: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with LocalEngine(model_id, profile=profile) as engine:
        result["inprocess"] = {
            "overhead": overhead(engine, SHORT),
            "bulk": bulk([engine], texts),
            "threads_1": threads(engine, 1),
            "threads_2": threads(engine, 2),
            "build": engine.build_info(),
        }
    with serve(model_id, profile=profile, port="auto") as client, Client(client.base_url) as second:
        result["http"] = {
            "overhead": overhead(client, SHORT),
            "bulk_1": bulk([client], texts),
            "bulk_2": bulk([client, second], texts),
        }
    return result


def mean_batch(before: Histogram | None, after: Histogram | None) -> float:
    """Texts per record of TEI's te_batch_next_size between two readings.  TEI records a size
    for every batch it asks the queue for, empty ones (0) included, and its own prefetch asks
    after every batch: under TEI's batching this understates the batches; with a batch wait
    (patch 0009), which asks only when something is queued, it is close to exact.  A mean near 2
    for two callers can only come from batches of two."""
    if after is None:
        return float("nan")
    start = (before.sum, before.count) if before is not None else (0.0, 0.0)  # none before a first batch
    records = after.count - start[1]
    return round((after.sum - start[0]) / records, 3) if records else float("nan")


def batch_profile(engine: LocalEngine, seconds: float = 2.0) -> dict[str, float]:
    """Two threads calling at once: TEI's mean batch size (:func:`mean_batch`) and the median
    inference time of their batches, beside one thread's."""
    stop = time.monotonic() + seconds
    inference: list[list[float]] = [[], []]
    before = engine.metrics().histogram("te_batch_next_size")

    def work(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            inference[k].append(engine.embed(SHORT[i % len(SHORT)]).timing.inference_ms or 0.0)
            i += 2

    workers = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    mean = mean_batch(before, engine.metrics().histogram("te_batch_next_size"))
    lone = [engine.embed(text).timing.inference_ms or 0.0 for text in SHORT[:200]]
    return {
        "mean_batch": mean,
        "inference_ms_two_threads": round(statistics.median(inference[0] + inference[1]), 3),
        "inference_ms_one_thread": round(statistics.median(lone), 3),
    }


def batch_wait_sweep(
    model_id: str,
    profile: str,
    waits: list[int],
    rounds: int,
    tokenizers: list[int] | None = None,
    with_bulk: bool = True,
) -> dict[str, Any]:
    """Each setting in its own engine (the engine reads it at start), one engine at a time:
    every batch wait, and with ``tokenizers`` every TEI_CALLER_TOKENIZERS count (patch 0010; 0
    tokenizes through TEI's workers) for each wait."""
    cache = Cache.from_settings(load_settings())
    texts, _ = corpus(resolve_model(model_id, cache, progress=False).path)
    settings = [(w, t) for w in waits for t in (tokenizers or [None])]
    runs: dict[str, list[dict[str, Any]]] = {_setting(w, t): [] for w, t in settings}
    for i in range(rounds):
        for wait, count in settings if i % 2 == 0 else reversed(settings):
            print(f"[{time.strftime('%H:%M:%S')}] round {i + 1}, {_setting(wait, count)}", flush=True)
            with (
                caller_tokenizers(count),
                LocalEngine(model_id, profile=profile, batch_wait_us=wait) as engine,
            ):
                runs[_setting(wait, count)].append({
                    "threads_1": threads(engine, 1),
                    "threads_2": threads(engine, 2),
                    "two_threads_batches": batch_profile(engine),
                    "overhead": overhead(engine, SHORT),
                    "bulk": bulk([engine], texts) if with_bulk else [],
                    "build": engine.build_info(),
                })  # fmt: skip
    summary = {}
    for setting, got in runs.items():
        one = statistics.median(r["threads_1"] for r in got)
        two = statistics.median(r["threads_2"] for r in got)
        summary[setting] = {
            "threads_1": round(one, 1),
            "threads_2": round(two, 1),
            "ratio": round(two / one, 3),
            "single_p50_ms": round(statistics.median(r["overhead"]["latency_ms"] for r in got), 3),
            "overhead_ms": round(statistics.median(r["overhead"]["overhead_ms"] for r in got), 4),
            **{
                key: round(statistics.median(r["overhead"].get(key, 0.0) for r in got), 4)
                for key in ("tokenization_ms", "queue_ms")
            },
            "bulk_texts_per_s": round(statistics.median(v for r in got for v in r["bulk"]), 1)
            if with_bulk
            else None,
            **{
                key: round(statistics.median(r["two_threads_batches"][key] for r in got), 3)
                for key in ("mean_batch", "inference_ms_two_threads", "inference_ms_one_thread")
            },
        }
    return {
        "model": model_id,
        "profile": profile,
        "waits_us": waits,
        "caller_tokenizers": tokenizers,
        "rounds": rounds,
        "runs": runs,
        "summary": summary,
    }


def _setting(wait: int, tokenizers: int | None) -> str:
    return str(wait) if tokenizers is None else f"wait {wait} us, {tokenizers} caller tokenizers"


@contextlib.contextmanager
def caller_tokenizers(count: int | None) -> Iterator[None]:
    """TEI_CALLER_TOKENIZERS for an engine started inside (None: LocalEngine's default)."""
    if count is None:
        yield
        return
    before = os.environ.get(CALLER_TOKENIZERS_ENV)
    os.environ[CALLER_TOKENIZERS_ENV] = str(count)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CALLER_TOKENIZERS_ENV, None)
        else:
            os.environ[CALLER_TOKENIZERS_ENV] = before


def summarize(rounds: list[dict[str, Any]], peers: dict[str, list[float]]) -> dict[str, Any]:
    def med(get: Callable[[dict[str, Any]], Any]) -> float:
        values = [v for r in rounds for v in (get(r) if isinstance(get(r), list) else [get(r)])]
        return float(statistics.median(values))

    local_overhead = med(lambda r: r["inprocess"]["overhead"]["overhead_ms"])
    http_overhead = med(lambda r: r["http"]["overhead"]["overhead_ms"])
    local_bulk = med(lambda r: r["inprocess"]["bulk"])
    http_bulk = max(med(lambda r: r["http"]["bulk_1"]), med(lambda r: r["http"]["bulk_2"]))
    one, two = med(lambda r: r["inprocess"]["threads_1"]), med(lambda r: r["inprocess"]["threads_2"])
    summary = {
        "overhead_ms": {"inprocess": local_overhead, "http": http_overhead, "ratio": local_overhead / http_overhead},
        "bulk_texts_per_s": {"inprocess": local_bulk, "http_best": http_bulk, "ratio": local_bulk / http_bulk},
        "threads_texts_per_s": {"1": one, "2": two, "ratio": two / one},
        "single_p50_ms": {"inprocess": med(lambda r: r["inprocess"]["overhead"]["latency_ms"]),
                          "http": med(lambda r: r["http"]["overhead"]["latency_ms"])},
    }  # fmt: skip
    for name, rates in peers.items():
        summary["bulk_texts_per_s"][f"vs_{name}"] = local_bulk / statistics.median(rates)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--profile", default="ort", help="the router and engine build to compare")
    parser.add_argument(
        "--peers-python", default="", help="an interpreter with sentence-transformers and onnxruntime"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--gil-probe",
        action="store_true",
        help="only: threads 1 vs 2 and the GIL probe with one ORT intra-op thread (TEI_ORT_INTRA_THREADS=1)",
    )
    parser.add_argument(
        "--batch-wait",
        default="",
        metavar="US,US,...",
        help="only: for each batch wait (TEI_BATCH_WAIT_US, patch 0009; 0 is TEI's own batching), "
        "threads 1 vs 2, the per-call overhead and bulk, settings alternated over --rounds",
    )
    parser.add_argument(
        "--caller-tokenizers",
        default="",
        metavar="N,N,...",
        help="with --batch-wait: also sweep TEI_CALLER_TOKENIZERS (patch 0010; 0 tokenizes through TEI's workers)",
    )
    parser.add_argument(
        "--no-bulk",
        action="store_true",
        help="with --batch-wait: leave bulk out (minutes on candle's CPU backend)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.batch_wait:
        counts = [int(v) for v in args.caller_tokenizers.split(",")] if args.caller_tokenizers else None
        report = batch_wait_sweep(
            args.model,
            args.profile,
            [int(v) for v in args.batch_wait.split(",")],
            args.rounds,
            counts,
            with_bulk=not args.no_bulk,
        )
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["summary"], indent=2))
        return
    if args.gil_probe:
        os.environ["TEI_ORT_INTRA_THREADS"] = "1"
        with LocalEngine(args.model, profile=args.profile) as engine:
            pairs = [(threads(engine, 1), threads(engine, 2)) for _ in range(args.rounds)]
            probe = {
                "intra_op_threads": 1,
                "threads_texts_per_s": [{"1": a, "2": b, "ratio": round(b / a, 3)} for a, b in pairs],
                "gil": gil_probe(engine),
            }
        args.out.write_text(json.dumps(probe, indent=2) + "\n")
        print(json.dumps(probe, indent=2))
        return
    cache = Cache.from_settings(load_settings())
    model = resolve_model(args.model, cache, progress=False)
    texts, tokens = corpus(model.path)
    rounds: list[dict[str, Any]] = []
    peers: dict[str, list[float]] = {}
    corpus_path = args.out.with_suffix(".corpus.txt")
    corpus_path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    onnx_dir = export_onnx(model, cache).directory
    for i in range(args.rounds):
        print(f"[{time.strftime('%H:%M:%S')}] round {i + 1}", flush=True)
        rounds.append(round_of(args.profile, args.model, texts))
        if args.peers_python:
            for name in ("sentence-transformers", "onnxruntime"):
                run = peer_system(
                    name, args.peers_python, model.path, onnx_dir, corpus_path, os.cpu_count() or 1
                )
                peers.setdefault(name, []).extend(run["texts_per_s"])
    report = {"model": args.model, "profile": args.profile, "corpus_tokens": tokens, "rounds": rounds,
              "peers": peers, "summary": summarize(rounds, peers)}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
