"""Tiny random-weight BERT and XLM-RoBERTa models (and NomicBert and GTE encoders and Qwen3
decoders, :mod:`tests.support.tiny_rotary` and :mod:`tests.support.tiny_qwen3`), written as real model
directories.

Everything is deterministic for a given seed: a small word-level tokenizer built with
``tokenizers`` (BERT or XLM-RoBERTa special tokens and templates), config.json, and
``model.safetensors`` with transformers' tensor names, optionally with a masked-LM head,
a sequence classifier, or a bge-m3-style one-unit sparse head (``sparse_linear.safetensors``,
keys ``weight`` ``[1, hidden]`` and ``bias`` ``[1]``, as bge-m3's ``sparse_linear.pt``).

Weights are drawn larger than a trained model's initialisation (std 0.2) so that attention
patterns, padding leaks and head mistakes change the numbers visibly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from tests.support.bert_reference import Array
from tests.support.model_files import write_model_files
from tests.support.tiny_qwen3 import write_tiny_qwen3
from tests.support.tiny_rotary import write_tiny_gte, write_tiny_nomic

__all__ = ["WORDS", "TinyArch", "TinySpec", "tiny_tokenizer", "write_tiny_model"]

TinyArch = Literal["bert", "xlm-roberta", "qwen3", "nomic", "gte"]

# Enough words for the sentences tests send; anything else becomes the unknown token.
_WORD_LIST = """
    a an and are as at be by can capital city combines deep dense dog embeddings for fox france
    french from hello how hybrid in is it jumps lazy learning machine model models of on over
    paris quick brown retrieval search sentence sparse text that the this to vectors what where
    which with world you your weights token tokens query document rust python fast slow one two
    three red blue green . , ? !
