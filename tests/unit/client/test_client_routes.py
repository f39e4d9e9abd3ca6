"""Every route: what the client sends (TEI's field names and spellings) and what it returns."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import numpy as np
import pytest
import requests
import tokenizers
from requests.adapters import HTTPAdapter
from tokenizers.models import WordLevel

from pytei.client import (
    Client,
    Embeddings,
    Engine,
    Info,
    OpenAIEmbeddings,
    Predictions,
    Ranking,
    Similarities,
    SparseEmbedding,
    SparseEmbeddings,
    Timing,
    TokenEmbeddings,
)
from pytei.client._parse import parse_openai
from pytei.errors import TEIValidationError

TEXTS = ["the cat sat", "a dog barked loudly", "hello"]


def last_json(server: Any, path: str) -> Any:
    return server.calls(path)[-1].json


def test_embed_values_shape_and_timing(server: Any, client: Client, fs: Any) -> None:
    result = client.embed(TEXTS)
    assert isinstance(result, Embeddings)
    assert result.vectors.dtype == np.float32
    assert result.vectors.shape == (3, fs.DIM)
    np.testing.assert_allclose(result.vectors, np.stack([fs.vector(t) for t in TEXTS]), rtol=1e-6)
    assert len(result) == 3 and result.dim == fs.DIM
    np.testing.assert_array_equal(np.asarray(result), result.vectors)
    # the x-* headers of the response
    assert result.timing.compute_type == "gpu+optimized"
    assert result.timing.compute_characters == sum(map(len, TEXTS))
    assert result.timing.compute_tokens == sum(len(t.split()) + 2 for t in TEXTS)
    assert (result.timing.queue_ms, result.timing.inference_ms, result.timing.tokenization_ms) == (
        1.0,
        2.0,
        0.0,
    )
    assert result.timing.requests == 1
    assert last_json(server, "/embed") == {"inputs": TEXTS, "normalize": True}


def test_embed_single_text_is_sent_as_a_string_and_needs_no_info(
    server: Any, client: Client, fs: Any
) -> None:
    result = client.embed("hello")
    assert result.vectors.shape == (1, fs.DIM)
    assert server.paths() == ["/embed"]
    assert last_json(server, "/embed")["inputs"] == "hello"


def test_embed_sends_every_option_with_tei_spelling(server: Any, client: Client, fs: Any) -> None:
    result = client.embed(
        ["a b c"],
        normalize=False,
        truncate=True,
        truncation_direction="left",
        prompt_name="query",
        dimensions=4,
    )
    assert last_json(server, "/embed") == {
        "inputs": ["a b c"],
        "truncate": True,
        "truncation_direction": "Left",
        "prompt_name": "query",
        "normalize": False,
        "dimensions": 4,
    }
    np.testing.assert_allclose(result.vectors[0], fs.vector("a b c", False, 4), rtol=1e-6)


def test_embed_rejects_bad_inputs_before_sending(server: Any, client: Client) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        client.embed(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="truncation_direction"):
        client.embed("a", truncation_direction="up")  # type: ignore[arg-type]
    assert server.paths() == []


def test_empty_inputs_give_empty_results_without_a_request(server: Any, client: Client, fs: Any) -> None:
    assert client.embed([], dimensions=8).vectors.shape == (0, 8)
    assert len(client.embed_all([])) == 0
    assert len(client.embed_sparse([])) == 0
    assert len(client.rerank("q", [])) == 0
    assert client.predict([]) == []
    assert len(client.similarity("s", [])) == 0
    assert client.tokenize([]) == []
    assert server.paths() == []


def test_embed_of_no_texts_has_the_models_dimension(server: Any, client: Client, fs: Any) -> None:
    # Not yet known: learnt with one request; then it stacks with real results, no request.
    assert client.embed([]).vectors.shape == (0, fs.DIM)
    assert server.paths() == ["/embed"]
    assert client.openai_embed([]).vectors.shape == (0, fs.DIM)
    stacked = np.vstack([client.embed([]).vectors, client.embed(["a"]).vectors])
    assert stacked.shape == (1, fs.DIM) and server.paths() == ["/embed", "/embed"]


def test_embed_all_gives_one_matrix_per_text(server: Any, client: Client, fs: Any) -> None:
    result = client.embed_all(["one two", "three"], truncate=False)
    assert isinstance(result, TokenEmbeddings)
    assert [v.shape for v in result] == [(4, fs.DIM), (3, fs.DIM)]
    assert all(v.dtype == np.float32 for v in result)
    np.testing.assert_allclose(result[0][1], fs.vector("one", False), rtol=1e-6)
    assert last_json(server, "/embed_all") == {"inputs": ["one two", "three"], "truncate": False}
    assert result.timing.compute_tokens == 7


def test_embed_sparse_and_to_dict(make_server: Any, make_client: Any, fs: Any) -> None:
    server = make_server(info={"model_type": {"embedding": {"pooling": "splade"}}})
    client = make_client(server.url)
    result = client.embed_sparse(["red apple red", "pear"], prompt_name="doc")
    assert isinstance(result, SparseEmbeddings) and len(result) == 2
    first = result[0]
    expected = fs.sparse("red apple red")
    assert first.indices.dtype == np.int64 and first.values.dtype == np.float32
    assert first.indices.tolist() == [e["index"] for e in expected]
    np.testing.assert_allclose(first.values, [e["value"] for e in expected], rtol=1e-6)
    vocab = {fs.token_id(w): w for w in ("red", "apple", "pear")}
    assert first.to_dict(vocab) == pytest.approx({"red": 1.6, "apple": 1.0})
    assert result.to_dicts(vocab)[1] == pytest.approx({"pear": 0.9})
    dense = result.to_dense(fs.VOCAB)
    assert dense.shape == (2, fs.VOCAB) and dense[0, fs.token_id("red")] == pytest.approx(1.6)
    assert last_json(server, "/embed_sparse") == {"inputs": ["red apple red", "pear"], "prompt_name": "doc"}


def test_sparse_to_dict_through_the_routers_decode(make_server: Any, make_client: Any, fs: Any) -> None:
    server = make_server(info={"model_type": {"embedding": {"pooling": "splade"}}})
    client = make_client(server.url)
    result = client.embed_sparse("alpha beta")
    words = result[0].to_dict(client.token_texts)
    assert words == pytest.approx({f"tok{fs.token_id('alpha')}": 1.0, f"tok{fs.token_id('beta')}": 0.9})
    decodes = server.calls("/decode")
    assert decodes[-1].json["skip_special_tokens"] is False  # ids decoded one by one, specials kept
    # the client caches what it decoded: a second lookup sends nothing
    before = len(server.requests)
    result[0].to_dict(client.token_texts)
    assert len(server.requests) == before


def test_sparse_to_dict_with_a_tokenizers_tokenizer() -> None:
    tok = tokenizers.Tokenizer(WordLevel({"[UNK]": 0, "red": 7, "##s": 9}, unk_token="[UNK]"))
    emb = SparseEmbedding(np.array([7, 9], dtype=np.int64), np.array([0.5, 0.25], dtype=np.float32))
    assert emb.to_dict(tok) == {"red": 0.5, "##s": 0.25}
    with pytest.raises(KeyError, match="12"):
        SparseEmbedding(np.array([12]), np.array([1.0], dtype=np.float32)).to_dict(tok)


def test_openai_float_and_base64_are_equal(server: Any, client: Client, fs: Any) -> None:
    floats = client.openai_embed(TEXTS, model="m", user="u", dimensions=6)
    b64 = client.openai_embed(TEXTS, encoding_format="base64", dimensions=6)
    assert isinstance(b64, OpenAIEmbeddings)
    assert b64.vectors.dtype == np.float32 and b64.vectors.shape == (3, 6)
    np.testing.assert_array_equal(floats.vectors, b64.vectors)  # base64 is exact: same f32 bits
    np.testing.assert_allclose(b64.vectors[1], fs.vector(TEXTS[1], True, 6), rtol=1e-6)
    assert floats.model == fs.INFO["served_model_name"]
    assert floats.prompt_tokens == floats.total_tokens == sum(len(t.split()) + 2 for t in TEXTS)
    sent = server.calls("/v1/embeddings")
    assert sent[0].json == {
        "input": TEXTS,
        "encoding_format": "float",
        "model": "m",
        "user": "u",
        "dimensions": 6,
    }
    assert sent[1].json["encoding_format"] == "base64"


def test_openai_base64_is_little_endian_f32() -> None:
    values = np.array([1.5, -2.0, 3.25e-3], dtype="<f4")
    body: dict[str, Any] = {
        "object": "list",
        "model": "x",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
        "data": [
            {"object": "embedding", "index": 0, "embedding": base64.b64encode(values.tobytes()).decode()}
        ],
    }
    vectors, model, prompt, total = parse_openai(body, 1)
    np.testing.assert_array_equal(vectors[0], values)
    assert (model, prompt, total) == ("x", 3, 3)
    big_endian = base64.b64encode(values.astype(">f4").tobytes()).decode()
    body["data"][0]["embedding"] = big_endian
    assert not np.array_equal(parse_openai(body, 1)[0][0], values)
    body["data"][0]["embedding"] = base64.b64encode(b"\x00" * 6).decode()
    with pytest.raises(ValueError, match="whole number of f32"):
        parse_openai(body, 1)


def test_openai_answers_in_index_order(server: Any, client: Client, fs: Any) -> None:
    body: dict[str, Any] = {
        "data": [{"index": 1, "embedding": [1.0]}, {"index": 0, "embedding": [0.0]}],
        "usage": {},
    }
    assert parse_openai(body, 2)[0][:, 0].tolist() == [0.0, 1.0]
    body["data"][1]["index"] = 1
    with pytest.raises(ValueError, match="exactly once"):
        parse_openai(body, 2)


def test_rerank(make_server: Any, make_client: Any, fs: Any) -> None:
    server = make_server(
        info={"model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}}
    )
    client = make_client(server.url)
    texts = ["cats and dogs", "the cat sat on the mat", "stock prices", "a cat"]
    ranking = client.rerank("the cat", texts, return_text=True, raw_scores=True, truncate=True)
    assert isinstance(ranking, Ranking)
    expected = sorted(range(4), key=lambda i: -fs.rerank_score("the cat", texts[i]))
    assert ranking.indices == expected
    assert [r.text for r in ranking] == [texts[i] for i in expected]
    assert ranking[0].score == pytest.approx(fs.rerank_score("the cat", texts[expected[0]]))
    aligned = ranking.scores_in_input_order()
    assert aligned.tolist() == pytest.approx([fs.rerank_score("the cat", t) for t in texts])
    assert last_json(server, "/rerank") == {
        "query": "the cat",
        "texts": texts,
        "truncate": True,
        "raw_scores": True,
        "return_text": True,
    }
    top = client.rerank("the cat", texts, top_n=2)
    assert top.indices == expected[:2] and top[0].text is None


def test_predict_single_pair_and_batch(make_server: Any, make_client: Any, fs: Any) -> None:
    server = make_server(
        info={
            "model_type": {"classifier": {"id2label": fs.LABELS, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}}
        }
    )
    client = make_client(server.url)
    single = client.predict("great movie", raw_scores=True)
    assert isinstance(single, Predictions)
    assert [p.label for p in single] == sorted(single.as_dict(), key=lambda k: -single.as_dict()[k])
    assert single.label == single[0].label and single.score == max(p.score for p in single)
    assert single.timing.compute_characters == len("great movie")
    assert last_json(server, "/predict") == {"inputs": "great movie", "raw_scores": True}

    pair = client.predict(("the cat", "a cat sat"))
    assert last_json(server, "/predict")["inputs"] == ["the cat", "a cat sat"]
    assert pair.as_dict()["POSITIVE"] == pytest.approx(fs.rerank_score("the cat", "a cat sat"))

    batch = client.predict(["x", ("a", "b")], truncate=False, truncation_direction="right")
    assert isinstance(batch, list) and len(batch) == 2
    assert last_json(server, "/predict") == {
        "inputs": [["x"], ["a", "b"]],
        "truncate": False,
        "truncation_direction": "Right",
        "raw_scores": False,
    }
    one = client.predict(["only"])
    assert isinstance(one, list) and len(one) == 1
    assert last_json(server, "/predict")["inputs"] == [["only"]]


def test_predict_rejects_what_tei_cannot_parse(server: Any, client: Client) -> None:
    with pytest.raises(TypeError, match="pair"):
        client.predict(("a", "b", "c"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list"):
        client.predict(iter(["a"]))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"inputs\[1\]"):
        client.predict(["a", ["b", "c"]])  # type: ignore[list-item]
    assert server.paths() == []


def test_similarity(server: Any, client: Client, fs: Any) -> None:
    result = client.similarity(
        "the source", ["the source", "other words"], prompt_name="q", truncation_direction="left"
    )
    assert isinstance(result, Similarities)
    assert result.scores.dtype == np.float32
    assert result[0] == pytest.approx(1.0, abs=1e-6)
    assert result[1] == pytest.approx(float(fs.vector("the source") @ fs.vector("other words")), abs=1e-6)
    assert last_json(server, "/similarity") == {
        "inputs": {"source_sentence": "the source", "sentences": ["the source", "other words"]},
        "parameters": {"truncation_direction": "Left", "prompt_name": "q"},
    }
    client.similarity("s", ["a"])
    assert "parameters" not in last_json(server, "/similarity")
    with pytest.raises(TypeError, match="not one str"):
        client.similarity("s", "abc")


def test_tokenize_and_decode(server: Any, client: Client, fs: Any) -> None:
    tokens = client.tokenize("hi there", add_special_tokens=True, prompt_name="query")
    assert last_json(server, "/tokenize") == {
        "inputs": "hi there",
        "add_special_tokens": True,
        "prompt_name": "query",
    }
    assert len(tokens) == 1
    assert [t.text for t in tokens[0]] == ["[CLS]", "hi", "there", "[SEP]"]
    assert [t.special for t in tokens[0]] == [True, False, False, True]
    assert (tokens[0][2].start, tokens[0][2].stop) == (3, 8)
    assert tokens[0][0].start is None
    batch = client.tokenize(["a", "b c"], add_special_tokens=False)
    assert [[t.id for t in seq] for seq in batch] == [
        [fs.token_id("a")],
        [fs.token_id("b"), fs.token_id("c")],
    ]

    assert client.decode([101, 5, 102]) == ["tok5"]
    assert last_json(server, "/decode") == {"ids": [101, 5, 102], "skip_special_tokens": True}
    # An int array works at runtime, though the signature names only sequences.
    as_array = client.decode(np.array([101, 6]), skip_special_tokens=False)  # type: ignore[arg-type]
    assert as_array == ["[CLS] tok6"]
    assert client.decode([[1, 2], [3]]) == ["tok1 tok2", "tok3"]
    assert last_json(server, "/decode")["ids"] == [[1, 2], [3]]
    assert client.decode([]) == [""]
    with pytest.raises(TypeError):
        client.decode("abc")  # type: ignore[arg-type]


def test_health_info_metrics(server: Any, client: Client, fs: Any) -> None:
    assert client.health() is True
    info = client.info()
    assert isinstance(info, Info)
    assert (info.kind, info.pooling, info.max_client_batch_size, info.version) == (
        "embedding",
        "mean",
        32,
        "1.9.3",
    )
    assert info.max_batch_requests == 4 and info.model_sha is None and info.id2label == {}
    client.embed(["a", "b"])
    client.embed("c")
    metrics = client.metrics()
    assert metrics.value("te_request_count", method="batch") == 1
    assert metrics.value("te_request_count", method="single") == 1
    assert metrics.total("te_request_count") == 2
    assert metrics.types["te_request_duration"] == "histogram"
    histogram = metrics.histogram("te_request_duration")
    assert histogram is not None and histogram.count == 2 and len(histogram.buckets) == 36


def test_info_kinds() -> None:
    base = {
        "model_id": "m",
        "model_sha": "abc",
        "model_dtype": "float16",
        "max_concurrent_requests": 512,
        "max_input_length": 512,
        "max_batch_tokens": 16384,
        "max_batch_requests": None,
        "max_client_batch_size": 32,
        "auto_truncate": True,
        "tokenization_workers": 4,
        "version": "1.9.3",
        "sha": None,
        "docker_label": None,
        "a_future_field": 1,
    }
    labels = {"id2label": {"0": "NEG", "1": "POS"}, "label2id": {"NEG": 0, "POS": 1}}
    cases = [
        ({"embedding": {"pooling": "cls"}}, "embedding"),
        ({"embedding": {"pooling": "splade"}}, "splade"),
        ({"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}, "reranker"),
        ({"classifier": labels}, "classifier"),
    ]
    for model_type, kind in cases:
        info = Info.from_json({**base, "model_type": model_type})
        assert info.kind == kind
        assert info.served_model_name == "m"  # absent -> model_id
        assert info.raw["a_future_field"] == 1
    assert Info.from_json({**base, "model_type": {"classifier": labels}}).id2label == {0: "NEG", 1: "POS"}
    with pytest.raises(ValueError, match="unknown model_type"):
        Info.from_json({**base, "model_type": {"generator": {}}})


def test_timing_merge_sums_totals_and_weights_averages() -> None:
    a = Timing("gpu+optimized", 10, 100, 20, 10, 1.0, 4.0, 6.0)
    b = Timing("gpu+optimized", 30, 50, 10, 30, 3.0, 1.0, 2.0)
    merged = Timing.merge([(a, 3), (b, 1)])
    assert merged.total_ms == 40 and merged.compute_ms == 40
    assert merged.compute_characters == 150 and merged.compute_tokens == 30
    assert merged.tokenization_ms == pytest.approx((1 * 3 + 3 * 1) / 4)
    assert merged.queue_ms == pytest.approx((4 * 3 + 1) / 4)
    assert merged.requests == 2
    assert Timing.merge([(Timing(), 1), (Timing(), 2)]) == Timing(requests=2)
    assert Timing.from_headers({"x-total-time": "not-a-number"}).total_ms is None


def test_client_satisfies_the_engine_protocol(client: Client) -> None:
    assert isinstance(client, Engine)


def test_a_given_session_is_used_and_left_open(server: Any) -> None:
    closed: list[bool] = []

    class Session(requests.Session):
        def close(self) -> None:
            closed.append(True)
            super().close()

    session = Session()
    session.headers["X-From-Session"] = "yes"
    with Client(server.url, session=session, headers={"X-Extra": "1"}) as client:
        client.embed("x")
    sent = server.calls("/embed")[-1].headers
    assert sent["X-From-Session"] == "yes" and sent["X-Extra"] == "1"
    assert sent["User-Agent"].startswith("pytei/")
    assert closed == []  # the caller's session is the caller's to close
    session.close()
    with Client(server.url) as owned:
        owned_session = owned._transport.session
        owned.health()
    adapter = cast(HTTPAdapter, owned_session.adapters["http://"])
    assert owned._transport.closed and len(adapter.poolmanager.pools) == 0


def test_bytes_are_utf8_and_lone_surrogates_are_named(server: Any, client: Client) -> None:
    assert client.embed([b"caf\xc3\xa9", "plain"]).vectors.shape[0] == 2  # type: ignore[list-item]
    assert json.loads(server.calls("/embed")[-1].body)["inputs"][0] == "café"
    with pytest.raises(TEIValidationError, match=r"texts\[1\] is bytes that are not UTF-8 \(byte 0"):
        client.embed(["ok", b"\xff\xfe"])  # type: ignore[list-item]
    broken = b"ab\xffc".decode("utf-8", "surrogateescape")
    with pytest.raises(TEIValidationError, match=r"texts\[2\] is not valid Unicode: '\\udcff' at position 2"):
        client.embed(["ok", "fine", broken])
    with pytest.raises(TEIValidationError, match="sentences\\[0\\]"):
        client.similarity("s", [broken])
    calls = len(server.calls("/embed"))
    assert calls == 1  # nothing was sent for the refused inputs
