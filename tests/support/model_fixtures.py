"""Model directories that TEI can load, built from the PyPI-packaged models or from seeds.

Every builder writes into a scratch directory beside ``out`` and renames it into place under a
file lock, then leaves a ``.pytei-fixture.json`` recipe; a later call with the same recipe
returns at once. All content is deterministic.

What TEI reads (checked in upstream v1.9.3 source):
- router: ``config.json`` ``architectures`` (``*ForMaskedLM`` + ``--pooling splade`` → SPLADE;
  ``*Classification`` → classifier, a reranker when ``id2label`` has one entry), ``model_type``,
  ``max_position_embeddings``, ``pad_token_id``; ``tokenizer.json``; ``1_Pooling/config.json``;
  ``sentence_bert_config.json`` (``max_seq_length``);
- candle: ``model.safetensors``; the encoder under ``embeddings.*``/``encoder.*`` or with a
  ``bert.`` prefix; the classifier as ``classifier.{weight,bias}`` with an optional pooler
  **only** under ``bert.pooler.dense``; SPLADE as ``cls.predictions.transform.*``,
  ``cls.predictions.decoder.weight`` (falls back to the word embeddings) and
  ``cls.predictions.bias``; LayerNorm ``weight/bias`` or ``gamma/beta``;
- ort: ``model.onnx`` and ``config.json`` ``hidden_size`` + ``num_hidden_layers`` (required),
  ``pad_token_id``; ``tokenizer_config.json`` ``padding_side``. With both ``model.onnx`` and
  safetensors present, a build with both backends tries ort first, so the ONNX directories here
  hold no ``model.safetensors``: their source weights sit in ``reference/`` (which TEI never
  reads) for :mod:`tests.support.bert_reference`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import platformdirs
from safetensors.numpy import load_file, save_file

from pytei.cache import Cache, atomic_dir
from pytei.models.resolve import packaged_model_dir
from tests.support.bert_reference import REFERENCE_SUBDIR, GeluKind
from tests.support.onnx_export import ExportHead, export_bert_onnx
from tests.support.tiny_models import TinyArch, TinySpec, write_tiny_model

__all__ = [
    "MARKER",
    "classifier_dir",
    "minilm_dir",
    "minilm_fp32_onnx_dir",
    "minilm_onnx_dir",
    "reranker_dir",
    "shared_model_cache",
    "splade_tiny_dir",
    "splade_tiny_onnx_dir",
    "tiny_m3_dir",
    "tiny_model_dir",
]

MARKER = ".pytei-fixture.json"
# Bump when a builder's output changes, so directories left by older code are rebuilt.
_VERSION = 1
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_MINILM = "all-MiniLM-L6-v2"


def shared_model_cache(env: Mapping[str, str] | None = None) -> Cache:
    """Where tests keep packaged models across runs: ``PYTEI_TEST_MODELS``, else pytei's own
    default cache (tests get a private ``PYTEI_HOME``, which would re-download per test)."""
    environment = os.environ if env is None else env
    root = environment.get("PYTEI_TEST_MODELS") or platformdirs.user_cache_dir("pytei", appauthor=False)
    return Cache(Path(root))


def _build(out: Path, recipe: Mapping[str, Any], write: Callable[[Path], None]) -> Path:
    out = Path(out)
    wanted = json.dumps({"version": _VERSION, **recipe}, sort_keys=True)
    marker = out / MARKER

    def complete() -> bool:
        return marker.is_file() and marker.read_text(encoding="utf-8") == wanted

    if complete():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(out.parent / f".{out.name}.lock")):
        if complete():
            return out
        with atomic_dir(out) as scratch:
            write(scratch)
            (scratch / MARKER).write_text(wanted, encoding="utf-8")
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the packaged weights are read-only inputs: share the bytes
    except OSError:
        shutil.copy2(source, target)


def _copy_config_files(source: Path, target: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (source / name).is_file():
            _link_or_copy(source / name, target / name)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _config(source: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((source / "config.json").read_text(encoding="utf-8"))
    return data


def minilm_dir(cache: Cache) -> Path:
    """The packaged all-MiniLM-L6-v2 (BertModel, mean pooling), unchanged."""
    return packaged_model_dir(_MINILM, cache)


def splade_tiny_dir(cache: Cache, out: Path) -> Path:
    """SPLADE-tiny for candle: safetensors only, with the tied decoder written out as
    ``cls.predictions.decoder.weight`` (a copy of the word embeddings). Serve with
    ``--pooling splade``. Its config says ``gelu``, which candle computes with the tanh
    approximation; the reference's default is exact erf (about 1.5% apart on SPLADE values)."""
    source = packaged_model_dir("splade-tiny", cache)

    def write(scratch: Path) -> None:
        _copy_config_files(source, scratch, ("config.json", *_TOKENIZER_FILES))
        tensors = load_file(str(source / "model.safetensors"))
        tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"].copy()
        save_file(tensors, str(scratch / "model.safetensors"), metadata={"format": "pt"})

    return _build(out, {"builder": "splade-tiny"}, write)


def splade_tiny_onnx_dir(cache: Cache, out: Path, *, gelu: GeluKind = "tanh") -> Path:
    """SPLADE-tiny for ort: ``model.onnx`` with a ``logits`` ``[B, L, 30522]`` output, no safetensors.

    ``gelu="tanh"`` (the default) computes what candle computes, so that candle and ort can be
    compared within 1e-3; config.json then says ``gelu_pytorch_tanh`` so that the reference,
    reading it, computes the same. ``gelu="erf"`` is transformers' exact model."""
    source = packaged_model_dir("splade-tiny", cache)

    def write(scratch: Path) -> None:
        _copy_config_files(source, scratch, _TOKENIZER_FILES)
        config = _config(source)
        config["hidden_act"] = "gelu_pytorch_tanh" if gelu == "tanh" else "gelu"
        _write_json(scratch / "config.json", config)
        _link_or_copy(source / "model.safetensors", scratch / REFERENCE_SUBDIR / "model.safetensors")
        export_bert_onnx(scratch, scratch / "model.onnx", "mlm")

    return _build(out, {"builder": "splade-tiny-onnx", "gelu": gelu}, write)


