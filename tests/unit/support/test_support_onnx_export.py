"""The ONNX exporter against the numpy reference, run with onnxruntime on tiny random models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.support import bert_reference as br
from tests.support.model_fixtures import tiny_model_dir
from tests.support.onnx_export import OPSET, ExportHead, export_bert_onnx
from tests.support.tiny_models import TinyArch, TinySpec

# Mixed lengths, a repeated word, an unknown word, and a one-word text: padding matters.
TEXTS = [
    "what is the capital of france ?",
    "hello",
    "the quick brown fox jumps over the lazy dog and the dog sleeps",
    "sparse and dense vectors , hybrid search",
]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # TEI's ort backend optimizes at level 3: test the graph as it will run there.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(path: Path, batch: br.Batch, output: str) -> Any:
    return session(path).run([output], batch.feeds())[0]


CASES: list[tuple[TinyArch, ExportHead, str, TinySpec]] = [
    ("bert", "encoder", "last_hidden_state", TinySpec(arch="bert")),
    ("bert", "mlm", "logits", TinySpec(arch="bert", mlm=True)),
    ("bert", "classifier", "logits", TinySpec(arch="bert", labels=3)),
    ("bert", "token_weights", "sparse_embeddings", TinySpec(arch="bert", sparse_head=True)),
    ("xlm-roberta", "encoder", "last_hidden_state", TinySpec(arch="xlm-roberta")),
    ("xlm-roberta", "mlm", "logits", TinySpec(arch="xlm-roberta", mlm=True)),
    ("xlm-roberta", "token_weights", "sparse_embeddings", TinySpec(arch="xlm-roberta", sparse_head=True)),
]


@pytest.mark.parametrize(("arch", "head", "output", "spec"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_export_matches_reference_on_a_padded_batch(
    tmp_path: Path, arch: TinyArch, head: ExportHead, output: str, spec: TinySpec
) -> None:
    model = tiny_model_dir(tmp_path / "model", spec, seed=11)
    onnx_path = export_bert_onnx(model, tmp_path / "model.onnx", head)
    batch = br.encode_batch(model, TEXTS)
    assert batch.attention_mask.min() == 0, "the batch must contain padding"
    got = run(onnx_path, batch, output)
    want = br.forward(model, batch, head, dtype=np.float64)
    assert got.shape == want.shape
    if head == "classifier":
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    else:
        real = batch.attention_mask.astype(bool)
        np.testing.assert_allclose(got[real], want[real], rtol=0, atol=1e-4)
    # The reference is not trivially equal to itself under another model: a different seed differs.
    other = tiny_model_dir(tmp_path / "other", spec, seed=12)
    assert np.abs(br.forward(other, batch, head) - want).max() > 1e-2


@pytest.mark.parametrize(
    ("arch", "padding_side"),
    [("bert", "right"), ("bert", "left"), ("xlm-roberta", "right"), ("xlm-roberta", "left")],
)
def test_padded_batch_equals_single_texts(tmp_path: Path, arch: TinyArch, padding_side: str) -> None:
    model = tiny_model_dir(tmp_path / "model", TinySpec(arch=arch, mlm=True), seed=5)
    onnx_path = export_bert_onnx(model, tmp_path / "model.onnx", ("encoder", "mlm"))
    sess = session(onnx_path)
    batch = br.encode_batch(model, TEXTS, padding_side=padding_side)  # type: ignore[arg-type]
    hidden, logits = sess.run(["last_hidden_state", "logits"], batch.feeds())
    for row, text in enumerate(TEXTS):
        alone = br.encode_batch(model, [text])
        single_hidden, single_logits = sess.run(["last_hidden_state", "logits"], alone.feeds())
        real = batch.attention_mask[row].astype(bool)
        np.testing.assert_allclose(hidden[row][real], single_hidden[0], rtol=0, atol=1e-5)
        pooled = np.log1p(np.maximum(logits[row][real], 0)).max(axis=0)
        np.testing.assert_allclose(pooled, br.splade(model, [text])[0], rtol=0, atol=1e-4)
        np.testing.assert_allclose(
            pooled, np.log1p(np.maximum(single_logits[0], 0)).max(axis=0), rtol=0, atol=1e-5
        )


def test_graph_interface(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", TinySpec(arch="xlm-roberta", sparse_head=True), seed=1)
    path = export_bert_onnx(model, tmp_path / "m.onnx", ("encoder", "token_weights"))
    graph = onnx.load(str(path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert graph.ir_version <= 10  # onnxruntime 1.22 (the Rust ort crate's) reads up to IR 10
    for tensor in graph.graph.input:
        dims = [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
        assert (tensor.name, tensor.type.tensor_type.elem_type, dims) == (
            tensor.name,
            onnx.TensorProto.INT64,
            ["batch", "sequence"],
        )
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    outputs = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output
    }
    assert outputs == {
        "last_hidden_state": ["batch", "sequence", 32],
        "sparse_embeddings": ["batch", "sequence", 1],
    }
    # onnxruntime sees the same static last dimensions that sparse-head detection reads.
    shapes = {o.name: o.shape for o in session(path).get_outputs()}
    assert shapes["sparse_embeddings"][-1] == 1


def test_output_names_are_configurable_and_checked(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", TinySpec(arch="bert", mlm=True, sparse_head=True), seed=1)
    path = export_bert_onnx(model, tmp_path / "a.onnx", "token_weights", "token_weights")
    assert [o.name for o in session(path).get_outputs()] == ["token_weights"]
    path = export_bert_onnx(
        model, tmp_path / "b.onnx", ("mlm", "token_weights"), output_names={"token_weights": "w"}
    )
    assert [o.name for o in session(path).get_outputs()] == ["logits", "w"]
    with pytest.raises(ValueError, match="collide"):
        export_bert_onnx(
            model, tmp_path / "c.onnx", ("mlm", "token_weights"), output_names={"token_weights": "logits"}
        )
    with pytest.raises(ValueError, match="single head"):
        export_bert_onnx(model, tmp_path / "d.onnx", ("mlm", "encoder"), "x")
    assert not (tmp_path / "c.onnx").exists() and not (tmp_path / "d.onnx").exists()


def test_token_weights_before_and_after_relu(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", TinySpec(arch="xlm-roberta", sparse_head=True), seed=4)
    batch = br.encode_batch(model, TEXTS)
    real = batch.attention_mask.astype(bool)
    raw = run(export_bert_onnx(model, tmp_path / "raw.onnx", "token_weights"), batch, "sparse_embeddings")
    assert (raw[real] < 0).any() and (raw[real] > 0).any(), "the tiny head must produce both signs"
    relu = run(
        export_bert_onnx(model, tmp_path / "relu.onnx", "token_weights", token_weights_relu=True),
        batch,
        "sparse_embeddings",
    )
    np.testing.assert_allclose(relu[real], np.maximum(raw[real], 0), rtol=0, atol=1e-6)


def test_gelu_flavours_follow_the_config_or_the_override(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "model", TinySpec(arch="bert"), seed=9)
    batch = br.encode_batch(model, TEXTS[:2])
    real = batch.attention_mask.astype(bool)
    tanh = run(
        export_bert_onnx(model, tmp_path / "t.onnx", "encoder", gelu="tanh"), batch, "last_hidden_state"
    )
    erf = br.forward(model, batch, "encoder", dtype=np.float64)
    np.testing.assert_allclose(
        tanh[real],
        br.forward(model, batch, "encoder", dtype=np.float64, gelu="tanh")[real],
        rtol=0,
        atol=1e-4,
    )
    assert np.abs(tanh[real] - erf[real]).max() > 1e-4, "the two GELUs must be told apart by this check"
