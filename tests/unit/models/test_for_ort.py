"""onnx_for_ort: a safetensors model exported once for TEI's ort router, checked, cached, or refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pytei.cache import Cache
from pytei.errors import ModelError
from pytei.models import for_ort
from pytei.models.for_ort import export_onnx, onnx_for_ort
from pytei.models.resolve import inspect_model_dir
from tests.support import bert_reference as br
from tests.support.model_fixtures import tiny_model_dir
from tests.support.tiny_models import TinySpec


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def test_an_encoder_is_exported_checked_and_reused(
    tmp_path: Path, cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))
    with caplog.at_level(logging.WARNING, logger="pytei.models"):
        first = onnx_for_ort(model, cache)
    assert first.exported and "cosine 1.0" in first.note
    assert sum("exported m to ONNX" in r.getMessage() for r in caplog.records) == 1
    served = inspect_model_dir(first.directory)
    assert served.onnx is not None
    for name in ("config.json", "tokenizer.json"):
        assert (first.directory / name).is_file()
    # The graph TEI will run gives the reference's hidden states.
    batch = br.encode_batch(model.path, ["hello world", "a longer sentence with padding in the batch"])
    session = ort.InferenceSession(str(first.directory / served.onnx), providers=["CPUExecutionProvider"])
    got = session.run(["last_hidden_state"], batch.feeds())[0]
    want = br.forward(model.path, batch, "encoder", dtype=np.float64)
    mask = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-4)

    caplog.clear()
    stamp = (first.directory / served.onnx).stat().st_mtime_ns
    again = onnx_for_ort(model, cache)
    assert again == first
    assert (first.directory / served.onnx).stat().st_mtime_ns == stamp
    assert not any("exported" in r.getMessage() for r in caplog.records)


def test_changed_weights_get_a_new_export(tmp_path: Path, cache: Cache) -> None:
    a = inspect_model_dir(tiny_model_dir(tmp_path / "a", TinySpec(arch="bert"), seed=1))
    b = inspect_model_dir(tiny_model_dir(tmp_path / "b", TinySpec(arch="bert"), seed=2))
    assert onnx_for_ort(a, cache).directory != onnx_for_ort(b, cache).directory


@pytest.mark.parametrize(
    ("spec", "pooling", "head"),
    [
        (TinySpec(arch="bert", labels=3), None, "classifier"),
        (TinySpec(arch="xlm-roberta", mlm=True), "splade", "mlm"),
        (TinySpec(arch="bert", mlm=True), "cls", "encoder"),
    ],
    ids=["classifier", "splade", "masked-lm-dense"],
)
def test_the_head_follows_the_model_and_pooling(
    tmp_path: Path, cache: Cache, spec: TinySpec, pooling: str | None, head: str
) -> None:
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", spec, seed=5))
    choice = onnx_for_ort(model, cache, pooling=pooling)
    assert choice.exported
    assert choice.directory.name.endswith(f"-{head}-v{for_ort.EXPORTER_VERSION}")
    assert json.loads((choice.directory / ".pytei-export.json").read_text())["head"] == head


def test_a_model_with_a_graph_is_served_as_it_is(tmp_path: Path, cache: Cache) -> None:
    path = tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3)
    exported = onnx_for_ort(inspect_model_dir(path), cache).directory
    model = inspect_model_dir(exported)
    choice = onnx_for_ort(model, cache)
    assert not choice.exported and choice.directory == exported
    assert "served by ONNX Runtime" in choice.note


def test_an_architecture_the_exporter_lacks_is_left_to_candle(tmp_path: Path, cache: Cache) -> None:
    path = tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="nomic_bert", architectures=["NomicBertModel"])
    (path / "config.json").write_text(json.dumps(config))
    choice = onnx_for_ort(inspect_model_dir(path), cache)
    assert not choice.exported and choice.directory == path
    assert "no ONNX export for NomicBertModel (nomic_bert): served by candle" in choice.note
    with pytest.raises(ModelError, match=r"no ONNX export for NomicBertModel \(nomic_bert\)"):
        export_onnx(inspect_model_dir(path), cache)
    assert not any(cache.area("onnx").glob("*-v*"))


def test_an_export_that_fails_its_check_leaves_nothing_and_falls_back(
    tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))
    monkeypatch.setattr(for_ort, "_check", lambda *_: 0.97)
    with caplog.at_level(logging.WARNING, logger="pytei.models"):
        choice = onnx_for_ort(model, cache)
    assert not choice.exported and choice.directory == model.path
    assert "does not match the reference (cosine 0.970000 < 0.9999)" in choice.note
    assert "served by candle" in choice.note
    assert [p.name for p in cache.area("onnx").iterdir() if not p.name.endswith((".json", ".lock"))] == []
    assert any("report the model to pytei" in r.getMessage() for r in caplog.records)
    # Fixed, it exports.
    monkeypatch.undo()
    assert onnx_for_ort(model, cache).exported


def test_a_non_finite_export_is_refused(tmp_path: Path, cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    model = inspect_model_dir(tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=3))
    monkeypatch.setattr(for_ort, "_check", lambda *_: float("nan"))
    choice = onnx_for_ort(model, cache)
    assert not choice.exported and "cosine nan" in choice.note


def test_a_model_with_a_dense_module_is_served_by_candle_not_onnx_runtime(tmp_path: Path, cache: Cache) -> None:
    """TEI's ort backend never applies modules.json's Dense modules: exporting would serve the
    unprojected (hidden-wide) pooling, so candle serves it; with only a graph there is no right
    way, and pytei says so."""
    model_dir = tiny_model_dir(tmp_path / "conan", TinySpec(hidden=32, dense_out=48), seed=4)
    choice = onnx_for_ort(inspect_model_dir(model_dir), cache)
    assert not choice.exported and choice.directory == model_dir
    assert "Dense modules (2_Dense)" in choice.note and "served by candle" in choice.note
    assert not any(cache.area("onnx").iterdir())  # nothing exported
    graph_only = tmp_path / "graph-only"
    graph_only.mkdir()
    for item in model_dir.iterdir():
        if item.name != "model.safetensors":
            (graph_only / item.name).symlink_to(item)
    (graph_only / "model.onnx").write_bytes(b"not read")
    with pytest.raises(ModelError, match="skips: its embeddings would be wrong"):
        onnx_for_ort(inspect_model_dir(graph_only), cache)
