"""`pytei export onnx` as a user runs it: the export lands where asked, bad input exits cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx

from tests.support.model_fixtures import tiny_model_dir
from tests.support.tiny_models import TinySpec


def pytei(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytei", *args], capture_output=True, text=True, check=False)


def test_export_to_a_directory(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "m", TinySpec(arch="xlm-roberta", mlm=True), seed=2)
    result = pytei("export", "onnx", str(model), "--pooling", "splade", "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["directory"] == str(tmp_path / "out") and "cosine 1.0" in report["note"]
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits"]  # SPLADE: the masked-LM head
    assert (tmp_path / "out" / "tokenizer.json").is_file() and not (tmp_path / "out" / "reference").exists()


def test_a_model_it_cannot_export_and_a_busy_out_dir(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path / "m", TinySpec(arch="bert"), seed=2)
    config = json.loads((model / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    for name in ("tokenizer.json", "model.safetensors"):
        (other / name).write_bytes((model / name).read_bytes())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "deberta-v2", "architectures": ["DebertaV2Model"]}))
    refused = pytei("export", "onnx", str(other))
    assert refused.returncode == 17
    assert refused.stderr.strip().splitlines()[-1].startswith("pytei: error: no ONNX export for DebertaV2Model (deberta-v2)")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("mine")
    result = pytei("export", "onnx", str(model), "--out", str(busy))
    assert result.returncode == 3 and "--out" in result.stderr and (busy / "x").read_text() == "mine"
