"""Patch 0003: sparse embeddings from TEI's ONNX Runtime (``ort``) backend, against real routers.

Two kinds of model, both served by the ``ort`` profile (features ort,candle,http) with
``--pooling splade``:

- SPLADE-tiny (``BertForMaskedLM``) exported by tests/support/onnx_export.py with a ``logits``
  ``[B, L, 30522]`` output. It must give what the ``candle`` backend gives from the same
  safetensors weights (profile ``cpu``, float32): the same non-zero indices, values within 1e-3
  relative (with a 1e-5 absolute floor for values near zero, see ``compare_sparse``), and both
  what tests/support/bert_reference.py computes (in float64). candle builds no attention
  mask for SPLADE (its max runs over padding too), so the two are compared one text per
  request; the ort side is also checked batched, where padding must not leak.
- a tiny random bge-m3-style model (XLM-RoBERTa or BERT encoder + one-unit sparse head,
  output ``sparse_embeddings`` ``[B, L, 1]`` before its relu): ``/embed_sparse`` must equal the
  reference's relu(head) gathered by input token id (max per id, special tokens dropped).

A model that cannot give sparse vectors must be refused while the router starts, with the
message of tei-sparse-pool (tei_fork/sparse-pool) naming what the model lacks; candle refuses
splade pooling for a model with no masked-LM head (the check the router used to make).
``pytei.Client.embed_sparse`` and the hybrid-score helpers run end to end against the tiny m3
router, the dense half coming from the same export's ``last_hidden_state`` (CLS pooling).

Fixtures (tests/integration/conftest.py): ``router_binary(profile)``, ``serve_router``,
``model_cache``, ``fixtures_dir``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from pytei.client import Client, dense_scores, hybrid_scores, sparse_scores
from pytei.errors import ServerExitedError
from tests.support import bert_reference
from tests.support.model_fixtures import splade_tiny_dir, splade_tiny_onnx_dir, tiny_m3_dir, tiny_model_dir
from tests.support.onnx_export import export_bert_onnx
from tests.support.tiny_models import TinySpec

pytestmark = pytest.mark.upstream

# The output-name setting the patch adds to the ort backend (see the patch header).
SPARSE_OUTPUT_ENV = "TEI_ORT_SPARSE_OUTPUT"
SPLADE_RTOL = 1e-3  # candle vs ort, and each vs the reference
SPLADE_ATOL = 1e-5  # only matters below ~1e-2 (see compare_sparse)
M3_RTOL = 1e-4
M3_ATOL = 1e-6

SPLADE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Sparse retrieval with learned term weights",
    "hello",
    "Hybrid search combines dense embeddings with sparse lexical vectors for better recall.",
]
# Words of the tiny tokenizer (tests/support/tiny_models.py); "zebra" and "qwerty" are not in it
# (-> the unknown token, which must be dropped), and repeated words test the max per id.
M3_TEXTS = [
    "the quick brown fox jumps over the lazy dog .",
    "hello world",
    "sparse sparse sparse retrieval",
    "the zebra and the qwerty model",
    "what is the capital of france ? paris is the capital of france .",
    "one",
]
M3_QUERY = "which city is the capital of france ?"
M3_DOCUMENTS = [
    "paris is the capital of france .",
    "the quick brown fox jumps over the lazy dog .",
    "dense and sparse vectors for hybrid retrieval",
    "the capital city of france is paris",
    "red green blue",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- helpers -----------------------------------------------------------------------------------


def post(url: str, route: str, payload: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}{route}", json=payload, timeout=60)


def embed_sparse(url: str, texts: Sequence[str], *, one_per_request: bool) -> list[dict[int, float]]:
    """``/embed_sparse`` as ``{index: value}`` per text."""
    batches = [[t] for t in texts] if one_per_request else [list(texts)]
    out: list[dict[int, float]] = []
    for batch in batches:
        response = post(url, "/embed_sparse", {"inputs": batch})
        assert response.status_code == 200, response.text
        out += [{int(e["index"]): float(e["value"]) for e in item} for item in response.json()]
    return out


def dense_to_dict(row: np.ndarray) -> dict[int, float]:
    return {int(i): float(row[i]) for i in np.flatnonzero(row)}


def compare_sparse(
    got: dict[int, float], want: dict[int, float], rtol: float, atol: float, what: str
) -> float:
    """Same indices, and ``|got - want| <= rtol * |want| + atol`` for each; returns the largest
    relative difference.

    ``atol`` is a floor for values near zero only: ln(1 + relu(x)) of a logit just above 0 is
    about x itself, so float32 rounding of the logit (a few 1e-6) is the whole difference there
    (SPLADE-tiny has values of 1e-4, where even the float32 reference is 0.5% from a float64 one).
    """
    assert set(got) == set(want), (
        f"{what}: indices differ; only served: {sorted(set(got) - set(want))[:20]}, "
        f"only expected: {sorted(set(want) - set(got))[:20]}"
    )
    assert got, f"{what}: empty sparse vector"
    bad = {i: (got[i], want[i]) for i in want if abs(got[i] - want[i]) > rtol * abs(want[i]) + atol}
    assert not bad, f"{what}: values differ beyond rtol={rtol}, atol={atol}: {dict(list(bad.items())[:10])}"
    return max(abs(got[i] - want[i]) / abs(want[i]) for i in want)


def difference_summary(pairs: Sequence[tuple[dict[int, float], dict[int, float]]]) -> str:
    """Largest absolute and relative differences over matching sparse vectors, and the largest
    relative one among values of at least 1e-2."""
    diffs = [(abs(got[i] - want[i]), abs(want[i])) for got, want in pairs for i in want]
    return (
        f"{sum(len(w) for _, w in pairs)} values, max abs {max(d for d, _ in diffs):.2e}, "
        f"max rel {max(d / v for d, v in diffs):.2e}, "
        f"max rel (values >= 1e-2) {max((d / v for d, v in diffs if v >= 1e-2), default=0.0):.2e}"
    )


def plain_log(text: str) -> str:
    return _ANSI.sub("", text)


def token_weights_by_position(model_dir: Path, text: str) -> tuple[list[int], list[float]]:
    """Input ids and relu(head) at each position of one text (no padding)."""
    batch = bert_reference.encode_batch(model_dir, [text])
    raw = bert_reference.forward(model_dir, batch, "token_weights")[0, :, 0]
    return batch.input_ids[0].tolist(), np.maximum(raw, 0).tolist()


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".pytei-fixture.json"))
    return target


# --- models and routers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splade_dirs(model_cache: Any, fixtures_dir: Path) -> tuple[Path, Path]:
    """(safetensors dir for candle, ONNX-only dir for ort) of the same SPLADE-tiny weights."""
    return (
        splade_tiny_dir(model_cache, fixtures_dir / "splade-tiny"),
        splade_tiny_onnx_dir(model_cache, fixtures_dir / "splade-tiny-onnx"),
    )


@pytest.fixture(scope="module")
def splade_candle_url(router_binary: Any, serve_router: Any, splade_dirs: tuple[Path, Path]) -> Iterator[str]:
    # float32: candle's CPU default is float16, ort computes in float32.
    args = ["--pooling", "splade", "--dtype", "float32"]
    with serve_router(router_binary("cpu"), splade_dirs[0], extra_args=args) as url:
        yield url


@pytest.fixture(scope="module")
def splade_ort_url(router_binary: Any, serve_router: Any, splade_dirs: tuple[Path, Path]) -> Iterator[str]:
    with serve_router(router_binary("ort"), splade_dirs[1], extra_args=["--pooling", "splade"]) as url:
        yield url


@pytest.fixture(scope="module", params=["xlm-roberta", "bert"])
def m3_dir(request: pytest.FixtureRequest, fixtures_dir: Path) -> Path:
    arch = request.param
    return tiny_m3_dir(fixtures_dir / f"tiny-m3-{arch}", arch=arch)


@pytest.fixture(scope="module")
def m3_url(router_binary: Any, serve_router: Any, m3_dir: Path) -> Iterator[str]:
    with serve_router(router_binary("ort"), m3_dir, extra_args=["--pooling", "splade"]) as url:
        yield url


# --- 1. SPLADE: candle and ort from the same weights ---------------------------------------------


def test_splade_candle_and_ort_agree(
    splade_candle_url: str, splade_ort_url: str, splade_dirs: tuple[Path, Path]
) -> None:
    candle = embed_sparse(splade_candle_url, SPLADE_TEXTS, one_per_request=True)
    ort = embed_sparse(splade_ort_url, SPLADE_TEXTS, one_per_request=True)
    # gelu with the tanh approximation, as candle computes it (the ONNX dir's config says so);
    # float64, so that the reference's own rounding stays out of the comparison.
    reference = bert_reference.splade(splade_dirs[1], SPLADE_TEXTS, dtype=np.float64)
    pairs: dict[str, list[tuple[dict[int, float], dict[int, float]]]] = {
        "ort vs candle": [],
        "candle vs reference": [],
        "ort vs reference": [],
    }
    for text, c, o, ref in zip(SPLADE_TEXTS, candle, ort, reference, strict=True):
        want = dense_to_dict(ref)
        for name, got, expected in (
            ("ort vs candle", o, c),
            ("candle vs reference", c, want),
            ("ort vs reference", o, want),
        ):
            compare_sparse(got, expected, SPLADE_RTOL, SPLADE_ATOL, f"{name} {text!r}")
            pairs[name].append((got, expected))
    for name, items in pairs.items():
        print(f"SPLADE-tiny {name}: {difference_summary(items)}")


def test_splade_ort_batched_ignores_padding(splade_ort_url: str, splade_dirs: tuple[Path, Path]) -> None:
    # All texts in one request: the router batches them padded to the longest; a padding leak
    # would add indices (the max over padded positions) or raise values.
    batched = embed_sparse(splade_ort_url, SPLADE_TEXTS, one_per_request=False)
    reference = bert_reference.splade(splade_dirs[1], SPLADE_TEXTS, dtype=np.float64)
    pairs = []
    for text, got, ref in zip(SPLADE_TEXTS, batched, reference, strict=True):
        want = dense_to_dict(ref)
        compare_sparse(got, want, SPLADE_RTOL, SPLADE_ATOL, f"ort batched {text!r}")
        pairs.append((got, want))
    print(f"SPLADE-tiny ort batched vs reference: {difference_summary(pairs)}")


# --- 2. bge-m3-style token weights via ort -------------------------------------------------------


@pytest.mark.parametrize("one_per_request", [True, False], ids=["single", "batched"])
def test_m3_token_weights_equal_the_reference(m3_url: str, m3_dir: Path, one_per_request: bool) -> None:
    served = embed_sparse(m3_url, M3_TEXTS, one_per_request=one_per_request)
    reference = bert_reference.token_weights(m3_dir, M3_TEXTS, dtype=np.float64)
    for text, got, want in zip(M3_TEXTS, served, reference, strict=True):
        compare_sparse(got, want, M3_RTOL, M3_ATOL, f"tiny m3 {text!r}")
    print(
        f"tiny m3 ({m3_dir.name}, one_per_request={one_per_request}): {difference_summary(list(zip(served, reference, strict=True)))}"
    )


def test_m3_drops_special_tokens_and_keeps_the_max_per_id(m3_url: str, m3_dir: Path) -> None:
    specials = bert_reference.special_token_ids(m3_dir)
    config = json.loads((m3_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    unk = bert_reference.tokenize(m3_dir, ["zebra"])[0].ids[1]
    assert unk in specials and config["unk_token"]  # the unknown word really maps to <unk>
    served = embed_sparse(m3_url, M3_TEXTS, one_per_request=True)
    checked_duplicates = 0
    for text, got in zip(M3_TEXTS, served, strict=True):
        ids, weights = token_weights_by_position(m3_dir, text)
        assert not specials & set(got), f"{text!r}: special ids served {sorted(specials & set(got))}"
        assert specials & set(ids), "the texts carry CLS/SEP (and <unk>) positions"
        for token in set(ids) - specials:
            per_position = [w for i, w in zip(ids, weights, strict=True) if i == token]
            expected = max(per_position)
            if expected > 0:
                assert got[token] == pytest.approx(expected, rel=M3_RTOL, abs=M3_ATOL), (text, token)
            else:
                assert token not in got, f"{text!r}: id {token} has weight <= 0 and must be absent"
            if len(set(per_position)) > 1 and expected > 0:
                checked_duplicates += 1  # a repeated id whose positions weigh differently
    assert checked_duplicates >= 2, "the texts must repeat some ids with different weights"


def test_m3_output_name_is_configurable(
    router_binary: Any, serve_router: Any, m3_dir: Path, tmp_path: Path
) -> None:
    # An export whose per-token output has a name outside the default list
    # (logits, sparse_embeddings, token_weights) is served once the setting names it.
    model = copy_model(m3_dir, tmp_path / "renamed")
    export_bert_onnx(model, model / "model.onnx", "token_weights", output_name="lexical_weights")
    with serve_router(
        router_binary("ort"),
        model,
        extra_args=["--pooling", "splade"],
        env={SPARSE_OUTPUT_ENV: "lexical_weights"},
    ) as url:
        served = embed_sparse(url, M3_TEXTS[:3], one_per_request=False)
    reference = bert_reference.token_weights(model, M3_TEXTS[:3])
    for text, got, want in zip(M3_TEXTS[:3], served, reference, strict=True):
        compare_sparse(got, want, M3_RTOL, M3_ATOL, f"renamed output {text!r}")


# --- 3. load-time rejection ----------------------------------------------------------------------


def _encoder_only(m3_dir: Path, target: Path) -> Path:
    model = copy_model(m3_dir, target)
    export_bert_onnx(model, model / "model.onnx", "encoder")  # only `last_hidden_state`
    return model


def _without_vocab_size(m3_dir: Path, target: Path) -> Path:
    model = copy_model(m3_dir, target)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    del config["vocab_size"]
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return model


REJECTIONS = {
    "no-sparse-output": (
        _encoder_only,
        {},
        (
            "Could not start ORT backend: Could not start backend: Pooling splade is not possible with "
            "`ort`: the ONNX model has no sparse output: looked for [`logits`, `sparse_embeddings`, `token_weights`], its outputs are "
            "[`last_hidden_state`]"
        ),
    ),
    "wrong-shape": (
        copy_model,
        {SPARSE_OUTPUT_ENV: "last_hidden_state"},
        (
            "Could not start ORT backend: Could not start backend: Pooling splade is not possible with "
            "`ort`: sparse head output `last_hidden_state` has shape [?, ?, 32]; expected [batch, seq, vocab="
        ),
    ),
    "no-vocab-size": (
        _without_vocab_size,
        {},
        (
            "Could not start ORT backend: Could not start backend: Pooling splade is not possible with "
            "`ort`: sparse head output `sparse_embeddings` has shape [?, ?, 1] but config.json has no `vocab_size`"
        ),
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_unusable_models_are_refused_at_load(
    router_binary: Any, serve_router: Any, m3_dir: Path, tmp_path: Path, case: str
) -> None:
    build, env, message = REJECTIONS[case]
    model = build(m3_dir, tmp_path / case)
    with (
        pytest.raises(ServerExitedError) as failure,
        serve_router(router_binary("ort"), model, extra_args=["--pooling", "splade"], env=env),
    ):
        pytest.fail("the router became ready")
    log = plain_log(failure.value.log_tail)
    assert message in log, log
    # Refused by an error (exit 1), not by a panic (SIGABRT in release builds).
    assert failure.value.returncode == 1, (failure.value.returncode, log)
    assert "Could not start a suitable backend" in log
    # The ort profile also compiles candle, which is tried next; its refusal comes second.
    assert log.index("Could not start ORT backend") < log.index("Could not start a suitable backend")


def test_candle_refuses_splade_for_a_model_without_a_masked_lm_head(
    router_binary: Any, serve_router: Any, fixtures_dir: Path
) -> None:
    # The router no longer checks the architecture for `--pooling splade` (a bge-m3 export is
    # XLMRobertaModel/BertModel); candle, which needs the MLM head, refuses such a model itself.
    model = tiny_model_dir(fixtures_dir / "tiny-bert-encoder", TinySpec(arch="bert"))
    with (
        pytest.raises(ServerExitedError) as failure,
        serve_router(router_binary("cpu"), model, extra_args=["--pooling", "splade", "--dtype", "float32"]),
    ):
        pytest.fail("the router became ready")
    log = plain_log(failure.value.log_tail)
    assert (
        "Could not start Candle backend: Could not start backend: Pooling splade with `candle` needs a "
        'ForMaskedLM model (a masked-LM head); `config.json` architectures: ["BertModel"]'
    ) in log, log
    assert failure.value.returncode == 1, (failure.value.returncode, log)


# --- 4. /embed with splade pooling --------------------------------------------------------------


def check_embed_equals_embed_sparse(url: str, texts: Sequence[str], vocab_size: int) -> None:
    response = post(url, "/embed", {"inputs": list(texts), "normalize": False})
    assert response.status_code == 200, response.text
    dense = np.asarray(response.json(), dtype=np.float32)
    assert dense.shape == (len(texts), vocab_size)
    sparse = embed_sparse(url, texts, one_per_request=False)
    for row, item in zip(dense, sparse, strict=True):
        assert dense_to_dict(row) == pytest.approx(item, rel=1e-6)
    # Unchanged upstream semantics: a SPLADE model refuses normalised /embed (424).
    assert post(url, "/embed", {"inputs": texts[0]}).status_code == 424
    info = requests.get(f"{url}/info", timeout=10).json()
    assert info["model_type"] == {"embedding": {"pooling": "splade"}}


def test_splade_embed_without_normalize_is_the_sparse_vector_dense(splade_ort_url: str) -> None:
    check_embed_equals_embed_sparse(splade_ort_url, SPLADE_TEXTS, 30522)


def test_m3_embed_without_normalize_is_the_sparse_vector_dense(m3_url: str, m3_dir: Path) -> None:
    vocab_size = int(json.loads((m3_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"])
    check_embed_equals_embed_sparse(m3_url, M3_TEXTS, vocab_size)


# --- 5. pytei.Client end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def m3_dense_url(router_binary: Any, serve_router: Any, m3_dir: Path) -> Iterator[str]:
    # The same export's `last_hidden_state`, CLS-pooled: the dense half of hybrid retrieval.
    with serve_router(router_binary("ort"), m3_dir, extra_args=["--pooling", "cls"]) as url:
        yield url


def test_client_embed_sparse_and_hybrid_scores(m3_url: str, m3_dense_url: str, m3_dir: Path) -> None:
    with Client(m3_url) as sparse_client, Client(m3_dense_url) as dense_client:
        sparse = sparse_client.embed_sparse(M3_TEXTS)
        assert len(sparse) == len(M3_TEXTS)
        for text, item, want in zip(
            M3_TEXTS, sparse, bert_reference.token_weights(m3_dir, M3_TEXTS), strict=True
        ):
            assert list(item.indices) == sorted(want), text
            np.testing.assert_allclose(
                item.values, [want[i] for i in sorted(want)], rtol=M3_RTOL, atol=M3_ATOL
            )

        sparse_query = sparse_client.embed_sparse([M3_QUERY])[0]
        sparse_docs = list(sparse_client.embed_sparse(M3_DOCUMENTS))
        dense_query = dense_client.embed([M3_QUERY])
        dense_docs = dense_client.embed(M3_DOCUMENTS)

    # Independent expectations from the reference: cosine of CLS vectors, dot of token weights,
    # each min-max normalised over the candidates, mixed half and half.
    ref_dense_q = bert_reference.embed(m3_dir, [M3_QUERY], pooling="cls")
    ref_dense_d = bert_reference.embed(m3_dir, M3_DOCUMENTS, pooling="cls")
    cosine = (ref_dense_d @ ref_dense_q[0]).astype(np.float64)
    ref_q = bert_reference.token_weights(m3_dir, [M3_QUERY])[0]
    dots = np.array(
        [
            sum(w * ref_q.get(i, 0.0) for i, w in d.items())
            for d in bert_reference.token_weights(m3_dir, M3_DOCUMENTS)
        ]
    )
    assert np.count_nonzero(dots) >= 2, "the documents must share tokens with the query"

    def minmax(x: np.ndarray) -> np.ndarray:
        return np.asarray((x - x.min()) / (x.max() - x.min()), dtype=np.float64)

    expected = 0.5 * minmax(cosine) + 0.5 * minmax(dots)
    np.testing.assert_allclose(dense_scores(dense_query, dense_docs), cosine, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sparse_scores(sparse_query, sparse_docs), dots, rtol=1e-4)
    scores = hybrid_scores(dense_query, dense_docs, sparse_query, sparse_docs, alpha=0.5)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert list(np.argsort(-scores)) == list(np.argsort(-expected))
    print(f"hybrid scores ({m3_dir.name}): {np.round(scores, 4).tolist()}")
