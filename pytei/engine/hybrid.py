"""Hybrid (dense + sparse) scoring of candidate documents for one query.

- dense score: cosine similarity of the query vector and each document vector;
- sparse score: the SPLADE dot product, i.e. the sum over tokens present in both of
  ``query_weight * document_weight``;
- fusion: a convex combination ``alpha * dense + (1 - alpha) * sparse`` of the two scores
  after normalising each over the candidate set.

Normalisation matters because the two scales differ: cosine lies in [-1, 1] while SPLADE dot
products are unbounded (often 10-40), so without it the sparse side dominates whatever
``alpha`` says.  Bruch, Gai and Ingber, "An Analysis of Fusion Functions for Hybrid
Retrieval" (ACM TOIS 42(1), 2023) find a tuned convex combination of normalised scores
beats reciprocal-rank fusion; they compare min-max with the "theoretical min-max" (TMM)
variant, which uses each score's theoretical minimum (-1 for cosine, 0 for a dot of
non-negative SPLADE weights) instead of the observed one.  Options:

- ``"minmax"`` (default): ``(s - min) / (max - min)`` over the candidates; a constant score
  (e.g. no document shares a token with the query) becomes 0 everywhere;
- ``"tmm"``: ``(s - lower) / (max - lower)`` with the theoretical lower bound; stable when
  there are few candidates;
- ``"none"``: raw scores (choose ``alpha`` for the raw scales yourself).

Everything is vectorised with numpy: one matrix product for the dense side, and for the sparse
side one ``searchsorted`` of all document indices into the query's sorted indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from pytei.engine.types import Embeddings, SparseEmbedding

__all__ = ["Normalization", "dense_scores", "hybrid_scores", "sparse_scores"]

Normalization = Literal["minmax", "tmm", "none"]
DenseLike = Embeddings | npt.ArrayLike


def _matrix(vectors: DenseLike) -> npt.NDArray[np.float64]:
    array = np.asarray(vectors.vectors if isinstance(vectors, Embeddings) else vectors, dtype=np.float64)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ValueError(f"expected vectors of shape [n, dim], got {array.shape}")
    return array


def dense_scores(query: DenseLike, documents: DenseLike) -> npt.NDArray[np.float64]:
    """Cosine similarity of one query vector with each document vector, ``[n]``.

    Vectors are normalised here, so embeddings requested with ``normalize=False`` work too; a
    zero vector scores 0.
    """
    q = _matrix(query)
    if q.shape[0] != 1:
        raise ValueError(f"expected one query vector, got {q.shape[0]}")
    d = _matrix(documents)
    if d.shape[1] != q.shape[1]:
        raise ValueError(f"query has dimension {q.shape[1]} but documents have {d.shape[1]}")
    q_norm = np.linalg.norm(q[0])
    d_norm = np.linalg.norm(d, axis=1)
    denominator = d_norm * q_norm
    dots = d @ q[0]
    scores: npt.NDArray[np.float64] = np.divide(
        dots, denominator, out=np.zeros_like(dots), where=denominator > 0
    )
    return scores


def sparse_scores(query: SparseEmbedding, documents: Sequence[SparseEmbedding]) -> npt.NDArray[np.float64]:
    """SPLADE dot products: for each document, the sum of query weight times document weight
    over the vocabulary ids present in both, ``[n]``."""
    if not documents:
        return np.zeros(0, dtype=np.float64)
    order = np.argsort(query.indices, kind="stable")
    q_idx = np.asarray(query.indices, dtype=np.int64)[order]
    q_val = np.asarray(query.values, dtype=np.float64)[order]
    if q_idx.size > 1 and np.any(q_idx[1:] == q_idx[:-1]):
        raise ValueError("the query's sparse indices repeat")
    lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
    if lengths.sum() == 0 or q_idx.size == 0:
        return np.zeros(len(documents), dtype=np.float64)
    d_idx = np.concatenate([np.asarray(d.indices, dtype=np.int64) for d in documents])
    d_val = np.concatenate([np.asarray(d.values, dtype=np.float64) for d in documents])
    owner = np.repeat(np.arange(len(documents)), lengths)
    pos = np.searchsorted(q_idx, d_idx)
    pos_clipped = np.minimum(pos, q_idx.size - 1)
    shared = q_idx[pos_clipped] == d_idx
    products = np.where(shared, q_val[pos_clipped] * d_val, 0.0)
    return np.bincount(owner, weights=products, minlength=len(documents)).astype(np.float64)


def _normalize(scores: npt.NDArray[np.float64], how: Normalization, lower: float) -> npt.NDArray[np.float64]:
    if how == "none" or scores.size == 0:
        return scores
    if how == "minmax":
        low = float(scores.min())
    elif how == "tmm":
        low = lower
    else:
        raise ValueError(f"normalization must be 'minmax', 'tmm' or 'none', not {how!r}")
    span = float(scores.max()) - low
    if span <= 0:
        return np.zeros_like(scores)
    return (scores - low) / span


def hybrid_scores(
    dense_query: DenseLike,
    dense_documents: DenseLike,
    sparse_query: SparseEmbedding,
    sparse_documents: Sequence[SparseEmbedding],
    *,
    alpha: float = 0.5,
    normalization: Normalization = "minmax",
) -> npt.NDArray[np.float64]:
    """``alpha * norm(dense) + (1 - alpha) * norm(sparse)`` for each document, ``[n]``.

    ``alpha`` = 1 is dense only, 0 is sparse only.  Document ``i`` is ``dense_documents[i]``
    and ``sparse_documents[i]``; rank with ``np.argsort(-scores)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be within [0, 1]")
    dense = dense_scores(dense_query, dense_documents)
    sparse = sparse_scores(sparse_query, sparse_documents)
    if dense.shape != sparse.shape:
        raise ValueError(f"{dense.shape[0]} dense documents but {sparse.shape[0]} sparse ones")
    return alpha * _normalize(dense, normalization, -1.0) + (1.0 - alpha) * _normalize(
        sparse, normalization, 0.0
    )
