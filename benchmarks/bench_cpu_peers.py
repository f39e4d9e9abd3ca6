"""TEI's CPU profiles through pytei, side by side with what users run instead, in one run.

    python benchmarks/bench_cpu_peers.py --peers-python PEERS_VENV/bin/python \\
        --profiles ort,cpu,cpu-mkl --rounds 2 --out benchmarks/results/cpu_peers.json

Same model directory for everyone (a catalogue model, no hub), same corpus (2,000 deterministic
English sentences of 20-40 tokens), same machine, all systems once per round, the order
reversed every other round.  Each TEI profile runs as `pytei serve` runs it (for ort: the
ONNX export and thread settings pytei chooses) and is driven over HTTP by ``pytei.Client`` in
batches of 32 at concurrency 1 and 2; sentence-transformers, onnxruntime + tokenizers and
fastembed run in-process in PEERS_VENV (benchmarks/cpu_peers_worker.py), on the fp32 ONNX
export pytei makes (ST on the safetensors).  Reported per system: bulk texts/s (median of all
passes at its best concurrency, with the range and the spread (max-min)/median), single-text
p50/p99, % of the CPU's fp32 peak (FLOPs per token from the model's config; peak = cores x
measured clock x vector lanes x 2 FMA pipes x 2), and the minimum cosine against
sentence-transformers over the first 200 texts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytei import serve
from pytei.cache import Cache
from pytei.client import Client
from pytei.config import load_settings
from pytei.models.for_ort import export_onnx
from pytei.models.resolve import resolve_model

WORKER = Path(__file__).with_name("cpu_peers_worker.py")
BATCH, SINGLE, WARMUP, KEEP = 32, 300, 20, 200
PEERS = ("sentence-transformers", "onnxruntime", "fastembed")

_SUBJECTS = [
    "The old fisherman",
    "A young teacher from the village",
    "My neighbour's daughter",
    "The city council",
    "Our research team",
    "The museum's new director",
    "A small group of students",
    "The train driver",
    "Every morning the baker",
    "The local football club",
    "An experienced nurse",
    "The quiet librarian",
]
_VERBS = [
    "carefully repaired",
    "quickly described",
    "slowly walked past",
    "proudly presented",
    "finally found",
    "openly criticised",
    "gently lifted",
    "patiently explained",
    "suddenly noticed",
    "happily shared",
]
_OBJECTS = [
    "the broken wooden bridge",
    "a detailed map of the northern coast",
    "the results of the long experiment",
    "an old letter written by her grandmother",
    "the new public library",
    "a basket of fresh green apples",
    "the plans for the summer festival",
    "the heavy iron gate",
    "a short history of the river",
]
_TAILS = ["before the heavy rain began in the afternoon", "while everyone else was still asleep",
          "because nobody else in the town knew how", "during the coldest week of the winter",
          "after a long discussion with the others", "in front of a large and curious crowd", ""]  # fmt: skip


def corpus(model_dir: Path, n: int = 2000, seed: int = 20261201) -> tuple[list[str], int]:
    """Deterministic sentences of 20-40 tokens (special tokens included); and their token count."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    tokens = 0
    while len(texts) < n:
        parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]
        text = " ".join(p for p in parts if p) + f" (note {rng.randrange(1000)})."
        count = len(tokenizer.encode(text).ids)
        if text not in seen and 20 <= count <= 40:
            seen.add(text)
            texts.append(text)
            tokens += count
    return texts, tokens


def flops_per_token(model_dir: Path, mean_tokens: float) -> float:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return float(layers * (8 * h * h + 4 * h * i + 4 * mean_tokens * h))


_CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    volatile unsigned long seed = 1; unsigned long x = seed, n = 400000000UL;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned long k = 0; k < n; k++) { __asm__ volatile("add $1, %0" : "+r"(x)); }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f %lu\n", n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9) / 1e9, x);
    return 0;
}
"""


def cpu_peak() -> dict[str, Any]:
    """fp32 peak: cores x clock (a dependent add chain: one add a cycle) x lanes x 2 FMA x 2."""
    flags = next(
        (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
    )
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "clock.c", Path(tmp) / "clock"
        source.write_text(_CLOCK_C)
        subprocess.run(["gcc", "-O1", str(source), "-o", str(binary)], check=True)
        ghz = max(
            float(subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.split()[0])
            for _ in range(3)
        )
    cores = os.cpu_count() or 1
    return {"cores": cores, "ghz": round(ghz, 3), "fp32_lanes": lanes, "fma_pipes": 2,
            "gflops": round(cores * ghz * lanes * 2 * 2, 1)}  # fmt: skip


def _drive(clients: list[Client], batches: list[list[str]]) -> list[np.ndarray]:
    """Each client (one a thread: a Client is not shared between threads) embeds every
    len(clients)-th batch; the results come back in order."""
    out: list[np.ndarray] = [np.empty(0)] * len(batches)

    def work(k: int) -> None:
        for j in range(k, len(batches), len(clients)):
            out[j] = clients[k].embed(batches[j]).vectors

    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(work, range(len(clients))))
    return out


def single_text_ms(client: Client, texts: list[str]) -> list[float]:
    """Latency of one text a call (ms), after a warm-up, over the corpus' next SINGLE texts."""
    for text in texts[:WARMUP]:
        client.embed([text])
    latencies = []
    for text in texts[WARMUP : WARMUP + SINGLE]:
        t0 = time.perf_counter()
        client.embed([text])
        latencies.append((time.perf_counter() - t0) * 1e3)
    return latencies


