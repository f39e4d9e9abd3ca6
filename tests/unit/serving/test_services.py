"""`pytei serve --detach`, `ps`, `stop`, several services from a config file, --gpus."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from pytei.cache import Cache
from pytei.cli import main
from pytei.config import load_settings
from pytei.errors import RouterNotBuiltError
from pytei.models.resolve import inspect_model_dir
from pytei.serving.options import ServeOptions, ServeTarget
from pytei.serving.services import plan_services
from pytei.serving.state import ServiceState, list_services, write_state
from tests.support.serving import free_port_block, gone, write_model_dir

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `pytei ARGS` in this process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    return run


def serve_args(fake_router: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["serve", "--binary", str(fake_router), "--model-id", str(model_dir), "--port", "auto", *extra]


def test_detach_ps_stop(cli: Cli, fake_router: Path, model_dir: Path, isolated_pytei: Path) -> None:
    code, out, err = cli(*serve_args(fake_router, model_dir, "--detach", "--name", "bg", "--json"))
    assert code == 0, err
    [endpoint] = json.loads(out)
    assert endpoint["name"] == "bg" and endpoint["mode"] == "detached"
    pid = endpoint["pid"]
    state_file = isolated_pytei / "services" / "bg.json"
    state = json.loads(state_file.read_text())
    assert state["pid"] == pid and state["status"] == "ready"
    assert state["create_time"] == pytest.approx(psutil.Process(pid).create_time(), abs=0.05)
    assert Path(state["log_path"]).read_text().count("Ready") == 1
    # The detached router is in a session of its own.
    assert os.getsid(pid) == pid

    code, out, _ = cli("ps", "--json")
    assert code == 0 and [s["name"] for s in json.loads(out)] == ["bg"]
    code, out, _ = cli("ps")
    assert "bg" in out and endpoint["url"] in out

    code, out, _ = cli("health", "bg", "--json")  # a service name works as the target
    assert code == 0 and json.loads(out)["url"] == endpoint["url"]

    code, _, err = cli("stop")  # the only one running
    assert code == 0, err
    assert "stopped bg" in err
    assert gone(pid, 1)
    assert not state_file.exists()
    code, _, err = cli("stop", "bg")
    assert code == 21 and "no service named 'bg'" in err


def test_stop_needs_a_name_when_several_run(cli: Cli, fake_router: Path, model_dir: Path) -> None:
    for name in ("one", "two"):
        assert cli(*serve_args(fake_router, model_dir, "--detach", "--name", name))[0] == 0
    code, _, err = cli("stop")
    assert code == 21 and "one, two" in err
    code, _, err = cli(*serve_args(fake_router, model_dir, "--detach", "--name", "one"))
    assert code == 3 and "already running" in err
    pids = [s["pid"] for s in json.loads(cli("ps", "--json")[1])]
    assert cli("stop", "--all")[0] == 0
    assert all(gone(pid, 1) for pid in pids)
    assert json.loads(cli("ps", "--json")[1]) == []


def test_stale_and_recycled_state_files_are_pruned(isolated_pytei: Path) -> None:
    cache = Cache(isolated_pytei)
    me = psutil.Process()
    common = {
        "url": "http://127.0.0.1:1", "port": 1, "prometheus_port": 2, "model_id": "m", "model_dir": "/m",
        "binary": "/b", "log_path": "/l", "started_at": "2026-01-01T00:00:00+00:00", "mode": "detached",
        "status": "ready",
    }  # fmt: skip
    dead = psutil.Popen(["true"])
    dead.wait()
    write_state(cache, ServiceState(name="dead", pid=dead.pid, create_time=1.0, **common))  # type: ignore[arg-type]
    # Our own pid with another creation time: a recycled pid, which must never be signalled.
    recycled = ServiceState(name="recycled", pid=me.pid, create_time=me.create_time() - 100, **common)  # type: ignore[arg-type]
    write_state(cache, recycled)
    (isolated_pytei / "services" / "garbage.json").write_text("{not json")
    assert list_services(cache) == []
    assert sorted(p.name for p in (isolated_pytei / "services").glob("*.json")) == []


def test_busy_port_is_reported_before_launch(cli: Cli, fake_router: Path, model_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        code, out, err = cli(*serve_args(fake_router, model_dir, "--port", str(port), "--detach"))
    assert code == 18
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "held by pid" in err and str(os.getpid()) in err  # psutil names the holder: this test
    assert out == ""


def test_broken_model_directory_is_a_clear_error(cli: Cli, fake_router: Path, tmp_path: Path) -> None:
    broken = write_model_dir(tmp_path / "no-tokenizer", tokenizer=False)
    code, _, err = cli(*serve_args(fake_router, broken, "--detach"))
    assert code == 17
    assert "has no tokenizer.json" in err
    code, _, err = cli(*serve_args(fake_router, tmp_path / "missing", "--detach"))
    assert code == 17 and "does not exist" in err


def test_crash_in_detached_start_shows_the_log_tail(
    cli: Cli, fake_router: Path, model_dir: Path, isolated_pytei: Path
) -> None:
    code, out, err = cli(
        *serve_args(fake_router, model_dir, "--detach", "--name", "boom", "--", "--fake-crash", "abort")
    )
    assert code == 19
    assert "killed by SIGABRT (the router panicked" in err
    assert "tokenizer.json not found" in err  # the log tail, since nothing was streamed
    assert out == ""
    assert not (isolated_pytei / "services" / "boom.json").exists()


def test_ready_timeout_from_the_command_line(cli: Cli, fake_router: Path, model_dir: Path) -> None:
    started = time.monotonic()
    code, _, err = cli(
        *serve_args(fake_router, model_dir, "--detach", "--ready-timeout", "0.5", "--", "--fake-delay", "30")
    )
    assert code == 20 and "not ready within 0.5s" in err
    assert time.monotonic() - started < 10


def test_api_key_is_never_printed(
    cli: Cli, fake_router: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEI_API_KEY", "k-123-secret")
    code, out, err = cli("-v", *serve_args(fake_router, model_dir, "--detach", "--json"))  # -v echoes argv
    assert code == 0, err
    [endpoint] = json.loads(out)
    try:
        assert b"k-123-secret" not in Path(f"/proc/{endpoint['pid']}/cmdline").read_bytes()
        assert "k-123-secret" not in out + err
        assert "+ " in err and "--model-id" in err and "(API_KEY in its environment)" in err
        assert psutil.Process(endpoint["pid"]).environ()["API_KEY"] == "k-123-secret"
        state = (Path(os.environ["PYTEI_HOME"]) / "services" / f"{endpoint['name']}.json").read_text()
        assert "k-123-secret" not in state and json.loads(state)["auth"] is True
        code, out, err = cli("health", endpoint["url"], "--json")  # PYTEI_API_KEY is used for /info
        assert code == 0, err
    finally:
        cli("stop", "--all")


def write_config(
    tmp_path: Path, model_dir: Path, fake_router: Path, services: list[dict[str, object]]
) -> Path:
    for service in services:
        service.setdefault("model_id", str(model_dir))
        service.setdefault("binary", str(fake_router))
    path = tmp_path / "pytei.yaml"
    path.write_text(yaml.safe_dump({"serve": {"port": "auto"}, "services": services}))
    return path


@pytest.mark.parametrize("where", ["serve -c", "pytei -c"])
def test_several_services_from_config(
    cli: Cli,
    fake_router: Path,
    model_dir: Path,
    tmp_path: Path,
    record: Callable[[], dict[str, object]],
    where: str,
) -> None:
    rec = str(record.path)  # type: ignore[attr-defined]
    config = write_config(
        tmp_path,
        model_dir,
        fake_router,
        [
            {"name": "embed", "router_args": ["--fake-record", rec], "env": {"LOG_LEVEL": "warn"}},
            {"name": "rerank", "router_args": ["--fake-model-type", "reranker"], "pooling": "cls"},
        ],
    )
    args = ["serve", "-c", str(config)] if where == "serve -c" else ["-c", str(config), "serve"]
    code, out, err = cli(*args, "--detach")
    assert code == 0, err
    urls = out.split()
    assert len(urls) == 2 and len(set(urls)) == 2
    try:
        assert record()["env"]["LOG_LEVEL"] == "warn"  # type: ignore[index]
        code, out, _ = cli("health", urls[1], "--json")
        assert json.loads(out)["model_type"] == "reranker"
        assert {s["name"] for s in json.loads(cli("ps", "--json")[1])} == {"embed", "rerank"}
    finally:
        cli("stop", "--all")


def test_several_services_all_or_nothing(
    cli: Cli, fake_router: Path, model_dir: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        model_dir,
        fake_router,
        [{"name": "good"}, {"name": "bad", "router_args": ["--fake-delay", "0.3", "--fake-crash", "exit"]}],
    )
    code, out, err = cli("serve", "-c", str(config), "--detach")
    assert code == 19 and "'bad' exited with status 1" in err
    assert out == ""
    assert json.loads(cli("ps", "--json")[1]) == []  # `good` was stopped, its state removed
    # (the autouse guard also checks that no router process is left)


def test_gpus_one_router_per_gpu_on_consecutive_ports(
    cli: Cli, fake_router: Path, model_dir: Path, tmp_path: Path
) -> None:
    base = free_port_block(2)
    code, out, err = cli(
        *serve_args(
            fake_router, model_dir, "--port", str(base), "--gpus", "0,1", "--detach", "--name", "m", "--json"
        )
    )
    assert code == 0, err
    endpoints = json.loads(out)
    try:
        assert [e["name"] for e in endpoints] == ["m-gpu0", "m-gpu1"]
        assert [e["port"] for e in endpoints] == [base, base + 1]
        for gpu, endpoint in enumerate(endpoints):
            env = psutil.Process(endpoint["pid"]).environ()
            assert env["CUDA_VISIBLE_DEVICES"] == str(gpu)
    finally:
        cli("stop", "--all")


def test_plan_ports_and_names(
    fake_router: Path, model_dir: Path, tmp_path: Path, isolated_pytei: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path,
        model_dir,
        fake_router,
        [{"name": "a", "gpus": [0, 1]}, {"name": "b"}, {"name": "c", "port": 9100}],
    )
    monkeypatch.setenv("PYTEI_SERVE_PORT", "9000")
    settings = load_settings(env=os.environ, config_file=config)
    specs = plan_services(ServeTarget(), ServeOptions.from_settings(settings), Cache(isolated_pytei))
    assert [(s.name, s.port) for s in specs] == [("a-gpu0", 9000), ("a-gpu1", 9001), ("b", 9002), ("c", 9100)]
    assert [s.env.get("CUDA_VISIBLE_DEVICES") for s in specs] == ["0", "1", None, None]
    assert all(s.log_path == isolated_pytei / "services" / s.name / "router.log" for s in specs)
    # --model-id on the command line serves that model alone, named after it.
    [single] = plan_services(
        ServeTarget(model_id=str(model_dir), port="auto", binary=fake_router),
        ServeOptions.from_settings(settings),
        Cache(isolated_pytei),
    )
    assert single.name == model_dir.name and single.port is None


def test_default_model_is_the_setting(
    fake_router: Path, isolated_pytei: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    seen: list[str] = []

    def fake_resolve(model_id: str, cache: Cache, **kwargs: object) -> object:
        seen.append(model_id)
        return inspect_model_dir(model_dir)

    monkeypatch.setattr("pytei.serving.services.resolve_model", fake_resolve)
    settings = load_settings(env=os.environ, cwd=isolated_pytei)
    [spec] = plan_services(
        ServeTarget(binary=fake_router), ServeOptions.from_settings(settings), Cache(isolated_pytei)
    )
    assert seen == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert spec.name == "all-MiniLM-L6-v2" and spec.port == 8080


def test_relative_paths_in_config_are_next_to_it(
    fake_router: Path, tmp_path: Path, isolated_pytei: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    model = write_model_dir(conf_dir / "models" / "tiny")
    (conf_dir / "pytei.yaml").write_text(
        yaml.safe_dump(
            {"services": [{"name": "rel", "model_id": "./models/tiny", "binary": str(fake_router)}]}
        )
    )
    monkeypatch.chdir(tmp_path)  # not the config's directory
    settings = load_settings(env=os.environ, config_file=conf_dir / "pytei.yaml")
    [spec] = plan_services(ServeTarget(), ServeOptions.from_settings(settings), Cache(isolated_pytei))
    assert spec.model_dir == model.resolve()


def test_missing_router_is_reported_before_any_model_download(
    isolated_pytei: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(*args: object, **kwargs: object) -> object:
        raise AssertionError("a model was resolved before the router was found")

    monkeypatch.setattr("pytei.serving.services.resolve_model", no_download)
    settings = load_settings(env=os.environ, cwd=isolated_pytei)
    with pytest.raises(RouterNotBuiltError, match="no router has been built yet"):
        plan_services(ServeTarget(), ServeOptions.from_settings(settings), Cache(isolated_pytei))
