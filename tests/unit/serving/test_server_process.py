"""ServerProcess against the fake router: readiness, timeouts, crashes, ports, stopping."""

from __future__ import annotations

import io
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from pytei.errors import (
    ConfigError,
    PortInUseError,
    RouterNotBuiltError,
    ServerExitedError,
    ServerStartTimeout,
)
from pytei.serving.health import http_get
from pytei.serving.process import ServerProcess, stop_all, wait_all_ready
from pytei.serving.spec import RouterSpec, describe_exit, router_environment
from tests.support.serving import free_port, gone

Spec = Callable[..., RouterSpec]


def test_ready_when_health_answers_and_stopped_on_exit(make_spec: Spec, model_dir: Path) -> None:
    with ServerProcess(make_spec("--fake-delay", "0.3"), ready_timeout=20) as server:
        assert server.ready_s is not None and server.ready_s >= 0.3
        assert http_get(server.url, "/health", timeout=2)[0] == 200
        argv = psutil.Process(server.pid).cmdline()
        pid = server.pid
    # Everything pytei means is on the command line, explicitly.
    joined = " ".join(argv)
    assert f"--model-id {model_dir}" in joined
    assert "--hostname 127.0.0.1" in joined
    assert f"--port {server.port}" in joined
    assert f"--prometheus-port {server.prometheus_port}" in joined
    assert server.port != server.prometheus_port
    assert server.returncode == 0  # drained on SIGTERM
    assert gone(pid, 1)


def test_api_key_in_environment_not_argv(make_spec: Spec, record: Callable[[], dict[str, object]]) -> None:
    secret = "s3cr3t-key-for-test"
    spec = make_spec("--fake-record", str(record.path), api_key=secret)  # type: ignore[attr-defined]
    with ServerProcess(spec, ready_timeout=20) as server:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
        assert secret not in repr(spec)
        assert record()["env"]["API_KEY"] == secret  # type: ignore[index]
        assert http_get(server.url, "/info", timeout=2)[0] == 401
        status, _ = http_get(server.url, "/info", timeout=2, headers={"Authorization": f"Bearer {secret}"})
        assert status == 200


