"""pytei.Client against real routers: every method, checked against a numpy reference.

Fixtures (tests/integration/conftest.py): ``minilm_url``/``minilm_dir`` (all-MiniLM-L6-v2, mean
pooling), ``splade_url``/``splade_dir`` (SPLADE-tiny, ``--pooling splade``),
``reranker_url``/``reranker_dir`` (a single-label classification head), ``classifier_url``
(two labels) with ``classifier_dir``, and ``bert_reference`` (tests/support/bert_reference.py: numpy forward passes
of the same weights).  Values are compared, not just shapes: the router's embeddings must equal
the reference's to 1e-4 cosine, its ranks must be the reference's order, its token ids must be
the ``tokenizers`` library's.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from pytei.client import Client, Engine, hybrid_scores
from pytei.errors import TEIBackendError, TEIRequestError, TEIValidationError
from tests.integration.conftest import CONTRACT_DTYPE, local_engine

pytestmark = pytest.mark.upstream

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped above a sleepy hound.",
    "Stock markets fell sharply on Monday after the central bank's announcement.",
    "How do I bake sourdough bread at home?",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Il pleut à Paris aujourd'hui.",
    "short",
    "Embeddings map text to vectors; similar meanings end up close together.",
]
QUERY = "Which animal jumped over the dog?"
COSINE_TOLERANCE = 1e-4
# Values (not directions) in float16, where a GPU router computes, are good to a few parts in
# a thousand: absolute tolerances on values and scores widen by this factor there.
TOL = 20.0 if CONTRACT_DTYPE == "float16" else 1.0
RTOL, ATOL = (1e-2, 5e-3) if CONTRACT_DTYPE == "float16" else (1e-3, 1e-4)
# candle's Tensor::gelu (what TEI's BERT applies for hidden_act "gelu") is the tanh
# approximation; the reference follows it, else values differ by ~1e-3
GELU = "tanh"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosines: np.ndarray = np.sum(a * b, axis=1)
    return cosines


def sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1 / (1 + np.exp(-x))
    return result


# Each contract test runs on both back-ends: the HTTP client against a router, and TEI's engine
# in this process (pytei.LocalEngine, `pytei build --engine`), same model and values.
BACKENDS = ["http", "in-process"]


def _backend(request: pytest.FixtureRequest, url_fixture: str, model_dir: Path, pooling: str | None = None) -> Any:
    if request.param == "http":
        return Client(request.getfixturevalue(url_fixture))
    return local_engine(model_dir, pooling=pooling)


@pytest.fixture(params=BACKENDS)
def minilm(request: pytest.FixtureRequest, minilm_dir: Path) -> Any:
    backend = _backend(request, "minilm_url", minilm_dir)
    yield backend
    if isinstance(backend, Client):
        backend.close()


@pytest.fixture(params=BACKENDS)
def splade_client(request: pytest.FixtureRequest, splade_dir: Path) -> Any:
    backend = _backend(request, "splade_url", splade_dir, pooling="splade")
    yield backend
    if isinstance(backend, Client):
        backend.close()


@pytest.fixture(params=BACKENDS)
def reranker(request: pytest.FixtureRequest, reranker_dir: Path) -> Any:
    backend = _backend(request, "reranker_url", reranker_dir)
    yield backend
    if isinstance(backend, Client):
        backend.close()


def http_only(*backends: Any, why: str) -> None:
    """Skip on the in-process back-end where the test is about HTTP itself."""
    if not all(isinstance(b, Client) for b in backends):
        pytest.skip(f"HTTP only: {why}")


def tokenizer_of(model_dir: Path) -> Tokenizer:
    """The model's tokenizer as TEI runs it: no padding (tokenizer.json may ask for it)."""
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


# --- dense -------------------------------------------------------------------------------------


