"""TEI's JSON response bodies -> result types, checking shape and count.

Every parser takes the number of inputs sent and refuses an answer with a different count:
a router that drops or adds an item must fail the call, not shift every later result.
Shape errors raise ``ValueError``/``TypeError``; the client turns them into ``TEIError``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import numpy as np

from pytei.engine.types import (
    FloatArray,
    Prediction,
    RerankResult,
    SparseEmbedding,
    Token,
    vstack_float32,
)

__all__ = [
    "parse_dense",
    "parse_openai",
    "parse_predictions",
    "parse_rerank",
    "parse_scores",
    "parse_sparse",
    "parse_strings",
    "parse_token_embeddings",
    "parse_tokens",
]


def _list(data: Any, expected: int, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise TypeError(f"expected a JSON list of {what}, got {type(data).__name__}")
    if len(data) != expected:
        raise ValueError(f"sent {expected} inputs but got {len(data)} {what}")
    return data


def parse_dense(data: Any, expected: int) -> FloatArray:
    """``/embed``: ``[[f32, ...], ...]``."""
    return vstack_float32(_list(data, expected, "embeddings"))


def parse_token_embeddings(data: Any, expected: int) -> list[FloatArray]:
    """``/embed_all``: ``[[[f32, ...] per token] per input]``."""
    return [vstack_float32(rows) for rows in _list(data, expected, "token embedding lists")]


def parse_sparse(data: Any, expected: int) -> list[SparseEmbedding]:
    """``/embed_sparse``: ``[[{"index": id, "value": w}, ...], ...]`` (indices sorted here)."""
    out = []
    for entries in _list(data, expected, "sparse embeddings"):
        indices = np.fromiter((e["index"] for e in entries), dtype=np.int64, count=len(entries))
        values = np.fromiter((e["value"] for e in entries), dtype=np.float32, count=len(entries))
        if indices.size > 1 and not np.all(indices[1:] > indices[:-1]):
            order = np.argsort(indices, kind="stable")
            indices, values = indices[order], values[order]
            if np.any(indices[1:] == indices[:-1]):
                raise ValueError("a sparse embedding repeats a vocabulary index")
        out.append(SparseEmbedding(indices, values))
    return out


def parse_rerank(data: Any, expected: int, offset: int) -> list[RerankResult]:
    """``/rerank``: ``[{"index", "score", "text"?}, ...]``; indices shifted by ``offset``."""
    results = [
        RerankResult(index=int(r["index"]) + offset, score=float(r["score"]), text=r.get("text"))
        for r in _list(data, expected, "ranks")
    ]
    if sorted(r.index - offset for r in results) != list(range(expected)):
        raise ValueError("the ranks do not cover each text exactly once")
    return results


def _prediction_list(data: Any) -> tuple[Prediction, ...]:
    if not isinstance(data, list):
        raise TypeError(f"expected a list of {{score, label}}, got {type(data).__name__}")
    return tuple(Prediction(label=str(p["label"]), score=float(p["score"])) for p in data)


def parse_predictions(data: Any, expected: int | None) -> list[tuple[Prediction, ...]]:
    """``/predict``: one list of ``{score, label}`` (``expected`` None) or a list of them."""
    if expected is None:
        return [_prediction_list(data)]
    return [_prediction_list(item) for item in _list(data, expected, "prediction lists")]


def parse_scores(data: Any, expected: int) -> FloatArray:
    """``/similarity``: ``[f32, ...]``."""
    return np.asarray(_list(data, expected, "scores"), dtype=np.float32)


def parse_tokens(data: Any, expected: int) -> list[list[Token]]:
    """``/tokenize``: ``[[{id, text, special, start, stop}, ...], ...]``."""
    return [
        [
            Token(
                id=int(t["id"]),
                text=str(t["text"]),
                special=bool(t["special"]),
                start=t.get("start"),
                stop=t.get("stop"),
            )
            for t in tokens
        ]
        for tokens in _list(data, expected, "token lists")
    ]


def parse_strings(data: Any, expected: int) -> list[str]:
    """``/decode``: ``["text", ...]``."""
    return [str(s) for s in _list(data, expected, "decoded texts")]


def _openai_vector(embedding: Any) -> FloatArray:
    if isinstance(embedding, str):  # encoding_format="base64": little-endian f32 bytes
        try:
            raw = base64.b64decode(embedding, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 embedding: {exc}") from None
        if len(raw) % 4:
            raise ValueError(f"a base64 embedding of {len(raw)} bytes is not a whole number of f32")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def parse_openai(data: Any, expected: int) -> tuple[FloatArray, str, int, int]:
    """``/v1/embeddings``: (vectors in input order, model, prompt_tokens, total_tokens)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TypeError("expected an OpenAI embeddings object with a 'data' list")
    items: Sequence[Any] = _list(data["data"], expected, "embeddings")
    by_index = sorted(items, key=lambda item: int(item["index"]))
    if [int(item["index"]) for item in by_index] != list(range(expected)):
        raise ValueError("the embeddings' indices do not cover each input exactly once")
    vectors = [_openai_vector(item["embedding"]) for item in by_index]
    if len({v.shape for v in vectors}) > 1:
        raise ValueError("embeddings of different lengths in one response")
    matrix = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    usage = data.get("usage") or {}
    return (
        matrix,
        str(data.get("model", "")),
        int(usage.get("prompt_tokens", 0)),
        int(usage.get("total_tokens", 0)),
    )
