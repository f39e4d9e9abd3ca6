"""Shared fixtures: every test gets its own pytei cache and a clean PYTEI_* environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_pytei(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private PYTEI_HOME; settings from the developer's environment never leak in."""
    home = tmp_path_factory.mktemp("pytei-home")
    for name in list(os.environ):
        if name.startswith("PYTEI_") and name not in ("PYTEI_UPSTREAM_TESTS", "PYTEI_TEST_MODELS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYTEI_HOME", str(home))
    yield home