def test_embed_equals_the_reference(minilm: Client, minilm_dir: Path, bert_reference: ModuleType) -> None:
    result = minilm.embed(SENTENCES)
    reference = bert_reference.embed(minilm_dir, SENTENCES, pooling="mean", normalize=True, gelu=GELU)
    assert result.vectors.dtype == np.float32 and result.vectors.shape == reference.shape
    assert np.all(cosine_rows(result.vectors, reference) >= 1 - COSINE_TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5 * TOL)
    # the x-* headers: the router counted the same tokens as the tokenizer (with [CLS]/[SEP])
    tokens = sum(len(e.ids) for e in bert_reference.tokenize(minilm_dir, SENTENCES))
    assert result.timing.compute_tokens == tokens
    assert result.timing.compute_characters == sum(len(s) for s in SENTENCES)
    # TEI's HTTP layer reports "gpu+optimized" whatever the device; the engine says where it ran
    expected_type = "gpu+optimized" if isinstance(minilm, Client) else "in-process"
    assert result.timing.total_ms is not None and result.timing.compute_type == expected_type


def test_embed_unnormalized_and_dimensions(
    minilm: Client, minilm_dir: Path, bert_reference: ModuleType
) -> None:
    raw = minilm.embed(SENTENCES[:3], normalize=False)
    reference = bert_reference.embed(minilm_dir, SENTENCES[:3], pooling="mean", normalize=False, gelu=GELU)
    np.testing.assert_allclose(raw.vectors, reference, rtol=RTOL, atol=ATOL)
    short = minilm.embed(SENTENCES[:3], dimensions=64)
    assert short.vectors.shape == (3, 64)
    truncated = reference[:, :64] / np.linalg.norm(reference[:, :64], axis=1, keepdims=True)
    assert np.all(cosine_rows(short.vectors, truncated) >= 1 - COSINE_TOLERANCE)


