"""Serving a safetensors model through ONNX Runtime: export it once, check it, cache it.

On a CPU, TEI's ``ort`` backend serves BERT-class models 4-5x faster than candle (pytei's
cpu-perf report), but it reads only ``model.onnx``.  For a model without one, pytei exports an
fp32 graph with its torch-free exporter (:mod:`pytei.models.onnx_export`: BERT and XLM-RoBERTa
encoders, SPLADE masked-LM heads, sequence classifiers), checks the graph against the numpy
reference of the same weights (ONNX's own reference evaluator, no onnxruntime needed), and keeps
it in ``<cache>/onnx/<weights sha256>-<head>/`` beside links to the model's config and
tokenizer files.  A model the exporter cannot do correctly is served by candle, with a note
saying why and what it costs.

``quantize="int8"`` exports dynamically quantized int8 matmuls instead (see
:mod:`pytei.models.onnx_export`), checked against the same fp32 reference with a looser bound:
int8 moves MiniLM's embeddings by about 0.8% (cosine 0.992 on average, 0.988 at worst), while
fp32 exports match to 1e-4.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pytei.cache import Cache, atomic_dir, atomic_write, sha256_file
from pytei.errors import ModelError
from pytei.models.resolve import ModelDir, inspect_model_dir
from pytei.models.weights import Batch, Head, dense_module_paths

if TYPE_CHECKING:
    from pytei.models.onnx_export import Quantize

__all__ = ["EXPORTER_VERSION", "OrtChoice", "export_onnx", "onnx_for_ort"]

log = logging.getLogger("pytei.models")

# Bumped when the exporter's graph changes, so old exports are not reused.
EXPORTER_VERSION = 1
_ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})
_COMPANIONS = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "sentencepiece.bpe.model", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
)  # fmt: skip
_MIN_COSINE = 0.9999
# int8 on the probe batch: MiniLM measures 0.990-0.995; a broken graph is far below.
_MIN_COSINE_INT8 = 0.98


@dataclass(frozen=True)
class OrtChoice:
    """What the ort router is given: an ONNX model directory, or the original (candle) and why."""

    directory: Path
    exported: bool
    note: str


def _head(model: ModelDir, pooling: str | None) -> Head | None:
    if model.model_type not in _ENCODER_TYPES:
        return None
    if model.kind == "classifier":
        return "classifier"
    if model.kind == "masked-lm":
        return "mlm" if pooling == "splade" else "encoder"
    return "encoder"


def _weights_digest(model: ModelDir, cache: Cache) -> str:
    """The sha256 of model.safetensors, remembered by path, size and mtime (it is large)."""
    weights = model.path / "model.safetensors"
    stat = weights.stat()
    index = cache.area("onnx") / "digests.json"
    try:
        known = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    key = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if key not in known:
        known[key] = sha256_file(weights)
        atomic_write(index, json.dumps(known))
    return str(known[key])


def _probe_batch(vocab_size: int) -> Batch:
    ids = np.array([[1 + (i * 997) % (vocab_size - 1) for i in range(11)], [0] * 11], dtype=np.int64)
    ids[1, :6] = ids[0, 3:9]
    mask = np.array([[1] * 11, [1] * 6 + [0] * 5], dtype=np.int64)
    return Batch(ids, mask, np.zeros_like(ids))


def _check(model_dir: Path, onnx_path: Path, head: Head) -> float:
    """The smallest cosine between the export and the numpy reference on a padded probe batch."""
    from onnx.reference import ReferenceEvaluator  # noqa: PLC0415 (only when exporting)

    from pytei.models.reference import forward  # noqa: PLC0415
    from pytei.models.weights import load_weights  # noqa: PLC0415

    weights = load_weights(model_dir)
    batch = _probe_batch(weights.vocab_size)
    expected = forward(model_dir, batch, head)
    (raw,) = ReferenceEvaluator(str(onnx_path)).run(None, batch.feeds())
    got = np.asarray(raw, dtype=np.float32)
    if head == "classifier":
        rows = [(expected[i], got[i]) for i in range(len(expected))]
    else:
        mask = batch.attention_mask.astype(bool)
        rows = [(expected[i][mask[i]].ravel(), got[i][mask[i]].ravel()) for i in range(len(expected))]
    worst = 1.0
    for ref, out in rows:
        if not np.all(np.isfinite(out)):
            return float("nan")
        denominator = float(np.linalg.norm(ref) * np.linalg.norm(out)) or 1.0
        worst = min(worst, float(np.dot(ref, out)) / denominator)
    return worst


def onnx_for_ort(
    model: ModelDir, cache: Cache, *, pooling: str | None = None, quantize: Quantize | None = None
) -> OrtChoice:
    """An ONNX directory of ``model`` for TEI's ort backend (exported once), or ``model`` itself
    with the reason when it has a graph already or cannot be exported correctly."""
    dense = dense_module_paths(model.path)
    if dense:
        # TEI's ort backend never reads modules.json: its embeddings would silently come out
        # before the Dense projection (hidden-wide, unprojected). Only candle applies them.
        what = f"{model.path.name} has sentence-transformers Dense modules ({', '.join(dense)}), which TEI's ONNX Runtime backend skips"
        if "model.safetensors" not in model.weights or quantize is not None:
            raise ModelError(
                f"{what}: its embeddings would be wrong",
                hint="give the model's model.safetensors (candle applies the Dense modules), without --quantize",
            )
        note = f"{what}: served by candle, which applies them"
        log.warning("%s", note)
        return OrtChoice(model.path, False, note)
    if model.onnx is not None:
        if quantize is not None:
            raise ModelError(
                f"{model.path.name} comes with its own {model.onnx}, which pytei does not re-quantize",
                hint="serve it without --quantize, or give the safetensors model to quantize it",
            )
        return OrtChoice(model.path, False, f"{model.onnx} is served by ONNX Runtime")
    try:
        return export_onnx(model, cache, pooling=pooling, quantize=quantize)
    except ModelError as exc:
        if quantize is not None:
            raise  # int8 was asked for: serving fp32 candle instead would hide that it is not there
        # Serving on, slower, beats refusing: candle serves what pytei cannot export (correctly).
        note = f"{exc}: served by candle, about 4-5x slower on a CPU than ONNX Runtime"
        log.warning("%s (%s)", note, exc.hint)
        return OrtChoice(model.path, False, note)


def export_onnx(
    model: ModelDir, cache: Cache, *, pooling: str | None = None, quantize: Quantize | None = None
) -> OrtChoice:
    """``model`` exported to ONNX (fp32, or int8 matmuls) for TEI's ort backend, checked against
    the numpy reference and cached (``pytei export onnx``); :class:`ModelError` when it cannot be."""
    head = _head(model, pooling)
    if head is None or "model.safetensors" not in model.weights:
        what = model.architectures[0] if model.architectures else model.model_type
        raise ModelError(
            f"no ONNX export for {what} ({model.model_type})",
            hint="pytei's exporter covers BERT, RoBERTa, XLM-RoBERTa and CamemBERT encoders with "
            "model.safetensors; give a model.onnx to use ONNX Runtime",
        )
    flavour = f"-{quantize}" if quantize else ""
    target = cache.area("onnx") / f"{_weights_digest(model, cache)[:24]}-{head}{flavour}-v{EXPORTER_VERSION}"
    what = f"{'int8 ' if quantize else ''}ONNX export of {model.path.name}"
    marker = target / ".pytei-export.json"
    if marker.is_file():
        data = json.loads(marker.read_text(encoding="utf-8"))
        return OrtChoice(target, True, f"{what} (cosine {data['cosine']:.6f} to the reference)")
    seconds, cosine = _export(model, head, target, cache, quantize)
    if seconds is not None:
        log.warning(
            "exported %s to %sONNX for the ort router in %.1f s (cosine %.6f to the reference); cached at %s",
            model.path.name, "int8 " if quantize else "", seconds, cosine, target,
        )  # fmt: skip
    return OrtChoice(target, True, f"{what} (cosine {cosine:.6f} to the reference)")


def _export(
    model: ModelDir, head: Head, target: Path, cache: Cache, quantize: Quantize | None
) -> tuple[float | None, float]:
    """Export into ``target`` unless another process did meanwhile: (seconds taken or None, cosine)."""
    started = time.monotonic()
    with cache.lock(f"onnx-{target.name}"):
        marker = target / ".pytei-export.json"
        if marker.is_file():
            return None, float(json.loads(marker.read_text(encoding="utf-8"))["cosine"])
        _export_into(model, head, target, quantize)
    inspect_model_dir(target)
    return time.monotonic() - started, float(json.loads(marker.read_text(encoding="utf-8"))["cosine"])


def _export_into(model: ModelDir, head: Head, target: Path, quantize: Quantize | None) -> None:
    started = time.monotonic()
    with atomic_dir(target) as scratch:
        from pytei.models.onnx_export import export_bert_onnx  # noqa: PLC0415 (imports onnx)

        try:
            export_bert_onnx(model.path, scratch / "model.onnx", head, quantize=quantize)
        except (ValueError, KeyError) as exc:
            raise ModelError(
                f"exporting {model.path} to ONNX failed ({exc})",
                hint="serve it with the cpu profile (candle), or give a model.onnx",
            ) from exc
        for name in _COMPANIONS:
            if (model.path / name).is_file():
                shutil.copyfile(model.path / name, scratch / name)
        if (model.path / "1_Pooling").is_dir():
            shutil.copytree(model.path / "1_Pooling", scratch / "1_Pooling")
        (scratch / "reference").mkdir()
        # the source weights stay reachable for checks (TEI reads only model.onnx here)
        (scratch / "reference" / "model.safetensors").symlink_to((model.path / "model.safetensors").resolve())
        cosine = _check(scratch, scratch / "model.onnx", head)
        bound = _MIN_COSINE_INT8 if quantize else _MIN_COSINE
        if not cosine >= bound:
            raise ModelError(
                f"the ONNX export of {model.path} does not match the reference (cosine {cosine:.6f} < {bound})",
                hint="serve it with the cpu profile (candle), and report the model to pytei",
            )
        seconds = time.monotonic() - started
        data = {
            "source": str(model.path), "head": head, "quantize": quantize, "cosine": cosine,
            "seconds": round(seconds, 1),
        }  # fmt: skip
        (scratch / ".pytei-export.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
