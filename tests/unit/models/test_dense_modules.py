"""Sentence-transformers Dense modules after the pooling (Conan-embedding-v1, LaBSE, stella):
the reference applies what modules.json lists, and the matrix says so when a router does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from pytei.models import reference
from tests.support.tiny_models import TinySpec, write_tiny_model

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def conan_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinySpec(hidden=64, heads=4, intermediate=96, layers=2, dense_out=96)
    return write_tiny_model(tmp_path_factory.mktemp("dense") / "model", spec, seed=2)


def test_the_dense_module_comes_after_the_pooling(conan_like: Path) -> None:
    pooled = np.stack([reference.token_embeddings(conan_like, t)[0] for t in TEXTS])  # CLS
    dense = load_file(str(conan_like / "2_Dense" / "model.safetensors"))
    want = pooled @ dense["linear.weight"].T + dense["linear.bias"]
    got = reference.embed(conan_like, TEXTS, pooling="cls", normalize=False)
    assert got.shape == (2, 96)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tanh_and_no_bias(conan_like: Path, tmp_path: Path) -> None:
    other = tmp_path / "tanh"
    other.mkdir()
    for item in conan_like.iterdir():
        if item.name != "2_Dense":
            (other / item.name).symlink_to(item)
    (other / "2_Dense").mkdir()
    (other / "2_Dense" / "model.safetensors").symlink_to(conan_like / "2_Dense" / "model.safetensors")
    config = {"in_features": 64, "out_features": 96, "bias": False, "activation_function": "torch.nn.modules.activation.Tanh"}
    (other / "2_Dense" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (weight, bias, activation), = reference.dense_modules(other)
    assert bias is None and activation == "tanh" and weight.shape == (96, 64)
    got = reference.embed(other, TEXTS, pooling="cls", normalize=False)
    pooled = np.stack([reference.token_embeddings(other, t)[0] for t in TEXTS])
    np.testing.assert_allclose(got, np.tanh(pooled @ weight.T), rtol=1e-5, atol=1e-6)
    config["activation_function"] = "torch.nn.modules.activation.ReLU"
    (other / "2_Dense" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match=r"ReLU.*not covered"):
        reference.dense_modules(other)


def test_without_modules_json_there_is_no_dense(tmp_path: Path) -> None:
    plain = write_tiny_model(tmp_path / "plain", TinySpec(), seed=1)
    assert reference.dense_modules(plain) == []
    assert reference.embed(plain, TEXTS).shape == (2, 32)
