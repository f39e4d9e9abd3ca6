"""The deployment examples stay valid pytei configuration."""

from __future__ import annotations

import configparser
from pathlib import Path

from pytei.config import load_settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_systemd_example_config_is_valid() -> None:
    settings = load_settings(config_file=DEPLOY / "systemd" / "example.yaml", env={})
    assert [s["name"] for s in settings.services] == ["embed", "rerank"]
    assert settings.get_float("serve.ready_timeout") == 900.0


def test_systemd_unit_runs_pytei_serve_in_the_foreground() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(DEPLOY / "systemd" / "pytei@.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[1:3] == ["serve", "-c"]
    assert "--detach" not in service["ExecStart"]  # systemd supervises pytei, pytei the routers
    assert service["KillMode"] == "mixed"
