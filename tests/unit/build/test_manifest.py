"""BuildManifest: the typed contract between the build and everything after it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pytei.build.installs import find_router
from pytei.build.manifest import (
    MANIFEST_SCHEMA,
    BuildManifest,
    default_dtype_for,
    device_for,
)
from pytei.cache import Cache
from pytei.cli import main
from pytei.errors import CacheError

# A manifest written by pytei 0.1.0 (a real `pytei build --profile ort`; machine paths replaced).
STORED_0_1_0 = Path(__file__).with_name("data") / "manifest-0.1.0-ort.json"


def stored() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(STORED_0_1_0.read_text())
    return data


def contains(new: Any, old: Any) -> bool:
    """``new`` holds everything ``old`` does (objects may have gained keys), values unchanged."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and contains(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(contains(n, o) for n, o in zip(new, old, strict=True))
    return bool(new == old)


def test_a_0_1_0_manifest_reads_as_a_router_with_its_build_facts() -> None:
    manifest = BuildManifest.read(STORED_0_1_0)
    assert manifest.schema == MANIFEST_SCHEMA and manifest.artifact == "router"
    assert manifest.install_name == "ort" and manifest.profile == "ort"
    assert manifest.features == ("ort", "candle", "http") and manifest.transport == "http"
    assert manifest.device == "cpu" and manifest.default_dtype == "float32"
    assert manifest.mode == "release" and manifest.compute_cap is None
    assert manifest.fork_commit == stored()["fork_commit"]
    assert [p.name for p in manifest.patches] == [p["name"] for p in stored()["patches"]]
    assert manifest.native_libs[0].name == "onnxruntime" and manifest.native_libs[0].version == "1.22.1"
    assert manifest.units.built == 468 and manifest.units.total == 468
    assert manifest.binary.sha256 == stored()["binary"]["sha256"]
    assert {s.kind for s in manifest.sources} == {"checkout", "stand-in"}


def test_migration_keeps_every_0_1_0_field_and_only_adds() -> None:
    original = stored()
    migrated = BuildManifest.read(STORED_0_1_0).to_json()
    for key, value in original.items():
        if key != "schema":  # native_libs gain root and runtime_files, units total, sources patches
            assert contains(migrated[key], value), key
    assert set(migrated) - set(original) == {"artifact", "install_name", "device", "default_dtype"}


def test_round_trip_is_exact(tmp_path: Path) -> None:
    manifest = BuildManifest.read(STORED_0_1_0)
    manifest.write(tmp_path / "m.json")
    assert BuildManifest.read(tmp_path / "m.json") == manifest


def test_every_field_is_written() -> None:
    written = set(BuildManifest.read(STORED_0_1_0).to_json())
    assert {f.name for f in dataclasses.fields(BuildManifest)} <= written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable"),
        ("[]", "not a JSON object"),
        (json.dumps({"schema": 99}), "schema 99"),
        (json.dumps({**stored(), "transport": "carrier-pigeon"}), "transport is 'carrier-pigeon'"),
        (json.dumps({k: v for k, v in stored().items() if k != "binary"}), "KeyError"),
    ],
)
def test_a_bad_manifest_is_a_cache_error_naming_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(CacheError, match=message) as caught:
        BuildManifest.read(path)
    assert caught.value.exit_code == 5 and "pytei build" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("features", "cap", "device", "dtype"),
    [
        (["candle", "http"], None, "cpu", "float32"),
        (["ort", "candle", "http"], None, "cpu", "float32"),
        (["candle", "mkl", "static-linking", "http"], None, "cpu", "float32"),
        (["candle-cuda", "dynamic-linking", "http"], 90, "cuda", "float16"),
        (["candle-cuda-volta", "http"], 70, "cuda", "float16"),
        (["candle", "metal", "http"], None, "metal", "float16"),
        (["python", "http"], None, "cpu", None),
    ],
)
def test_device_and_default_dtype(features: list[str], cap: int | None, device: str, dtype: str | None) -> None:
    assert device_for(features, cap) == device
    assert default_dtype_for(features, device_for(features, cap)) == dtype


def test_installed_router_carries_the_manifest_and_which_prints_it_unchanged(
    isolated_pytei: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = isolated_pytei / "routers" / "ort"
    directory.mkdir(parents=True)
    (directory / "text-embeddings-router").write_bytes(b"\x7fELF")
    (directory / "manifest.json").write_text(STORED_0_1_0.read_text())
    router = find_router(Cache(isolated_pytei), "ort")
    assert router.manifest == BuildManifest.read(STORED_0_1_0)
    with pytest.raises(SystemExit) as exited:
        main(["which", "--profile", "ort", "--manifest"])
    assert exited.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert contains(printed, {k: v for k, v in stored().items() if k != "schema"})


def test_a_fast_build_sits_beside_the_release_router_and_the_newer_is_picked(isolated_pytei: Path) -> None:
    data = stored()
    for name, finished in (("ort", "2026-12-01T09:00:00+00:00"), ("ort-fast", "2026-12-01T10:00:00+00:00")):
        directory = isolated_pytei / "routers" / name
        directory.mkdir(parents=True)
        (directory / "text-embeddings-router").write_bytes(b"\x7fELF")
        (directory / "manifest.json").write_text(json.dumps({**data, "finished_at": finished}))
    cache = Cache(isolated_pytei)
    assert find_router(cache, "ort").profile == "ort-fast"  # newer of the two; both kept
    assert find_router(cache, "ort-fast").profile == "ort-fast"
    (isolated_pytei / "routers" / "ort" / "manifest.json").write_text(
        json.dumps({**data, "finished_at": "2026-12-01T11:00:00+00:00"})
    )
    assert find_router(cache, "ort").profile == "ort"
