"""The numpy reference: real-model sanity checks, the sparse-head rules, and its own invariants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

from pytei.cache import Cache
from pytei.models.resolve import packaged_model_dir
from tests.support import bert_reference as br
from tests.support import model_fixtures
from tests.support.tiny_models import TinySpec, tiny_tokenizer

PARAPHRASES = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue today."]


def test_splade_tiny_finds_the_query_terms(packaged_cache: Cache) -> None:
    model = packaged_model_dir("splade-tiny", packaged_cache)
    vector = br.splade(model, ["what is the capital of france"])[0]
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    top = [tokenizer.id_to_token(int(i)) for i in np.argsort(-vector)[:10]]
    assert {"capital", "france", "paris"} <= set(top), top
    assert (vector >= 0).all() and 5 < np.count_nonzero(vector) < 200


def test_minilm_reference_agrees_with_the_independent_int8_export(packaged_cache: Cache) -> None:
    # The int8 ONNX file was made by someone else from the same weights: an outside check.
    minilm = model_fixtures.minilm_dir(packaged_cache)
    int8 = packaged_model_dir("all-MiniLM-L6-v2-int8-onnx", packaged_cache)
    reference = br.embed(minilm, PARAPHRASES)
    batch = br.encode_batch(minilm, PARAPHRASES)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    hidden = ort.InferenceSession(str(int8 / "model.onnx"), options, providers=["CPUExecutionProvider"]).run(
        ["last_hidden_state"], batch.feeds()
    )[0]
    mask = batch.attention_mask[..., None]
    pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    cosines = (pooled * reference).sum(axis=1)
    assert (cosines > 0.95).all(), cosines
    # And the embeddings mean something: the paraphrase pair is closer than the unrelated text.
    assert reference[0] @ reference[1] > reference[0] @ reference[2] + 0.3


def test_float32_and_float64_agree(tiny_bert_mlm: Path) -> None:
    texts = ["the quick brown fox", "hello world"]
    np.testing.assert_allclose(
        br.embed(tiny_bert_mlm, texts), br.embed(tiny_bert_mlm, texts, dtype=np.float64), atol=1e-5
    )
    np.testing.assert_allclose(
        br.splade(tiny_bert_mlm, texts), br.splade(tiny_bert_mlm, texts, dtype=np.float64), atol=1e-4
    )


def test_embed_pooling_and_normalization(tiny_bert_mlm: Path) -> None:
    texts = ["the quick brown fox", "hello"]
    tokens = br.token_embeddings(tiny_bert_mlm, texts[0])
    assert tokens.shape == (6, 32)  # [CLS] + 4 words + [SEP]
    mean = br.embed(tiny_bert_mlm, texts, normalize=False)
    np.testing.assert_allclose(mean[0], tokens.mean(axis=0), atol=1e-6)
    cls = br.embed(tiny_bert_mlm, texts, pooling="cls", normalize=False)
    np.testing.assert_allclose(cls[0], tokens[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(br.embed(tiny_bert_mlm, texts), axis=1), 1.0, atol=1e-6)


def test_layer_norm_spellings_and_prefixes_give_the_same_model(tiny_bert_mlm: Path, tmp_path: Path) -> None:
    # SPLADE-tiny spells LayerNorm gamma/beta; MiniLM has no `bert.` prefix: both must load alike.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (renamed / name).write_bytes((tiny_bert_mlm / name).read_bytes())
    tensors = load_file(str(tiny_bert_mlm / "model.safetensors"))
    respelled = {}
    for name, value in tensors.items():
        old_style = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        respelled[old_style if ".LayerNorm." in name else name] = value
    save_file(respelled, str(renamed / "model.safetensors"))
    texts = ["what is the capital of france"]
    np.testing.assert_array_equal(br.splade(renamed, texts), br.splade(tiny_bert_mlm, texts))
    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (base / name).write_bytes((tiny_bert_mlm / name).read_bytes())
    save_file(
        {k.removeprefix("bert."): v for k, v in tensors.items() if k.startswith("bert.")},
        str(base / "model.safetensors"),
    )
    np.testing.assert_array_equal(br.embed(base, texts), br.embed(tiny_bert_mlm, texts))


def test_special_token_rule(tiny_m3: Path, tiny_bert_mlm: Path, tmp_path: Path) -> None:
    # XLM-R: <s> <pad> </s> <unk> are 0..3 and dropped; <mask> is kept, as bge-m3 keeps it.
    assert br.special_token_ids(tiny_m3) == frozenset({0, 1, 2, 3})
    # BERT: [PAD] [UNK] [CLS] [SEP] are 0..3; [MASK] (4) kept.
    assert br.special_token_ids(tiny_bert_mlm) == frozenset({0, 1, 2, 3})
    # No tokenizer_config.json: every special added token, [MASK] included.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes((tiny_bert_mlm / "tokenizer.json").read_bytes())
    assert br.special_token_ids(bare) == frozenset({0, 1, 2, 3, 4})


def test_token_weights_gather_by_id_with_max(tiny_m3: Path) -> None:
    text = "hello zebra world hello hello"  # `zebra` is unknown: <unk>, dropped
    batch = br.encode_batch(tiny_m3, [text])
    raw = br.forward(tiny_m3, batch, "token_weights")[0, :, 0]
    ids = batch.input_ids[0].tolist()
    tokenizer, _ = tiny_tokenizer("xlm-roberta")
    hello, world = tokenizer.token_to_id("hello"), tokenizer.token_to_id("world")
    assert hello is not None and world is not None
    assert ids == [0, hello, 3, world, hello, hello, 2]
    expected = {
        hello: max(0.0, *(float(raw[i]) for i in (1, 4, 5))),
        world: max(0.0, float(raw[3])),
    }
    expected = {k: v for k, v in expected.items() if v > 0}
    got = br.token_weights(tiny_m3, [text])[0]
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)
    # Specials carry weights in the raw output but never appear.
    assert not {0, 2, 3} & got.keys()


def test_classify_encodes_pairs_as_pairs(tmp_path: Path) -> None:
    model = model_fixtures.tiny_model_dir(tmp_path / "clf", TinySpec(arch="bert", labels=2), seed=8)
    pair = br.encode_batch(model, [("what is paris", "paris is a city")])
    assert pair.token_type_ids.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    logits = br.classify(model, ["what is paris", ("what is paris", "paris is a city")])
    assert logits.shape == (2, 2)
    assert np.abs(logits[0] - logits[1]).max() > 1e-3
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 2


def test_max_input_length_follows_tei(tiny_m3: Path, packaged_cache: Cache) -> None:
    assert br.max_input_length(tiny_m3) == 128  # 130 positions less the XLM-R offset of pad + 1
    assert br.max_input_length(model_fixtures.minilm_dir(packaged_cache)) == 256  # sentence_bert_config
    long_text = " ".join(["hello"] * 300)
    assert len(br.tokenize(tiny_m3, [long_text])[0].ids) == 128
