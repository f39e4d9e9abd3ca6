"""Hybrid scoring on cases worked out by hand, and the vectorised sparse dot against a loop."""

from __future__ import annotations

import numpy as np
import pytest

from pytei.client import Embeddings, SparseEmbedding, dense_scores, hybrid_scores, sparse_scores


def sp(weights: dict[int, float]) -> SparseEmbedding:
    return SparseEmbedding(
        np.array(list(weights), dtype=np.int64), np.array(list(weights.values()), dtype=np.float32)
    )


QUERY_DENSE = np.array([1.0, 0.0], dtype=np.float32)
DOCS_DENSE = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]], dtype=np.float32)  # cosine 1, 0, -1
QUERY_SPARSE = sp({5: 1.0, 1: 2.0})  # unsorted on purpose
DOCS_SPARSE = [sp({1: 0.5}), sp({5: 3.0, 7: 1.0}), sp({})]  # dot 1.0, 3.0, 0.0


def test_dense_scores_are_cosine_whatever_the_norm() -> None:
    np.testing.assert_allclose(dense_scores(QUERY_DENSE, DOCS_DENSE), [1.0, 0.0, -1.0])
    np.testing.assert_allclose(
        dense_scores(Embeddings(QUERY_DENSE[None, :] * 7), Embeddings(DOCS_DENSE)), [1.0, 0.0, -1.0]
    )
    assert dense_scores(QUERY_DENSE, np.zeros((1, 2))).tolist() == [0.0]
    with pytest.raises(ValueError, match="dimension"):
        dense_scores(QUERY_DENSE, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="one query"):
        dense_scores(DOCS_DENSE, DOCS_DENSE)


def test_sparse_scores_sum_products_over_shared_tokens() -> None:
    np.testing.assert_allclose(sparse_scores(QUERY_SPARSE, DOCS_SPARSE), [1.0, 3.0, 0.0])
    assert sparse_scores(QUERY_SPARSE, []).shape == (0,)
    assert sparse_scores(sp({}), DOCS_SPARSE).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="repeat"):
        sparse_scores(SparseEmbedding(np.array([1, 1]), np.array([1.0, 1.0], dtype=np.float32)), DOCS_SPARSE)


def test_sparse_scores_match_a_plain_loop() -> None:
    rng = np.random.default_rng(0)

    def random_sparse() -> SparseEmbedding:
        ids = rng.choice(300, size=rng.integers(0, 40), replace=False)
        return SparseEmbedding(ids.astype(np.int64), rng.random(ids.size).astype(np.float32))

    query = random_sparse()
    docs = [random_sparse() for _ in range(200)]
    q = dict(zip(query.indices.tolist(), query.values.tolist(), strict=True))
    expected = [
        sum(q.get(i, 0.0) * v for i, v in zip(d.indices.tolist(), d.values.tolist(), strict=True))
        for d in docs
    ]
    np.testing.assert_allclose(sparse_scores(query, docs), expected, rtol=1e-6)


def test_minmax_fusion_by_hand() -> None:
    # dense [1, 0, -1] -> [1, 0.5, 0];  sparse [1, 3, 0] -> [1/3, 1, 0]
    scores = hybrid_scores(QUERY_DENSE, DOCS_DENSE, QUERY_SPARSE, DOCS_SPARSE, alpha=0.5)
    np.testing.assert_allclose(scores, [(1 + 1 / 3) / 2, (0.5 + 1) / 2, 0.0])
    assert np.argsort(-scores).tolist() == [1, 0, 2]  # sparse evidence lifts document 1
    weighted = hybrid_scores(QUERY_DENSE, DOCS_DENSE, QUERY_SPARSE, DOCS_SPARSE, alpha=0.8)
    np.testing.assert_allclose(weighted, [0.8 + 0.2 / 3, 0.4 + 0.2, 0.0])
    assert np.argsort(-weighted).tolist() == [0, 1, 2]
    dense_only = hybrid_scores(QUERY_DENSE, DOCS_DENSE, QUERY_SPARSE, DOCS_SPARSE, alpha=1.0)
    np.testing.assert_allclose(dense_only, [1.0, 0.5, 0.0])


def test_tmm_and_none_by_hand() -> None:
    q = np.array([1.0, 0.0])
    docs = np.array([[0.5, np.sqrt(0.75)], [0.2, np.sqrt(0.96)]])  # cosine 0.5 and 0.2
    qs, ds = sp({3: 2.0}), [sp({3: 1.0}), sp({3: 4.0})]  # dot 2 and 8
    # tmm: dense (s + 1) / (0.5 + 1) -> [1, 0.8]; sparse s / 8 -> [0.25, 1]
    np.testing.assert_allclose(
        hybrid_scores(q, docs, qs, ds, alpha=0.5, normalization="tmm"), [(1 + 0.25) / 2, (0.8 + 1) / 2]
    )
    # minmax over two candidates is always 1 and 0
    np.testing.assert_allclose(hybrid_scores(q, docs, qs, ds, alpha=0.5), [0.5, 0.5])
    np.testing.assert_allclose(
        hybrid_scores(q, docs, qs, ds, alpha=0.25, normalization="none"),
        [0.25 * 0.5 + 0.75 * 2, 0.25 * 0.2 + 0.75 * 8],
    )


def test_constant_scores_normalise_to_zero_and_inputs_are_checked() -> None:
    same = hybrid_scores(QUERY_DENSE, DOCS_DENSE[:1].repeat(3, 0), QUERY_SPARSE, [sp({}), sp({}), sp({})])
    assert same.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="alpha"):
        hybrid_scores(QUERY_DENSE, DOCS_DENSE, QUERY_SPARSE, DOCS_SPARSE, alpha=1.5)
    with pytest.raises(ValueError, match="2 sparse"):
        hybrid_scores(QUERY_DENSE, DOCS_DENSE, QUERY_SPARSE, DOCS_SPARSE[:2])
    with pytest.raises(ValueError, match="normalization"):
        hybrid_scores(QUERY_DENSE, DOCS_DENSE, QUERY_SPARSE, DOCS_SPARSE, normalization="zscore")  # type: ignore[arg-type]
