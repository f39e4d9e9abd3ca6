"""``pytei.serving.api.serve()`` (yields a ready Client, always cleans up) and the pytest plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from pytei.errors import ServerExitedError
from pytei.serving.api import serve
from tests.support.serving import gone


def router_pids(fake_router: Path) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline", "status"])
        if str(fake_router) in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def test_serve_yields_a_ready_client_and_cleans_up(fake_router: Path, model_dir: Path) -> None:
    with serve(str(model_dir), binary=fake_router, api_key="serve-key") as client:
        assert client.health() is True
        info = client.info()  # the client carries the key; the router wants it
        assert info.model_id == str(model_dir) and info.kind == "embedding"
        [pid] = router_pids(fake_router)
        assert b"serve-key" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert client.base_url.startswith("http://127.0.0.1:")
    assert gone(pid, 1)


def test_serve_stops_the_router_when_the_block_raises(fake_router: Path, model_dir: Path) -> None:
    with pytest.raises(KeyboardInterrupt), serve(str(model_dir), binary=fake_router):
        [pid] = router_pids(fake_router)
        raise KeyboardInterrupt
    assert gone(pid, 1)


def test_serve_reports_a_crash(fake_router: Path, model_dir: Path) -> None:
    with (
        pytest.raises(ServerExitedError, match="SIGABRT"),
        serve(str(model_dir), binary=fake_router, router_args=["--fake-crash", "abort"]),
    ):
        pytest.fail("serve() yielded although the router crashed")
    assert router_pids(fake_router) == []


PLUGIN_TEST = """
def test_app_against_tei(pytei_server, pytei_client):
    assert pytei_client.health()
    info = pytei_client.info()
    assert info.model_id == {model!r}
    assert info.max_batch_tokens == 2048  # from pytei_router_args
    assert pytei_server.url == pytei_client.base_url
    print("ROUTER-PID", pytei_server.pid)
"""


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-rs", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pytest_plugin_serves_a_model_for_the_session(
    fake_router: Path, model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "test_app.py").write_text(PLUGIN_TEST.format(model=str(model_dir)))
    (tmp_path / "pytest.ini").write_text(
        textwrap.dedent(
            f"""
            [pytest]
            pytei_model = {model_dir}
            pytei_router_args = --max-batch-tokens 2048
            pytei_ready_timeout = 30
            """
        )
    )
    # The option and ini keys together.  (`--opt=value`: pytest looks for its ini file before
    # plugins register their options, so a separate path argument would be taken for a test path.)
    result = run_pytest(tmp_path, f"--pytei-binary={fake_router}")
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int(result.stdout.split("ROUTER-PID ")[1].split()[0])
    assert gone(pid, 1)  # stopped at the end of the session


def test_pytest_plugin_skips_without_a_router(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(PLUGIN_TEST.format(model="unused"))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "no router has been built yet" in result.stdout and "--pytei-binary" in result.stdout


ENGINE_TEST = """
def test_app_in_process(pytei_engine):
    result = pytei_engine.embed(["a text", "another"])
    assert result.vectors.shape[0] == 2
    print("ENGINE", type(pytei_engine).__name__)
"""


def test_pytest_plugin_offers_the_engine_in_process(tmp_path: Path) -> None:
    from tests.support.model_fixtures import tiny_model_dir
    from tests.support.tiny_models import TinySpec

    model = tiny_model_dir(tmp_path / "bert", TinySpec(arch="bert"), seed=4)
    (tmp_path / "test_app.py").write_text(ENGINE_TEST)
    # the fake extension stands in for `pytei build --engine` (computes the numpy reference)
    (tmp_path / "conftest.py").write_text(
        "from pytei.local import _native\nfrom tests.support import fake_native\n"
        "_native.use_native(fake_native.module())\n"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-rs", f"--pytei-model={model}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ENGINE LocalEngine" in result.stdout


def test_pytest_plugin_skips_the_engine_when_none_is_built(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(ENGINE_TEST)
    shadow = tmp_path / "shadow" / "pytei_native"  # an import that fails as a missing build does
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pytei_native._native')\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "shadow")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "pytei build --engine" in result.stdout
