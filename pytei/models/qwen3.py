"""A numpy forward pass of Qwen3 decoders (Qwen3-Embedding and the like), for parity checks.

Qwen3 is a pre-norm decoder, unlike every encoder in :mod:`pytei.models.reference`: token
embeddings only (no positions added; rotary embeddings rotate queries and keys instead, in the
``rotate_half`` layout with ``rope_theta``), RMSNorm before attention and before the MLP, an
RMSNorm on every query and key head (``q_norm``/``k_norm``, Qwen3's addition to Qwen2), grouped
query attention (``num_key_value_heads`` shared by ``num_attention_heads``), a SwiGLU MLP
(``down(silu(gate(x)) * up(x))``) and a final ``norm``.  Attention is causal unless the config
says ``use_bidirectional_attention``.  Checkpoints keep the layers at the top level
(Qwen3-Embedding) or under ``model.`` (the rerankers, ``*ForCausalLM``); both are read.

Padding is taken from the attention mask, on either side: positions count real tokens from 0, so
a left-padded row (TEI's candle backend pads Qwen3 on the left) equals its unpadded self.
Computed in float64 by default so that it is the reference, not another float32 implementation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytei.models.rotary import cos_sin, rotate_half_rotary
from pytei.models.weights import Batch, float_tensors, model_type

__all__ = ["is_qwen3", "qwen3_hidden"]

Array = npt.NDArray[Any]


def is_qwen3(model_dir: Path) -> bool:
    return model_type(model_dir) == "qwen3"


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    return np.asarray(x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight)


def _rope_theta(config: dict[str, Any]) -> float:
    # transformers moved rope_theta into rope_parameters (huggingface/transformers#39847)
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is None:
        raise ValueError("config.json has neither rope_theta nor rope_parameters.rope_theta")
    return float(theta)


def _silu(x: Array) -> Array:
    return np.asarray(x / (1.0 + np.exp(-x)))


def qwen3_hidden(model_dir: Path, batch: Batch, dtype: npt.DTypeLike = np.float64) -> Array:
    """The final-normed hidden state ``[batch, seq, hidden]`` of the Qwen3 model in ``model_dir``.
    Padded positions hold whatever the model computes there; only real positions are meaningful."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    w = float_tensors(model_dir, "model.", "embed_tokens.weight", dtype)
    if config.get("use_sliding_window"):
        raise ValueError("sliding-window attention is not covered (TEI refuses it for Qwen3 too)")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {config.get('hidden_act')!r}: only silu is covered")
    eps = float(config.get("rms_norm_eps", 1e-6))
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    hidden = int(config["hidden_size"])
    size = int(config.get("head_dim") or hidden // heads)
    causal = not config.get("use_bidirectional_attention", False)

    ids, mask = batch.input_ids, batch.attention_mask.astype(bool)
    n, length = ids.shape
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    cos, sin = cos_sin(positions, size, _rope_theta(config), dtype)
    keep = np.broadcast_to(mask[:, None, None, :], (n, 1, length, length))
    if causal:
        keep = keep & np.tril(np.ones((length, length), dtype=bool))[None, None]

    def linear(v: Array, name: str) -> Array:
        out = v @ w[f"{name}.weight"].T
        bias = w.get(f"{name}.bias")  # only with attention_bias
        return np.asarray(out if bias is None else out + bias)

    def split(v: Array, count: int) -> Array:
        return v.reshape(n, length, count, size).transpose(0, 2, 1, 3)

    x = w["embed_tokens.weight"][ids]
    for layer in range(int(config["num_hidden_layers"])):
        p = f"layers.{layer}."
        normed = _rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = _rms_norm(
            split(linear(normed, p + "self_attn.q_proj"), heads), w[p + "self_attn.q_norm.weight"], eps
        )
        k = _rms_norm(
            split(linear(normed, p + "self_attn.k_proj"), kv_heads), w[p + "self_attn.k_norm.weight"], eps
        )
        v = split(linear(normed, p + "self_attn.v_proj"), kv_heads)
        q, k = rotate_half_rotary(q, cos, sin), rotate_half_rotary(k, cos, sin)
        k, v = (np.repeat(t, heads // kv_heads, axis=1) for t in (k, v))
        scores = np.where(keep, q @ k.transpose(0, 1, 3, 2) / math.sqrt(size), -np.inf)
        # A padded query row may have no key to attend to; it is never read, so keep it finite.
        top = np.max(scores, axis=-1, keepdims=True)
        scores = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
        probs = scores / np.maximum(scores.sum(axis=-1, keepdims=True), np.finfo(np.float64).tiny)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, heads * size)
        x = x + linear(context, p + "self_attn.o_proj")
        normed = _rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        inner = _silu(linear(normed, p + "mlp.gate_proj")) * linear(normed, p + "mlp.up_proj")
        x = x + linear(inner, p + "mlp.down_proj")
    return _rms_norm(x, w["norm.weight"], eps)
