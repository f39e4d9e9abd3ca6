"""One request at a time against one router, with router settings side by side: what a single
request's latency is made of.

The same router is started once per setting and round (settings interleaved, their order
alternating, so drift hits all alike); each round sends ``--requests`` sequential one-text
requests of ``--tokens`` tokens after a warm-up, and reads TEI's own spans of each one from its
log (``--json-output``: tokenization, queue, inference, total) beside the client's wall time.
Made for patch 0014 (short single texts tokenized where they are awaited instead of by a worker
thread), whose effect is the hand-off it removes, not the tokenization work:

    python benchmarks/bench_single_request.py --profile cpu \\
        --setting inline= --setting worker=TEI_FAST_TOKENIZER_INLINE_BYTES=0 \\
        --out benchmarks/results/single_request_cpu.json

Runs wherever the router does (CPU here; on a GPU host with a CUDA router the same way, with
``--dtype float16`` for its flash-attention kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import machine, token_texts
from tei_router import inference_times, tei

from pytei.cache import Cache
from pytei.config import load_settings
from pytei.models.resolve import resolve_model


def parse_setting(text: str) -> tuple[str, dict[str, str]]:
    """``NAME=`` (no variables) or ``NAME=VAR=VALUE[,VAR=VALUE...]``."""
    name, _, assignments = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME= or NAME=VAR=VALUE[,VAR=VALUE]")
    env = {}
    for item in filter(None, assignments.split(",")):
        var, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} in {text!r}: give VAR=VALUE")
        env[var] = value
    return name, env


def one_round(url: str, log_path: Path, text: str, requests_: int) -> dict[str, Any]:
    import requests

    body = json.dumps({"inputs": text, "truncate": False})
    headers = {"Content-Type": "application/json"}
    wall = []
    with requests.Session() as session:
        for _ in range(50):
            session.post(f"{url}/embed", data=body, headers=headers).raise_for_status()
        time.sleep(0.3)
        since = log_path.stat().st_size
        for _ in range(requests_):
            started = time.perf_counter()
            session.post(f"{url}/embed", data=body, headers=headers).raise_for_status()
            wall.append((time.perf_counter() - started) * 1e3)
    time.sleep(0.5)  # the log pump runs behind
    spans = inference_times(log_path, since)
    if len(spans) < requests_ * 0.9:
        raise SystemExit(f"only {len(spans)} of {requests_} requests' timings in {log_path}")
    keys = ("tokenization_time", "queue_time", "inference_time", "total_time")
    return {
        "client_p50_ms": round(statistics.median(wall), 4),
        **{
            f"{k.removesuffix('_time')}_p50_ms": round(statistics.median(s[k] for s in spans), 4)
            for k in keys
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="the router's profile or install name")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--setting", action="append", type=parse_setting, required=True)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtype", default="float32", help="float16 for a CUDA router's flash-attention kernels")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cache = Cache.from_settings(load_settings())
    model = resolve_model(args.model, cache, env=os.environ, progress=False).path
    texts, _ = token_texts(model, 1, args.tokens, seed=1)
    settings: dict[str, dict[str, str]] = dict(args.setting)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    logs = Path(tempfile.mkdtemp(prefix="bench-single-request-"))
    print(f"router logs in {logs}", flush=True)
    for index in range(args.rounds):
        order = list(settings) if index % 2 == 0 else list(reversed(settings))
        for name in order:
            log_path = logs / f"router-{name}-{index}.log"
            with (
                mock.patch.dict(os.environ, settings[name]),
                tei(model, args.profile, [], log_path, dtype=args.dtype) as (url, _),
            ):
                rounds[name].append(one_round(url, log_path, texts[0], args.requests))
            print(f"round {index} {name}: {json.dumps(rounds[name][-1])}", flush=True)
    summary = {
        name: {key: round(statistics.median(r[key] for r in results), 4) for key in results[0]}
        for name, results in rounds.items()
    }
    # the client's p50 over TEI's forward time of the same requests, round by round
    for name, results in rounds.items():
        summary[name]["client_p50_vs_inference"] = round(
            statistics.median(r["client_p50_ms"] / r["inference_p50_ms"] for r in results), 3
        )
    first = next(iter(settings))
    report = {
        "machine": {"platform": platform.platform(), **machine()},
        "profile": args.profile,
        "model": args.model,
        "dtype": args.dtype,
        "tokens": args.tokens,
        "requests_per_round": args.requests,
        "settings": settings,
        "rounds": rounds,
        "median_of_rounds": summary,
        "client_p50_vs_first": {
            name: round(s["client_p50_ms"] / summary[first]["client_p50_ms"], 3)
            for name, s in summary.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
