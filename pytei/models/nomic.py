"""A numpy forward pass of NomicBert encoders (nomic-embed-text-v1/v1.5 and the like), for parity.

NomicBert keeps BERT's post-LayerNorm blocks and changes the rest: no position embeddings (the
embedding LayerNorm, ``emb_ln``, sees word + token-type only) but rotary embeddings on queries
and keys (``rotate_half`` layout, base ``rotary_emb_base``, the whole head); one fused ``Wqkv``
projection laid out as [all query heads, all key heads, all value heads]; and a gated MLP,
``fc2(fc11(x) * silu(fc12(x)))`` (``swiglu``), or ``fc2(gelu(fc1(x)))`` where the activation
is ``gelu``.  Biases exist only where the config says (``qkv_proj_bias``, ``mlp_fc1_bias``,
``mlp_fc2_bias``).  What is not covered is refused: pre-norm blocks, partial or interleaved
rotary, mixture-of-experts layers (nomic-embed-text-v2), and the scaled rotary base TEI switches
to beyond ``max_trained_positions``.  Computed in float64 by default.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytei.models.reference import _gelu, _layer_norm
from pytei.models.rotary import cos_sin, rotate_half_rotary
from pytei.models.weights import Batch

__all__ = ["is_nomic", "nomic_hidden"]

Array = npt.NDArray[Any]


def is_nomic(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("model_type") == "nomic_bert")


def _refuse_uncovered(config: dict[str, Any], length: int) -> None:
    uncovered = {
        "pre-norm blocks": bool(config.get("prenorm")),
        "partial rotary": float(config.get("rotary_emb_fraction", 1.0)) != 1.0,
        "interleaved rotary": bool(config.get("rotary_emb_interleaved")),
        "mixture-of-experts layers": bool(config.get("moe_every_n_layers")),
        "the scaled rotary base beyond max_trained_positions": bool(config.get("rotary_scaling_factor"))
        and length > int(config.get("max_trained_positions", 2048)),
    }
    found = [name for name, present in uncovered.items() if present]
    if found:
        raise ValueError(f"the NomicBert reference does not cover {', '.join(found)}")


def nomic_hidden(model_dir: Path, batch: Batch, dtype: npt.DTypeLike = np.float64) -> Array:
    """The last hidden state ``[batch, seq, hidden]`` of the NomicBert model in ``model_dir``."""
    from safetensors.numpy import load_file  # noqa: PLC0415

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    raw = load_file(str(model_dir / "model.safetensors"))
    w = {k: v.astype(dtype) for k, v in raw.items() if v.dtype.kind == "f"}
    ids, mask = batch.input_ids, batch.attention_mask.astype(bool)
    n, length = ids.shape
    _refuse_uncovered(config, length)
    eps = float(config.get("layer_norm_epsilon", 1e-12))
    hidden, heads = int(config["n_embd"]), int(config["n_head"])
    size = hidden // heads
    gated = str(config.get("activation_function", "swiglu")) != "gelu"

    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    cos, sin = cos_sin(positions, size, float(config.get("rotary_emb_base", 10000)), dtype)
    keep = mask[:, None, None, :]

    def linear(v: Array, name: str) -> Array:
        bias = w.get(f"{name}.bias")
        out = v @ w[f"{name}.weight"].T
        return np.asarray(out if bias is None else out + bias)

    def norm(v: Array, name: str) -> Array:
        return _layer_norm(v, w[f"{name}.weight"], w[f"{name}.bias"], eps)

    x = norm(
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.token_type_embeddings.weight"][batch.token_type_ids],
        "emb_ln",
    )
    for layer in range(int(config["n_layer"])):
        p = f"encoder.layers.{layer}."
        qkv = linear(x, p + "attn.Wqkv").reshape(n, length, 3, heads, size).transpose(2, 0, 3, 1, 4)
        q, k, v = rotate_half_rotary(qkv[0], cos, sin), rotate_half_rotary(qkv[1], cos, sin), qkv[2]
        scores = np.where(keep, q @ k.transpose(0, 1, 3, 2) / math.sqrt(size), -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        x = norm(
            x + linear(context.transpose(0, 2, 1, 3).reshape(n, length, hidden), p + "attn.out_proj"),
            p + "norm1",
        )
        if gated:
            gate = linear(x, p + "mlp.fc12")
            inner = linear(x, p + "mlp.fc11") * (gate / (1.0 + np.exp(-gate)))
        else:
            inner = _gelu(linear(x, p + "mlp.fc1"), "erf")
        x = norm(x + linear(inner, p + "mlp.fc2"), p + "norm2")
    return x
