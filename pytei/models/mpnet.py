"""A numpy forward pass of MPNet encoders (all-mpnet-base-v2 and the like), for parity checks.

MPNet differs from BERT in three places, all here: no token-type embeddings; positions count
non-pad tokens from ``pad_token_id + 1`` (as RoBERTa's do); and every attention layer adds one
shared relative-position bias, looked up from ``encoder.relative_attention_bias`` by T5-style
log buckets of the key-query distance (32 buckets, exact below 8 on either side, logarithmic up
to 128).  Attention projections are ``attention.attn.{q,k,v,o}``.  Computed in float64 by
default so that it is the reference, not another float32 implementation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytei.models.reference import _gelu, _layer_norm
from pytei.models.weights import Batch, float_tensors, model_type

__all__ = ["is_mpnet", "mpnet_hidden"]

Array = npt.NDArray[Any]
_MAX_DISTANCE = 128


def is_mpnet(model_dir: Path) -> bool:
    return model_type(model_dir) == "mpnet"


def _buckets(length: int, num_buckets: int) -> Array:
    """The bucket of every (query, key) distance, as transformers' MPNet computes it."""
    context = np.arange(length)[:, None]
    memory = np.arange(length)[None, :]
    n = -(memory - context)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = max_exact + (
            np.log(np.maximum(n, 1) / max_exact) / math.log(_MAX_DISTANCE / max_exact) * (half - max_exact)
        ).astype(np.int64)
    large = np.minimum(large, half - 1)
    return np.asarray(ret + np.where(n < max_exact, n, large), dtype=np.int64)


def mpnet_hidden(
    model_dir: Path, batch: Batch, dtype: npt.DTypeLike = np.float64, *, tanh_gelu: bool = False
) -> Array:
    """The last hidden state ``[batch, seq, hidden]`` of the MPNet model in ``model_dir``
    (``tanh_gelu``: GELU's tanh approximation instead of the exact one the config names)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    w = float_tensors(model_dir, "mpnet.", "embeddings.word_embeddings.weight", dtype)
    eps = float(config.get("layer_norm_eps", 1e-5))
    heads = int(config["num_attention_heads"])
    pad = int(config.get("pad_token_id", 1))
    ids, mask = batch.input_ids, batch.attention_mask
    real = (ids != pad).astype(np.int64)
    positions = np.cumsum(real, axis=1) * real + pad
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][positions]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    batch_size, length, hidden = x.shape
    size = hidden // heads
    bias = w["encoder.relative_attention_bias.weight"][
        _buckets(length, int(config.get("relative_attention_num_buckets", 32)))
    ]
    bias = bias.transpose(2, 0, 1)[None]  # [1, heads, q, k]
    penalty = (1.0 - mask[:, None, None, :].astype(dtype)) * np.finfo(np.float32).min

    def linear(v: Array, name: str) -> Array:
        return np.asarray(v @ w[f"{name}.weight"].T + w[f"{name}.bias"])

    def split(v: Array) -> Array:
        return v.reshape(batch_size, length, heads, size).transpose(0, 2, 1, 3)

    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."
        q, k, v = (split(linear(x, p + f"attention.attn.{n}")) for n in ("q", "k", "v"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias + penalty
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ v
        context = context.transpose(0, 2, 1, 3).reshape(batch_size, length, hidden)
        x = _layer_norm(linear(context, p + "attention.attn.o") + x,
                        w[p + "attention.LayerNorm.weight"], w[p + "attention.LayerNorm.bias"], eps)  # fmt: skip
        inner = _gelu(linear(x, p + "intermediate.dense"), "tanh" if tanh_gelu else "erf")
        x = _layer_norm(linear(inner, p + "output.dense") + x,
                        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)  # fmt: skip
    return x
