"""The compatibility matrix's definition, cell selection, verdicts and report (no router here)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from matrix import cell as cell_runner
from matrix import checks, report, run
from matrix.cells import STATUSES, MatrixModel, load_matrix
from pytei.build.profiles import load_profiles
from pytei.models.resolve import catalogue
from tests.support.tiny_models import TinySpec

DATA = Path(__file__).with_name("data")


def test_cells_toml_parses_and_names_real_profiles_and_models() -> None:
    matrix = load_matrix()
    profiles, models = load_profiles(), catalogue()
    assert {p.build_profile for p in matrix.profiles} == set(profiles)  # every profile has its row
    assert {"cpu", "ort", "cpu-mkl", "cpu-grpc"} <= {p.name for p in matrix.profiles}
    tiny_fields = {f.name for f in dataclasses.fields(TinySpec)}
    for model in matrix.models:
        if model.source == "catalogue":
            assert model.name in models
        elif model.source == "random":
            assert set(model.spec) <= tiny_fields and model.like
            TinySpec(**model.spec)
        else:
            assert model.why
        if model.reference:
            assert model.reference in models
    assert [r for r, pinned in matrix.refs if pinned] == ["v1.9.3"]
    assert len(matrix.models) >= 8 and len(matrix.refs) == 3


@pytest.mark.parametrize("kind", ["cpu", "gpu:90", "gpu:80", "arm64", "macos"])
def test_every_cell_has_a_unique_id_and_a_status_or_a_run(kind: str) -> None:
    cells = load_matrix().cells(kind)
    assert len({c.id for c in cells}) == len(cells)
    for cell in cells:
        assert cell.runs or (cell.status in STATUSES and cell.reason), cell.id


def test_what_runs_on_a_cpu_machine() -> None:
    cells = {c.id: c for c in load_matrix().cells("cpu")}
    assert cells["v1.9.3--ort--all-MiniLM-L6-v2-int8-onnx"].runs
    na = cells["v1.9.3--cpu--all-MiniLM-L6-v2-int8-onnx"]
    assert not na.runs and na.status == "not-applicable" and "ONNX graph only" in na.reason
    assert "PR #899" in cells["v1.9.3--cpu-mkl--bge-m3-shape"].reason
    hopper = cells["v1.9.3--cuda-hopper--any"]
    assert not hopper.runs and hopper.status == "untested" and "needs a gpu:90 machine" in hopper.reason
    other = cells["main--ort--all-MiniLM-L6-v2"]
    assert other.runs and not other.pinned and "main--ort--bge-m3-shape" not in cells
    mkl = cells["main--cpu-mkl--any"]
    assert not mkl.runs and "only cpu, ort are built" in mkl.reason and "fork check --ref main" in mkl.reason
    assert cells["v1.9.3--cpu--all-mpnet-base-v2"].runs
    qwen3 = cells["v1.9.3--cpu--Qwen3-Embedding-0.6B-shape"]
    assert qwen3.runs and qwen3.model is not None and qwen3.model.pooling == "last-token"
    assert qwen3.model.spec == {"arch": "qwen3", "hidden": 1024, "heads": 16, "kv_heads": 8, "head_dim": 128,
                                "intermediate": 3072, "layers": 2}  # fmt: skip
    nomic = cells["v1.9.3--ort--nomic-embed-text-v1.5-shape"]
    assert nomic.runs and nomic.model is not None and nomic.model.spec["arch"] == "nomic"
    quick = {c.id for c in cells.values() if "quick" in c.tags}
    assert quick == {"v1.9.3--cpu--all-MiniLM-L6-v2", "v1.9.3--ort--all-MiniLM-L6-v2"}
    on_h200 = load_matrix().cells("gpu:90")
    assert not any(c.runs for c in on_h200 if c.profile.run != "gpu:90")
    assert {c.profile.name for c in on_h200 if c.runs} == {"cuda-hopper"}


def test_the_report_renders_the_golden_file() -> None:
    cells = report.load_cells(DATA / "cells")
    rendered = report.render_markdown(cells)
    assert rendered == (DATA / "matrix.md").read_text(encoding="utf-8")
    # the failing cell, with its reason, and the summary's worst status per pair
    assert "| v1.9.3 | cpu | bge-reranker-large-shape | ❌ failing |" in rendered
    assert "parity: rerank_max_abs 0.02 > 0.005" in rendered
    assert "[manifest](artifacts/v1.9.3--ort--all-MiniLM-L6-v2/manifest.json)" in rendered
    assert "| cpu | ❔ | ⚪ | ❌ |" in rendered  # cpu: MiniLM untested here, int8 n/a, reranker failing
    data = json.loads(report.render_json(cells))
    # a GPU host's cell for the model outranks the profile's "(any)" row from a CPU host
    assert data["summary"]["cuda-hopper"]["all-MiniLM-L6-v2"] == "verified"
    assert data["summary"]["cuda-hopper"]["bge-reranker-large-shape"] == "untested"
    assert data["summary"]["ort"]["all-MiniLM-L6-v2"] == "verified"


def test_the_html_page_shows_reasons_under_cells_that_are_not_verified() -> None:
    page = report.render_html(report.load_cells(DATA / "cells"))
    assert page.count("<tr data-ref=") == 6
    assert '<span class="why">rerank_max_abs 0.02 &gt; 0.005</span>' in page
    assert "needs a gpu:90 machine" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing fetched
    assert '<select name="profile">' in page
    assert '<a href="artifacts/v1.9.3--ort--all-MiniLM-L6-v2/router.log">log</a>' in page


def test_parity_and_overall_verdicts() -> None:
    ok = checks._parity_column({"embed_min_cosine": 0.9995, "finite": True, "batch_invariance_cosine": 1.0})
    assert ok["status"] == "verified"
    bad = checks._parity_column({"embed_min_cosine": 0.97, "finite": False})
    assert bad["status"] == "failing" and "non-finite" in bad["detail"] and "0.97 < 0.999" in bad["detail"]
    assert checks._parity_column({"rerank_max_abs": 0.006})["status"] == "failing"
    gelu = checks._parity_column({"splade_min_cosine": 0.9987, "splade_min_cosine_vs_tanh_gelu": 0.99999})
    assert gelu["status"] == "failing" and "tanh approximation" in gelu["detail"]
    assert checks._parity_column({})["status"] == "untested"
    columns = {"a": {"status": "verified"}, "b": {"status": "not-applicable"}, "c": {"status": "failing", "detail": "x"}}
    assert cell_runner._overall(columns, None) == "failing"
    assert cell_runner._first_problem(columns) == "c: x"
    assert cell_runner._overall({"plan": {"status": "verified"}}, "untested") == "untested"
    assert cell_runner._overall({"a": {"status": "verified"}, "b": {"status": "not-applicable"}}, None) == "verified"


def test_rerun_failed_and_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "CELLS_DIR", tmp_path)
    cells = {c.id: c for c in load_matrix().cells("cpu")}
    good, bad = cells["v1.9.3--ort--all-MiniLM-L6-v2"], cells["v1.9.3--cpu--all-MiniLM-L6-v2"]
    (tmp_path / f"{good.id}.json").write_text(json.dumps({"status": "verified", "inputs": "old"}))
    (tmp_path / f"{bad.id}.json").write_text(json.dumps({"status": "failing", "inputs": "now"}))

    def args(**given: str | None) -> argparse.Namespace:
        return argparse.Namespace(**{"tag": None, "ref": None, "profile": None, "model": None, "rerun": "all", **given})

    assert run.wanted(good, args(), "now") and run.wanted(bad, args(), "now")
    assert not run.wanted(good, args(rerun="failed"), "now") and run.wanted(bad, args(rerun="failed"), "now")
    assert run.wanted(good, args(rerun="stale"), "now")
    assert not run.wanted(good, args(profile="cpu,cpu-mkl"), "now")
    assert run.wanted(cells["v1.9.3--cpu--splade-tiny"], args(rerun="failed"), "now")  # never ran
    assert len(run.inputs_digest()) == 16


def test_the_readme_block_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{report.README_BEGIN}\nold\n{report.README_END}\nafter\n", encoding="utf-8")
    assert report.update_readme(readme, report.load_cells(DATA / "cells"))
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{report.README_END}\nafter\n")
    assert "old" not in text and "| cpu | ❔ | ⚪ | ❌ |" in text and "**Summary**" in text
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no block\n", encoding="utf-8")
    assert not report.update_readme(plain, [])


def test_a_router_that_skips_the_dense_module_fails_parity_with_the_dimension(tmp_path: Path) -> None:
    """TEI's ORT backend ignores a model's sentence-transformers Dense module (only candle
    applies it): the cell must say the dimension is wrong, not crash on the shapes."""
    from types import SimpleNamespace

    from pytei.models import reference
    from tests.support.tiny_models import TinySpec, write_tiny_model

    model_dir = write_tiny_model(tmp_path / "m", TinySpec(hidden=64, heads=4, intermediate=96, dense_out=96), seed=3)
    pooled = np.stack([reference.token_embeddings(model_dir, t)[0] for t in checks.TEXTS])  # no Dense: 64 wide

    class SkipsDense:
        def tokenize(self, text: str) -> list[int]:
            return [1]

        def embed(self, texts: list[str]) -> SimpleNamespace:
            rows = pooled[[checks.TEXTS.index(t) for t in texts]]
            return SimpleNamespace(vectors=rows / np.linalg.norm(rows, axis=1, keepdims=True))

    model = MatrixModel(name="conan-like", source="random", pooling="cls")
    routes, parity = checks.routes_and_parity(SkipsDense(), model, model_dir)
    assert routes["status"] == "verified"
    assert parity["status"] == "failing" and "dimension 64, the reference's 96" in parity["detail"]
