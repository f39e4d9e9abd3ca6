"""Reading BERT / XLM-RoBERTa model directories for pytei's numpy reference and ONNX exporter:
config, tensors (safetensors, name spellings of the usual checkpoints), tokenization.

(:mod:`pytei.models.reference` is the forward pass; see its docstring for what it computes.)
A numpy forward pass of BERT and XLM-RoBERTa models, as the reference for numeric parity.

It reads a model directory (``config.json``, ``tokenizer.json``, ``model.safetensors``) and
computes what transformers would: embeddings (word + position + token type, LayerNorm),
post-LayerNorm encoder layers with masked self-attention and exact (erf) GELU, then one of the
heads TEI serves: pooled embeddings, SPLADE (masked-LM logits), a sequence classifier, or
bge-m3-style token weights (``relu(sparse_linear(h))`` gathered by input token id).

Texts are tokenized one at a time, without padding, so the reference itself never depends on
how a batch is padded; :func:`forward` takes padded arrays for comparing batched exports. (One
deliberate difference from transformers: BERT position ids count unmasked tokens, which is the
same for right padding and keeps left-padded rows equal to their unpadded selves.)
Everything runs in float32 by default; pass ``dtype=np.float64`` for a tighter reference.

An ONNX-only directory built by ``model_fixtures`` keeps its source weights in ``reference/``
(TEI never reads that folder); the functions here look there when the directory itself has no
``model.safetensors``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

__all__ = [
    "Array",
    "Batch",
    "BertWeights",
    "DENSE_MODULE_TYPE",
    "GeluKind",
    "Head",
    "REFERENCE_SUBDIR",
    "ROBERTA_TYPES",
    "SPECIAL_TOKEN_KEYS",
    "TextInput",
    "dense_module_paths",
    "encode_batch",
    "float_tensors",
    "load_weights",
    "max_input_length",
    "model_type",
    "special_token_ids",
    "tokenize",
]

Array: TypeAlias = npt.NDArray[Any]
GeluKind = Literal["erf", "tanh"]
Head = Literal["encoder", "mlm", "token_weights", "classifier"]
TextInput: TypeAlias = str | tuple[str, str]

REFERENCE_SUBDIR = "reference"
ROBERTA_TYPES = frozenset({"roberta", "xlm-roberta", "camembert"})
# Prefixes under which *For* checkpoints keep the encoder; base models use none.
_ENCODER_PREFIXES = ("bert.", "roberta.", "xlm-roberta.", "camembert.", "")
# Kept in step with tei_fork/sparse-pool (special_token_ids): the tokens bge-m3 drops.
SPECIAL_TOKEN_KEYS = ("bos_token", "cls_token", "eos_token", "sep_token", "pad_token", "unk_token")
_SPARSE_HEAD_FILE = "sparse_linear.safetensors"
# (transform dense, transform LayerNorm, decoder weight, decoder bias names): BERT, then RoBERTa.
_MLM_HEADS = (
    (
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        "cls.predictions.decoder.weight",
        ("cls.predictions.bias", "cls.predictions.decoder.bias"),
    ),
    (
        "lm_head.dense",
        "lm_head.layer_norm",
        "lm_head.decoder.weight",
        ("lm_head.bias", "lm_head.decoder.bias"),
    ),
)


@dataclass(frozen=True)
class Batch:
    """Padded model inputs, as TEI's ort backend builds them (int64, ``[batch, seq]``)."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64]

    def feeds(self) -> dict[str, npt.NDArray[np.int64]]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


