"""The extension's hand-written stub (pytei_native/_native.pyi) against the built module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import build_engine

pytestmark = pytest.mark.upstream


def test_the_stub_matches_the_built_extension() -> None:
    pytest.importorskip("mypy")
    build_engine("cpu")  # installs pytei_native (with its .pyi) into this Python
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "pytei_native._native"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
