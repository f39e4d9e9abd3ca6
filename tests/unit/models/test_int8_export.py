"""int8 exports: dynamically quantized matmuls that ONNX Runtime fuses, checked, cached apart."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pytei.cache import Cache
from pytei.errors import ConfigError, ModelError
from pytei.models import for_ort
from pytei.models.for_ort import export_onnx, onnx_for_ort
from pytei.models.onnx_export import export_bert_onnx
from pytei.models.resolve import inspect_model_dir
from tests.support import bert_reference as br
from tests.support.model_fixtures import tiny_model_dir
from tests.support.tiny_models import TinySpec


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_every_linear_layer_becomes_an_int8_matmul_that_onnxruntime_fuses(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=4)
    fp32 = export_bert_onnx(model, tmp_path / "fp32.onnx", "encoder")
    int8 = export_bert_onnx(model, tmp_path / "int8.onnx", "encoder", quantize="int8")
    ops = _ops(int8)
    # each weight MatMul became an int8 one; the two attention products of activations stay fp32
    assert ops["MatMulInteger"] == ops["DynamicQuantizeLinear"] == _ops(fp32)["MatMul"] - ops["MatMul"] > 0
    assert ops["MatMul"] == 2 * TinySpec(arch="bert").layers
    weights = {t.name: t for t in onnx.load(str(int8)).graph.initializer}
    assert {t.data_type for n, t in weights.items() if "weight_int8" in n} == {onnx.TensorProto.INT8}
    # onnxruntime turns the pattern into its int8 kernels (not a dequantize + fp32 matmul)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    fused = _ops(tmp_path / "fused.onnx")
    assert fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] == ops["MatMulInteger"]
    assert fused["MatMulInteger"] == 0


def test_int8_stays_close_to_the_reference(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "m", TinySpec(arch="xlm-roberta"), seed=6)
    int8 = export_bert_onnx(model, tmp_path / "int8.onnx", "encoder", quantize="int8")
    batch = br.encode_batch(model, ["hello world", "a longer sentence with padding in the batch"])
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    got = session.run(["last_hidden_state"], batch.feeds())[0]
    want = br.forward(model, batch, "encoder", dtype=np.float64)
    mask = batch.attention_mask.astype(bool)
    for row in range(len(got)):
        a, b = got[row][mask[row]].ravel(), want[row][mask[row]].ravel()
        cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert 0.98 < cosine < 0.999999  # close, and really quantized


def test_int8_is_cached_apart_from_fp32_and_recorded(tmp_path: Path, cache: Cache) -> None:
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))
    fp32 = onnx_for_ort(model, cache)
    int8 = onnx_for_ort(model, cache, quantize="int8")
    assert int8.directory != fp32.directory
    assert int8.directory.name.endswith(f"-encoder-int8-v{for_ort.EXPORTER_VERSION}")
    assert int8.note.startswith("int8 ONNX export of m")
    marker = json.loads((int8.directory / ".pytei-export.json").read_text())
    assert marker["quantize"] == "int8" and 0.98 <= marker["cosine"] < 1.0
    assert json.loads((fp32.directory / ".pytei-export.json").read_text())["quantize"] is None
    assert onnx_for_ort(model, cache, quantize="int8") == int8


def test_an_int8_export_that_fails_its_check_is_an_error_not_a_silent_fallback(
    tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))
    monkeypatch.setattr(for_ort, "_check", lambda *a: 0.5)
    with pytest.raises(ModelError, match=r"cosine 0\.500000 < 0\.98"):
        onnx_for_ort(model, cache, quantize="int8")
    assert not any(cache.area("onnx").glob("*-int8-*"))
    assert not onnx_for_ort(model, cache).exported  # fp32 still falls back to candle with a note


def test_a_model_with_its_own_graph_is_not_requantized(tmp_path: Path, cache: Cache) -> None:
    directory = tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3)
    export_bert_onnx(directory, directory / "model.onnx", "encoder")
    with pytest.raises(ModelError, match="does not re-quantize"):
        onnx_for_ort(inspect_model_dir(directory), cache, quantize="int8")


def test_an_architecture_without_an_exporter_is_an_error_when_int8_is_asked(
    tmp_path: Path, cache: Cache
) -> None:
    directory = tiny_model_dir(tmp_path / "gpt", TinySpec(arch="bert"), seed=3)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    model = inspect_model_dir(directory)
    with pytest.raises(ModelError, match="no ONNX export"):
        onnx_for_ort(model, cache, quantize="int8")
    with pytest.raises(ModelError, match="no ONNX export"):
        export_onnx(model, cache, quantize="int8")


def test_the_setting_is_checked_and_needs_an_ort_router(tmp_path: Path) -> None:
    from pytei.config import load_settings
    from pytei.serving.backends import int8_note, prepare_backend
    from pytei.serving.options import ServeOptions

    settings = load_settings(env={}).with_flags({"serve.onnx_quantize": "int4"})
    with pytest.raises(ConfigError, match=r"serve\.onnx_quantize is 'int4'"):
        ServeOptions.from_settings(settings)
    options = ServeOptions.from_settings(load_settings(env={}).with_flags({"serve.onnx_quantize": "int8"}))
    assert options.onnx_quantize == "int8"
    assert ServeOptions.from_settings(load_settings(env={})).onnx_quantize == ""
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))
    with pytest.raises(ConfigError, match="needs an ort router"):
        prepare_backend(model, features=["candle", "http"], device="cpu", pooling=None, options=options,
                        cache=Cache(tmp_path / "c"))  # fmt: skip
    assert "rarely faster" in int8_note(None) and int8_note("avx512_vnni") == "int8 matmuls on avx512_vnni"
