"""A numpy forward pass of the rotary BERT-likes: NomicBert (nomic-embed-text-v1/v1.5) and GTE
(Alibaba's ``new`` models: gte-base-en-v1.5, gte-multilingual-base), for parity checks.

Both keep BERT's post-LayerNorm blocks and change the rest the same way: no position embeddings
(the embedding LayerNorm sees word + token-type only) but rotary embeddings on queries and keys
(``rotate_half`` layout, the whole head); one fused query/key/value projection laid out as [all
query heads, all key heads, all value heads]; and a gated MLP, ``down(up(x) * act(gate(x)))``.
They differ in names, biases and the activation:

- NomicBert: ``emb_ln``; ``encoder.layers.N.attn.{Wqkv,out_proj}``, ``mlp.{fc11 (up), fc12
  (gate), fc2}``, ``norm1``/``norm2``; biases where ``qkv_proj_bias``/``mlp_fc*_bias`` say;
  ``swiglu`` is ``silu`` on the gate (``gelu`` means an ungated ``fc1`` → GELU → ``fc2``); base
  ``rotary_emb_base``.
- GTE: ``embeddings.LayerNorm``; ``encoder.layer.N.attention.{qkv_proj,o_proj}`` with biases,
  ``mlp.up_gate_proj`` ([up; gate], no bias) and ``mlp.down_proj``, ``attn_ln``/``mlp_ln``;
  ``hidden_act`` on the gate (``gelu`` is the exact one, as transformers computes it); base
  ``rope_theta``; token types only where ``type_vocab_size`` > 0.

What is not covered is refused: pre-norm, partial or interleaved rotary, NomicBert's
mixture-of-experts layers and scaled rotary beyond ``max_trained_positions``, GTE's rope
scaling and log-n attention scale.  Computed in float64 by default.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytei.models.reference import _gelu, _layer_norm
from pytei.models.rotary import cos_sin, rotate_half_rotary
from pytei.models.weights import Batch, float_tensors, model_type

__all__ = ["is_rotary_encoder", "rotary_encoder_hidden"]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class _Layout:
    embedding_norm: str
    layer: str  # the block's prefix, with {i}
    qkv: str
    out: str
    norm1: str
    norm2: str


_NOMIC = _Layout("emb_ln", "encoder.layers.{i}.", "attn.Wqkv", "attn.out_proj", "norm1", "norm2")
_GTE = _Layout(
    "embeddings.LayerNorm",
    "encoder.layer.{i}.",
    "attention.qkv_proj",
    "attention.o_proj",
    "attn_ln",
    "mlp_ln",
)
_FAMILIES = {"nomic_bert": _NOMIC, "new": _GTE, "gte": _GTE}


def _config(model_dir: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config


def is_rotary_encoder(model_dir: Path) -> bool:
    return model_type(model_dir) in _FAMILIES


def _refuse_uncovered(config: dict[str, Any], length: int) -> None:
    uncovered = {
        "pre-norm blocks": bool(config.get("prenorm")),
        "partial rotary": float(config.get("rotary_emb_fraction", 1.0)) != 1.0,
        "interleaved rotary": bool(config.get("rotary_emb_interleaved")),
        "mixture-of-experts layers": bool(config.get("moe_every_n_layers")),
        "the scaled rotary base beyond max_trained_positions": bool(config.get("rotary_scaling_factor"))
        and length > int(config.get("max_trained_positions", 2048)),
        "rope scaling": bool(config.get("rope_scaling")),
        "the log-n attention scale": bool(
            config.get("logn_attention_scale") or config.get("logn_attention_clip1")
        ),
    }
    found = [name for name, present in uncovered.items() if present]
    if found:
        raise ValueError(f"the {config.get('model_type')} reference does not cover {', '.join(found)}")


def _activation(config: dict[str, Any]) -> tuple[bool, Any]:
    """(gated, the activation on the gate or the ungated inner layer)."""
    act = str(config.get("activation_function") or config.get("hidden_act") or "gelu")
    if config.get("model_type") == "nomic_bert" and act == "gelu":
        return False, lambda x: _gelu(x, "erf")
    if act in ("swiglu", "silu"):
        return True, lambda x: x / (1.0 + np.exp(-x))
    if act in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        return True, lambda x: _gelu(x, "erf" if act == "gelu" else "tanh")
    raise ValueError(f"activation {act!r} is not covered")


def rotary_encoder_hidden(model_dir: Path, batch: Batch, dtype: npt.DTypeLike = np.float64) -> Array:
    """The last hidden state ``[batch, seq, hidden]`` of the NomicBert or GTE model in ``model_dir``."""
    config = _config(model_dir)
    layout = _FAMILIES[str(config["model_type"])]
    w = float_tensors(model_dir, "new.", "embeddings.word_embeddings.weight", dtype)
    ids, mask = batch.input_ids, batch.attention_mask.astype(bool)
    n, length = ids.shape
    _refuse_uncovered(config, length)
    nomic = layout is _NOMIC
    eps = float(config.get("layer_norm_epsilon" if nomic else "layer_norm_eps", 1e-12))
    hidden = int(config["n_embd" if nomic else "hidden_size"])
    heads = int(config["n_head" if nomic else "num_attention_heads"])
    size = hidden // heads
    gated, act = _activation(config)
    base = float(config.get("rotary_emb_base", 10000) if nomic else config.get("rope_theta") or 10000)
    cos, sin = cos_sin(np.maximum(np.cumsum(mask, axis=1) - 1, 0), size, base, dtype)
    keep = mask[:, None, None, :]

    def linear(v: Array, name: str) -> Array:
        bias = w.get(f"{name}.bias")
        out = v @ w[f"{name}.weight"].T
        return np.asarray(out if bias is None else out + bias)

    def norm(v: Array, name: str) -> Array:
        return _layer_norm(v, w[f"{name}.weight"], w[f"{name}.bias"], eps)

    x = w["embeddings.word_embeddings.weight"][ids]
    if "embeddings.token_type_embeddings.weight" in w:
        x = x + w["embeddings.token_type_embeddings.weight"][batch.token_type_ids]
    x = norm(x, layout.embedding_norm)
    for index in range(int(config["n_layer" if nomic else "num_hidden_layers"])):
        p = layout.layer.format(i=index)
        qkv = linear(x, p + layout.qkv).reshape(n, length, 3, heads, size).transpose(2, 0, 3, 1, 4)
        q, k, v = rotate_half_rotary(qkv[0], cos, sin), rotate_half_rotary(qkv[1], cos, sin), qkv[2]
        scores = np.where(keep, q @ k.transpose(0, 1, 3, 2) / math.sqrt(size), -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        attended = linear(context.transpose(0, 2, 1, 3).reshape(n, length, hidden), p + layout.out)
        x = norm(x + attended, p + layout.norm1)
        if not gated:
            inner = act(linear(x, p + "mlp.fc1"))
        elif nomic:
            inner = linear(x, p + "mlp.fc11") * act(linear(x, p + "mlp.fc12"))
        else:
            up, gate = np.split(linear(x, p + "mlp.up_gate_proj"), 2, axis=-1)
            inner = up * act(gate)
        x = norm(x + linear(inner, p + ("mlp.fc2" if nomic else "mlp.down_proj")), p + layout.norm2)
    return x
