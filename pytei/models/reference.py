"""A numpy forward pass of BERT and XLM-RoBERTa models, as the reference for numeric parity.

It computes what transformers would: embeddings (word + position + token type, LayerNorm),
post-LayerNorm encoder layers with masked self-attention and exact (erf) GELU, then one of the
heads TEI serves: pooled embeddings, SPLADE (masked-LM logits), a sequence classifier, or
bge-m3-style token weights (``relu(sparse_linear(h))`` gathered by input token id).  pytei
checks its ONNX exports against it, and the tests check routers against it.  MPNet encoders
(:mod:`pytei.models.mpnet`), NomicBert and GTE encoders (:mod:`pytei.models.rotary_encoders`) and Qwen3 decoders
(:mod:`pytei.models.qwen3`), the last two for hidden states and pooled embeddings only, are
computed by their own modules behind the same functions.

Texts are tokenized one at a time, without padding, so the reference itself never depends on
how a batch is padded; :func:`forward` takes padded arrays for comparing batched exports. (One
deliberate difference from transformers: BERT position ids count unmasked tokens, which is the
same for right padding and keeps left-padded rows equal to their unpadded selves.)
Everything runs in float32 by default; pass ``dtype=np.float64`` for a tighter reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pytei.models.weights import (
    Array,
    Batch,
    BertWeights,
    GeluKind,
    Head,
    TextInput,
    dense_module_paths,
    encode_batch,
    load_weights,
    special_token_ids,
)

__all__ = [
    "Pooling",
    "classify",
    "dense_modules",
    "embed",
    "forward",
    "splade",
    "token_embeddings",
    "token_weights",
]

Pooling = Literal["mean", "cls", "last-token"]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: Array, kind: GeluKind) -> Array:
    wide = x.astype(np.float64)
    out: Array
    if kind == "erf":
        out = 0.5 * wide * (1.0 + _erf(wide / math.sqrt(2.0)))
    else:
        out = 0.5 * wide * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (wide + 0.044715 * wide**3)))
    return out.astype(x.dtype)


def _activation(weights: BertWeights, gelu: GeluKind | None) -> Any:
    act = str(weights.config.get("hidden_act", "gelu"))
    if act == "relu":
        return lambda x: np.maximum(x, 0)
    if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        kind: GeluKind = gelu or "tanh"
    elif act == "gelu":
        kind = gelu or "erf"
    else:
        raise ValueError(f"hidden_act {act!r} is not supported by the reference")
    return lambda x: _gelu(x, kind)


def _layer_norm(x: Array, gamma: Array, beta: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed: Array = ((x - mean) / np.sqrt(var + x.dtype.type(eps))) * gamma + beta
    return normed


def _linear(x: Array, weight: Array, bias: Array) -> Array:
    return x @ weight.T + bias


def _position_ids(weights: BertWeights, batch: Batch) -> Array:
    if weights.is_roberta:
        # transformers' create_position_ids_from_input_ids: real tokens count up from pad + 1.
        real = (batch.input_ids != weights.pad_token_id).astype(np.int64)
        counted: Array = np.cumsum(real, axis=1) * real + weights.pad_token_id
        return counted
    # transformers uses 0..L-1; counting real tokens is the same for right padding and keeps a
    # left-padded sequence where it would be alone (TEI sends no position_ids to such graphs).
    return np.maximum(np.cumsum(batch.attention_mask, axis=1) - 1, 0)


def _encode(weights: BertWeights, batch: Batch, gelu: GeluKind | None) -> Array:
    """The last hidden state ``[batch, seq, hidden]``."""
    eps = weights.layer_norm_eps
    act = _activation(weights, gelu)
    x = (
        weights.encoder("embeddings.word_embeddings.weight")[batch.input_ids]
        + weights.encoder("embeddings.position_embeddings.weight")[_position_ids(weights, batch)]
        + weights.encoder("embeddings.token_type_embeddings.weight")[batch.token_type_ids]
    )
    x = _layer_norm(
        x, weights.encoder("embeddings.LayerNorm.weight"), weights.encoder("embeddings.LayerNorm.bias"), eps
    )
    heads = int(weights.config["num_attention_heads"])
    n, length, hidden = x.shape
    size = hidden // heads
    keep = batch.attention_mask[:, None, None, :] != 0
    for index in range(weights.num_layers):
        layer = f"encoder.layer.{index}."

        def w(name: str, layer: str = layer) -> Array:
            return weights.encoder(layer + name)

        def split(t: Array) -> Array:
            return t.reshape(n, length, heads, size).transpose(0, 2, 1, 3)

        q = split(_linear(x, w("attention.self.query.weight"), w("attention.self.query.bias")))
        k = split(_linear(x, w("attention.self.key.weight"), w("attention.self.key.bias")))
        v = split(_linear(x, w("attention.self.value.weight"), w("attention.self.value.bias")))
        scores = (q @ k.transpose(0, 1, 3, 2)) / x.dtype.type(math.sqrt(size))
        # Masked keys get exactly zero weight (the export's large negative bias underflows to 0 too).
        scores = np.where(keep, scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
        attended = _linear(context, w("attention.output.dense.weight"), w("attention.output.dense.bias"))
        x = _layer_norm(
            attended + x, w("attention.output.LayerNorm.weight"), w("attention.output.LayerNorm.bias"), eps
        )
        inner = act(_linear(x, w("intermediate.dense.weight"), w("intermediate.dense.bias")))
        out = _linear(inner, w("output.dense.weight"), w("output.dense.bias"))
        x = _layer_norm(out + x, w("output.LayerNorm.weight"), w("output.LayerNorm.bias"), eps)
    return np.asarray(x)


def _mlm_logits(weights: BertWeights, hidden: Array, gelu: GeluKind | None) -> Array:
    dense_w, dense_b, norm_g, norm_b, decoder_w, decoder_b = weights.mlm_head()
    transformed = _activation(weights, gelu)(_linear(hidden, dense_w, dense_b))
    transformed = _layer_norm(transformed, norm_g, norm_b, weights.layer_norm_eps)
    return _linear(transformed, decoder_w, decoder_b)


def _classifier_logits(weights: BertWeights, hidden: Array) -> Array:
    pooler, classifier_w, classifier_b = weights.classifier_head()
    cls = hidden[:, 0]
    if pooler is not None:
        cls = np.tanh(_linear(cls, *pooler))
    return _linear(cls, classifier_w, classifier_b)


def forward(
    model_dir: Path,
    batch: Batch,
    head: Head = "encoder",
    *,
    dtype: npt.DTypeLike = np.float32,
    gelu: GeluKind | None = None,
) -> Array:
    """What the ONNX export of ``head`` outputs for a padded batch: ``last_hidden_state``
    ``[B, L, H]``, MLM ``logits`` ``[B, L, V]``, raw token weights ``[B, L, 1]`` (before the
    relu), or classifier ``logits`` ``[B, labels]``. Padded positions hold whatever the model
    computes there; only real positions are meaningful."""
    from pytei.models.mpnet import is_mpnet, mpnet_hidden  # noqa: PLC0415 (mpnet builds on this module)
    from pytei.models.qwen3 import is_qwen3, qwen3_hidden  # noqa: PLC0415
    from pytei.models.rotary_encoders import is_rotary_encoder, rotary_encoder_hidden  # noqa: PLC0415 (so does this)

    for name, covers, hidden_of in (
        ("Qwen3", is_qwen3, qwen3_hidden),
        ("NomicBert/GTE", is_rotary_encoder, rotary_encoder_hidden),
    ):
        if covers(Path(model_dir)):
            if head != "encoder":
                raise ValueError(f"the {name} reference computes hidden states only, not the {head!r} head")
            return hidden_of(Path(model_dir), batch).astype(dtype)
    if head == "encoder" and is_mpnet(Path(model_dir)):
        return mpnet_hidden(Path(model_dir), batch, tanh_gelu=gelu == "tanh").astype(dtype)
    weights = load_weights(Path(model_dir), dtype)
    hidden = _encode(weights, batch, gelu)
    if head == "encoder":
        return hidden
    if head == "mlm":
        return _mlm_logits(weights, hidden, gelu)
    if head == "token_weights":
        return _linear(hidden, *weights.sparse_head())
    return _classifier_logits(weights, hidden)


_DENSE_ACTIVATIONS = {
    None: "identity", "torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh",
}  # fmt: skip


def dense_modules(
    model_dir: Path, dtype: npt.DTypeLike = np.float32
) -> list[tuple[Array, Array | None, str]]:
    """The Dense modules of a sentence-transformers model, in ``modules.json`` order: weight
    ``[out, in]``, bias, activation (identity or tanh, the two TEI knows)."""
    from safetensors.numpy import load_file  # noqa: PLC0415

    out = []
    for path in dense_module_paths(model_dir):
        folder = Path(model_dir) / path
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        activation = _DENSE_ACTIVATIONS.get(config.get("activation_function"))
        if activation is None:
            raise ValueError(
                f"{folder}: Dense activation {config.get('activation_function')!r} is not covered"
            )
        tensors = load_file(str(folder / "model.safetensors"))
        bias = tensors["linear.bias"].astype(dtype) if config.get("bias", True) else None
        out.append((tensors["linear.weight"].astype(dtype), bias, activation))
    return out


def _single(model_dir: Path, item: TextInput) -> Batch:
    return encode_batch(model_dir, [item])


# --- what TEI serves --------------------------------------------------------------------------


def token_embeddings(
    model_dir: Path, text: str, *, dtype: npt.DTypeLike = np.float32, gelu: GeluKind | None = None
) -> Array:
    """The last hidden state of one text, ``[seq, hidden]`` (TEI's ``/embed_all``)."""
    hidden: Array = forward(model_dir, _single(model_dir, text), "encoder", dtype=dtype, gelu=gelu)[0]
    return hidden


def embed(
    model_dir: Path,
    texts: Sequence[str],
    pooling: Pooling = "mean",
    normalize: bool = True,
    *,
    dtype: npt.DTypeLike = np.float32,
    gelu: GeluKind | None = None,
) -> Array:
    """Pooled sentence embeddings ``[n, hidden]`` (TEI's ``/embed``); ``last-token`` is the
    last position's state, which for decoders is the appended end-of-text token.  The
    sentence-transformers Dense modules that ``modules.json`` lists come after the pooling, in
    order (``[n, out_features]`` then), as TEI's candle backend applies them."""
    rows = []
    for text in texts:
        hidden = token_embeddings(model_dir, text, dtype=dtype, gelu=gelu)
        rows.append(
            hidden.mean(axis=0) if pooling == "mean" else hidden[0] if pooling == "cls" else hidden[-1]
        )
    out = np.stack(rows)
    for weight, bias, activation in dense_modules(model_dir, dtype):
        out = out @ weight.T + (0 if bias is None else bias)
        out = np.tanh(out) if activation == "tanh" else out
    if normalize:
        out = out / np.linalg.norm(out, axis=1, keepdims=True)
    return out


def splade(
    model_dir: Path, texts: Sequence[str], *, dtype: npt.DTypeLike = np.float32, gelu: GeluKind | None = None
) -> Array:
    """SPLADE vectors ``[n, vocab]``: max over positions of ``log1p(relu(logits))``."""
    rows = [
        np.log1p(
            np.maximum(forward(model_dir, _single(model_dir, t), "mlm", dtype=dtype, gelu=gelu)[0], 0)
        ).max(axis=0)
        for t in texts
    ]
    return np.stack(rows)


def classify(
    model_dir: Path,
    inputs: Sequence[TextInput],
    *,
    dtype: npt.DTypeLike = np.float32,
    gelu: GeluKind | None = None,
) -> Array:
    """Sequence-classifier logits ``[n, labels]`` for texts or ``(a, b)`` pairs."""
    return np.concatenate(
        [
            forward(model_dir, _single(model_dir, item), "classifier", dtype=dtype, gelu=gelu)
            for item in inputs
        ]
    )


def token_weights(
    model_dir: Path, texts: Sequence[str], *, dtype: npt.DTypeLike = np.float32, gelu: GeluKind | None = None
) -> list[dict[int, float]]:
    """bge-m3 lexical weights per text: ``{token id: max relu(sparse_linear(h))}`` over its
    positions, special tokens dropped, zero weights left out."""
    specials = special_token_ids(model_dir)
    out: list[dict[int, float]] = []
    for text in texts:
        batch = _single(model_dir, text)
        weights = forward(model_dir, batch, "token_weights", dtype=dtype, gelu=gelu)[0, :, 0]
        row: dict[int, float] = {}
        for token, weight in zip(batch.input_ids[0].tolist(), weights.tolist(), strict=True):
            if token in specials or not weight > 0:
                continue
            row[token] = max(row.get(token, 0.0), float(weight))
        out.append(row)
    return out
