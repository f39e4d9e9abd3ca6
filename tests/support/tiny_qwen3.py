"""Random-weight Qwen3 decoders (Qwen3-Embedding's layout), written as real model directories.

The tokenizer is :mod:`tests.support.tiny_models`' word list with Qwen's one special token,
``<|endoftext|>``, appended to every text as Qwen3-Embedding's tokenizer does (it is also the
pad token: TEI pads Qwen3 with ``eos_token_id``).  Tensors use Qwen3-Embedding's names (no
``model.`` prefix).  Linear weights are drawn with std ``1/sqrt(fan_in)`` so activations stay
near unit size at any width; norms and embeddings vary by 0.2 around their usual values, so a
missing q/k norm or a wrong rotary layout changes the numbers visibly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from tests.support.model_files import write_model_files

if TYPE_CHECKING:
    from tests.support.tiny_models import TinySpec

__all__ = ["EOS", "write_tiny_qwen3"]

EOS = "<|endoftext|>"


def _tokenizer(words: tuple[str, ...]) -> tuple[Tokenizer, dict[str, Any]]:
    vocab = {token: i for i, token in enumerate((*words, EOS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=words[0]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([EOS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B:1 {EOS}:1", special_tokens=[(EOS, vocab[EOS])]
    )
    config = {
        "eos_token": EOS, "pad_token": EOS, "model_max_length": 128, "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }  # fmt: skip
    return tokenizer, config


def _config(spec: TinySpec, vocab_size: int, eos: int) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads or spec.heads,
        "head_dim": spec.head_dim or spec.hidden // spec.heads,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_length,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }


def _weights(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    hidden, inner, size = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]

    def linear(out: int, inp: int) -> np.ndarray:
        return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

    def norm(width: int) -> np.ndarray:
        return (1.0 + 0.2 * rng.standard_normal(width)).astype(np.float32)

    out = {"embed_tokens.weight": rng.standard_normal((config["vocab_size"], hidden)).astype(np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}."
        out.update({
            p + "input_layernorm.weight": norm(hidden),
            p + "self_attn.q_proj.weight": linear(heads * size, hidden),
            p + "self_attn.k_proj.weight": linear(kv * size, hidden),
            p + "self_attn.v_proj.weight": linear(kv * size, hidden),
            p + "self_attn.o_proj.weight": linear(hidden, heads * size),
            p + "self_attn.q_norm.weight": norm(size),
            p + "self_attn.k_norm.weight": norm(size),
            p + "post_attention_layernorm.weight": norm(hidden),
            p + "mlp.gate_proj.weight": linear(inner, hidden),
            p + "mlp.up_proj.weight": linear(inner, hidden),
            p + "mlp.down_proj.weight": linear(hidden, inner),
        })  # fmt: skip
    out["norm.weight"] = norm(hidden)
    return out


def write_tiny_qwen3(out: Path, spec: TinySpec, words: tuple[str, ...], seed: int = 0) -> Path:
    """Write a Qwen3 model directory into ``out`` (``spec.arch`` is ``"qwen3"``)."""
    tokenizer, tokenizer_config = _tokenizer(words)
    config = _config(spec, tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS))
    return write_model_files(
        out, config, _weights(config, np.random.default_rng(seed)), tokenizer, tokenizer_config
    )
