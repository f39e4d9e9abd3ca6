"""int8 against fp32 on the ort router, for speed and for accuracy on human ratings, in one run.

    python benchmarks/bench_cpu_int8.py --rounds 2 --out benchmarks/results/cpu_int8.json

One installed ort router, one model (all-MiniLM-L6-v2 from pytei's catalogue), three graphs
served one after another the way `pytei serve` serves them, the order reversed every other round:

- ``fp32``: the default export (`pytei serve`);
- ``int8-dynamic``: `pytei serve --quantize int8` (dynamically quantized int8 matmuls);
- ``int8-weight-only``: the catalogue's ``all-MiniLM-L6-v2-int8-onnx`` (int8 weights that ONNX
  Runtime converts back to fp32 before each matmul), for comparison.

Each is driven over HTTP by ``pytei.Client``: bulk texts/s on bench_cpu_peers' 2,000-sentence
corpus in batches of 32 (concurrency 2, three passes), single-text p50/p99, the Lee-corpus
scores (Pearson, Spearman, nDCG@10; :mod:`pytei.bench.quality`) and the cosine of each
embedding to fp32's (corpus' first 200 texts and the 50 Lee documents).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu_peers import BATCH, KEEP, _drive, corpus, cpu_peak, flops_per_token, single_text_ms

from pytei import serve
from pytei.bench.quality import lee_score, lee_set
from pytei.build.hardware import INT8_DOT_FLAGS, detect_machine
from pytei.cache import Cache
from pytei.client import Client
from pytei.config import load_settings
from pytei.models.resolve import resolve_model

SYSTEMS = {
    "fp32": ("all-MiniLM-L6-v2", "none"),
    "int8-dynamic": ("all-MiniLM-L6-v2", "int8"),
    "int8-weight-only": ("all-MiniLM-L6-v2-int8-onnx", "none"),
}


def measure(system: str, texts: list[str], profile: str, lee: Any) -> dict[str, Any]:
    model_id, quantize = SYSTEMS[system]
    settings = load_settings().with_flags({"serve.onnx_quantize": quantize})
    log_file = Path(tempfile.gettempdir()) / f"bench-cpu-int8-{system}.log"
    started = time.perf_counter()
    with serve(model_id, profile=profile, port="auto", log_file=log_file, settings=settings) as client:
        load_s = time.perf_counter() - started
        client.embed(texts[:BATCH])
        batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        passes = []
        with Client(client.base_url) as second:
            for _ in range(3):
                t0 = time.perf_counter()
                vectors = _drive([client, second], batches)
                passes.append(len(texts) / (time.perf_counter() - t0))
        kept = np.concatenate(vectors)[:KEEP]
        latencies = single_text_ms(client, texts)
        lee_vectors = np.concatenate(
            [client.embed(list(lee.documents[i : i + 10])).vectors for i in range(0, 50, 10)]
        )
        score = lee_score(lee_vectors, lee)
    return {
        "system": system, "model": model_id, "quantize": quantize, "load_s": round(load_s, 2),
        "texts_per_s": passes, "single_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))},
        "lee": score.as_dict(), "embeddings": kept, "lee_embeddings": lee_vectors,
    }  # fmt: skip


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def summarize(
    runs: list[dict[str, Any]], tokens_per_text: float, flops: float, peak: float
) -> list[dict[str, Any]]:
    reference = next(r for r in runs if r["system"] == "fp32")
    fp32_median = statistics.median(p for r in runs if r["system"] == "fp32" for p in r["texts_per_s"])
    rows = []
    for system in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == system]
        passes = [p for r in mine for p in r["texts_per_s"]]
        median = statistics.median(passes)
        corpus_cos = _cosines(mine[0]["embeddings"], reference["embeddings"])
        lee_cos = _cosines(mine[0]["lee_embeddings"], reference["lee_embeddings"])
        rows.append({
            "system": system, "texts_per_s": round(median, 1), "range": [round(min(passes), 1), round(max(passes), 1)],
            "spread": round((max(passes) - min(passes)) / median, 3), "vs_fp32": round(median / fp32_median, 3),
            "single_p50_ms": round(statistics.median(r["single_ms"]["p50"] for r in mine), 2),
            "single_p99_ms": round(statistics.median(r["single_ms"]["p99"] for r in mine), 2),
            "pct_of_fp32_peak": round(100 * median * tokens_per_text * flops / (peak * 1e9), 1),
            "cosine_to_fp32": {"corpus_min": round(float(corpus_cos.min()), 5), "corpus_mean": round(float(corpus_cos.mean()), 5),
                               "lee_min": round(float(lee_cos.min()), 5), "lee_mean": round(float(lee_cos.mean()), 5)},
            "lee": mine[0]["lee"], "lee_runs_agree": all(r["lee"] == mine[0]["lee"] for r in mine),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="ort")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cache = Cache.from_settings(load_settings())
    model = resolve_model("all-MiniLM-L6-v2", cache, progress=False)
    texts, tokens = corpus(model.path)
    lee = lee_set(cache)
    peak = cpu_peak()
    flops = flops_per_token(model.path, tokens / len(texts))
    runs: list[dict[str, Any]] = []
    systems = list(SYSTEMS)
    for round_ in range(args.rounds):
        for system in systems if round_ % 2 == 0 else systems[::-1]:
            print(f"[{time.strftime('%H:%M:%S')}] round {round_ + 1}: {system}", flush=True)
            run = measure(system, texts, args.profile, lee)
            run["round"] = round_ + 1
            runs.append(run)
    rows = summarize(runs, tokens / len(texts), flops, peak["gflops"])
    machine = detect_machine(gpu_query=lambda env, notes: ())
    report = {
        "model": "all-MiniLM-L6-v2", "profile": args.profile, "cpu": machine.cpu_summary(),
        "int8_dot_product": [f for f in INT8_DOT_FLAGS if f in machine.cpu_flags], "corpus": {"texts": len(texts), "mean_tokens": tokens / len(texts)},
        "batch": BATCH, "concurrency": 2, "peak": peak, "rounds": args.rounds, "summary": rows,
        "runs": [{k: v for k, v in r.items() if not k.endswith("embeddings")} for r in runs],
        "loadavg_end": os.getloadavg(),
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(
        f"{'system':18} {'texts/s':>8} {'range':>15} {'vs fp32':>8} {'p50':>6} {'p99':>6} {'cos min':>8} {'Pearson':>8} {'nDCG@10':>8}"
    )
    for r in rows:
        print(f"{r['system']:18} {r['texts_per_s']:8.1f} {r['range']!s:>15} {r['vs_fp32']:8.3f} {r['single_p50_ms']:6.2f} "
              f"{r['single_p99_ms']:6.2f} {r['cosine_to_fp32']['corpus_min']:8.5f} {r['lee']['pearson']:8.4f} {r['lee']['ndcg10']:8.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
