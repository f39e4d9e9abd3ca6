"""Random-weight NomicBert encoders (nomic-embed-text-v1.5's layout), written as model directories.

BERT's word-level tiny tokenizer (:func:`tests.support.tiny_models.tiny_tokenizer`), a
``nomic_bert`` config as nomic-embed-text-v1.5 ships it (swiglu MLP, no biases, rotary base
1000, post-norm) and its tensor names (``emb_ln``, ``encoder.layers.N.attn.Wqkv``...).  Linear
weights have std ``1/sqrt(fan_in)``; LayerNorms vary by 0.2 around (1, 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import save_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from tests.support.tiny_models import TinySpec

__all__ = ["write_tiny_nomic"]


def _config(spec: TinySpec, vocab_size: int) -> dict[str, Any]:
    return {
        "architectures": ["NomicBertModel"],
        "model_type": "nomic_bert",
        "vocab_size": vocab_size,
        "n_embd": spec.hidden,
        "n_head": spec.heads,
        "n_inner": spec.intermediate,
        "n_layer": spec.layers,
        "n_positions": spec.max_length,
        "max_trained_positions": spec.max_length,
        "activation_function": "swiglu",
        "prenorm": False,
        "rotary_emb_fraction": 1.0,
        "rotary_emb_base": 1000,
        "rotary_emb_interleaved": False,
        "rotary_scaling_factor": None,
        "qkv_proj_bias": False,
        "mlp_fc1_bias": False,
        "mlp_fc2_bias": False,
        "type_vocab_size": 2,
        "layer_norm_epsilon": 1e-12,
        "pad_token_id": 0,
        "causal": False,
    }


def _weights(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    hidden, inner = config["n_embd"], config["n_inner"]

    def linear(out: int, inp: int) -> np.ndarray:
        return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.weight": (1.0 + 0.2 * rng.standard_normal(hidden)).astype(np.float32),
            f"{prefix}.bias": (0.2 * rng.standard_normal(hidden)).astype(np.float32),
        }

    out = {
        "embeddings.word_embeddings.weight": rng.standard_normal((config["vocab_size"], hidden)).astype(np.float32),
        "embeddings.token_type_embeddings.weight": rng.standard_normal((2, hidden)).astype(np.float32),
        **norm("emb_ln"),
    }
    for i in range(config["n_layer"]):
        p = f"encoder.layers.{i}."
        out.update({
            p + "attn.Wqkv.weight": linear(3 * hidden, hidden),
            p + "attn.out_proj.weight": linear(hidden, hidden),
            p + "mlp.fc11.weight": linear(inner, hidden),
            p + "mlp.fc12.weight": linear(inner, hidden),
            p + "mlp.fc2.weight": linear(hidden, inner),
            **norm(p + "norm1"),
            **norm(p + "norm2"),
        })  # fmt: skip
    return out


def write_tiny_nomic(
    out: Path, spec: TinySpec, tokenizer: Tokenizer, tokenizer_config: dict[str, Any], seed: int = 0
) -> Path:
    """Write a NomicBert model directory into ``out`` (``spec.arch`` is ``"nomic"``)."""
    config = _config(spec, tokenizer.get_vocab_size())
    tensors = _weights(config, np.random.default_rng(seed))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
