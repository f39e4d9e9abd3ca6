"""A stand-in for ``pytei_native`` for the unit tier: the same classes and call shapes, with
the numpy reference (:mod:`pytei.models.reference`) computing what TEI's engine would.

It answers like the real extension: little-endian float32 buffers, per-input timings in
nanoseconds, ``NativeError(kind, message)`` with TEI's error kinds, ``close()`` after which calls
fail.  ``calls`` records every call so tests can see how the facade used it.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from pytei.models import reference
from pytei.models.weights import tokenize


class NativeError(Exception):
    """args: (kind, message)"""


def _timings(n: int, tokens: list[int]) -> list[tuple[int, int, int, int]]:
    return [(tokens[i], 100_000, 50_000, 1_000_000) for i in range(n)]


class NativeEngine:
    calls: list[tuple[str, Any]] = []

    def __init__(self, model_dir: str, **options: Any) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise NativeError("Backend", f"`config.json` not found in {model_dir}")
        self.options = options
        self.config = json.loads((self.model_dir / "config.json").read_text())
        self.pooling = options.get("pooling") or "mean"
        self.closed = False
        arch = (self.config.get("architectures") or [""])[0]
        labels = self.config.get("id2label") or {}
        if arch.endswith("Classification"):
            kind = "classifier" if len(labels) > 1 else "reranker"
            self.model_type = {kind: {"id2label": labels, "label2id": self.config.get("label2id", {})}}
        else:
            self.model_type = {"embedding": {"pooling": self.pooling}}
        NativeEngine.calls.append(("new", model_dir))

    def _check(self, items: list[Any]) -> None:
        if self.closed:
            raise NativeError("Engine", "the engine is closed")
        if not items:
            raise NativeError("Empty", "Input validation error: `inputs` cannot be empty")

    def _tokens(self, items: list[Any]) -> list[int]:
        return [len(e.ids) for e in tokenize(self.model_dir, items)]

    def info(self) -> str:
        return json.dumps({
            "model_id": str(self.model_dir), "model_sha": None, "model_dtype": self.options.get("dtype") or "float32",
            "served_model_name": self.options.get("served_model_name") or str(self.model_dir),
            "model_type": self.model_type, "max_concurrent_requests": 512, "max_input_length": 128,
            "max_batch_tokens": self.options.get("max_batch_tokens", 16384), "max_batch_requests": None,
            "max_client_batch_size": 32, "auto_truncate": True, "tokenization_workers": 1, "version": "1.9.3",
        })  # fmt: skip

    def health(self) -> bool:
        return not self.closed

    def metrics(self) -> str:
        return "# TYPE te_request_count counter\nte_request_count{method=\"single\"} 3\n"

    def embed(self, items: list[Any], **options: Any) -> tuple[bytes, int, int, list[Any]]:
        self._check(items)
        NativeEngine.calls.append(("embed", (items, options)))
        if "splade" in self.pooling and options.get("normalize", True):
            raise NativeError("Backend", "Backend error: `normalize` is not available for SPLADE")
        pooled = reference.embed(self.model_dir, items, pooling="cls" if self.pooling == "cls" else "mean",
                                 normalize=options.get("normalize", True), gelu="tanh")  # fmt: skip
        if options.get("dimensions"):
            pooled = pooled[:, : options["dimensions"]]
            pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        out = pooled.astype("<f4")
        return out.tobytes(), out.shape[0], out.shape[1], _timings(len(items), self._tokens(items))

    def embed_all(self, items: list[Any], **options: Any) -> tuple[list[tuple[bytes, int, int]], list[Any]]:
        self._check(items)
        rows = []
        for text in items:
            hidden = reference.token_embeddings(self.model_dir, text, gelu="tanh").astype("<f4")
            rows.append((hidden.tobytes(), hidden.shape[0], hidden.shape[1]))
        return rows, _timings(len(items), self._tokens(items))

    def embed_sparse(self, items: list[Any], **options: Any) -> tuple[list[tuple[bytes, bytes]], list[Any]]:
        self._check(items)
        if self.pooling != "splade":
            raise NativeError("Backend", "Backend error: Model is not an embedding model with SPLADE pooling")
        dense = reference.splade(self.model_dir, items, gelu="tanh")
        rows = []
        for row in dense:
            (index,) = np.nonzero(row)
            rows.append((index.astype("<u4").tobytes(), row[index].astype("<f4").tobytes()))
        return rows, _timings(len(items), self._tokens(items))

    def predict(self, items: list[Any], **options: Any) -> tuple[bytes, int, int, list[Any]]:
        self._check(items)
        NativeEngine.calls.append(("predict", (items, options)))
        if "embedding" in self.model_type:
            raise NativeError("Backend", "Backend error: Model is not a classifier model")
        logits = reference.classify(self.model_dir, items, gelu="tanh")
        if not options.get("raw_scores"):
            if logits.shape[1] == 1:
                logits = 1 / (1 + np.exp(-logits))
            else:
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                logits = e / e.sum(axis=1, keepdims=True)
        out = logits.astype("<f4")
        return out.tobytes(), out.shape[0], out.shape[1], _timings(len(items), self._tokens(items))

    def tokenize(self, texts: list[str], **options: Any) -> list[list[tuple[int, str, bool, int | None, int | None]]]:
        self._check(texts)
        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        rows = []
        for text in texts:
            encoding = tokenizer.encode(text, add_special_tokens=options.get("add_special_tokens", True))
            rows.append([
                (i, tok, bool(special), start if not special else None, stop if not special else None)
                for i, tok, special, (start, stop) in zip(encoding.ids, encoding.tokens, encoding.special_tokens_mask,
                                                          encoding.offsets, strict=True)
            ])  # fmt: skip
        return rows

    def decode(self, ids: list[list[int]], **options: Any) -> list[str]:
        self._check(ids)
        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        return [tokenizer.decode(row, skip_special_tokens=options.get("skip_special_tokens", True)) for row in ids]

    def close(self) -> None:
        self.closed = True


def module(build_id: str = "fake-build", features: str = "candle") -> types.ModuleType:
    """A module object shaped like ``pytei_native``."""
    fake = types.ModuleType("pytei_native")
    fake.NativeEngine = NativeEngine  # type: ignore[attr-defined]
    fake.NativeError = NativeError  # type: ignore[attr-defined]
    fake.build_info = lambda: {"version": "0.1.0", "fork_commit": None, "build_id": build_id, "features": features}  # type: ignore[attr-defined]
    return fake