"""
WORDS = tuple(_WORD_LIST.split())

_SPECIALS: dict[TinyArch, tuple[str, ...]] = {
    # id order follows the real tokenizers: BERT's [PAD] is 0, XLM-R's <s> 0 and <pad> 1.
    "bert": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    "xlm-roberta": ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
}


def tiny_tokenizer(arch: TinyArch) -> tuple[Tokenizer, dict[str, Any]]:
    """A lower-casing word-level tokenizer and its tokenizer_config.json content."""
    specials = _SPECIALS[arch]
    vocab = {token: i for i, token in enumerate((*specials, *WORDS))}
    if arch == "bert":
        pad, unk, cls, sep, mask = specials
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} $B:1 {sep}:1"
        config: dict[str, Any] = {"cls_token": cls, "sep_token": sep, "pad_token": pad, "unk_token": unk}
    else:
        cls, pad, sep, unk, mask = specials
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} {sep} $B {sep}"
        config = {"bos_token": cls, "cls_token": cls, "eos_token": sep, "sep_token": sep, "pad_token": pad}
        config["unk_token"] = unk
    config.update(
        mask_token=mask, model_max_length=128, padding_side="right", tokenizer_class="PreTrainedTokenizerFast"
    )
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(list(specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])]
    )
    return tokenizer, config


@dataclass(frozen=True)
class TinySpec:
    arch: TinyArch = "bert"
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    intermediate: int = 64
    max_length: int = 128  # tokens a sequence may have (positions add the RoBERTa offset)
    mlm: bool = False
    labels: int = 0  # > 0 adds a pooler and a classifier with this many labels
    sparse_head: bool = False
    kv_heads: int = 0  # qwen3: key/value heads (grouped-query attention); 0 = heads
    head_dim: int = 0  # qwen3: 0 = hidden / heads
    dense_out: int = 0  # > 0 adds a sentence-transformers Dense module (hidden -> dense_out), as Conan-embedding-v1
    pooling: str = "cls"  # 1_Pooling's mode where a Dense module makes the directory a sentence-transformers one


def _config(spec: TinySpec, vocab_size: int) -> dict[str, Any]:
    roberta = spec.arch == "xlm-roberta"
    if spec.mlm:
        architecture = "XLMRobertaForMaskedLM" if roberta else "BertForMaskedLM"
    elif spec.labels:
        architecture = "XLMRobertaForSequenceClassification" if roberta else "BertForSequenceClassification"
    else:
        architecture = "XLMRobertaModel" if roberta else "BertModel"
    config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": spec.arch,
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "intermediate_size": spec.intermediate,
        "hidden_act": "gelu",
        "max_position_embeddings": spec.max_length + (2 if roberta else 0),
        "type_vocab_size": 1 if roberta else 2,
        "layer_norm_eps": 1e-5 if roberta else 1e-12,
        "pad_token_id": 1 if roberta else 0,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.2,
    }
    if roberta:
        config.update(bos_token_id=0, eos_token_id=2)
    if spec.labels:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(spec.labels)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(spec.labels)}
    return config


def _weights(spec: TinySpec, config: dict[str, Any], rng: np.random.Generator) -> dict[str, Array]:
    def normal(*shape: int) -> Array:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def norm(prefix: str) -> dict[str, Array]:
        return {f"{prefix}.weight": 1.0 + normal(spec.hidden), f"{prefix}.bias": normal(spec.hidden)}

    def dense(prefix: str, out: int, inp: int) -> dict[str, Array]:
        return {f"{prefix}.weight": normal(out, inp), f"{prefix}.bias": normal(out)}

    h = spec.hidden
    enc: dict[str, Array] = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
        **norm("embeddings.LayerNorm"),
    }
    for i in range(spec.layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            enc.update(dense(f"{p}attention.self.{name}", h, h))
        enc.update(dense(f"{p}attention.output.dense", h, h))
        enc.update(norm(f"{p}attention.output.LayerNorm"))
        enc.update(dense(f"{p}intermediate.dense", spec.intermediate, h))
        enc.update(dense(f"{p}output.dense", h, spec.intermediate))
        enc.update(norm(f"{p}output.LayerNorm"))
    if not (spec.mlm or spec.labels):
        return enc
    # Checkpoints with a head keep the encoder under the model's prefix, as transformers does.
    prefix = "roberta." if spec.arch == "xlm-roberta" else "bert."
    out = {prefix + k: v for k, v in enc.items()}
    if spec.mlm and spec.arch == "bert":
        out.update(dense("cls.predictions.transform.dense", h, h))
        out.update(norm("cls.predictions.transform.LayerNorm"))
        out["cls.predictions.bias"] = normal(config["vocab_size"])  # decoder tied to the embeddings
    elif spec.mlm:
        out.update(dense("lm_head.dense", h, h))
        out.update({k.replace("LayerNorm", "layer_norm"): v for k, v in norm("lm_head.LayerNorm").items()})
        out["lm_head.bias"] = normal(config["vocab_size"])
    if spec.labels and spec.arch == "bert":
        out.update(dense("bert.pooler.dense", h, h))
        out.update(dense("classifier", spec.labels, h))
    elif spec.labels:  # RobertaClassificationHead: dense + tanh on <s>, then out_proj
        out.update(dense("classifier.dense", h, h))
        out.update(dense("classifier.out_proj", spec.labels, h))
    return out


def _write_dense_module(out: Path, spec: TinySpec, rng: np.random.Generator) -> None:
    """modules.json (Transformer, Pooling, Dense), 1_Pooling/ and 2_Dense/ as sentence-transformers
    saves them; the Dense layer has std 1/sqrt(hidden) and a bias, identity activation."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": spec.hidden, "pooling_mode_cls_token": spec.pooling == "cls",
               "pooling_mode_mean_tokens": spec.pooling == "mean"}  # fmt: skip
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2), encoding="utf-8")
    (out / "2_Dense").mkdir(exist_ok=True)
    config = {"in_features": spec.hidden, "out_features": spec.dense_out, "bias": True,
              "activation_function": "torch.nn.modules.linear.Identity"}  # fmt: skip
    (out / "2_Dense" / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tensors = {
        "linear.weight": (rng.standard_normal((spec.dense_out, spec.hidden)) / np.sqrt(spec.hidden)).astype(np.float32),
        "linear.bias": (0.2 * rng.standard_normal(spec.dense_out)).astype(np.float32),
    }
    save_file(tensors, str(out / "2_Dense" / "model.safetensors"))


def write_tiny_model(out: Path, spec: TinySpec, seed: int = 0) -> Path:
    """Write a complete model directory into ``out`` (which must exist and be empty or scratch)."""
    if spec.arch == "qwen3":
        return write_tiny_qwen3(out, spec, WORDS, seed)
    if spec.arch == "nomic":
        return write_tiny_nomic(out, spec, *tiny_tokenizer("bert"), seed=seed)
    if spec.arch == "gte":
        return write_tiny_gte(out, spec, *tiny_tokenizer("bert"), seed=seed)
    tokenizer, tokenizer_config = tiny_tokenizer(spec.arch)
    config = _config(spec, tokenizer.get_vocab_size())
    rng = np.random.default_rng(seed)
    tensors = _weights(spec, config, rng)
    write_model_files(out, config, tensors, tokenizer, tokenizer_config)
    if spec.dense_out:
        _write_dense_module(out, spec, rng)
    if spec.sparse_head:
        head = {"weight": (rng.standard_normal((1, spec.hidden)) * 0.5).astype(np.float32)}
        # A slightly negative bias leaves some tokens at zero, so the relu is exercised.
        head["bias"] = np.asarray([-0.1], dtype=np.float32)
        save_file(head, str(out / "sparse_linear.safetensors"))
    return out
