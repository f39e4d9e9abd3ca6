"""TEI's engine in-process (pytei.LocalEngine) on a GPU, against the HTTP client of the same
build and against PyTorch end to end, in one process on the GPU machine.

    python benchmarks/bench_gpu_inprocess.py --profile ROUTER --engine ENGINE --model DIR --out OUT

- single 128-token text, one call at a time: LocalEngine's p50 against Client's p50 over HTTP
  to the router of the same build (target <= 0.5x), and against PyTorch fp16 end to end
  (tokenizer, forward, pooling, normalise, result on the host; target <= 1.0x);
- 256 texts of 128 tokens in one call: LocalEngine's throughput against PyTorch end to end,
  tokenization included (target >= 1.0x), and HTTP's for context;
- where a single call's time goes (TEI's tokenization / queue / inference counters), and 1 vs 2
  calling threads with TEI's mean batch size, at LocalEngine's default batch wait and at each
  of ``--batch-waits`` (0: TEI's own batching);
- the same single-text p50s measured in alternating rounds (LocalEngine, HTTP, and LocalEngine
  with ``TEI_CALLER_TOKENIZERS=0``, i.e. tokenized by TEI's workers as before patch 0010; all
  three loaded at once), so that the host's drift between phases does not decide the ratios:
  the medians over rounds of each p50 and of each round's ratios;
- parity: LocalEngine's vectors against the router's (same weights, same kernels) and PyTorch's.
Writes ``<out>/bench_gpu_inprocess.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import log, machine, random_model, token_texts
from bench_inprocess import caller_tokenizers, mean_batch, threads
from tei_router import tei

from pytei import LocalEngine
from pytei.client import Client


def _p50(call: Any, inputs: list[str], repeats: int) -> dict[str, float]:
    for text in inputs[:10]:
        call(text)
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        call(inputs[i % len(inputs)])
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(len(times) * 0.9)], 3)}


def _alternating(calls: dict[str, Any], inputs: list[str], repeats: int, rounds: int) -> dict[str, Any]:
    """Each call's single-text p50 in ``rounds`` interleaved rounds, and per-round ratios to the
    first call."""
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        per_round.append({name: _p50(call, inputs, repeats)["p50_ms"] for name, call in calls.items()})
    first = next(iter(calls))
    medians = {name: round(statistics.median(r[name] for r in per_round), 3) for name in calls}
    ratios = {
        f"{first}_over_{name}": round(statistics.median(r[first] / r[name] for r in per_round), 3)
        for name in calls
        if name != first
    }
    return {"rounds": per_round, "median_p50_ms": medians, "median_ratios": ratios}


def _bulk(call: Any, texts: list[str], repeats: int) -> dict[str, float]:
    call(texts)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(texts)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"median_ms": round(median * 1e3, 2), "texts_per_s": round(len(texts) / median, 1)}


def _tei_split(engine: Any, inputs: list[str], repeats: int) -> dict[str, float]:
    """Where a single call's time goes, by TEI's own counters (medians)."""
    parts: dict[str, list[float]] = {"tokenization": [], "queue": [], "inference": [], "total": []}
    for i in range(repeats):
        timing = engine.embed(inputs[i % len(inputs)]).timing
        parts["tokenization"].append(timing.tokenization_ms or 0.0)
        parts["queue"].append(timing.queue_ms or 0.0)
        parts["inference"].append(timing.inference_ms or 0.0)
        parts["total"].append(timing.total_ms or 0.0)
    return {name: round(statistics.median(values), 3) for name, values in parts.items()}


def _threads(engine: Any, inputs: list[str], seconds: float = 3.0) -> dict[str, float]:
    """Texts/s from 1 and from 2 Python threads calling at once, and TEI's mean batch size
    (:func:`bench_inprocess.mean_batch`: understated under TEI's own batching)."""
    rates: dict[str, float] = {}
    for count in (1, 2):
        before = engine.metrics().histogram("te_batch_next_size")
        rates[str(count)] = round(threads(engine, count, seconds, inputs), 1)
        rates[f"mean_batch_{count}"] = mean_batch(before, engine.metrics().histogram("te_batch_next_size"))
    rates["ratio"] = round(rates["2"] / rates["1"], 3)
    return rates


def torch_end_to_end(model_dir: Path) -> Any:
    """``embed(texts) -> np.ndarray``: the HF fast tokenizer, fp16 SDPA forward, mean pooling,
    normalised, on the host: what sentence-transformers' encode does on a GPU."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    model = (
        AutoModel.from_pretrained(model_dir, dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
    )
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_padding()
    tokenizer.enable_truncation(512)

    def embed(texts: str | list[str]) -> np.ndarray:
        batch = [texts] if isinstance(texts, str) else texts
        encodings = tokenizer.encode_batch(batch)
        with torch.inference_mode():
            ids = torch.tensor([e.ids for e in encodings], device="cuda")
            mask = torch.tensor([e.attention_mask for e in encodings], device="cuda")
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            out: np.ndarray = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return out

    return embed


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(c.min()), 6), "mean": round(float(c.mean()), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="the CUDA router (install name)")
    parser.add_argument("--engine", required=True, help="the CUDA engine build (install name)")
    parser.add_argument(
        "--model", type=Path, required=True, help="a model directory, or the tokenizer of a random one"
    )
    parser.add_argument(
        "--random", default="", help="a random-weight shape (minilm, base, large) on --model's tokenizer"
    )
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument(
        "--batch-waits",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[0],
        help="also run LocalEngine with these batch waits (us; 0 is TEI's own batching) beside its default",
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the single-text p50s")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = (
        random_model(Path("/tmp") / f"random-bert-{args.random}", args.random, args.model)
        if args.random
        else args.model
    )
    short, _ = token_texts(model_dir, 64, 128, seed=1)
    bulk, _ = token_texts(model_dir, 256, 128, seed=2)
    report: dict[str, Any] = {
        "machine": machine(),
        "model": model_dir.name,
        "random_weights": bool(args.random),
    }

    log("PyTorch end to end")
    torch_embed = torch_end_to_end(model_dir)
    report["torch"] = {"single": _p50(torch_embed, short, args.repeats), "bulk": _bulk(torch_embed, bulk, 10)}
    torch_vectors = torch_embed(bulk)

    log("LocalEngine")
    started = time.monotonic()
    with LocalEngine(str(model_dir), profile=args.engine, dtype="float16") as engine:
        report["local_load_s"] = round(time.monotonic() - started, 2)
        report["local"] = {
            "single": _p50(engine.embed, short, args.repeats),
            "single_tei_ms": _tei_split(engine, short, args.repeats),
            "bulk": _bulk(engine.embed, bulk, 10),
            "threads": _threads(engine, short),
            "build_info": dict(engine.build_info()),
        }
        local_vectors = engine.embed(bulk).vectors
    for wait in args.batch_waits:
        log(f"LocalEngine, batch wait {wait} us")
        with LocalEngine(str(model_dir), profile=args.engine, dtype="float16", batch_wait_us=wait) as engine:
            report.setdefault("local_batch_wait", {})[str(wait)] = {
                "single": _p50(engine.embed, short, args.repeats),
                "bulk": _bulk(engine.embed, bulk, 10),
                "threads": _threads(engine, short),
            }

    log("HTTP")
    with (
        tei(model_dir, args.profile, [], args.out / "router.log") as (url, ready_s),
        Client(url, timeout=(5, 120)) as client,
    ):
        report["http"] = {
            "ready_s": round(ready_s, 2),
            "single": _p50(client.embed, short, args.repeats),
            "bulk": _bulk(client.embed, bulk, 10),
        }
        http_vectors = client.embed(bulk).vectors
        log("alternating rounds: LocalEngine, HTTP, LocalEngine tokenizing through TEI's workers")
        with (
            LocalEngine(str(model_dir), profile=args.engine, dtype="float16") as engine,
            caller_tokenizers(0),
            LocalEngine(str(model_dir), profile=args.engine, dtype="float16") as workers,
        ):
            report["alternating"] = _alternating(
                {"local": engine.embed, "http": client.embed, "local_workers": workers.embed},
                short, args.repeats, args.rounds,
            )  # fmt: skip
            report["alternating"]["tei_split"] = {
                "local": _tei_split(engine, short, args.repeats),
                "local_workers": _tei_split(workers, short, args.repeats),
            }

    report["parity"] = {
        "local_vs_http": cosines(local_vectors, http_vectors),
        "local_vs_torch": cosines(local_vectors, torch_vectors),
    }
    local, http, torch = report["local"], report["http"], report["torch"]
    report["ratios"] = {
        "single_local_over_http_p50": round(local["single"]["p50_ms"] / http["single"]["p50_ms"], 3),
        "single_local_over_torch_p50": round(local["single"]["p50_ms"] / torch["single"]["p50_ms"], 3),
        "bulk_local_over_torch_throughput": round(
            local["bulk"]["texts_per_s"] / torch["bulk"]["texts_per_s"], 3
        ),
        "bulk_local_over_http_throughput": round(
            local["bulk"]["texts_per_s"] / http["bulk"]["texts_per_s"], 3
        ),
        "single_local_over_http_p50_alternating": report["alternating"]["median_ratios"]["local_over_http"],
    }
    (args.out / "bench_gpu_inprocess.json").write_text(json.dumps(report, indent=2))
    log(json.dumps(report["ratios"]))


if __name__ == "__main__":
    main()