@dataclass(frozen=True)
class BertWeights:
    """A model's config and tensors, with name lookup that tolerates the usual spellings."""

    directory: Path  # where config.json and tokenizer.json are
    weights_dir: Path  # where model.safetensors is (the directory or its reference/)
    config: Mapping[str, Any]
    tensors: Mapping[str, Array]
    prefix: str  # the encoder's prefix in the checkpoint: "bert.", "roberta.", ... or ""

    @property
    def is_roberta(self) -> bool:
        return str(self.config.get("model_type", "")) in ROBERTA_TYPES

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def pad_token_id(self) -> int:
        return int(self.config.get("pad_token_id") or 0)

    @property
    def layer_norm_eps(self) -> float:
        return float(self.config.get("layer_norm_eps", 1e-12))

    def find(self, name: str) -> Array | None:
        """A tensor by its transformers name; LayerNorm ``weight``/``bias`` may be ``gamma``/``beta``."""
        if name in self.tensors:
            return self.tensors[name]
        if ".LayerNorm." in name or ".layer_norm." in name:
            base, _, leaf = name.rpartition(".")
            old = {"weight": "gamma", "bias": "beta"}.get(leaf)
            if old is not None:
                return self.tensors.get(f"{base}.{old}")
        return None

    def get(self, name: str) -> Array:
        found = self.find(name)
        if found is None:
            raise KeyError(f"{self.weights_dir}: no tensor {name!r} (nor its gamma/beta spelling)")
        return found

    def encoder(self, name: str) -> Array:
        """An encoder tensor, e.g. ``embeddings.word_embeddings.weight``."""
        return self.get(self.prefix + name)

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    def sparse_head(self) -> tuple[Array, Array]:
        """bge-m3's ``sparse_linear`` (weight ``[1, hidden]``, bias ``[1]``)."""
        weight = self.find("sparse_linear.weight")
        bias = self.find("sparse_linear.bias")
        if weight is None or bias is None:
            raise KeyError(f"{self.weights_dir} has no sparse head ({_SPARSE_HEAD_FILE} or sparse_linear.*)")
        return weight, bias

    def mlm_head(self) -> tuple[Array, Array, Array, Array, Array, Array]:
        """Transform dense (w, b), LayerNorm (g, b), decoder weight ``[vocab, hidden]``, decoder bias."""
        head = next((h for h in _MLM_HEADS if self.find(f"{h[0]}.weight") is not None), None)
        if head is None:
            raise KeyError(f"{self.weights_dir} has no masked-LM head (cls.predictions.* or lm_head.*)")
        base, norm, decoder, bias = head
        # Tied decoders are left out of safetensors files; the word embeddings stand in.
        decoder_weight = self.find(decoder)
        if decoder_weight is None:
            decoder_weight = self.encoder("embeddings.word_embeddings.weight")
        decoder_bias = next((b for b in (self.find(n) for n in bias) if b is not None), None)
        if decoder_bias is None:
            raise KeyError(f"{self.weights_dir} has no decoder bias ({' or '.join(bias)})")
        return (
            self.get(f"{base}.weight"),
            self.get(f"{base}.bias"),
            self.get(f"{norm}.weight"),
            self.get(f"{norm}.bias"),
            decoder_weight,
            decoder_bias,
        )

    def classifier_head(self) -> tuple[tuple[Array, Array] | None, Array, Array]:
        """Pooler (dense + tanh on CLS) if present, and the classifier ``[labels, hidden]``.

        RoBERTa-style heads (``XLMRobertaForSequenceClassification``, e.g. bge-reranker) compute
        the same thing under other names: ``classifier.dense`` + tanh, then ``classifier.out_proj``."""
        if self.find("classifier.out_proj.weight") is not None:
            dense = (self.get("classifier.dense.weight"), self.get("classifier.dense.bias"))
            return dense, self.get("classifier.out_proj.weight"), self.get("classifier.out_proj.bias")
        pooler_weight = self.find(f"{self.prefix}pooler.dense.weight")
        pooler = (
            None if pooler_weight is None else (pooler_weight, self.get(f"{self.prefix}pooler.dense.bias"))
        )
        return pooler, self.get("classifier.weight"), self.get("classifier.bias")


def _weights_dir(model_dir: Path) -> Path:
    if (model_dir / "model.safetensors").is_file():
        return model_dir
    if (model_dir / REFERENCE_SUBDIR / "model.safetensors").is_file():
        return model_dir / REFERENCE_SUBDIR
    raise FileNotFoundError(
        f"{model_dir} has no model.safetensors (nor {REFERENCE_SUBDIR}/model.safetensors)"
    )


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def load_weights(model_dir: Path, dtype: npt.DTypeLike = np.float32) -> BertWeights:
    """The model's weights as ``dtype`` (cached until the file changes)."""
    weights_dir = _weights_dir(Path(model_dir))
    return _load_weights(
        Path(model_dir).resolve(), _stamp(weights_dir / "model.safetensors"), np.dtype(dtype).name
    )


# Small: MiniLM alone is 90 MB per dtype.
@functools.lru_cache(maxsize=4)
def _load_weights(model_dir: Path, stamp: tuple[str, int, int], dtype: str) -> BertWeights:
    weights_dir = Path(stamp[0]).parent
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    raw = load_file(str(weights_dir / "model.safetensors"))
    if (weights_dir / _SPARSE_HEAD_FILE).is_file():
        raw.update(
            {f"sparse_linear.{k}": v for k, v in load_file(str(weights_dir / _SPARSE_HEAD_FILE)).items()}
        )
    tensors = {name: value.astype(dtype) if value.dtype.kind == "f" else value for name, value in raw.items()}
    prefix = next((p for p in _ENCODER_PREFIXES if f"{p}embeddings.word_embeddings.weight" in tensors), None)
    if prefix is None:
        raise KeyError(
            f"{weights_dir}: no embeddings.word_embeddings.weight under any of {_ENCODER_PREFIXES}"
        )
    return BertWeights(model_dir, weights_dir, config, tensors, prefix)