def tei_system(profile: str, model_id: str, texts: list[str]) -> dict[str, Any]:
    log_file = Path(tempfile.gettempdir()) / f"bench-cpu-peers-{profile}.log"
    started = time.perf_counter()
    with serve(model_id, profile=profile, port="auto", log_file=log_file) as client:
        load_s = time.perf_counter() - started
        url = client.base_url
        client.embed(texts[:BATCH])
        batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        passes: dict[str, list[float]] = {"1": [], "2": []}
        kept = None
        with Client(url) as second:
            clients = [client, second]
            for concurrency in (1, 2):
                for _ in range(3):
                    t0 = time.perf_counter()
                    vectors = _drive(clients[:concurrency], batches)
                    passes[str(concurrency)].append(len(texts) / (time.perf_counter() - t0))
                    kept = np.concatenate(vectors)[:KEEP]
        latencies = single_text_ms(client, texts)
        info = client.info()
    assert kept is not None
    best = max(passes, key=lambda c: statistics.median(passes[c]))
    return {
        "system": f"tei-{profile}", "load_s": load_s, "loadavg": os.getloadavg(), "texts_per_s": passes[best],
        "best_concurrency": int(best), "all_passes": passes, "model_served": info.model_id,
        "single_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))},
        "embeddings": kept.tolist(),
    }  # fmt: skip


def peer_system(
    system: str, python: str, model_dir: Path, onnx_dir: Path, corpus_path: Path, threads: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        out_path = Path(out.name)
    try:
        subprocess.run([python, str(WORKER), system, str(model_dir), str(onnx_dir), str(corpus_path), str(threads), str(out_path)], check=True)  # fmt: skip
        result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
        return result
    finally:
        out_path.unlink(missing_ok=True)


def summarize(
    runs: list[dict[str, Any]], tokens_per_text: float, flops: float, peak_gflops: float
) -> list[dict[str, Any]]:
    reference = next(
        (np.array(r["embeddings"]) for r in runs if r["system"] == "sentence-transformers"), None
    )
    rows = []
    for system in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == system]
        passes = [p for r in mine for p in r["texts_per_s"]]
        median = statistics.median(passes)
        cosine = None
        if reference is not None:
            vectors = np.array(mine[0]["embeddings"])
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            cosine = float(np.min(np.sum(vectors * reference, axis=1)))
        rows.append({
            "system": system, "texts_per_s": round(median, 1), "range": [round(min(passes), 1), round(max(passes), 1)],
            "spread": round((max(passes) - min(passes)) / median, 3), "runs": len(passes),
            "single_p50_ms": round(statistics.median(r["single_ms"]["p50"] for r in mine), 2),
            "single_p99_ms": round(statistics.median(r["single_ms"]["p99"] for r in mine), 2),
            "pct_of_peak": round(100 * median * tokens_per_text * flops / (peak_gflops * 1e9), 1),
            "min_cosine_vs_st": cosine, "versions": mine[0].get("versions"),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--peers-python",
        required=True,
        help="an interpreter with sentence-transformers, onnxruntime, fastembed",
    )
    parser.add_argument("--profiles", default="ort,cpu,cpu-mkl", help="installed pytei routers to include")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings()
    cache = Cache.from_settings(settings)
    model = resolve_model(args.model, cache, progress=False)
    texts, tokens = corpus(model.path)
    onnx_dir = export_onnx(model, cache).directory
    corpus_path = args.out.with_suffix(".corpus.txt")
    corpus_path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    peak = cpu_peak()
    flops = flops_per_token(model.path, tokens / len(texts))
    systems = [f"tei-{p}" for p in filter(None, args.profiles.split(","))] + list(
        filter(None, args.peers.split(","))
    )
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = systems if round_ % 2 == 0 else systems[::-1]
        for system in order:
            print(f"[{time.strftime('%H:%M:%S')}] round {round_ + 1}: {system}", flush=True)
            if system.startswith("tei-"):
                run = tei_system(system.removeprefix("tei-"), args.model, texts)
            else:
                run = peer_system(system, args.peers_python, model.path, onnx_dir, corpus_path, args.threads)
            run["round"] = round_ + 1
            runs.append(run)
    rows = summarize(runs, tokens / len(texts), flops, peak["gflops"])
    in_process = [r for r in rows if not r["system"].startswith("tei-")]
    best = max(in_process, key=lambda r: r["texts_per_s"]) if in_process else None
    fastembed_row = next((r for r in rows if r["system"] == "fastembed"), None)
    for row in rows:
        if best:
            row["vs_best_in_process"] = round(row["texts_per_s"] / best["texts_per_s"], 3)
        if fastembed_row:
            row["p50_vs_fastembed"] = round(row["single_p50_ms"] / fastembed_row["single_p50_ms"], 3)
    report = {
        "model": args.model, "corpus": {"texts": len(texts), "tokens": tokens, "mean_tokens": tokens / len(texts)},
        "flops_per_token": flops, "peak": peak, "threads": args.threads, "rounds": args.rounds, "summary": rows,
        "runs": [{k: v for k, v in r.items() if k != "embeddings"} for r in runs],
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(
        f"{'system':24} {'texts/s':>8} {'range':>15} {'spread':>7} {'p50':>6} {'p99':>6} {'%peak':>6} {'cos':>9} {'vs best':>8}"
    )
    for r in rows:
        print(f"{r['system']:24} {r['texts_per_s']:8.1f} {r['range']!s:>15} {r['spread']:7.3f} {r['single_p50_ms']:6.2f} "
              f"{r['single_p99_ms']:6.2f} {r['pct_of_peak']:6.1f} {r['min_cosine_vs_st'] or 0:9.6f} {r.get('vs_best_in_process', 0):8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
