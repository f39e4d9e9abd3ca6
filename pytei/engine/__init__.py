"""What every back-end shares: the :class:`Engine` protocol, result types, input rules,
hybrid scoring and the table from TEI's ``error_type`` to pytei's error classes.

No I/O happens here.  :mod:`pytei.client` (HTTP) and :mod:`pytei.local` (in-process) both
implement :class:`Engine` on top of it.
"""

from pytei.engine.hybrid import dense_scores, hybrid_scores, sparse_scores
from pytei.engine.protocol import Engine, PredictInput, Texts
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
    "Embeddings",
    "Engine",
    "Info",
    "ModelKind",
    "OpenAIEmbeddings",
    "PredictInput",
    "Prediction",
    "Predictions",
    "Ranking",
    "RerankResult",
    "Similarities",
    "SparseEmbedding",
    "SparseEmbeddings",
    "Texts",
    "Timing",
    "Token",
    "TokenEmbeddings",
    "TruncationDirection",
    "VocabLike",
    "dense_scores",
    "hybrid_scores",
    "sparse_scores",
]
