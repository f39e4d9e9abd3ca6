"""One in-process embedder measured on the corpus, run by benchmarks/bench_cpu_peers.py in the
interpreter that has it installed (its own venv: sentence-transformers pulls 3 GB of torch).

    python cpu_peers_worker.py SYSTEM MODEL_DIR ONNX_DIR CORPUS THREADS OUT_JSON

SYSTEM is ``sentence-transformers``, ``onnxruntime`` (onnxruntime + tokenizers, mean pooling and
L2 normalization in numpy: what fastembed does) or ``fastembed`` (from ONNX_DIR, no hub).
Writes bulk texts/s (batches of 32 over the whole corpus, three passes), single-text latency
(after warm-up) and the embeddings of the first texts for the accuracy check.  Imports nothing
from pytei: the peers' venv does not have it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 32
SINGLE = 300
WARMUP = 20
KEEP = 200  # embeddings kept for the accuracy comparison

Embed = Callable[[list[str]], np.ndarray]


def sentence_transformers(model_dir: Path, _onnx: Path, threads: int) -> Embed:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def embed(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = model.encode(
                texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True
            )
        return out

    return embed


def onnxruntime_tokenizers(_model: Path, onnx_dir: Path, threads: int) -> Embed:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(onnx_dir / "tokenizer.json"))
    tokenizer.enable_padding()
    tokenizer.enable_truncation(256)
    names = {i.name for i in session.get_inputs()}

    def embed(texts: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        out: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return embed


def fastembed(_model: Path, onnx_dir: Path, threads: int) -> Embed:
    from fastembed import TextEmbedding

    model = TextEmbedding(
        "sentence-transformers/all-MiniLM-L6-v2",
        specific_model_path=str(onnx_dir),
        threads=threads,
        local_files_only=True,
        cache_dir=str(onnx_dir.parent / ".fastembed-cache"),
    )

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack(list(model.embed(texts, batch_size=BATCH)))

    return embed


SYSTEMS = {
    "sentence-transformers": sentence_transformers,
    "onnxruntime": onnxruntime_tokenizers,
    "fastembed": fastembed,
}


def versions(system: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in {
        "sentence-transformers": ("sentence-transformers", "torch"),
        "onnxruntime": ("onnxruntime", "tokenizers"),
        "fastembed": ("fastembed", "onnxruntime"),
    }[system]:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "?"
    return found


def measure(embed: Embed, texts: list[str]) -> dict[str, Any]:
    embed(texts[:BATCH])  # warm-up
    passes = []
    kept = None
    for _ in range(3):
        started = time.perf_counter()
        vectors = [embed(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        passes.append(len(texts) / (time.perf_counter() - started))
        kept = np.concatenate(vectors)[:KEEP]
    for text in texts[:WARMUP]:
        embed([text])
    latencies = []
    for text in texts[WARMUP : WARMUP + SINGLE]:
        started = time.perf_counter()
        embed([text])
        latencies.append((time.perf_counter() - started) * 1e3)
    assert kept is not None
    return {
        "texts_per_s": passes,
        "single_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))},
        "embeddings": kept.astype(np.float32).tolist(),
    }


def main() -> None:
    system, model_dir, onnx_dir, corpus, threads, out = sys.argv[1:7]
    texts = Path(corpus).read_text(encoding="utf-8").splitlines()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    embed = SYSTEMS[system](Path(model_dir), Path(onnx_dir), int(threads))
    load_s = time.perf_counter() - started
    result = {
        "system": system,
        "versions": versions(system),
        "load_s": load_s,
        "loadavg": os.getloadavg(),
        **measure(embed, texts),
    }
    Path(out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
