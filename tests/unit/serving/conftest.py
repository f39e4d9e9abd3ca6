"""Fixtures for the serve tests: a fake router binary, a minimal model directory, and a guard
that fails a test which leaves a router running (then kills it, so the next test is clean)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pytei.serving.spec import RouterSpec
from tests.support.serving import write_model_dir

FAKE_ROUTER = Path(__file__).resolve().parents[2] / "support" / "fake_router.py"


@pytest.fixture(scope="session")
def fake_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable named like the real router that runs fake_router.py (-S: no site, fast)."""
    binary = tmp_path_factory.mktemp("router") / "text-embeddings-router"
    binary.write_text(
        f"#!{sys.executable} -S\nimport runpy\nrunpy.run_path({str(FAKE_ROUTER)!r}, run_name='__main__')\n",
        encoding="utf-8",
    )
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture
def make_spec(fake_router: Path, model_dir: Path, tmp_path: Path) -> Callable[..., RouterSpec]:
    """RouterSpec for the fake router; ``fake=[...]`` adds --fake-* arguments."""

    def make(*fake: str, **overrides: object) -> RouterSpec:
        values: dict[str, object] = {
            "binary": fake_router,
            "model_dir": model_dir,
            "model_id": str(model_dir),
            "name": "fake",
            "router_args": tuple(fake),
            "log_path": tmp_path / "router.log",
        }
        values.update(overrides)
        return RouterSpec(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def record(tmp_path: Path) -> Callable[[], dict[str, object]]:
    """Path-bound reader of the fake router's --fake-record file (waits for it a little)."""
    path = tmp_path / "record.json"

    def read() -> dict[str, object]:
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    read.path = path  # type: ignore[attr-defined]
    return read


@pytest.fixture(autouse=True)
def no_router_left(fake_router: Path) -> Iterator[None]:
    """Fail a test that leaves a fake router running (then kill it, so the next test is clean)."""
    yield
    left = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if (
            str(fake_router) not in (proc.info["cmdline"] or [])
            or proc.info["status"] == psutil.STATUS_ZOMBIE
        ):
            continue
        left.append(proc.pid)
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
    # Detached routers started by in-process CLI calls are our children: reap what they left.
    for child in psutil.Process().children():
        with contextlib.suppress(ChildProcessError, OSError, psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE or child.pid in left:
                os.waitpid(child.pid, 0)
    assert not left, f"routers left running: {left}"
