"""The matrix page in a real browser (headless Chromium, Debian's package): its script runs,
filters rows, and the reasons show.  Skipped, saying why, where no Chromium is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from matrix import report

DATA = Path(__file__).with_name("data")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")


def _dom(url: str, tmp_path: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=2000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def _visible_rows(dom: str) -> list[str]:
    rows = re.findall(r'<tr data-ref="[^"]*" data-profile="([^"]*)" data-model="([^"]*)" data-status="([^"]*)"( style="[^"]*")?>', dom)
    return [f"{p}/{m}/{s}" for p, m, s, style in rows if "none" not in style]


def test_the_page_renders_and_filters_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "matrix.html"
    page.write_text(report.render_html(report.load_cells(DATA / "cells")), encoding="utf-8")
    everything = _dom(page.as_uri(), tmp_path)
    assert len(_visible_rows(everything)) == 6
    assert '<span id="shown">6</span>' in everything  # the script ran
    assert "rerank_max_abs 0.02 &gt; 0.005" in everything
    failing = _dom(page.as_uri() + "#status=failing", tmp_path)
    assert _visible_rows(failing) == ["cpu/bge-reranker-large-shape/failing"]
    assert '<span id="shown">1</span>' in failing
    ort = _dom(page.as_uri() + "#profile=ort", tmp_path)
    assert sorted(_visible_rows(ort)) == ["ort/(any)/unsupported", "ort/all-MiniLM-L6-v2/verified"]
