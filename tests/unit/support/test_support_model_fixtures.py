"""The model directory builders: what TEI needs is there, builds are atomic and idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file

from pytei.cache import Cache
from pytei.models.resolve import inspect_model_dir
from tests.support import bert_reference as br
from tests.support import model_fixtures as mf
from tests.support.tiny_models import TinySpec

M3_TEXTS = ["what is the capital of france ?", "hello world hello", "zebra the unknownword", "sparse"]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def serve_token_weights(model: Path, texts: list[str]) -> list[dict[int, float]]:
    """What a TEI ort backend with sparse pooling returns: run the graph on a padded batch,
    relu, gather by input id with max, drop specials (the rule tei_fork/sparse-pool implements)."""
    batch = br.encode_batch(model, texts)
    out = session(model / "model.onnx").run(["sparse_embeddings"], batch.feeds())[0][..., 0]
    specials = br.special_token_ids(model)
    rows = []
    for ids, mask, weights in zip(batch.input_ids, batch.attention_mask, out, strict=True):
        row: dict[int, float] = {}
        for token, real, weight in zip(ids.tolist(), mask.tolist(), weights.tolist(), strict=True):
            if real and weight > 0 and token not in specials:
                row[token] = max(row.get(token, 0.0), weight)
        rows.append(row)
    return rows


def test_tiny_m3_serves_the_reference_token_weights(tiny_m3: Path) -> None:
    info = inspect_model_dir(tiny_m3)
    assert (info.onnx, info.weights, info.model_type) == ("model.onnx", (), "xlm-roberta")
    config = json.loads((tiny_m3 / "config.json").read_text())
    for required in (
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "max_position_embeddings",
        "vocab_size",
    ):
        assert required in config
    assert config["pad_token_id"] == 1 and config["architectures"] == ["XLMRobertaModel"]
    assert {o.name: o.shape[-1] for o in session(tiny_m3 / "model.onnx").get_outputs()} == {
        "last_hidden_state": 32,
        "sparse_embeddings": 1,
    }
    served = serve_token_weights(tiny_m3, M3_TEXTS)
    reference = br.token_weights(tiny_m3, M3_TEXTS)
    for got, want in zip(served, reference, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5)
    assert all(reference[:2]) and len(reference[2]) == 1  # only `the` is known in the third text


def test_tiny_m3_seeds_and_architectures_differ(fixture_root: Path, tiny_m3: Path) -> None:
    other = mf.tiny_m3_dir(fixture_root / "m3-seed4", seed=4)
    bert = mf.tiny_m3_dir(fixture_root / "m3-bert", seed=3, arch="bert", dense_output=False)
    assert br.token_weights(other, M3_TEXTS[:1]) != br.token_weights(tiny_m3, M3_TEXTS[:1])
    assert json.loads((bert / "config.json").read_text())["model_type"] == "bert"
    assert [o.name for o in session(bert / "model.onnx").get_outputs()] == ["sparse_embeddings"]
    assert serve_token_weights(bert, M3_TEXTS)[0].keys() == br.token_weights(bert, M3_TEXTS)[0].keys()


def test_builders_are_idempotent_and_rebuild_on_a_new_recipe(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    first = mf.tiny_model_dir(out, TinySpec(), seed=1)
    marker = first / mf.MARKER
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert mf.tiny_model_dir(out, TinySpec(), seed=1) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    before = load_file(str(first / "model.safetensors"))["embeddings.word_embeddings.weight"]
    mf.tiny_model_dir(out, TinySpec(), seed=2)
    after = load_file(str(out / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert not np.array_equal(before, after)
    assert json.loads(marker.read_text())["seed"] == 2
    # Nothing is left beside the result but the lock.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "tiny"]


def test_a_failed_build_leaves_no_directory(tmp_path: Path) -> None:
    def explode(_scratch: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        mf._build(tmp_path / "x", {"builder": "x"}, explode)
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".x.lock"]


def test_splade_tiny_dirs(packaged_cache: Cache, fixture_root: Path) -> None:
    candle = mf.splade_tiny_dir(packaged_cache, fixture_root / "splade")
    info = inspect_model_dir(candle)
    assert (info.kind, info.weights, info.onnx) == ("masked-lm", ("model.safetensors",), None)
    tensors = load_file(str(candle / "model.safetensors"))
    np.testing.assert_array_equal(
        tensors["cls.predictions.decoder.weight"], tensors["bert.embeddings.word_embeddings.weight"]
    )
    assert tensors["cls.predictions.bias"].shape == (30522,)

    onnx_dir = mf.splade_tiny_onnx_dir(packaged_cache, fixture_root / "splade-onnx")
    info = inspect_model_dir(onnx_dir)
    assert (info.kind, info.weights, info.onnx) == ("masked-lm", (), "model.onnx")
    assert json.loads((onnx_dir / "config.json").read_text())["hidden_act"] == "gelu_pytorch_tanh"
    texts = ["what is the capital of france", "hello"]
    batch = br.encode_batch(onnx_dir, texts)
    logits = session(onnx_dir / "model.onnx").run(["logits"], batch.feeds())[0]
    assert logits.shape[-1] == 30522
    real = batch.attention_mask.astype(bool)
    served = np.stack([np.log1p(np.maximum(logits[i][real[i]], 0)).max(axis=0) for i in range(len(texts))])
    # The ONNX dir's reference reads its config (tanh GELU): what candle computes.
    expected = br.splade(onnx_dir, texts)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(expected, br.splade(candle, texts, gelu="tanh"), rtol=1e-6, atol=1e-7)
    assert (np.nonzero(served[0])[0] == np.nonzero(expected[0])[0]).all()


def test_classifier_dirs(packaged_cache: Cache, fixture_root: Path) -> None:
    for builder, labels in ((mf.reranker_dir, 1), (mf.classifier_dir, 2)):
        model = builder(packaged_cache, fixture_root / builder.__name__)
        info = inspect_model_dir(model)
        assert info.kind == "classifier" and info.architectures == ("BertForSequenceClassification",)
        config = json.loads((model / "config.json").read_text())
        assert len(config["id2label"]) == labels == len(config["label2id"])
        tensors = load_file(str(model / "model.safetensors"))
        assert tensors["classifier.weight"].shape == (labels, 384)
        assert "bert.pooler.dense.weight" in tensors and "bert.encoder.layer.5.output.dense.bias" in tensors
        assert not any(k.startswith(("embeddings.", "encoder.", "pooler.")) for k in tensors)
        scores = br.classify(model, [("what is paris", "paris is the capital of france"), "hello"])
        assert scores.shape == (2, labels) and np.isfinite(scores).all()
        assert builder(packaged_cache, fixture_root / builder.__name__) == model


def test_minilm_onnx_dirs(packaged_cache: Cache, fixture_root: Path) -> None:
    texts = ["A man is eating food.", "hello"]
    reference = br.embed(mf.minilm_dir(packaged_cache), texts)
    for builder in (mf.minilm_onnx_dir, mf.minilm_fp32_onnx_dir):
        model = builder(packaged_cache, fixture_root / builder.__name__)
        info = inspect_model_dir(model)
        assert (info.onnx, info.weights, info.pooling) == ("model.onnx", (), "mean")
        batch = br.encode_batch(model, texts)
        hidden = session(model / "model.onnx").run(["last_hidden_state"], batch.feeds())[0]
        mask = batch.attention_mask[..., None]
        pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        cosine = (pooled * reference).sum(axis=1)
        if builder is mf.minilm_fp32_onnx_dir:
            np.testing.assert_allclose(pooled, reference, atol=1e-5)  # our export of the same weights
        else:
            assert (cosine > 0.95).all() and not np.allclose(pooled, reference, atol=1e-4)  # int8


def test_shared_model_cache_honours_the_environment(tmp_path: Path) -> None:
    assert (
        mf.shared_model_cache({"PYTEI_TEST_MODELS": str(tmp_path / "m")}).root == (tmp_path / "m").resolve()
    )