def test_embed_many_texts_is_split_and_kept_in_order(
    minilm_url: str, minilm_dir: Path, bert_reference: ModuleType
) -> None:
    texts = [f"{SENTENCES[i % len(SENTENCES)]} (variant {i})" for i in range(150)]
    with Client(minilm_url, max_concurrency=4) as client:
        limit = client.info().max_client_batch_size
        assert len(texts) > limit  # more than one request
        result = client.embed(texts)
    assert result.timing.requests == -(-len(texts) // limit)
    sample = list(range(0, 150, 13))
    reference = bert_reference.embed(minilm_dir, [texts[i] for i in sample], pooling="mean", gelu=GELU)
    assert np.all(cosine_rows(result.vectors[sample], reference) >= 1 - COSINE_TOLERANCE)


def test_embed_all_equals_the_reference_hidden_states(
    minilm: Client, minilm_dir: Path, bert_reference: ModuleType
) -> None:
    result = minilm.embed_all(SENTENCES[:3])
    for text, got in zip(SENTENCES[:3], result, strict=True):
        expected = bert_reference.token_embeddings(minilm_dir, text, gelu=GELU)
        assert got.shape == expected.shape
        assert np.all(cosine_rows(got, expected) >= 1 - 1e-3)


def test_similarity_equals_reference_cosine(
    minilm: Client, minilm_dir: Path, bert_reference: ModuleType
) -> None:
    result = minilm.similarity(SENTENCES[0], SENTENCES[1:])
    vectors = bert_reference.embed(minilm_dir, SENTENCES, pooling="mean", normalize=True, gelu=GELU)
    np.testing.assert_allclose(result.scores, vectors[1:] @ vectors[0], atol=1e-4 * TOL)
    assert int(np.argmax(result.scores)) == 0  # the paraphrase is closest


def test_openai_float_and_base64(minilm: Client) -> None:
    http_only(minilm, why="the OpenAI route is the router's")
    floats = minilm.openai_embed(SENTENCES)
    b64 = minilm.openai_embed(SENTENCES, encoding_format="base64")
    np.testing.assert_array_equal(floats.vectors, b64.vectors)
    native = minilm.embed(SENTENCES)
    assert np.all(cosine_rows(b64.vectors, native.vectors) >= 1 - 1e-6)
    assert b64.prompt_tokens == native.timing.compute_tokens and b64.model
    assert minilm.openai_embed(SENTENCES[:2], dimensions=32).vectors.shape == (2, 32)


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenize_equals_the_tokenizers_library(minilm: Client, minilm_dir: Path) -> None:
    tokenizer = tokenizer_of(minilm_dir)
    tokens = minilm.tokenize(SENTENCES)
    for text, got in zip(SENTENCES, tokens, strict=True):
        expected = tokenizer.encode(text)
        assert [t.id for t in got] == expected.ids
        assert [t.special for t in got] == [bool(m) for m in expected.special_tokens_mask]
        for token in got:
            if not token.special:
                assert token.start is not None and token.stop is not None
                assert text.encode()[token.start : token.stop].decode(errors="replace") == token.text
    plain = minilm.tokenize(SENTENCES[0], add_special_tokens=False)
    assert [t.id for t in plain[0]] == tokenizer.encode(SENTENCES[0], add_special_tokens=False).ids


def test_decode_round_trip(minilm: Client, minilm_dir: Path) -> None:
    tokenizer = tokenizer_of(minilm_dir)
    ids = [tokenizer.encode(s).ids for s in SENTENCES]
    decoded = minilm.decode(ids)
    assert decoded == [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    assert decoded[0] == SENTENCES[0].lower()  # an uncased vocabulary
    kept = minilm.decode(ids[0], skip_special_tokens=False)
    assert kept[0].startswith("[CLS]") and kept[0].endswith("[SEP]")


# --- sparse ------------------------------------------------------------------------------------


def test_embed_sparse_equals_the_reference(
    splade_client: Client, splade_dir: Path, bert_reference: ModuleType
) -> None:
    # One text per request.  Upstream v1.9.3 candle (CPU, padded batches) does not mask padding
    # in SPLADE pooling (models/bert.rs builds the pooling mask for Pool::Mean only), so a short
    # text that the router happens to batch with a longer one gets extra weight from its pad
    # positions; which texts share a batch depends on timing.  See the next test.
    reference = bert_reference.splade(splade_dir, SENTENCES, gelu=GELU)
    vocab = reference.shape[1]
    for text, expected in zip(SENTENCES, reference, strict=True):
        (got,) = splade_client.embed_sparse(text)
        assert got.indices.tolist() == sorted(got.indices.tolist())
        assert np.all(got.values > 0)
        assert set(got.indices.tolist()) == set(np.flatnonzero(expected > 0).tolist())
        np.testing.assert_allclose(got.to_dense(vocab), expected, rtol=1e-4, atol=1e-5 * TOL)


def test_embed_sparse_batch_keeps_order_and_values_of_unpadded_texts(
    splade_client: Client, splade_dir: Path, bert_reference: ModuleType
) -> None:
    texts = sorted(SENTENCES, key=len, reverse=True)[:3]  # the longest first: never padded
    many = [texts[0], *[f"{t} ({i})" for i, t in enumerate(texts * 15)]]  # 46 texts: split in 2
    result = splade_client.embed_sparse(many)
    # over HTTP the client splits at /info's max_client_batch_size (32); in-process it is one call
    assert len(result) == len(many) and result.timing.requests == (2 if isinstance(splade_client, Client) else 1)
    reference = bert_reference.splade(splade_dir, [texts[0]], gelu=GELU)[0]
    np.testing.assert_allclose(result[0].to_dense(reference.shape[0]), reference, rtol=1e-4, atol=1e-5 * TOL)
    for got, text in zip(result, many, strict=True):
        (alone,) = splade_client.embed_sparse(text)
        # order: each item carries its own text's strongest terms
        top = set(alone.indices[np.argsort(-alone.values)[:5]].tolist())
        assert top <= set(got.indices.tolist())


def test_sparse_to_dict_by_tokenizer_and_by_router(splade_client: Client, splade_dir: Path) -> None:
    http_only(splade_client, why="token_texts asks the router's /decode")
    emb = splade_client.embed_sparse(SENTENCES[0])[0]
    by_tokenizer = emb.to_dict(tokenizer_of(splade_dir))
    by_router = emb.to_dict(splade_client.token_texts)
    assert len(by_tokenizer) == len(emb)
    words = {k: v for k, v in by_tokenizer.items() if re.fullmatch(r"[a-z]+", k)}
    assert words and all(by_router[k] == pytest.approx(v) for k, v in words.items())
    assert "fox" in by_tokenizer  # SPLADE keeps the input's own terms


def test_hybrid_scores_rank_the_paraphrase_first(minilm: Client, splade_client: Client) -> None:
    docs = SENTENCES[1:]
    dense_q, dense_d = minilm.embed(QUERY), minilm.embed(docs)
    sparse_q, sparse_d = splade_client.embed_sparse(QUERY), splade_client.embed_sparse(docs)
    scores = hybrid_scores(dense_q, dense_d, sparse_q[0], list(sparse_d), alpha=0.5)
    assert int(np.argmax(scores)) == 0  # "A fast auburn fox leaped above a sleepy hound."


# --- rerank and classification -----------------------------------------------------------------


def test_rerank_order_equals_the_reference(
    reranker: Client, reranker_dir: Path, bert_reference: ModuleType
) -> None:
    ranking = reranker.rerank(QUERY, SENTENCES, return_text=True)
    logits = bert_reference.classify(reranker_dir, [(QUERY, s) for s in SENTENCES], gelu=GELU)[:, 0]
    assert ranking.indices == np.argsort(-logits, kind="stable").tolist()
    np.testing.assert_allclose(ranking.scores_in_input_order(), sigmoid(logits), atol=1e-4 * TOL)
    assert [r.text for r in ranking] == [SENTENCES[i] for i in ranking.indices]
    raw = reranker.rerank(QUERY, SENTENCES, raw_scores=True)
    np.testing.assert_allclose(raw.scores_in_input_order(), logits, atol=1e-3 * TOL)
    assert reranker.rerank(QUERY, SENTENCES, top_n=3).indices == ranking.indices[:3]


def test_rerank_beyond_the_batch_limit_merges_correctly(
    reranker_url: str, reranker_dir: Path, bert_reference: ModuleType
) -> None:
    texts = [f"{s} #{i}" for i, s in enumerate(SENTENCES * 6)]  # 48 texts
    with Client(reranker_url, max_client_batch_size=5) as small, Client(reranker_url) as default:
        ranking = small.rerank(QUERY, texts)  # 10 requests
        other = default.rerank(QUERY, texts)  # split by the router's own limit
    assert ranking.timing.requests == 10
    assert sorted(ranking.indices) == list(range(48))
    scores = [r.score for r in ranking]
    assert scores == sorted(scores, reverse=True)
    # each pair's score is independent of how the texts were split
    np.testing.assert_allclose(ranking.scores_in_input_order(), other.scores_in_input_order(), atol=1e-5 * TOL)
    logits = bert_reference.classify(reranker_dir, [(QUERY, t) for t in texts], gelu=GELU)[:, 0]
    np.testing.assert_allclose(ranking.scores_in_input_order(), sigmoid(logits), atol=1e-4 * TOL)


def test_predict_pairs_on_the_reranker(
    reranker: Client, reranker_dir: Path, bert_reference: ModuleType
) -> None:
    pair = reranker.predict((QUERY, SENTENCES[0]))
    logit = bert_reference.classify(reranker_dir, [(QUERY, SENTENCES[0])], gelu=GELU)[0, 0]
    assert len(pair) == 1 and pair.score == pytest.approx(float(sigmoid(np.array(logit))), abs=1e-4 * TOL)
    batch = reranker.predict([(QUERY, s) for s in SENTENCES[:3]], raw_scores=True)
    logits = bert_reference.classify(reranker_dir, [(QUERY, s) for s in SENTENCES[:3]], gelu=GELU)[:, 0]
    np.testing.assert_allclose([p.score for p in batch], logits, atol=1e-3 * TOL)


def test_predict_on_a_two_label_classifier(
    classifier_url: str, classifier_dir: Path, bert_reference: ModuleType
) -> None:
    logits = bert_reference.classify(classifier_dir, ["I loved this film"], gelu=GELU)[0]
    with Client(classifier_url) as client:
        info = client.info()
        assert info.kind == "classifier" and len(info.id2label) == 2
        single = client.predict("I loved this film")
        assert {p.label for p in single} == set(info.id2label.values())
        assert sum(p.score for p in single) == pytest.approx(1.0, abs=1e-5 * TOL)  # softmax
        assert [p.score for p in single] == sorted((p.score for p in single), reverse=True)
        batch = client.predict(["I loved this film", ("premise", "hypothesis")])
        assert batch[0].as_dict() == pytest.approx(single.as_dict(), abs=1e-4 * TOL)
        # the reference's softmax, label by label
        expected_probs = np.exp(logits) / np.exp(logits).sum()
        for index, label in info.id2label.items():
            assert single.as_dict()[label] == pytest.approx(float(expected_probs[index]), abs=1e-4 * TOL)
        raw = client.predict("I loved this film", raw_scores=True)
        values = np.array([raw.as_dict()[label] for label in single.as_dict()])
        expected = np.exp(values) / np.exp(values).sum()
        np.testing.assert_allclose(list(single.as_dict().values()), expected, atol=1e-5 * TOL)


# --- service routes ----------------------------------------------------------------------------


def test_health_info_and_metrics(minilm: Client, splade_client: Client, reranker: Client) -> None:
    http_only(minilm, splade_client, reranker, why="te_request_count is counted by the router's HTTP handlers")
    assert minilm.health() is True
    info = minilm.info()
    assert (info.kind, info.pooling) == ("embedding", "mean")
    assert info.max_client_batch_size >= 1 and info.version
    assert splade_client.info().kind == "splade"
    assert reranker.info().kind == "reranker"
    before = minilm.metrics().total("te_request_count")
    minilm.embed(["one", "two"])
    minilm.embed("three")
    metrics = minilm.metrics()
    assert metrics.total("te_request_count") >= before + 2
    assert metrics.types.get("te_request_duration") == "histogram"
    histogram = metrics.histogram("te_request_duration")
    assert histogram is not None and histogram.count >= 2
    assert isinstance(minilm, Engine)


# --- errors the real router produces -----------------------------------------------------------


def test_real_error_statuses(minilm: Client, splade_client: Client) -> None:
    http_only(minilm, splade_client, why="HTTP statuses (test_in_process_errors_are_the_same_classes covers the engine)")
    too_long = " ".join(["word"] * 2000)
    with pytest.raises(TEIValidationError) as caught:
        minilm.embed(too_long, truncate=False)
    assert caught.value.status == 422 and caught.value.error_type == "Validation"
    assert minilm.embed(too_long, truncate=True).vectors.shape[0] == 1
    with pytest.raises(TEIBackendError) as backend:
        minilm.embed_sparse("x")
    assert backend.value.status == 424 and backend.value.error_type == "Backend"
    with pytest.raises(TEIBackendError, match="re-ranker"):
        minilm.rerank("q", ["a"])
    with pytest.raises(TEIBackendError):
        splade_client.embed_all("x")
    with pytest.raises(TEIBackendError, match="normalize"):
        splade_client.embed("x")  # normalize=True is refused for SPLADE
    with pytest.raises(TEIValidationError):
        minilm.embed("x", prompt_name="no-such-prompt")
    with pytest.raises(TEIRequestError):
        minilm.embed("x", dimensions=0)


def test_both_back_ends_give_the_same_values(minilm_url: str, minilm_dir: Path, reranker_url: str, reranker_dir: Path) -> None:
    engine, ranker = local_engine(minilm_dir), local_engine(reranker_dir)
    with Client(minilm_url) as http, Client(reranker_url) as http_ranker:
        np.testing.assert_allclose(engine.embed(SENTENCES).vectors, http.embed(SENTENCES).vectors, rtol=1e-5, atol=1e-6)
        assert engine.tokenize(SENTENCES) == http.tokenize(SENTENCES)
        assert ranker.rerank(QUERY, SENTENCES).indices == http_ranker.rerank(QUERY, SENTENCES).indices
        assert engine.info().max_input_length == http.info().max_input_length


def test_in_process_errors_are_the_same_classes(minilm_dir: Path, splade_dir: Path) -> None:
    engine, splade = local_engine(minilm_dir), local_engine(splade_dir, pooling="splade")
    too_long = " ".join(["word"] * 2000)
    with pytest.raises(TEIValidationError) as caught:
        engine.embed(too_long, truncate=False)
    assert caught.value.error_type == "Validation" and caught.value.status is None
    with pytest.raises(TEIBackendError):
        engine.embed_sparse("x")
    with pytest.raises(TEIBackendError, match="re-ranker"):
        engine.rerank("q", ["a"])
    with pytest.raises(TEIBackendError, match="normalize"):
        splade.embed("x")
    with pytest.raises(TEIValidationError):
        engine.embed("x", prompt_name="no-such-prompt")
