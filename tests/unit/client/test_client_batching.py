"""Large inputs: split by max_client_batch_size, bounded concurrency, order kept, fail-fast, Ctrl-C."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from pytei.client import RetryPolicy
from pytei.client._batching import chunk_sizes, run_batches
from pytei.errors import TEIError, TEIOverloadedError, TEIPayloadTooLargeError, TEIValidationError

RERANKER = {"model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}}


def batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pytei-batch")]


def wait_for_no_batch_threads(limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while batch_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batch_threads() == []


def test_chunk_sizes() -> None:
    assert chunk_sizes(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_sizes(8, 4) == [(0, 4), (4, 8)]
    assert chunk_sizes(1, 4) == [(0, 1)]
    with pytest.raises(ValueError):
        chunk_sizes(3, 0)


def test_many_batches_with_random_delays_come_back_in_order(
    make_server: Any, make_client: Any, fs: Any
) -> None:
    rng = random.Random(7)
    delays: dict[str, float] = {}

    def delay(record: Any) -> float:
        key = record.json["inputs"][0] if record.path == "/embed" else ""
        return delays.setdefault(key, rng.uniform(0, 0.015))

    server = make_server(info={"max_client_batch_size": 7}, delay=delay)
    client = make_client(server.url, max_concurrency=4)
    texts = [f"text number {i}" for i in range(500)]
    result = client.embed(texts)
    np.testing.assert_allclose(result.vectors, np.stack([fs.vector(t) for t in texts]), rtol=1e-6)
    sent = [t for r in server.calls("/embed") for t in r.json["inputs"]]
    assert sorted(sent) == sorted(texts)  # each text exactly once
    finish_order = [r.json["inputs"][0] for r in sorted(server.calls("/embed"), key=lambda r: r.finished)]
    assert finish_order != [texts[i] for i in range(0, 500, 7)]  # they did finish out of order
    assert 2 <= server.max_in_flight <= 4
    assert result.timing.requests == 72
    assert result.timing.compute_characters == sum(map(len, texts))
    # a pool, not a connection per request: at most max_concurrency connections (+1 for /info)
    assert len({r.client_port for r in server.requests}) <= 5
    assert len(server.calls("/info")) == 1
    client.embed(texts[:20])
    assert len(server.calls("/info")) == 1  # read once per client
    wait_for_no_batch_threads()


def test_given_batch_limit_skips_info(server: Any, make_client: Any) -> None:
    client = make_client(server.url, max_client_batch_size=3)
    client.embed([str(i) for i in range(10)])
    assert server.paths().count("/info") == 0
    assert sorted(len(r.json["inputs"]) for r in server.calls("/embed")) == [1, 3, 3, 3]


def test_one_failing_batch_fails_the_call_with_its_index(make_server: Any, make_client: Any, fs: Any) -> None:
    server = make_server(info={"max_client_batch_size": 7}, delay=lambda r: 0.02)
    bad = {
        "error": "Input validation error: `inputs` must have less than 256 tokens",
        "error_type": "Validation",
    }
    server.on_request = lambda r: (
        fs.Fault(status=422, body=bad) if "text 123" in (r.json or {}).get("inputs", []) else None
    )
    client = make_client(server.url, max_concurrency=4)
    texts = [f"text {i}" for i in range(700)]
    with pytest.raises(TEIValidationError) as caught:
        client.embed(texts)
    sent_at_raise = len(server.calls("/embed"))
    error = caught.value
    assert error.batch_index == 123 // 7
    assert str(error).startswith("batch 17 of 100 (inputs 119..125): POST")
    assert error.status == 422 and error.error_type == "Validation"
    time.sleep(0.2)
    sent_after = len(server.calls("/embed"))
    assert sent_after - sent_at_raise <= 3  # only requests already on their way
    assert sent_after < 60  # of 100: the call stopped early
    wait_for_no_batch_threads()


def test_batches_in_flight_stop_retrying_once_the_call_failed(
    make_server: Any, make_client: Any, fs: Any
) -> None:
    server = make_server(info={"max_client_batch_size": 1})
    overloaded = {"error": "Model is overloaded", "error_type": "Overloaded"}

    def fault(record: Any) -> Any:
        if record.path != "/embed":
            return None
        if record.json["inputs"] == ["a"]:
            return fs.Fault(status=422, body={"error": "bad", "error_type": "Validation"}, delay=0.12)
        return fs.Fault(status=429, body=overloaded)

    server.on_request = fault
    # real (cancellable) sleeping: "b" is answered 429 and resent every 0.05 s until the call fails
    client = make_client(
        server.url,
        max_concurrency=2,
        retries=RetryPolicy(max_retries=100, backoff_base=0.05, backoff_max=0.05, random=lambda: 1.0),
    )

    def resends() -> int:
        return len([r for r in server.calls("/embed") if r.json["inputs"] == ["b"]])

    with pytest.raises(TEIValidationError):
        client.embed(["a", "b"])
    at_failure = resends()
    assert at_failure >= 1
    time.sleep(0.5)  # ten more resends if nothing stopped it
    assert resends() <= at_failure + 1
    wait_for_no_batch_threads()


def test_a_failure_is_reported_without_waiting_for_slow_batches(
    make_server: Any, make_client: Any, fs: Any
) -> None:
    server = make_server(info={"max_client_batch_size": 1})
    bad = {"error": "bad", "error_type": "Validation"}
    server.on_request = lambda r: (
        (fs.Fault(status=422, body=bad) if r.json["inputs"] == ["a"] else fs.Fault(delay=2.0))
        if r.path == "/embed"
        else None
    )
    client = make_client(server.url, max_concurrency=2)
    started = time.monotonic()
    with pytest.raises(TEIValidationError):
        client.embed(["a", "slow"])
    assert time.monotonic() - started < 1.5
    wait_for_no_batch_threads(limit=5.0)  # the slow request ends on its own, then its thread exits


def test_ctrl_c_leaves_no_work_behind(make_server: Any, make_client: Any) -> None:
    server = make_server(info={"max_client_batch_size": 2}, delay=lambda r: 0.15)
    client = make_client(server.url, max_concurrency=3)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.25, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.embed([f"t{i}" for i in range(60)])
    assert time.monotonic() - started < 2.0
    sent_at_interrupt = len(server.calls("/embed"))
    assert sent_at_interrupt < 30
    time.sleep(0.4)
    assert len(server.calls("/embed")) - sent_at_interrupt <= 3
    wait_for_no_batch_threads()
    # the client still works afterwards
    assert client.embed(["x", "y"]).vectors.shape[0] == 2


def test_run_batches_keeps_order_and_reports_the_lowest_failure() -> None:
    rng = random.Random(3)
    spans = chunk_sizes(200, 10)

    def call(i: int, cancel: threading.Event) -> int:
        time.sleep(rng.uniform(0, 0.003))
        return i * 10

    assert run_batches(call, spans, max_concurrency=5) == [i * 10 for i in range(20)]

    def failing(i: int, cancel: threading.Event) -> int:
        if i == 4:
            raise TEIOverloadedError("overloaded", status=429)
        if i == 9:
            raise ValueError("a bug")
        return i

    with pytest.raises(TEIOverloadedError) as caught:
        run_batches(failing, spans, max_concurrency=1)
    assert caught.value.batch_index == 4 and "batch 4 of 20 (inputs 40..49)" in str(caught.value)
    with pytest.raises(ValueError, match="a bug") as bug:
        run_batches(lambda i, c: failing(i + 5, c), spans, max_concurrency=1)
    assert any("batch 4 of 20" in note for note in bug.value.__notes__)


def test_single_batch_runs_inline_and_is_not_tagged() -> None:
    seen: list[str] = []

    def call(i: int, cancel: threading.Event) -> int:
        seen.append(threading.current_thread().name)
        raise TEIError("nope")

    with pytest.raises(TEIError) as caught:
        run_batches(call, [(0, 5)], max_concurrency=4)
    assert caught.value.batch_index is None and str(caught.value) == "nope"
    assert seen == [threading.current_thread().name]


def test_progress_bar_on_stderr(server: Any, make_client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    client = make_client(server.url, max_client_batch_size=5)
    client.embed([str(i) for i in range(23)], progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "embed" in captured.err and "23/23" in captured.err


def test_rerank_split_merges_by_score_with_global_indices(
    make_server: Any, make_client: Any, fs: Any
) -> None:
    server = make_server(info={**RERANKER, "max_client_batch_size": 3})
    client = make_client(server.url)
    query = "red fox jumps"
    texts = [
        "red",
        "fox jumps",
        "red fox jumps high",
        "blue",
        "jumps",
        "a red fox",
        "nothing here",
        "fox",
        "red jumps",
        "x",
    ]
    ranking = client.rerank(query, texts, return_text=True)
    assert len(server.calls("/rerank")) == 4
    scores = [fs.rerank_score(query, t) for t in texts]
    assert [r.index for r in ranking] == sorted(range(10), key=lambda i: -scores[i])
    assert all(r.text == texts[r.index] for r in ranking)
    assert ranking.scores_in_input_order().tolist() == pytest.approx(scores)
    assert ranking.timing.requests == 4
    assert client.rerank(query, texts, top_n=3).indices == ranking.indices[:3]


def test_similarity_split_leaves_room_for_the_source(make_server: Any, make_client: Any, fs: Any) -> None:
    server = make_server(info={"max_client_batch_size": 4})
    client = make_client(server.url)
    sentences = [f"sentence {i}" for i in range(10)]
    result = client.similarity("the source", sentences)
    calls = server.calls("/similarity")
    assert sorted(len(c.json["inputs"]["sentences"]) for c in calls) == [1, 3, 3, 3]
    assert all(c.json["inputs"]["source_sentence"] == "the source" for c in calls)
    expected = [float(fs.vector("the source") @ fs.vector(s)) for s in sentences]
    assert result.scores.tolist() == pytest.approx(expected, abs=1e-6)


def test_similarity_with_a_batch_limit_of_one_is_refused(make_server: Any, make_client: Any) -> None:
    server = make_server(info={"max_client_batch_size": 1})
    with pytest.raises(TEIError, match="max_client_batch_size"):
        make_client(server.url).similarity("s", ["a"])


def test_predict_tokenize_decode_embed_all_sparse_openai_split(
    make_server: Any, make_client: Any, fs: Any
) -> None:
    classifier = {
        "model_type": {"classifier": {"id2label": fs.LABELS, "label2id": {}}},
        "max_client_batch_size": 2,
    }
    server = make_server(info=classifier)
    client = make_client(server.url)
    inputs: list[str | tuple[str, str]] = ["a", ("b", "c"), "d", "e", ("f", "g")]
    predictions = client.predict(inputs)
    assert sorted(len(c.json["inputs"]) for c in server.calls("/predict")) == [1, 2, 2]
    assert predictions[1].as_dict()["POSITIVE"] == pytest.approx(fs.rerank_score("b", "c"))

    server = make_server(info={"max_client_batch_size": 2})
    client = make_client(server.url)
    texts = ["w1", "w2 w3", "w4", "w5 w6 w7", "w8"]
    assert [[t.text for t in seq if not t.special] for seq in client.tokenize(texts)] == [
        t.split() for t in texts
    ]
    assert client.decode([[1], [2], [3]]) == ["tok1", "tok2", "tok3"]
    assert [v.shape[0] for v in client.embed_all(texts)] == [len(t.split()) + 2 for t in texts]
    openai = client.openai_embed(texts, encoding_format="base64")
    np.testing.assert_allclose(openai.vectors, np.stack([fs.vector(t) for t in texts]), rtol=1e-6)
    assert openai.prompt_tokens == sum(len(t.split()) + 2 for t in texts)
    assert sorted(len(c.json["input"]) for c in server.calls("/v1/embeddings")) == [1, 2, 2]

    splade = make_server(
        info={"model_type": {"embedding": {"pooling": "splade"}}, "max_client_batch_size": 2}
    )
    sparse = make_client(splade.url).embed_sparse(texts)
    assert [s.indices.tolist() for s in sparse] == [[e["index"] for e in fs.sparse(t)] for t in texts]


def test_texts_that_fit_one_by_one_are_split_by_the_payload_limit(make_server: Any, make_client: Any) -> None:
    # 32 texts of 10 kB each fit the batch size but not one 64 kB body: the client splits.
    server = make_server(payload_limit=64_000, info={"max_client_batch_size": 32})
    client = make_client(server.url, max_payload_bytes=64_000)
    texts = [f"{i} " + "word " * 2000 for i in range(32)]
    result = client.embed(texts)
    assert result.vectors.shape[0] == 32
    bodies = [len(r.body) for r in server.calls("/embed")]
    assert len(bodies) > 1 and max(bodies) <= 64_000 and sum(len(json.loads(r.body)["inputs"]) for r in server.calls("/embed")) == 32


def test_a_413_from_a_smaller_router_limit_halves_the_batch(make_server: Any, make_client: Any) -> None:
    # The router's limit is lower than the client assumes: 413, halve, resend, in order.
    server = make_server(payload_limit=30_000, info={"max_client_batch_size": 32})
    client = make_client(server.url)  # assumes TEI's default 2,000,000
    texts = [f"{i} " + "word " * 1000 for i in range(16)]
    result = client.embed(texts)
    expected = make_client(server.url, max_payload_bytes=30_000).embed(texts)
    np.testing.assert_array_equal(result.vectors, expected.vectors)
    bodies = [len(r.body) for r in server.calls("/embed")]
    assert max(bodies) > 30_000  # the first try was refused
    assert sum(len(r.json["inputs"]) for r in server.calls("/embed") if len(r.body) <= 30_000) == 32


def test_one_text_over_the_limit_is_a_payload_error_with_the_fix(make_server: Any, make_client: Any) -> None:
    server = make_server(payload_limit=2_000)
    client = make_client(server.url, max_payload_bytes=2_000)
    with pytest.raises(TEIPayloadTooLargeError) as caught:
        client.embed(["x" * 5_000])
    assert "--payload-limit" in (caught.value.hint or "")
