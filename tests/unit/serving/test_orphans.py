"""The router never outlives pytei: SIGKILL of the parent, signals to a foreground `pytei serve`."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.serving import gone

# A parent process that starts a router through ServerProcess, prints the router's pid, and
# waits to be killed.  With "thread", the router is started from a worker thread that exits
# before the parent is killed (PR_SET_PDEATHSIG is tied to the forking thread).
PARENT = r"""
import sys, threading, time
from pathlib import Path
from pytei.serving.process import ServerProcess
from pytei.serving.spec import RouterSpec

spec = RouterSpec(binary=Path(sys.argv[1]), model_dir=Path(sys.argv[2]), log_path=Path(sys.argv[3]))
server = ServerProcess(spec, ready_timeout=20)
if sys.argv[4] == "thread":
    worker = threading.Thread(target=server.start)
    worker.start()
    worker.join()
else:
    server.start()
server.wait_ready()
time.sleep(0.2)
assert server.poll() is None, "router died with its launching thread"
print(server.pid, flush=True)
time.sleep(120)
"""


def read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"no output within {timeout}s; stderr: {proc.communicate()[1]}")
    line = proc.stdout.readline().strip()
    if not line:
        raise AssertionError(f"exited with {proc.wait()}; stderr: {proc.communicate()[1]}")
    return line


@pytest.mark.parametrize("launcher", ["main", "thread"])
def test_sigkill_of_the_parent_leaves_no_router(
    fake_router: Path, model_dir: Path, tmp_path: Path, launcher: str
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(fake_router), str(model_dir), str(tmp_path / "log"), launcher],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    router_pid = int(read_line(parent))
    assert psutil.Process(router_pid).ppid() == parent.pid
    parent.kill()
    parent.communicate()
    assert gone(router_pid, 5), "the router outlived its SIGKILLed parent"


def start_foreground(fake_router: Path, model_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(
                sys.executable,
                "-m",
                "pytei",
                "serve",
                "--binary",
                str(fake_router),
                "--model-id",
                str(model_dir),
            ),
            *("--port", "auto", "--name", "fg", *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground_serve_stops_the_router_on_signal(
    fake_router: Path, model_dir: Path, isolated_pytei: Path, signum: int
) -> None:
    pytei = start_foreground(fake_router, model_dir)
    url = read_line(pytei)
    assert url.startswith("http://127.0.0.1:")
    state = json.loads((isolated_pytei / "services" / "fg.json").read_text())
    assert state["mode"] == "foreground" and state["supervisor_pid"] == pytei.pid and state["url"] == url
    router_pid = state["pid"]
    os.kill(pytei.pid, signum)
    _, stderr = pytei.communicate(timeout=30)
    assert pytei.returncode == 0, stderr
    assert f"stopped fg ({signal.Signals(signum).name})" in stderr
    assert "graceful shutdown" in stderr  # the router's own log, streamed, drained on SIGTERM
    assert gone(router_pid, 1)
    assert not (isolated_pytei / "services" / "fg.json").exists()


def test_sigkill_of_foreground_serve_leaves_no_router(
    fake_router: Path, model_dir: Path, isolated_pytei: Path
) -> None:
    pytei = start_foreground(fake_router, model_dir, "--log-file", str(isolated_pytei / "fg.log"))
    read_line(pytei)
    router_pid = json.loads((isolated_pytei / "services" / "fg.json").read_text())["pid"]
    pytei.kill()
    pytei.communicate()
    assert gone(router_pid, 5)
    # The state file it left is pruned by the next `pytei ps`.
    ps = subprocess.run(
        [sys.executable, "-m", "pytei", "ps", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(ps.stdout) == []
    assert not (isolated_pytei / "services" / "fg.json").exists()


def test_foreground_serve_reports_a_router_that_dies(fake_router: Path, model_dir: Path) -> None:
    pytei = start_foreground(fake_router, model_dir, "--", "--fake-crash-after", "0.3")
    read_line(pytei)
    _, stderr = pytei.communicate(timeout=30)
    assert pytei.returncode == 19  # ServerExitedError
    assert "killed by SIGABRT" in stderr and "while serving" in stderr


def test_stop_of_a_foreground_service_goes_through_its_pytei(
    fake_router: Path, model_dir: Path, isolated_pytei: Path
) -> None:
    pytei = start_foreground(fake_router, model_dir)
    read_line(pytei)
    router_pid = json.loads((isolated_pytei / "services" / "fg.json").read_text())["pid"]
    stop = subprocess.run(
        [sys.executable, "-m", "pytei", "stop", "fg"], capture_output=True, text=True, check=False
    )
    assert stop.returncode == 0, stop.stderr
    _, stderr = pytei.communicate(timeout=30)
    assert pytei.returncode == 0, stderr  # a requested stop, not a router failure
    assert "stopped fg (SIGTERM)" in stderr
    assert gone(router_pid, 1)
