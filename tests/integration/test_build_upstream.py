"""Real builds from the mirrors: CPU (HTTP and gRPC) and ort routers that serve real models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from pytei.cache import Cache
from pytei.models.resolve import packaged_model_dir
from tests.integration.conftest import build_router, pytei_cli, run_router, upstream_cache
from tests.support import model_fixtures

TEXTS = ["What is Deep Learning?", "Jetson Orin runs embeddings at the edge.", "a"]


def _embed(url: str, texts: list[str], *, truncate: bool = False) -> np.ndarray:
    body = {"inputs": texts, "normalize": True, "truncate": truncate}
    response = requests.post(f"{url}/embed", json=body, timeout=60)
    response.raise_for_status()
    return np.asarray(response.json(), dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosines: np.ndarray = np.sum(a * b, axis=1)
    return cosines


def test_cpu_build_serves_minilm_with_reference_values(minilm_dir: Path, bert_reference) -> None:  # type: ignore[no-untyped-def]
    binary = build_router("cpu")
    manifest = json.loads((binary.parent / "manifest.json").read_text())
    assert manifest["upstream"]["commit"] == "06670157fb6c1523482219bdb2d1660277d38088"
    assert [p["name"][:4] for p in manifest["patches"]][:2] == ["0001", "0002"]
    assert manifest["env"]["RUSTFLAGS"] == ""  # portable: upstream's target-cpu=native overridden
    assert manifest["binary"]["sha256"] and manifest["peak_memory_bytes"] > 0
    with run_router(binary, minilm_dir, ["--dtype", "float32"]) as url:
        info = requests.get(f"{url}/info", timeout=10).json()
        assert info["sha"] == manifest["fork_commit"]
        assert info["docker_label"].startswith("pytei-")
        got = _embed(url, TEXTS)
    expected = bert_reference.embed(minilm_dir, TEXTS, pooling="mean", normalize=True)
    assert got.shape == (3, 384)
    assert np.all(_cosines(got, expected) > 1 - 1e-4), _cosines(got, expected)


# Texts that take each branch of patch 0013's path: plain ASCII, accents (NFD), CJK, controls and
# odd whitespace, punctuation runs, a word longer than WordPiece's 100 characters, an added token
# (declined: tokenizers' encode), a prompt-length text that is truncated.
FAST_PATH_TEXTS = [
    "What is Deep Learning?",
    "Café au lait, naïve résumé — déjà vu!",
    "中文分词 and 日本語のテキスト with 한국어",
    "tabs\there\u00a0and\u3000ideographic spaces\u200b, a control \x07 char",
    "?!?... (nested [brackets]) {and} 'quotes' \"double\"",
    "x" * 120 + " after a long word",
    "the [MASK] token is an added token",
    " ".join(["truncated words go on"] * 200),
]


def test_fast_wordpiece_path_serves_the_same_vectors_as_tokenizers(minilm_dir: Path) -> None:
    """Patches 0013 and 0014 end to end: the same router with its fast tokenization path on the
    awaiting task (the default), in the workers (TEI_FAST_TOKENIZER_INLINE_BYTES=0) and off
    (TEI_FAST_TOKENIZER=0) gives the same embeddings, text by text and in one batch."""
    binary = build_router("cpu")
    vectors = {}
    settings = (
        ("fast", {}),
        ("fast-in-workers", {"TEI_FAST_TOKENIZER_INLINE_BYTES": "0"}),
        ("tokenizers", {"TEI_FAST_TOKENIZER": "0"}),
    )
    for label, env in settings:
        with run_router(binary, minilm_dir, ["--dtype", "float32"], env=env) as url:
            one_by_one = np.concatenate([_embed(url, [text], truncate=True) for text in FAST_PATH_TEXTS])
            batched = _embed(url, FAST_PATH_TEXTS, truncate=True)
            np.testing.assert_allclose(one_by_one, batched, atol=1e-4)
            vectors[label] = one_by_one
    for label in ("fast", "fast-in-workers"):
        cosines = _cosines(vectors[label], vectors["tokenizers"])
        assert np.all(cosines > 1 - 1e-6), (label, cosines)


def test_which_finds_the_build_and_its_manifest() -> None:
    build_router("cpu")
    which = pytei_cli("which", "--profile", "cpu")
    # build_router makes --fast builds, installed beside the release router as <profile>-fast
    assert which.returncode == 0 and which.stdout.strip().endswith("routers/cpu-fast/text-embeddings-router")
    manifest = json.loads(pytei_cli("which", "--profile", "cpu", "--manifest").stdout)
    assert manifest["profile"] == "cpu" and manifest["features"] == ["candle", "http"]


def _grpc_stubs(tmp_path: Path, source_dir: Path) -> Path:
    """Python stubs for the router's own proto/tei.proto, generated with grpcio-tools."""
    pytest.importorskip("grpc_tools")
    out = tmp_path / "stubs"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{source_dir / 'proto'}", f"--python_out={out}",
         f"--grpc_python_out={out}", str(source_dir / "proto" / "tei.proto")],
        check=True,
    )  # fmt: skip
    return out


