"""Random-weight rotary BERT-likes, written as model directories: NomicBert
(nomic-embed-text-v1.5's layout) and GTE (gte-base-en-v1.5's ``new`` layout).

BERT's word-level tiny tokenizer (:func:`tests.support.tiny_models.tiny_tokenizer`) and the
configs as those models ship them: NomicBert with a swiglu MLP, no biases, rotary base 1000 and
its tensor names (``emb_ln``, ``encoder.layers.N.attn.Wqkv``...); GTE with biases on the
attention and ``down_proj``, an exact-GELU gated MLP (``up_gate_proj``), rope_theta 500000 and no
token types.  Linear weights have std ``1/sqrt(fan_in)``; LayerNorms vary by 0.2 around (1, 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tests.support.model_files import write_model_files

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from tests.support.tiny_models import TinySpec

__all__ = ["write_tiny_gte", "write_tiny_nomic"]


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


def _makers(rng: np.random.Generator, hidden: int) -> tuple[Any, Any, Any]:
    def linear(out: int, inp: int) -> np.ndarray:
        return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

    def bias(out: int) -> np.ndarray:
        return (0.2 * rng.standard_normal(out)).astype(np.float32)

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.weight": (1.0 + 0.2 * rng.standard_normal(hidden)).astype(np.float32),
            f"{prefix}.bias": bias(hidden),
        }

    return linear, bias, norm


def _weights(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    hidden, inner = config["n_embd"], config["n_inner"]
    linear, _, norm = _makers(rng, hidden)

    out = {
        "embeddings.word_embeddings.weight": rng.standard_normal((config["vocab_size"], hidden)).astype(
            np.float32
        ),
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


def _gte_config(spec: TinySpec, vocab_size: int) -> dict[str, Any]:
    return {
        "architectures": ["NewModel"],
        "model_type": "new",
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden,
        "num_attention_heads": spec.heads,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "max_position_embeddings": spec.max_length,
        "hidden_act": "gelu",
        "layer_norm_type": "layer_norm",
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "rope",
        "rope_theta": 500000,
        "rope_scaling": None,
        "type_vocab_size": 0,
        "pad_token_id": 0,
        "pack_qkv": True,
        "unpad_inputs": False,
        "logn_attention_scale": False,
        "logn_attention_clip1": False,
    }


def _gte_weights(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    linear, bias, norm = _makers(rng, hidden)
    out = {
        "embeddings.word_embeddings.weight": rng.standard_normal((config["vocab_size"], hidden)).astype(
            np.float32
        ),
        **norm("embeddings.LayerNorm"),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        out.update({
            p + "attention.qkv_proj.weight": linear(3 * hidden, hidden),
            p + "attention.qkv_proj.bias": bias(3 * hidden),
            p + "attention.o_proj.weight": linear(hidden, hidden),
            p + "attention.o_proj.bias": bias(hidden),
            p + "mlp.up_gate_proj.weight": linear(2 * inner, hidden),
            p + "mlp.down_proj.weight": linear(hidden, inner),
            p + "mlp.down_proj.bias": bias(hidden),
            **norm(p + "attn_ln"),
            **norm(p + "mlp_ln"),
        })  # fmt: skip
    return out


def write_tiny_nomic(
    out: Path, spec: TinySpec, tokenizer: Tokenizer, tokenizer_config: dict[str, Any], seed: int = 0
) -> Path:
    """Write a NomicBert model directory into ``out`` (``spec.arch`` is ``"nomic"``)."""
    config = _config(spec, tokenizer.get_vocab_size())
    return write_model_files(
        out, config, _weights(config, np.random.default_rng(seed)), tokenizer, tokenizer_config
    )


def write_tiny_gte(
    out: Path, spec: TinySpec, tokenizer: Tokenizer, tokenizer_config: dict[str, Any], seed: int = 0
) -> Path:
    """Write a GTE (``new``) model directory into ``out`` (``spec.arch`` is ``"gte"``)."""
    config = _gte_config(spec, tokenizer.get_vocab_size())
    return write_model_files(
        out, config, _gte_weights(config, np.random.default_rng(seed)), tokenizer, tokenizer_config
    )
