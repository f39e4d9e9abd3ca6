"""Write an ONNX graph of a BERT / XLM-RoBERTa model from its safetensors weights (no torch).

The graph is built op by op with ``onnx.helper`` and computes what ``bert_reference`` computes,
so exports can be checked against the numpy reference and served by TEI's ``ort`` backend:

- inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 ``[batch, sequence]``,
  both dimensions dynamic (TEI sends all three when the graph has them);
- outputs, one per requested head: ``last_hidden_state`` ``[B, L, H]`` (encoder), ``logits``
  ``[B, L, V]`` (masked-LM / SPLADE), per-token weights ``[B, L, 1]`` (bge-m3-style sparse head,
  default name ``sparse_embeddings``), or classifier ``logits`` ``[B, labels]``. Last dimensions
  are static, which is what sparse-head detection reads at load time.

Opset 17 (LayerNormalization), IR version 8, standard ops only: GELU is decomposed (Erf, or
Tanh for the approximation candle uses), the attention mask is an additive bias, and position
ids are computed inside the graph from the inputs (RoBERTa-style models count non-pad tokens
from pad + 1, BERT counts unmasked tokens from 0), so padding on either side changes nothing.

``quantize="int8"`` writes every linear layer as a dynamically quantized matmul, the pattern
onnxruntime's own ``quantize_dynamic`` emits and fuses into its int8 kernels
(DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul by the two scales): activations become
uint8 per batch at run time, weights are int8 per output column, symmetric.  Unlike a weight-only
int8 graph (DequantizeLinear before an fp32 MatMul), the matmuls themselves run in int8, which
is where VNNI / AVX-512 / ARM dot-product units are faster than fp32.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pytei.models.weights import Array, BertWeights, GeluKind, load_weights

__all__ = ["DEFAULT_OUTPUT_NAMES", "OPSET", "ExportHead", "Quantize", "export_bert_onnx"]

ExportHead = Literal["encoder", "mlm", "token_weights", "classifier"]
Quantize = Literal["int8"]
OPSET = 17
_IR_VERSION = 8  # what opset 17 was released with; onnxruntime 1.22 reads it
DEFAULT_OUTPUT_NAMES: Mapping[str, str] = {
    "encoder": "last_hidden_state",
    "mlm": "logits",
    "token_weights": "sparse_embeddings",
    "classifier": "logits",
}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Graph:
    """Nodes and initializers with generated names."""

    def __init__(self, quantize: Quantize | None = None) -> None:
        self.quantize = quantize
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.word_table = ""  # the word-embedding initializer, which a tied decoder reuses
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: Array) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def f32(self, hint: str, value: Array | float) -> str:
        return self.const(hint, np.asarray(value, dtype=np.float32))

    def i64(self, hint: str, value: Sequence[int] | int) -> str:
        return self.const(hint, np.asarray(value, dtype=np.int64))

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def linear(self, x: str, weight: Array, bias: Array, hint: str) -> str:
        if self.quantize == "int8":
            product = self._int8_matmul(x, np.asarray(weight, dtype=np.float32).T, hint)
        else:
            # MatMul with a pre-transposed weight: what exporters emit and ORT fuses.
            product = self.op("MatMul", x, self.f32(f"{hint}.weight_t", weight.T))
        return self.op("Add", product, self.f32(f"{hint}.bias", bias))

    def _int8_matmul(self, x: str, weight_t: Array, hint: str) -> str:
        """``x @ weight_t`` with uint8 activations (scale per call) and int8 weights (per column)."""
        column_max = np.abs(weight_t).max(axis=0)
        scale = (np.where(column_max > 0, column_max, 1.0) / 127.0).astype(np.float32)
        quantized = np.clip(np.rint(weight_t / scale), -127, 127).astype(np.int8)
        x_q, x_scale, x_zero = (self._name(f"{hint}.x_{part}") for part in ("q", "scale", "zero"))
        self.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [x_q, x_scale, x_zero]))
        w_q = self.const(f"{hint}.weight_int8", quantized)
        w_zero = self.const(f"{hint}.weight_zero", np.zeros(quantized.shape[1], dtype=np.int8))
        product = self.op("MatMulInteger", x_q, w_q, x_zero, w_zero)
        scales = self.op("Mul", x_scale, self.f32(f"{hint}.weight_scale", scale))
        return self.op("Mul", self.op("Cast", product, to=TensorProto.FLOAT), scales)

    def layer_norm(self, x: str, gamma: Array, beta: Array, eps: float, hint: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.f32(f"{hint}.weight", gamma),
            self.f32(f"{hint}.bias", beta),
            axis=-1,
            epsilon=eps,
        )

    def gelu(self, x: str, kind: GeluKind) -> str:
        half = self.op("Mul", x, self.f32("half", 0.5))
        if kind == "erf":
            inner = self.op("Erf", self.op("Div", x, self.f32("sqrt2", math.sqrt(2.0))))
        else:
            cube = self.op("Mul", x, self.op("Mul", x, x))
            poly = self.op("Add", x, self.op("Mul", cube, self.f32("c0", 0.044715)))
            inner = self.op("Tanh", self.op("Mul", poly, self.f32("c1", math.sqrt(2.0 / math.pi))))
        return self.op("Mul", half, self.op("Add", inner, self.f32("one", 1.0)))


def _gelu_kind(weights: BertWeights, gelu: GeluKind | None) -> GeluKind | None:
    act = str(weights.config.get("hidden_act", "gelu"))
    if act == "relu":
        return None
    if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return gelu or "tanh"
    if act == "gelu":
        return gelu or "erf"
    raise ValueError(f"hidden_act {act!r} is not supported by the exporter")


def _activation(g: _Graph, x: str, kind: GeluKind | None) -> str:
    return g.op("Relu", x) if kind is None else g.gelu(x, kind)


def _embeddings(g: _Graph, w: BertWeights) -> str:
    g.word_table = g.f32("word_embeddings", w.encoder("embeddings.word_embeddings.weight"))
    word = g.op("Gather", g.word_table, "input_ids")
    table = g.f32("position_embeddings", w.encoder("embeddings.position_embeddings.weight"))
    if w.is_roberta:
        pad = g.i64("pad_id", w.pad_token_id)
        real = g.op("Cast", g.op("Not", g.op("Equal", "input_ids", pad)), to=TensorProto.INT64)
        counted = g.op("Mul", g.op("CumSum", real, g.i64("axis1", 1)), real)
        positions = g.op("Gather", table, g.op("Add", counted, pad))
    else:
        # Real tokens count up from 0 (see bert_reference._position_ids); padding reads row 0.
        counted = g.op("Sub", g.op("CumSum", "attention_mask", g.i64("axis1", 1)), g.i64("one_i", 1))
        positions = g.op("Gather", table, g.op("Max", counted, g.i64("zero_i", 0)))
    types = g.op(
        "Gather",
        g.f32("token_type_embeddings", w.encoder("embeddings.token_type_embeddings.weight")),
        "token_type_ids",
    )
    summed = g.op("Add", g.op("Add", word, positions), types)
    return g.layer_norm(
        summed,
        w.encoder("embeddings.LayerNorm.weight"),
        w.encoder("embeddings.LayerNorm.bias"),
        w.layer_norm_eps,
        "embeddings.LayerNorm",
    )


def _encoder(g: _Graph, w: BertWeights, x: str, gelu: GeluKind | None) -> str:
    heads = int(w.config["num_attention_heads"])
    hidden = w.hidden_size
    size = hidden // heads
    eps = w.layer_norm_eps
    # 0 for real tokens, the most negative float for padding: exp() of it is exactly 0.
    keep = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    penalty = g.op("Mul", g.op("Sub", g.f32("one", 1.0), keep), g.f32("neg", float(np.finfo(np.float32).min)))
    bias = g.op("Unsqueeze", penalty, g.i64("axes12", [1, 2]))
    split_shape = g.i64("split_shape", [0, 0, heads, size])
    merge_shape = g.i64("merge_shape", [0, 0, hidden])
    scale = g.f32("scale", 1.0 / math.sqrt(size))
    for index in range(w.num_layers):
        p = f"encoder.layer.{index}."

        def t(name: str, p: str = p) -> Array:
            return w.encoder(p + name)

        def project(name: str, perm: list[int], x: str = x, p: str = p) -> str:
            y = g.linear(x, t(f"attention.self.{name}.weight"), t(f"attention.self.{name}.bias"), p + name)
            return g.op("Transpose", g.op("Reshape", y, split_shape), perm=perm)

        q = project("query", [0, 2, 1, 3])
        k = project("key", [0, 2, 3, 1])
        v = project("value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_shape)
        attended = g.linear(
            context, t("attention.output.dense.weight"), t("attention.output.dense.bias"), p + "ao"
        )
        x = g.layer_norm(
            g.op("Add", attended, x),
            t("attention.output.LayerNorm.weight"),
            t("attention.output.LayerNorm.bias"),
            eps,
            p + "attention.LayerNorm",
        )
        inner = _activation(
            g,
            g.linear(x, t("intermediate.dense.weight"), t("intermediate.dense.bias"), p + "intermediate"),
            gelu,
        )
        out = g.linear(inner, t("output.dense.weight"), t("output.dense.bias"), p + "output")
        x = g.layer_norm(
            g.op("Add", out, x),
            t("output.LayerNorm.weight"),
            t("output.LayerNorm.bias"),
            eps,
            p + "output.LayerNorm",
        )
    return x


def _mlm(g: _Graph, w: BertWeights, x: str, gelu: GeluKind | None) -> str:
    dense_w, dense_b, norm_g, norm_b, decoder_w, decoder_b = w.mlm_head()
    h = _activation(g, g.linear(x, dense_w, dense_b, "mlm.transform"), gelu)
    h = g.layer_norm(h, norm_g, norm_b, w.layer_norm_eps, "mlm.LayerNorm")
    word = w.encoder("embeddings.word_embeddings.weight")
    if decoder_w is word:
        # Tied decoder: transpose the embedding table in the graph instead of storing it twice.
        decoder = g.op("Transpose", g.word_table, perm=[1, 0])
        return g.op("Add", g.op("MatMul", h, decoder), g.f32("mlm.bias", decoder_b))
    return g.linear(h, decoder_w, decoder_b, "mlm.decoder")


def _classifier(g: _Graph, w: BertWeights, x: str) -> str:
    pooler, weight, bias = w.classifier_head()
    cls = g.op("Gather", x, g.i64("cls_index", 0), axis=1)
    if pooler is not None:
        cls = g.op("Tanh", g.linear(cls, pooler[0], pooler[1], "pooler"))
    return g.linear(cls, weight, bias, "classifier")


def export_bert_onnx(
    model_dir: Path,
    out_path: Path,
    head: ExportHead | Sequence[ExportHead] = "mlm",
    output_name: str | None = None,
    *,
    output_names: Mapping[str, str] | None = None,
    gelu: GeluKind | None = None,
    token_weights_relu: bool = False,
    quantize: Quantize | None = None,
) -> Path:
    """Export the model in ``model_dir`` (config.json + model.safetensors, or its ``reference/``)
    to ``out_path`` with one output per head.

    ``output_name`` renames the output of a single head; ``output_names`` maps heads to names
    when there are several. ``gelu`` overrides the config's GELU flavour ("tanh" matches candle).
    Token weights are exported before the relu unless ``token_weights_relu`` (so that a server
    is seen to apply it).  ``quantize="int8"`` makes every linear layer a dynamically quantized
    int8 matmul (embeddings, layer norms and attention products stay fp32).
    """
    heads: list[ExportHead] = [head] if isinstance(head, str) else list(head)
    if not heads or len(set(heads)) != len(heads):
        raise ValueError(f"give each head once: {heads}")
    if output_name is not None and len(heads) != 1:
        raise ValueError("output_name needs a single head; use output_names for several")
    names = {h: DEFAULT_OUTPUT_NAMES[h] for h in heads}
    names.update({h: output_name for h in heads if output_name is not None})
    names.update({h: n for h, n in (output_names or {}).items() if h in names})
    if len(set(names.values())) != len(names):
        raise ValueError(f"output names collide: {names}")

    w = load_weights(Path(model_dir), np.float32)
    kind = _gelu_kind(w, gelu)
    g = _Graph(quantize)
    hidden = _encoder(g, w, _embeddings(g, w), kind)
    outputs = []
    shape: list[str | int]
    for h in heads:
        if h == "encoder":
            value, shape = hidden, ["batch", "sequence", w.hidden_size]
        elif h == "mlm":
            value, shape = _mlm(g, w, hidden, kind), ["batch", "sequence", w.vocab_size]
        elif h == "token_weights":
            value = g.linear(hidden, *w.sparse_head(), "sparse_linear")
            value, shape = (g.op("Relu", value) if token_weights_relu else value), ["batch", "sequence", 1]
        else:
            value = _classifier(g, w, hidden)
            shape = ["batch", int(w.classifier_head()[1].shape[0])]
        g.op("Identity", value, out=names[h])
        outputs.append(helper.make_tensor_value_info(names[h], TensorProto.FLOAT, shape))

    graph = helper.make_graph(
        g.nodes,
        f"{w.config.get('model_type', 'bert')}-{'-'.join(heads)}",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in _INPUTS],
        outputs,
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="pytei.models.onnx_export",
        ir_version=_IR_VERSION,
    )
    model.doc_string = f"exported from {w.weights_dir.name}/model.safetensors; heads: {', '.join(heads)}" + (
        "; linear layers dynamically quantized to int8" if quantize else ""
    )
    onnx.checker.check_model(model, full_check=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        Path(tmp).replace(out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path