def float_tensors(model_dir: Path, prefix: str, marker: str, dtype: npt.DTypeLike) -> Mapping[str, Array]:
    """The float tensors of ``model_dir/model.safetensors`` as ``dtype``, with ``prefix`` taken
    off their names where the checkpoint keeps ``prefix + marker`` (a ``*For*`` checkpoint's
    ``model.``, ``mpnet.``, ``new.``); cached until the file changes, so a reference that runs
    text by text loads it once.  Shared: read them, never write."""
    return _float_tensors(_stamp(Path(model_dir) / "model.safetensors"), prefix, marker, np.dtype(dtype).name)


@functools.lru_cache(maxsize=4)
def _float_tensors(stamp: tuple[str, int, int], prefix: str, marker: str, dtype: str) -> Mapping[str, Array]:
    raw = load_file(stamp[0])
    strip = prefix if prefix + marker in raw else ""
    return {
        k[len(strip) :]: v.astype(dtype)
        for k, v in raw.items()
        if k.startswith(strip) and v.dtype.kind == "f"
    }


# --- tokenization -----------------------------------------------------------------------------


def max_input_length(model_dir: Path) -> int:
    """TEI's default limit: ``max_seq_length`` from sentence_bert_config.json, else the positions
    (less the RoBERTa offset of ``pad_token_id + 1``)."""
    model_dir = Path(model_dir)
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        return int(json.loads(st_config.read_text(encoding="utf-8"))["max_seq_length"])
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    positions = int(config.get("max_position_embeddings") or config["max_trained_positions"])
    if str(config.get("model_type", "")) in ROBERTA_TYPES:
        positions -= int(config.get("pad_token_id") or 0) + 1
    return positions


@functools.lru_cache(maxsize=16)
def _tokenizer(path: str, max_length: int) -> Tokenizer:
    from tokenizers import Tokenizer  # noqa: PLC0415 (tokenization is for tests and benchmarks)

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def tokenize(model_dir: Path, inputs: Sequence[TextInput]) -> list[Encoding]:
    """One encoding per text or ``(a, b)`` pair, with special tokens, truncated like TEI."""
    model_dir = Path(model_dir)
    tokenizer = _tokenizer(str((model_dir / "tokenizer.json").resolve()), max_input_length(model_dir))
    return [
        tokenizer.encode(item) if isinstance(item, str) else tokenizer.encode(item[0], item[1])
        for item in inputs
    ]


def encode_batch(
    model_dir: Path, inputs: Sequence[TextInput], *, padding_side: Literal["right", "left"] = "right"
) -> Batch:
    """Pad the encodings to the longest, with ``pad_token_id`` and mask 0, as TEI's ort backend does."""
    encodings = tokenize(model_dir, inputs)
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    pad = int(config.get("pad_token_id") or 0)
    length = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), length), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        span = slice(0, n) if padding_side == "right" else slice(length - n, length)
        ids[row, span] = encoding.ids
        mask[row, span] = 1
        types[row, span] = encoding.type_ids
    return Batch(ids, mask, types)


def model_type(model_dir: Path) -> str | None:
    """config.json's ``model_type``, or None where there is no readable config."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


DENSE_MODULE_TYPE = "sentence_transformers.models.Dense"


def dense_module_paths(model_dir: Path) -> list[str]:
    """The folders of the sentence-transformers Dense modules ``modules.json`` lists, in order
    (Conan-embedding-v1's ``2_Dense``, LaBSE's, stella's): applied after the pooling."""
    listing = Path(model_dir) / "modules.json"
    if not listing.is_file():
        return []
    modules = json.loads(listing.read_text(encoding="utf-8"))
    return [str(m["path"]) for m in modules if isinstance(m, dict) and m.get("type") == DENSE_MODULE_TYPE]


def special_token_ids(model_dir: Path) -> frozenset[int]:
    """The ids token-weight pooling drops; the same rule as the Rust crate's ``special_token_ids``:
    tokens named under :data:`SPECIAL_TOKEN_KEYS` in tokenizer_config.json, else every special
    added token."""
    model_dir = Path(model_dir)
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    added = {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}
    vocab = tokenizer_json.get("model", {}).get("vocab")
    ids: set[int] = set()
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in SPECIAL_TOKEN_KEYS:
            value = config.get(key)
            content = value.get("content") if isinstance(value, dict) else value
            if not isinstance(content, str):
                continue
            if content in added:
                ids.add(added[content])
            elif isinstance(vocab, dict) and content in vocab:
                ids.add(int(vocab[content]))
            elif isinstance(vocab, list):
                ids.update(i for i, entry in enumerate(vocab) if entry[0] == content)
    if not ids:
        ids = {int(t["id"]) for t in tokenizer_json.get("added_tokens", []) if t.get("special")}
    return frozenset(ids)
