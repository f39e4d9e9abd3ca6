"""pytei serve / health / stop / ps with a real router built by pytei, serving real models."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import psutil
import pytest

from pytei.errors import HealthCheckError, ModelError
from tests.integration.conftest import build_router, pytei_cli


def _routers_of(binary: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["exe", "cmdline"]):
        try:
            if proc.info["exe"] == str(binary) or (proc.info["cmdline"] or [""])[0] == str(binary):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_serve_detach_health_stop_leaves_no_process(minilm_dir: Path) -> None:
    binary = build_router("cpu")
    before = {p.pid for p in _routers_of(binary)}
    started = pytei_cli("serve", "--model-id", str(minilm_dir), "--name", "it-minilm", "--port", "auto",
                        "--binary", str(binary), "--detach", "--json", timeout=600)  # fmt: skip
    assert started.returncode == 0, started.stderr
    endpoint = json.loads(started.stdout)
    endpoint = endpoint[0] if isinstance(endpoint, list) else endpoint
    url = endpoint["url"]
    try:
        listed = json.loads(pytei_cli("ps", "--json").stdout)
        assert any(s["name"] == "it-minilm" for s in listed)
        health = pytei_cli("health", url, "--json")
        assert health.returncode == 0, health.stderr
        report = json.loads(health.stdout)
        assert report["model_id"] == str(minilm_dir)
        assert report["model_type"] == "embedding"
        assert report["max_input_length"] == 256
        assert report["version"] == "1.9.3"
        assert report["sha"] == json.loads((binary.parent / "manifest.json").read_text())["fork_commit"]
    finally:
        stopped = pytei_cli("stop", "it-minilm")
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 10
    while {p.pid for p in _routers_of(binary)} - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {p.pid for p in _routers_of(binary)} - before == set()
    gone = pytei_cli("health", url, "--json")
    assert gone.returncode == HealthCheckError.exit_code
    assert "refused" in gone.stdout + gone.stderr


@pytest.mark.parametrize(
    ("breakage", "message"),
    [("config.json", "no config.json"), ("tokenizer.json", "no tokenizer.json"), ("model.safetensors", "no weights")],
)
def test_broken_model_directory_is_refused_before_launch(
    tmp_path: Path, minilm_dir: Path, breakage: str, message: str
) -> None:
    binary = build_router("cpu")
    broken = tmp_path / "broken"
    shutil.copytree(minilm_dir, broken, symlinks=True)
    (broken / breakage).unlink()
    before = {p.pid for p in _routers_of(binary)}
    result = pytei_cli("serve", "--model-id", str(broken), "--binary", str(binary), "--port", "auto", timeout=120)
    assert result.returncode == ModelError.exit_code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert {p.pid for p in _routers_of(binary)} == before  # nothing was launched


def test_library_serve_yields_a_ready_client(minilm_dir: Path) -> None:
    from pytei import serve

    binary = build_router("cpu")
    with serve(str(minilm_dir), binary=binary) as client:
        info = client.info()
        assert info.kind == "embedding"
        assert client.embed(["hello"]).vectors.shape == (1, 384)
        url = client.base_url
    assert not client_reachable(url)


def client_reachable(url: str) -> bool:
    import requests

    try:
        requests.get(f"{url}/health", timeout=2)
    except requests.ConnectionError:
        return False
    return True