def _classifier(cache: Cache, out: Path, labels: list[str], builder: str) -> Path:
    source = packaged_model_dir(_MINILM, cache)

    def write(scratch: Path) -> None:
        _copy_config_files(source, scratch, (*_TOKENIZER_FILES, "sentence_bert_config.json"))
        config = _config(source)
        config["architectures"] = ["BertForSequenceClassification"]
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
        config["label2id"] = {name: i for i, name in enumerate(labels)}
        _write_json(scratch / "config.json", config)
        # transformers' layout: everything under `bert.`, which is also the only place candle
        # looks for the pooler (an unprefixed `pooler.dense` would be silently skipped).
        tensors = {f"bert.{k}": v for k, v in load_file(str(source / "model.safetensors")).items()}
        tensors.pop("bert.embeddings.position_ids", None)
        hidden = int(config["hidden_size"])
        rng = np.random.default_rng(20260 + len(labels))
        tensors["classifier.weight"] = (rng.standard_normal((len(labels), hidden)) * 0.1).astype(np.float32)
        tensors["classifier.bias"] = np.linspace(-0.1, 0.1, len(labels), dtype=np.float32)
        save_file(tensors, str(scratch / "model.safetensors"), metadata={"format": "pt"})

    return _build(out, {"builder": builder, "labels": labels}, write)


def reranker_dir(cache: Cache, out: Path) -> Path:
    """MiniLM as ``BertForSequenceClassification`` with one label: TEI serves it as a reranker.
    The classifier weights are fixed random numbers, so scores are deterministic but meaningless."""
    return _classifier(cache, out, ["LABEL_0"], "reranker")


def classifier_dir(cache: Cache, out: Path) -> Path:
    """MiniLM with a two-label classifier (``negative``/``positive``): TEI's ``/predict``."""
    return _classifier(cache, out, ["negative", "positive"], "classifier")


def _minilm_onnx(
    cache: Cache, out: Path, write_onnx: Callable[[Path, Path], None], recipe: Mapping[str, Any]
) -> Path:
    source = packaged_model_dir(_MINILM, cache)

    def write(scratch: Path) -> None:
        _copy_config_files(
            source,
            scratch,
            ("config.json", *_TOKENIZER_FILES, "sentence_bert_config.json", "1_Pooling/config.json"),
        )
        write_onnx(source, scratch)

    return _build(out, recipe, write)


def minilm_onnx_dir(cache: Cache, out: Path) -> Path:
    """MiniLM's config, tokenizer and mean pooling with the packaged int8 ``model.onnx``
    (output ``last_hidden_state``): the ort profile's smoke-test model."""
    int8 = packaged_model_dir("all-MiniLM-L6-v2-int8-onnx", cache)

    def write_onnx(_source: Path, scratch: Path) -> None:
        _link_or_copy(int8 / "model.onnx", scratch / "model.onnx")

    return _minilm_onnx(cache, out, write_onnx, {"builder": "minilm-int8-onnx"})


def minilm_fp32_onnx_dir(cache: Cache, out: Path) -> Path:
    """MiniLM with our float32 export (``last_hidden_state``) and its weights in ``reference/``."""

    def write_onnx(source: Path, scratch: Path) -> None:
        _link_or_copy(source / "model.safetensors", scratch / REFERENCE_SUBDIR / "model.safetensors")
        export_bert_onnx(scratch, scratch / "model.onnx", "encoder")

    return _minilm_onnx(cache, out, write_onnx, {"builder": "minilm-fp32-onnx"})


def tiny_model_dir(out: Path, spec: TinySpec, seed: int = 0) -> Path:
    """A tiny random model as a safetensors directory (see :mod:`tests.support.tiny_models`)."""

    def write(scratch: Path) -> None:
        write_tiny_model(scratch, spec, seed)

    return _build(out, {"builder": "tiny", "spec": dataclasses.asdict(spec), "seed": seed}, write)


def tiny_m3_dir(
    out: Path, seed: int = 0, *, arch: TinyArch = "xlm-roberta", dense_output: bool = True
) -> Path:
    """A tiny random bge-m3-style model for the ort backend: an encoder (2 layers, hidden 32,
    a word-level tokenizer of ~100 words) plus a one-unit sparse head.

    ONNX-only: ``model.onnx`` outputs ``sparse_embeddings`` ``[B, L, 1]`` (the head *before*
    its relu, so the server must apply it) and, with ``dense_output``, ``last_hidden_state``.
    ``config.json`` is ``XLMRobertaModel``/``xlm-roberta`` (or ``BertModel``/``bert``) with
    ``vocab_size``, ``hidden_size``, ``num_hidden_layers``, ``pad_token_id``. The weights, with
    the head as ``sparse_linear.safetensors``, are in ``reference/`` for
    :func:`tests.support.bert_reference.token_weights`."""

    def write(scratch: Path) -> None:
        reference = scratch / REFERENCE_SUBDIR
        write_tiny_model(reference, TinySpec(arch=arch, sparse_head=True), seed)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            (reference / name).rename(scratch / name)
        heads: tuple[ExportHead, ...] = ("encoder", "token_weights") if dense_output else ("token_weights",)
        export_bert_onnx(scratch, scratch / "model.onnx", heads)

    return _build(out, {"builder": "tiny-m3", "seed": seed, "arch": arch, "dense": dense_output}, write)
