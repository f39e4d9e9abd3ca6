"""The CPU profiles beyond candle, on real routers: cpu-mkl starts with its OpenMP runtime beside
it, and an ort router serving int8 matmuls keeps the Lee-corpus scores of fp32."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pytei.bench.quality import lee_score, lee_set
from pytei.client import Client
from pytei.models.reference import forward
from pytei.models.weights import Batch
from tests.integration.conftest import build_router, pytei_cli, upstream_cache


def _serve(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    started = pytei_cli("serve", "--port", "auto", "--detach", "--json", *args, env=env, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    endpoint: dict[str, str] = json.loads(started.stdout)[0]
    return endpoint


def _reference(minilm_dir: Path, texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_padding()
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        hidden = forward(minilm_dir, Batch(ids, np.ones_like(ids), np.zeros_like(ids)), "encoder")[0]
        rows.append(hidden.mean(0) / np.linalg.norm(hidden.mean(0)))
    return np.array(rows)


def test_cpu_mkl_starts_without_library_paths_and_matches_the_reference(minilm_dir: Path) -> None:
    binary = build_router("cpu-mkl")
    assert (binary.parent / "libiomp5.so").is_file()
    readelf = shutil.which("readelf")
    if readelf:
        dynamic = subprocess.run([readelf, "-d", str(binary)], capture_output=True, text=True, check=True).stdout
        assert "$ORIGIN" in dynamic and "libiomp5.so" in dynamic
    env = {k: "" for k in ("LD_LIBRARY_PATH",) if k in os.environ}
    endpoint = _serve("--model-id", str(minilm_dir), "--name", "it-mkl", "--binary", str(binary), env=env)
    try:
        texts = ["The quick brown fox jumps over the lazy dog.", "Intel's math kernels on two cores."]
        with Client(endpoint["url"]) as client:
            got = client.embed(texts).vectors
        cosines = np.sum(got * _reference(minilm_dir, texts), axis=1)
        assert cosines.min() > 0.9999, cosines
    finally:
        assert pytei_cli("stop", "it-mkl").returncode == 0


def test_int8_on_ort_is_int8_and_keeps_the_human_ranking(minilm_dir: Path) -> None:
    binary = build_router("ort")
    lee = lee_set(upstream_cache())
    endpoint = _serve("--model-id", str(minilm_dir), "--name", "it-int8", "--binary", str(binary), "--quantize", "int8")
    try:
        assert "-int8-" in Path(endpoint["model_dir"]).name
        with Client(endpoint["url"]) as client:
            vectors = np.concatenate([client.embed(list(lee.documents[i : i + 10])).vectors for i in range(0, 50, 10)])
    finally:
        assert pytei_cli("stop", "it-int8").returncode == 0
    score = lee_score(vectors, lee)
    # fp32 (numpy reference): Pearson 0.6564, nDCG@10 0.8686 (tests/unit/bench/test_quality.py)
    assert abs(score.pearson - 0.6564) <= 0.005 and abs(score.ndcg10 - 0.8686) <= 0.005, score
    fp32 = _reference(minilm_dir, list(lee.documents[:5]))
    cosines = np.sum(vectors[:5] / np.linalg.norm(vectors[:5], axis=1, keepdims=True) * fp32, axis=1)
    assert cosines.min() > 0.98 and cosines.max() < 0.99999, cosines  # close, and really quantized


@pytest.fixture(autouse=True)
def _no_stray_services() -> None:
    pytei_cli("stop", "--all")
