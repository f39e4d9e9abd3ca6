"""Model resolution before launch: clear errors for broken directories, hub ids offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytei.cache import Cache
from pytei.errors import ModelError
from pytei.models.resolve import inspect_model_dir, resolve_model
from tests.support.serving import write_model_dir

GOOD = {"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": False}, "has no config.json"),
        ({"config": "{not json"}, "is not valid JSON"),
        ({"config": ["a list"]}, "is not a JSON object"),
        ({"config": {"model_type": "bert", "max_position_embeddings": 8}}, "no 'architectures' list"),
        ({"config": {"architectures": ["BertModel"], "max_position_embeddings": 8}}, "no 'model_type'"),
        ({"config": {"architectures": ["BertModel"], "model_type": "bert"}}, "no 'max_position_embeddings'"),
        ({"tokenizer": False}, "has no tokenizer.json"),
        ({"weights": False}, "has no weights"),
    ],
)
def test_broken_model_directories(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    path = write_model_dir(tmp_path / "model", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=message):
        inspect_model_dir(path)


def test_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is not a directory"):
        inspect_model_dir(tmp_path / "file")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"), Cache(tmp_path / "cache"))


def test_onnx_only_and_pooling(tmp_path: Path) -> None:
    path = write_model_dir(tmp_path / "m", config={**GOOD, "n_positions": 8}, weights=False)
    (path / "onnx").mkdir()
    (path / "onnx" / "model.onnx").write_bytes(b"")
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    model = inspect_model_dir(path)
    assert model.onnx == "onnx/model.onnx" and model.weights == ()
    assert model.pooling == "mean" and model.kind == "embedding"


def _hub_cache(root: Path, repo: str) -> Path:
    """A Hugging Face cache holding one snapshot of ``repo`` (the layout huggingface_hub reads)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    return write_model_dir(folder / "snapshots" / commit, config=GOOD)


def test_hub_id_offline_from_the_cache(tmp_path: Path) -> None:
    snapshot = _hub_cache(tmp_path / "hf", "org/tiny")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}
    model = resolve_model("org/tiny", Cache(tmp_path / "cache"), env=env, progress=False)
    assert model.path == snapshot.resolve()


def test_hub_id_offline_not_cached_is_a_clear_error(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    with pytest.raises(ModelError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve_model("org/absent", Cache(tmp_path / "cache"), env=env, progress=False)


def test_default_model_prefers_a_cached_hub_snapshot(tmp_path: Path) -> None:
    # The default model is in pytei's catalogue (a PyPI wheel) *and* on the hub: a snapshot
    # already in the Hugging Face cache is used as is, with no download at all.
    snapshot = _hub_cache(tmp_path / "hf", "sentence-transformers/all-MiniLM-L6-v2")
    env = {"HF_HUB_CACHE": str(tmp_path / "hf")}
    model = resolve_model("sentence-transformers/all-MiniLM-L6-v2", Cache(tmp_path / "cache"), env=env)
    assert model.path == snapshot.resolve()
