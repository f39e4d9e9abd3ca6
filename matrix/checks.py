"""The checks a running router gets in a matrix cell, each a column: the routes its model's kind
answers and their parity with pytei's numpy reference of the same weights (embeddings cosine >=
0.999 or the model's own bound, scores within 5e-3, all finite, the same text alone and in a
padded batch), the Lee-corpus score of real-weight embedders (within +-0.005 of the reference's
and above the stored floor), and throughput.  The client is ``pytei.Client`` or, for gRPC
routers, matrix/grpc_client.py's adapter with the same names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from bench_cpu_peers import corpus

from matrix.cells import MatrixModel
from pytei.bench.quality import lee_score, lee_set, score_embedder
from pytei.cache import Cache
from pytei.config import load_settings
from pytei.models import reference
from pytei.models.resolve import packaged_model_dir

__all__ = ["accuracy_column", "column", "routes_and_parity", "throughput_column"]

EMBED_COSINE, SCORE_TOLERANCE, LEE_BAND = 0.999, 5e-3, 0.005
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A short text.",
    "Embeddings map sentences to vectors that can be compared with a cosine.",
    "hello world",
]



def column(status: str, detail: str = "", **values: Any) -> dict[str, Any]:
    return {"status": status, "detail": detail, **values}


def _reference_dir(model: MatrixModel, directory: Path) -> Path:
    if model.reference:

        return packaged_model_dir(model.reference, Cache.from_settings(load_settings()))
    return directory


def _pooling(model: MatrixModel) -> reference.Pooling:
    return "cls" if model.pooling == "cls" else "last-token" if model.pooling == "last-token" else "mean"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def _dense(item: Any, size: int) -> np.ndarray:
    row = np.zeros(size, dtype=np.float64)
    row[np.asarray(item.indices)] = np.asarray(item.values)
    return row


def routes_and_parity(client: Any, model: MatrixModel, directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each route the model's kind should answer (and what it answered), and the parity of the
    answers with the numpy reference of the same weights."""

    ref_dir = _reference_dir(model, directory)
    answered: dict[str, str] = {}
    parity: dict[str, Any] = {}

    def attempt(route: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 (a route's failure is a finding, recorded)
            answered[route] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            return None
        answered[route] = "ok"
        return result

    attempt("tokenize", lambda: client.tokenize(TEXTS[0]))
    if model.kind == "embedding":
        got = attempt("embed", lambda: client.embed(TEXTS).vectors)
        if hasattr(client, "openai_embed"):  # HTTP only: gRPC routers have no OpenAI route
            attempt("openai", lambda: client.openai_embed(TEXTS[:2]).vectors)
        if got is not None:
            want = reference.embed(ref_dir, TEXTS, pooling=_pooling(model))
            if np.asarray(got).shape != want.shape:  # e.g. a Dense module the backend skipped
                parity["embed_dimension"] = f"{np.asarray(got).shape[1]}, the reference's {want.shape[1]}"
                return _routes_column(answered), _parity_column(parity, model.parity_cosine)
            cos = _cosines(np.asarray(got), want)
            parity["embed_min_cosine"] = round(float(cos.min()), 6)
            if parity["embed_min_cosine"] < EMBED_COSINE:  # is it candle's tanh GELU? measure it
                tanh = reference.embed(ref_dir, TEXTS, pooling=_pooling(model), gelu="tanh")
                parity["embed_min_cosine_vs_tanh_gelu"] = round(float(_cosines(np.asarray(got), tanh).min()), 6)
            parity["finite"] = bool(np.all(np.isfinite(got)))
            alone = attempt("embed (alone)", lambda: client.embed([TEXTS[1]]).vectors)
            if alone is not None:  # the same text alone and in a mixed batch (the #882 class)
                parity["batch_invariance_cosine"] = round(float(_cosines(np.asarray(alone), np.asarray(got)[1:2])[0]), 6)
    if model.kind == "hybrid":
        got_sparse = attempt("embed_sparse", lambda: client.embed_sparse(TEXTS))
        if got_sparse is not None:
            want_weights = reference.token_weights(ref_dir, TEXTS)
            worst = 0.0
            for item, weights in zip(got_sparse, want_weights, strict=True):
                served = dict(zip(np.asarray(item.indices).tolist(), np.asarray(item.values).tolist(), strict=True))
                keys = set(served) | set(weights)
                worst = max([worst, *(abs(served.get(k, 0.0) - weights.get(k, 0.0)) for k in keys)])
            parity["sparse_max_abs"] = round(worst, 6)
    if model.kind == "splade":
        got_sparse = attempt("embed_sparse", lambda: client.embed_sparse(TEXTS))
        if got_sparse is not None:
            want = reference.splade(ref_dir, TEXTS)
            dense = np.stack([_dense(item, want.shape[1]) for item in got_sparse])
            parity["splade_min_cosine"] = round(float(_cosines(dense, want).min()), 6)
            # a short text before a longer one in a padded batch against the same text alone
            pair = attempt("embed_sparse (short first)", lambda: client.embed_sparse([TEXTS[1], TEXTS[0]]))
            alone = attempt("embed_sparse (alone)", lambda: client.embed_sparse([TEXTS[1]]))
            if pair is not None and alone is not None:
                a, b = (_dense(x[0], want.shape[1])[None, :] for x in (pair, alone))
                parity["splade_batch_invariance_cosine"] = round(float(_cosines(a, b)[0]), 6)
            if parity["splade_min_cosine"] < EMBED_COSINE:  # is it candle's tanh GELU? measure it
                tanh = reference.splade(ref_dir, TEXTS, gelu="tanh")
                parity["splade_min_cosine_vs_tanh_gelu"] = round(float(_cosines(dense, tanh).min()), 6)
    if model.kind == "reranker":
        # judged on the scores users get (a sigmoid of the logit); the raw logits are recorded
        ranking = attempt("rerank", lambda: client.rerank(TEXTS[0], TEXTS[1:]))
        raw = attempt("rerank (raw scores)", lambda: client.rerank(TEXTS[0], TEXTS[1:], raw_scores=True))
        attempt("predict", lambda: client.predict(TEXTS[1]))
        logits = reference.classify(ref_dir, [(TEXTS[0], t) for t in TEXTS[1:]])[:, 0]

        def by_index(result: Any) -> np.ndarray:
            return np.array([r.score for r in sorted(result.results, key=lambda r: r.index)])

        if ranking is not None:
            parity["rerank_max_abs"] = round(float(np.max(np.abs(by_index(ranking) - 1 / (1 + np.exp(-logits))))), 6)
        if raw is not None:
            parity["rerank_raw_logit_max_abs"] = round(float(np.max(np.abs(by_index(raw) - logits))), 6)
    return _routes_column(answered), _parity_column(parity, model.parity_cosine)


def _routes_column(answered: dict[str, str]) -> dict[str, Any]:
    failed = {r: v for r, v in answered.items() if v != "ok"}
    return column(
        "failing" if failed else "verified",
        "; ".join(f"{r} {v}" for r, v in failed.items()) or ", ".join(answered),
        answered=answered,
    )


def _parity_column(parity: dict[str, Any], bound: float = EMBED_COSINE) -> dict[str, Any]:
    if not parity:
        return column("untested", "no route answered to compare")
    problems = []
    if "embed_dimension" in parity:
        problems.append(f"embeddings have dimension {parity['embed_dimension']}")
    if parity.get("finite") is False:
        problems.append("non-finite values")
    for key in ("embed_min_cosine", "splade_min_cosine", "batch_invariance_cosine", "splade_batch_invariance_cosine"):
        if key in parity and not parity[key] >= bound:
            problems.append(f"{key} {parity[key]} < {bound}")
    for key in ("rerank_max_abs", "sparse_max_abs"):
        if key in parity and not parity[key] <= SCORE_TOLERANCE:
            problems.append(f"{key} {parity[key]} > {SCORE_TOLERANCE}")
    for key in ("embed_min_cosine", "splade_min_cosine"):
        if parity.get(f"{key}_vs_tanh_gelu", 0) >= EMBED_COSINE:
            problems.append(
                f"the router computes GELU with the tanh approximation (candle's gelu; the model says exact): "
                f"{parity[f'{key}_vs_tanh_gelu']} against a tanh-GELU reference"
            )
    shown = ", ".join(f"{k} {v}" for k, v in parity.items() if k != "finite")
    return column("failing" if problems else "verified", "; ".join(problems) or shown, **parity)


def accuracy_column(client: Any, model: MatrixModel, directory: Path) -> dict[str, Any]:
    if not model.lee:
        why = "random weights: no human-rated check means anything" if model.source == "random" else (
            "no human-rated set for this kind ships in a wheel"
        )  # fmt: skip
        return column("not-applicable", why)

    lee = lee_set(Cache.from_settings(load_settings()))
    served = score_embedder(lambda docs: client.embed(list(docs)).vectors, lee, batch=10)
    ref_dir = _reference_dir(model, directory)
    expected = _reference_lee(ref_dir, lee)
    values = {"served": served.as_dict(), "reference": expected.as_dict(), "floor": model.lee}
    problems = [
        f"{name} {getattr(served, name):.4f} outside reference {getattr(expected, name):.4f} +-{LEE_BAND}"
        for name in ("pearson", "ndcg10")
        if not abs(getattr(served, name) - getattr(expected, name)) <= LEE_BAND
    ] + [f"{name} {getattr(served, name):.4f} < floor {floor}" for name, floor in model.lee.items() if not getattr(served, name) >= floor]
    detail = f"Pearson {served.pearson:.4f}, nDCG@10 {served.ndcg10:.4f} (reference {expected.pearson:.4f} / {expected.ndcg10:.4f})"
    return column("failing" if problems else "verified", "; ".join(problems) or detail, **values)


def _reference_lee(ref_dir: Path, lee: Any) -> Any:
    """The numpy reference's Lee score of these weights, computed once (minutes for MPNet)."""
    from pytei.bench.quality import LeeScore  # noqa: PLC0415

    weights = ref_dir / "model.safetensors"
    stat = weights.stat()
    kept = Cache.from_settings(load_settings()).area("matrix-references") / f"lee-{ref_dir.name}-{stat.st_size}-{stat.st_mtime_ns}.json"
    if kept.is_file():
        return LeeScore(**json.loads(kept.read_text(encoding="utf-8")))
    score = lee_score(reference.embed(ref_dir, list(lee.documents), normalize=False), lee)
    kept.write_text(json.dumps({"pearson": score.pearson, "spearman": score.spearman, "ndcg10": score.ndcg10}), encoding="utf-8")
    return score


def throughput_column(
    connect: Callable[[], Any], model: MatrixModel, batch: int, seconds: float, levels: tuple[int, ...] = (1,)
) -> dict[str, Any]:
    """Texts/s with batches of ``batch`` from ``c`` clients at once (closed loop, ``seconds`` at
    each level ``c``), each client its own connection (``connect``)."""
    texts, _ = corpus(packaged_model_dir("all-MiniLM-L6-v2", Cache.from_settings(load_settings())), n=512)

    def caller(client: Any) -> Any:
        if model.kind == "reranker":
            return lambda chunk: client.rerank(TEXTS[0], chunk)
        return client.embed_sparse if model.kind in ("splade", "hybrid") else client.embed

    def level(count: int) -> dict[str, float]:
        clients = [connect() for _ in range(count)]
        try:
            calls = [caller(c) for c in clients]
            calls[0](texts[:batch])
            stop = time.perf_counter() + seconds
            done = [0] * count
            latencies: list[list[float]] = [[] for _ in range(count)]

            def work(k: int) -> None:
                i = k * batch
                while time.perf_counter() < stop:
                    chunk = texts[i % len(texts) : i % len(texts) + batch] or texts[:batch]
                    t0 = time.perf_counter()
                    calls[k](chunk)
                    latencies[k].append((time.perf_counter() - t0) * 1e3)
                    done[k] += len(chunk)
                    i += batch * count

            started = time.perf_counter()
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(work, range(count)))
            elapsed = time.perf_counter() - started
        finally:
            for c in clients:
                c.close()
        median_ms = float(np.median([x for per in latencies for x in per]))
        return {"concurrency": count, "texts_per_s": round(sum(done) / elapsed, 1), "batch_p50_ms": round(median_ms, 2),
                "per_1000_bs_over_ms": round(1000 * batch / median_ms, 1), "batches": sum(len(p) for p in latencies)}  # fmt: skip

    runs = [level(count) for count in levels]
    first, best = runs[0], max(runs, key=lambda r: r["texts_per_s"])
    detail = ", ".join(f"{r['texts_per_s']:.1f} at concurrency {r['concurrency']}" for r in runs)
    return column(
        "verified", f"texts/s (batch {batch}): {detail}",
        texts_per_s=first["texts_per_s"], per_1000_bs_over_ms=first["per_1000_bs_over_ms"], batch_p50_ms=first["batch_p50_ms"],
        batches=first["batches"], best_texts_per_s=best["texts_per_s"], best_concurrency=best["concurrency"], levels=runs,
    )  # fmt: skip
