"""The routes of a gRPC router, with the names and result shapes matrix/cell.py uses on
``pytei.Client`` (embed, embed_sparse, rerank, predict, tokenize, info), so that one set of
checks covers both transports.  Stubs are generated from the router's own ``proto/tei.proto``
(in the build tree pytei checked out) with grpcio-tools; gRPC's Embed takes one text a call,
so a batch is sent as concurrent calls on one channel.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

__all__ = ["GrpcClient", "proto_of"]

_KINDS = {0: "embedding", 1: "classifier", 2: "reranker"}


def proto_of(cache_root: Path) -> Path:
    """The tei.proto of a build tree pytei checked out (every profile's tree has the same one)."""
    found = sorted((cache_root / "builds").glob("*/src/proto/tei.proto"))
    if not found:
        raise FileNotFoundError(f"no build tree under {cache_root / 'builds'} has proto/tei.proto")
    return found[0]


def _stubs(proto: Path) -> tuple[ModuleType, ModuleType]:
    out = Path(tempfile.mkdtemp(prefix="tei-grpc-stubs-"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"--python_out={out}",
         f"--grpc_python_out={out}", str(proto)],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(out))
    return importlib.import_module("tei_pb2"), importlib.import_module("tei_pb2_grpc")


@dataclass(frozen=True)
class _Vectors:
    vectors: np.ndarray


@dataclass(frozen=True)
class _Sparse:
    indices: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class _Rank:
    index: int
    score: float


@dataclass(frozen=True)
class _Ranking:
    results: tuple[_Rank, ...]


@dataclass(frozen=True)
class _Info:
    kind: str
    model_id: str


class GrpcClient:
    def __init__(self, url: str, proto: Path, timeout: float = 300) -> None:
        import grpc  # noqa: PLC0415 (only for gRPC cells)

        self._pb, stubs = _stubs(proto)
        self._channel = grpc.insecure_channel(url.removeprefix("http://"))
        self._timeout = timeout
        self._embed = stubs.EmbedStub(self._channel)
        self._rerank = stubs.RerankStub(self._channel)
        self._predict = stubs.PredictStub(self._channel)
        self._tokenize = stubs.TokenizeStub(self._channel)
        self._info = stubs.InfoStub(self._channel)
        self._pool = ThreadPoolExecutor(32)

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown()
        self._channel.close()

    def _each(self, call: Any, requests: list[Any]) -> list[Any]:
        return list(self._pool.map(lambda r: call(r, timeout=self._timeout), requests))

    def info(self) -> _Info:
        reply = self._info.Info(self._pb.InfoRequest(), timeout=self._timeout)
        return _Info(_KINDS.get(reply.model_type, str(reply.model_type)), reply.model_id)

    def embed(self, texts: list[str]) -> _Vectors:
        replies = self._each(self._embed.Embed, [self._pb.EmbedRequest(inputs=t, normalize=True, truncate=True) for t in texts])
        return _Vectors(np.array([np.asarray(r.embeddings, dtype=np.float32) for r in replies]))

    def embed_sparse(self, texts: list[str]) -> list[_Sparse]:
        replies = self._each(self._embed.EmbedSparse, [self._pb.EmbedSparseRequest(inputs=t, truncate=True) for t in texts])
        return [
            _Sparse(np.array([v.index for v in r.sparse_embeddings]), np.array([v.value for v in r.sparse_embeddings]))
            for r in replies
        ]

    def rerank(self, query: str, texts: list[str], *, raw_scores: bool = False) -> _Ranking:
        request = self._pb.RerankRequest(query=query, texts=texts, truncate=True, raw_scores=raw_scores)
        reply = self._rerank.Rerank(request, timeout=self._timeout)
        return _Ranking(tuple(_Rank(r.index, r.score) for r in reply.ranks))

    def predict(self, text: str) -> Any:
        return self._predict.Predict(self._pb.PredictRequest(inputs=text), timeout=self._timeout)

    def tokenize(self, text: str) -> Any:
        return self._tokenize.Tokenize(self._pb.EncodeRequest(inputs=text, add_special_tokens=True), timeout=self._timeout)