def test_inherited_clap_variables_are_scrubbed(
    make_spec: Spec, record: Callable[[], dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without scrubbing, PORT/HOSTNAME would not matter here (flags win) but POOLING, API_KEY or
    # MAX_BATCH_TOKENS would silently change the router.
    monkeypatch.setenv("HOSTNAME", "buildbox")
    monkeypatch.setenv("PORT", "80")
    monkeypatch.setenv("POOLING", "splade")
    monkeypatch.setenv("API_KEY", "leaked")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    spec = make_spec("--fake-record", str(record.path), env={"CUDA_VISIBLE_DEVICES": "1"})  # type: ignore[attr-defined]
    with ServerProcess(spec, ready_timeout=20) as server:
        env = record()["env"]
        assert isinstance(env, dict)
        for name in ("HOSTNAME", "PORT", "POOLING", "API_KEY"):
            assert name not in env
        assert env["LOG_LEVEL"] == "debug"  # not a clap variable: kept
        assert env["CUDA_VISIBLE_DEVICES"] == "1"
        status, body = http_get(server.url, "/info", timeout=2)
        assert status == 200 and b'"mean"' in body


def test_router_environment() -> None:
    env = router_environment({"PORT": "1", "PATH": "/bin"}, extra={"DTYPE": "float32"}, api_key="k")
    assert env == {"PATH": "/bin", "DTYPE": "float32", "API_KEY": "k"}


def test_ready_timeout_kills_the_router(make_spec: Spec) -> None:
    server = ServerProcess(make_spec("--fake-delay", "30"), ready_timeout=0.5, stop_timeout=2)
    started = time.monotonic()
    with pytest.raises(ServerStartTimeout, match=r"not ready within 0\.5s") as info:
        server.__enter__()
    assert time.monotonic() - started < 5
    assert "ready-timeout" in (info.value.hint or "")
    assert server.returncode is not None
    assert gone(server.pid, 1)


def test_crash_before_ready_reports_sigabrt_and_log_tail(make_spec: Spec) -> None:
    server = ServerProcess(make_spec("--fake-crash", "abort"), ready_timeout=20)
    with pytest.raises(ServerExitedError) as info:
        server.__enter__()
    err = info.value
    assert err.returncode == -signal.SIGABRT
    assert "SIGABRT" in err.message and "panicked" in err.message
    assert "tokenizer.json not found" in err.log_tail
    assert str(server.log_path) in (err.hint or "")
    assert server.log_path.exists()  # kept for the user to read


def test_crash_with_exit_status(make_spec: Spec) -> None:
    with pytest.raises(ServerExitedError, match="exited with status 3") as info:
        ServerProcess(
            make_spec("--fake-crash", "exit", "--fake-exit-code", "3"), ready_timeout=20
        ).__enter__()
    assert info.value.returncode == 3
    assert "Could not create backend" in info.value.log_tail


def test_death_after_ready_is_reported(make_spec: Spec) -> None:
    with ServerProcess(make_spec("--fake-crash-after", "0.2"), ready_timeout=20) as server:
        assert gone(server.pid, 5)
        with pytest.raises(ServerExitedError, match=r"SIGABRT.*while serving"):
            server.check_alive()


def test_busy_port_is_reported_before_launch(
    make_spec: Spec, record: Callable[[], dict[str, object]]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        spec = make_spec("--fake-record", str(record.path), port=port)  # type: ignore[attr-defined]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            ServerProcess(spec).start()
    assert not record.path.exists()  # type: ignore[attr-defined]  # nothing was launched


def test_fixed_ports_are_used(make_spec: Spec) -> None:
    port, prometheus = free_port(), free_port()
    with ServerProcess(make_spec(port=port, prometheus_port=prometheus), ready_timeout=20) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.prometheus_port == prometheus


def test_prometheus_port_from_router_args_is_respected(make_spec: Spec) -> None:
    prometheus = free_port()
    spec = make_spec("--prometheus-port", str(prometheus))
    assert spec.prometheus_port == prometheus
    assert spec.argv(8080, prometheus).count("--prometheus-port") == 1


def test_stop_escalates_to_sigkill(make_spec: Spec) -> None:
    server = ServerProcess(make_spec("--fake-ignore-term"), ready_timeout=20, stop_timeout=0.3)
    with server:
        pass
    assert server.returncode == -signal.SIGKILL


def test_hurry_skips_the_graceful_wait(make_spec: Spec) -> None:
    server = ServerProcess(make_spec("--fake-ignore-term"), ready_timeout=20, stop_timeout=30).start()
    server.wait_ready()
    hurry = threading.Event()
    hurry.set()
    started = time.monotonic()
    server.stop(hurry=hurry)
    assert time.monotonic() - started < 5
    assert server.returncode == -signal.SIGKILL


def test_temporary_log_removed_after_clean_stop(make_spec: Spec) -> None:
    with ServerProcess(make_spec(log_path=None), ready_timeout=20) as server:
        log = server.log_path
        assert log.exists()
    assert not log.exists()


def test_logs_are_streamed_with_prefix(make_spec: Spec) -> None:
    stream = io.StringIO()
    with ServerProcess(make_spec(), ready_timeout=20, log_stream=stream, log_prefix="[fake] "):
        pass
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("[fake] ") and "Ready" in line for line in lines)
    assert any("graceful shutdown" in line for line in lines)


def test_several_routers_become_ready_together(make_spec: Spec, tmp_path: Path) -> None:
    servers = [
        ServerProcess(make_spec("--fake-delay", "1.0", name=f"r{i}", log_path=tmp_path / f"{i}.log"))
        for i in range(3)
    ]
    started = time.monotonic()
    try:
        for server in servers:
            server.start()
        wait_all_ready(servers, timeout=20)
        elapsed = time.monotonic() - started
    finally:
        stop_all(servers, timeout=5)
    assert len({s.port for s in servers} | {s.prometheus_port for s in servers}) == 6
    assert elapsed < 2.5  # loaded concurrently (one after the other would take 3 s and more)
    assert all(s.returncode == 0 for s in servers)


def test_started_from_a_worker_thread_survives_the_thread(make_spec: Spec) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits; pytei forks from a long-lived one.
    box: dict[str, ServerProcess] = {}
    worker = threading.Thread(target=lambda: box.setdefault("s", ServerProcess(make_spec()).start()))
    worker.start()
    worker.join()
    server = box["s"]
    try:
        server.wait_ready(20)
        time.sleep(0.1)
        assert server.returncode is None
    finally:
        server.stop()


def test_own_flags_in_router_args_are_refused(make_spec: Spec) -> None:
    with pytest.raises(ConfigError, match="visible to every user"):
        make_spec("--api-key", "x")
    with pytest.raises(ConfigError, match="set by pytei"):
        make_spec("--port=9000")
    with pytest.raises(ConfigError, match="set by pytei"):
        make_spec("-p9000")
    with pytest.raises(ConfigError, match="twice"):
        make_spec("--pooling", "cls", pooling="mean")


def test_missing_binary(make_spec: Spec, tmp_path: Path) -> None:
    with pytest.raises(RouterNotBuiltError, match="not an executable file"):
        ServerProcess(make_spec(binary=tmp_path / "nope")).start()


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with status 0"),
        (2, "exited with status 2"),
        (-6, "killed by SIGABRT (the router panicked"),
        (-9, "killed by SIGKILL (out of memory"),
        (-15, "killed by SIGTERM"),
    ],
)
def test_describe_exit(code: int, text: str) -> None:
    assert text in describe_exit(code)
