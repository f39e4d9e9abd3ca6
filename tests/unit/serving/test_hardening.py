"""What a newcomer's run found (issue: hardening): secrets in logs, orphans at start-up, restarts,
bind errors, quiet request logging, per-router stops."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pytei.cli import main
from tests.support.serving import free_port, gone

Cli = Callable[..., tuple[int, str, str]]

# Quotes, backslashes, shell and regex metacharacters, a format spec and non-ASCII.
KEY = "k\"e\\y$(touch /tmp/pwned)`id`;|&*.+?[]{}^%s'é"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    return run


def serve_args(fake_router: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["serve", "--binary", str(fake_router), "--model-id", str(model_dir), "--port", "auto", *extra]


def key_forms() -> list[bytes]:
    debug = KEY.replace("\\", "\\\\").replace('"', '\\"')
    forms = {KEY, debug, json.dumps(KEY)[1:-1], json.dumps(debug)[1:-1], "touch /tmp/pwned"}
    return [form.encode() for form in forms]


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def assert_no_key(texts: dict[str, bytes]) -> None:
    for where, data in texts.items():
        for form in key_forms():
            assert form not in data, f"the API key ({form!r}) is in {where}"


def test_a_key_full_of_metacharacters_reaches_no_file_and_no_output(
    cli: Cli, fake_router: Path, model_dir: Path, isolated_pytei: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("PYTEI_API_KEY", KEY)
    printed: dict[str, bytes] = {}
    # Detached, with -v (echoes argv) and --json, then ps, health (with the key), stop.
    code, out, err = cli("-v", *serve_args(fake_router, model_dir, "--detach", "--name", "bg", "--json"))
    assert code == 0, err
    printed["serve --detach"] = (out + err).encode()
    [endpoint] = json.loads(out)
    assert psutil.Process(endpoint["pid"]).environ()["API_KEY"] == KEY  # it did get the key
    for args in (("ps",), ("ps", "--json"), ("health", "bg", "--json")):
        code, out, err = cli(*args)
        assert code == 0, err
        printed[" ".join(args)] = (out + err).encode()
    log = Path(endpoint["log_path"])
    assert 'api_key: Some("***")' in log.read_text()  # TEI's Args line, redacted
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((isolated_pytei / "services" / "bg.json").stat().st_mode) == 0o600
    code, out, err = cli("stop", "bg")
    assert code == 0, err
    printed["stop"] = (out + err).encode()

    # Foreground: the router's log streams to the terminal and into a --log-file.
    log_file = tmp_path / "fg.log"
    env = {**os.environ, "PYTEI_API_KEY": KEY}
    fg = subprocess.Popen(
        [sys.executable, "-m", "pytei", *serve_args(fake_router, model_dir, "--name", "fg")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert fg.stdout is not None
    fg.stdout.readline()  # the URL, once ready
    streamed = subprocess.Popen(
        [sys.executable, "-m", "pytei", *serve_args(fake_router, model_dir, "--name", "lf", "--log-file", str(log_file))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert streamed.stdout is not None
    streamed.stdout.readline()
    for proc, name in ((fg, "foreground serve"), (streamed, "serve --log-file")):
        proc.send_signal(signal.SIGTERM)
        out_b, err_b = proc.communicate(timeout=30)
        assert proc.returncode == 0, err_b.decode()
        printed[name] = out_b + err_b
    assert b'api_key: Some("***")' in printed["foreground serve"]  # streamed, redacted
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    written = {str(path): path.read_bytes() for path in files_under(isolated_pytei, tmp_path)}
    assert len(written) >= 3
    assert_no_key(printed)
    assert_no_key(written)


def test_killing_a_detached_start_leaves_no_router_and_no_state(
    fake_router: Path, model_dir: Path, isolated_pytei: Path
) -> None:
    serving = subprocess.Popen(
        [sys.executable, "-m", "pytei", *serve_args(fake_router, model_dir, "--detach", "--name", "k", "--", "--fake-delay", "30")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    state_file = isolated_pytei / "services" / "k.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if state_file.exists() and json.loads(state_file.read_text()).get("pid"):
            break
        time.sleep(0.05)
    state = json.loads(state_file.read_text())
    assert state["status"] == "starting" and state["mode"] == "detached"
    serving.kill()
    serving.communicate(timeout=10)
    assert gone(state["pid"], 10), "the router outlived a start that was killed"
    assert state["supervisor_pid"] is not None and gone(state["supervisor_pid"], 10)
    listing = subprocess.run([sys.executable, "-m", "pytei", "ps", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(listing.stdout) == []


def test_a_starting_service_is_listed_and_stoppable(
    cli: Cli, fake_router: Path, model_dir: Path, isolated_pytei: Path
) -> None:
    serving = subprocess.Popen(
        [sys.executable, "-m", "pytei", *serve_args(fake_router, model_dir, "--name", "slow", "--", "--fake-delay", "30")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    listed: list[dict[str, object]] = []
    while time.monotonic() < deadline and not listed:
        code, out, _ = cli("ps", "--json")
        listed = [s for s in json.loads(out) if s["pid"]]
        time.sleep(0.05)
    assert [(s["name"], s["status"]) for s in listed] == [("slow", "starting")]
    code, _, err = cli("stop", "slow")
    assert code == 0, err
    serving.communicate(timeout=30)
    assert gone(int(listed[0]["pid"]), 5)  # type: ignore[call-overload]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_detached_restart_on_failure_restarts_then_gives_up(
    cli: Cli, fake_router: Path, model_dir: Path, isolated_pytei: Path
) -> None:
    code, out, err = cli(
        *serve_args(fake_router, model_dir, "--detach", "--name", "flaky", "--json", "--restart", "on-failure",
                    "--max-restarts", "2", "--", "--fake-crash-after", "0.6")
    )  # fmt: skip
    assert code == 0, err
    first = json.loads(out)[0]["pid"]

    def restarted() -> bool:
        states = json.loads(cli("ps", "--json")[1])
        return bool(states) and states[0]["restarts"] >= 1 and states[0]["pid"] not in (0, first)

    wait_for(restarted)
    code, out, _ = cli("ps")
    assert "restart" in out
    # Crashing every time: two tries in a row, then the supervisor gives the service up.
    wait_for(lambda: json.loads(cli("ps", "--json")[1]) == [], timeout=30)
    supervisor_log = (isolated_pytei / "services" / "flaky" / "supervisor.log").read_text()
    assert "restarting it in" in supervisor_log and "gave up after 2 tries in a row" in supervisor_log


def test_foreground_restart_recovers_from_a_crash(fake_router: Path, model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    serving = subprocess.Popen(
        [sys.executable, "-m", "pytei", "serve", "--binary", str(fake_router), "--model-id", str(model_dir),
         "--port", str(port), "--restart", "on-failure", "--max-restarts", "1", "--log-file", str(tmp_path / "r.log"),
         "--", "--fake-crash-after", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, stderr = serving.communicate(timeout=60)
    # One restart (the router answered again on the same port), then it crashed once more.
    assert "restarting it in" in stderr and "is ready again at" in stderr and f":{port}" in stderr
    assert serving.returncode == 19 and "gave up after 1 tries in a row" in stderr


def test_stop_of_one_router_leaves_the_others_of_its_supervisor(
    cli: Cli, fake_router: Path, model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pytei.yaml"
    config.write_text(
        json.dumps(
            {"services": [{"name": n, "model_id": str(model_dir), "binary": str(fake_router), "port": "auto"} for n in ("a", "b")]}
        )
    )
    code, out, err = cli("serve", "-c", str(config), "--detach", "--json")
    assert code == 0, err
    pids = {e["name"]: e["pid"] for e in json.loads(out)}
    code, _, err = cli("stop", "a")
    assert code == 0, err
    assert gone(pids["a"], 5)
    assert psutil.pid_exists(pids["b"]) and [s["name"] for s in json.loads(cli("ps", "--json")[1])] == ["b"]
    assert cli("stop", "b")[0] == 0
    assert gone(pids["b"], 5)


def test_request_logging_is_quiet_by_default_and_plain_text(
    cli: Cli, fake_router: Path, model_dir: Path, record: Callable[[], dict[str, object]]
) -> None:
    rec = str(record.path)  # type: ignore[attr-defined]
    code, _, err = cli(*serve_args(fake_router, model_dir, "--detach", "--name", "q", "--json", "--", "--fake-record", rec))
    assert code == 0, err
    seen = record()
    env, argv = seen["env"], seen["argv"]
    assert isinstance(env, dict) and isinstance(argv, list)
    assert env["LOG_LEVEL"] == "info,text_embeddings_router::http::server=warn,text_embeddings_router::grpc::server=warn"
    assert env["NO_COLOR"] == "1"
    assert argv[argv.index("--served-model-name") + 1] == str(model_dir)  # what the user gave
    cli("stop", "q")
    Path(rec).unlink()
    code, _, err = cli(*serve_args(fake_router, model_dir, "--detach", "--name", "v", "--log-level", "info",
                                     "--", "--fake-record", rec))  # fmt: skip
    assert code == 0, err
    env = record()["env"]
    assert isinstance(env, dict) and env["LOG_LEVEL"] == "info"
    cli("stop", "v")


@pytest.mark.parametrize("port", ["auto", "fixed"])
def test_each_bind_failure_has_its_own_error(cli: Cli, fake_router: Path, model_dir: Path, port: str) -> None:
    chosen = "auto" if port == "auto" else str(free_port())
    args = ["serve", "--binary", str(fake_router), "--model-id", str(model_dir), "--port", chosen]
    code, _, err = cli(*args, "--hostname", "nosuchhost.invalid")
    assert code == 24 and "does not resolve" in err and "Traceback" not in err
    code, _, err = cli(*args, "--hostname", "192.0.2.1")  # TEST-NET-1: never an address of this host
    assert code == 25 and "is not an address of this host" in err and "already in use" not in err


def test_a_failed_start_leaves_no_service_directory(
    cli: Cli, fake_router: Path, tmp_path: Path, isolated_pytei: Path
) -> None:
    code, _, err = cli(*serve_args(fake_router, tmp_path / "missing", "--name", "nothing"))
    assert code == 17, err
    assert not (isolated_pytei / "services" / "nothing").exists()
