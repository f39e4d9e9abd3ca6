"""The HTTP client for TEI routers, and the types it shares with the in-process engine.

    from pytei.client import Client

    with Client("http://127.0.0.1:8080") as tei:
        vectors = tei.embed(["a text", "another"]).vectors   # float32 [2, dim]

Errors are the ``TEI*`` classes of :mod:`pytei.errors`, all under ``TEIError``.
"""

from pytei.client._http import API_KEY_ENV, Client
from pytei.client._retry import RetryPolicy, parse_retry_after
from pytei.client.metrics import Histogram, Metrics, MetricsParseError, Sample, parse_metrics
from pytei.engine.hybrid import dense_scores, hybrid_scores, sparse_scores
from pytei.engine.protocol import Engine
from pytei.engine.types import (
    Embeddings,
    Info,
    ModelKind,
    OpenAIEmbeddings,
    Prediction,
    Predictions,
    Ranking,
    RerankResult,
    Similarities,
    SparseEmbedding,
    SparseEmbeddings,
    Timing,
    Token,
    TokenEmbeddings,
    TruncationDirection,
    VocabLike,
)

__all__ = [
    "API_KEY_ENV",
    "Client",
    "Embeddings",
    "Engine",
    "Histogram",
    "Info",
    "Metrics",
    "MetricsParseError",
    "ModelKind",
    "OpenAIEmbeddings",
    "Prediction",
    "Predictions",
    "Ranking",
    "RerankResult",
    "RetryPolicy",
    "Sample",
    "Similarities",
    "SparseEmbedding",
    "SparseEmbeddings",
    "Timing",
    "Token",
    "TokenEmbeddings",
    "TruncationDirection",
    "VocabLike",
    "dense_scores",
    "hybrid_scores",
    "parse_metrics",
    "parse_retry_after",
    "sparse_scores",
]
