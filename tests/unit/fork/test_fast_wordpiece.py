"""Patch 0013's tokenizer (tei_fork/fast-wordpiece) against tokenizers, on the real tokenizer.json
files of pytei's catalogue: every one that is a BERT WordPiece pipeline must get the fast path
and give the same ids as tokenizers' encode on the crate's generated corpus (accents, CJK,
controls, odd whitespace, added tokens, long words, both truncation sides)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pytei.errors import ModelError
from pytei.models.resolve import catalogue, packaged_model_dir
from tests.support import model_fixtures

CRATE = Path(__file__).resolve().parents[3] / "tei_fork" / "fast-wordpiece"


def _is_bert_wordpiece(tokenizer_json: Path) -> bool:
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    return (
        (spec.get("normalizer") or {}).get("type") == "BertNormalizer"
        and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        and (spec.get("model") or {}).get("type") == "WordPiece"
    )


def test_every_catalogue_wordpiece_tokenizer_agrees_with_tokenizers() -> None:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed: the crate's tests cannot run")
    cache = model_fixtures.shared_model_cache()
    paths = []
    try:
        for name in catalogue():
            tokenizer = packaged_model_dir(name, cache) / "tokenizer.json"
            if tokenizer.is_file() and _is_bert_wordpiece(tokenizer):
                paths.append(tokenizer)
    except ModelError as exc:
        pytest.skip(f"the PyPI-packaged models are not available ({exc.message}); set PYTEI_TEST_MODELS")
    # MiniLM, SPLADE-tiny and MPNet are BERT WordPiece pipelines: if this shrinks, say why
    assert len(paths) >= 3, paths
    result = subprocess.run(
        ["cargo", "test", "--locked", "--manifest-path", str(CRATE / "Cargo.toml"),
         "--test", "parity", "real_tokenizers", "--", "--nocapture"],
        env={**os.environ, "PYTEI_TOKENIZER_JSON": ":".join(str(p) for p in paths)},
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for path in paths:
        assert f"{path}: " in output and "encodings agree" in output, output[-4000:]