def test_grpc_build_with_patch_0002_serves_embeddings(tmp_path: Path, minilm_dir: Path, bert_reference) -> None:  # type: ignore[no-untyped-def]
    grpc = pytest.importorskip("grpc")
    binary = build_router("cpu", transport="grpc")
    manifest = json.loads((binary.parent / "manifest.json").read_text())
    assert manifest["transport"] == "grpc" and "grpc" in manifest["features"]
    assert any(p["name"].startswith("0002-") for p in manifest["patches"])
    stubs = _grpc_stubs(tmp_path, Path(upstream_cache().root / "builds" / "cpu" / "src"))
    sys.path.insert(0, str(stubs))
    try:
        import tei_pb2  # type: ignore[import-not-found]
        import tei_pb2_grpc  # type: ignore[import-not-found]

        with run_router(binary, minilm_dir, ["--dtype", "float32"]) as url:
            target = url.removeprefix("http://")
            with grpc.insecure_channel(target) as channel:
                info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=30)
                assert info.sha == manifest["fork_commit"]
                reply = tei_pb2_grpc.EmbedStub(channel).Embed(
                    tei_pb2.EmbedRequest(inputs=TEXTS[0], normalize=True), timeout=30
                )
        got = np.asarray(reply.embeddings, dtype=np.float32)[None, :]
    finally:
        sys.path.remove(str(stubs))
    expected = bert_reference.embed(minilm_dir, TEXTS[:1], pooling="mean", normalize=True)
    assert _cosines(got, expected)[0] > 1 - 1e-4


def test_ort_build_serves_the_int8_minilm_onnx_export(model_cache: Cache, fixtures_dir: Path, bert_reference) -> None:  # type: ignore[no-untyped-def]
    binary = build_router("ort")
    manifest = json.loads((binary.parent / "manifest.json").read_text())
    assert "ort" in manifest["features"]
    assert manifest["native_libs"][0]["name"] == "onnxruntime"
    assert (binary.parent / "libonnxruntime.so.1").exists()  # beside the router (rpath $ORIGIN)
    onnx_dir = model_fixtures.minilm_onnx_dir(model_cache, fixtures_dir / "minilm-int8-onnx")
    with run_router(binary, onnx_dir) as url:
        info = requests.get(f"{url}/info", timeout=10).json()
        assert info["model_dtype"] == "float32"
        got = _embed(url, TEXTS)
    # An int8 export of the same weights: close to the float reference, not equal.
    reference_dir = packaged_model_dir("all-MiniLM-L6-v2", model_cache)
    expected = bert_reference.embed(reference_dir, TEXTS, pooling="mean", normalize=True)
    cosines = _cosines(got, expected)
    assert np.all(cosines > 0.97), cosines


def test_a_broken_cache_build_directory_is_rebuilt() -> None:
    """Interrupted or corrupted build trees are repaired by the next build."""
    cache = upstream_cache()
    build_router("cpu")
    src = cache.root / "builds" / "cpu" / "src"
    (src / "router" / "build.rs").write_text("garbage")  # an edit in the build tree is discarded
    result = pytei_cli("build", "--profile", "cpu", "--fast")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "garbage" not in (src / "router" / "build.rs").read_text()
