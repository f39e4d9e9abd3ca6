"""pytei's cargo runner against a stand-in cargo that prints cargo's real message formats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pytei.build.cargo import CargoProgress, diagnose, run_cargo
from pytei.cache import Cache
from pytei.errors import BuildError, CacheError

FAKE_CARGO = textwrap.dedent(
    """\
    import json, os, sys, time
    mode = os.environ.get("FAKE_CARGO_MODE", "ok")
    names = ["serde", "tokio", "candle-core", "text-embeddings-router"]
    for index, name in enumerate(names):
        print(f"   Compiling {name} v1.0.{index}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("FAKE_CARGO_DELAY", "0.05")))
        if mode == "oom" and name == "candle-core":
            print("error: could not compile `candle-core` (lib)", file=sys.stderr)
            print("Caused by: process didn't exit successfully: rustc (signal: 9, SIGKILL: kill)", file=sys.stderr)
            sys.exit(101)
        if mode == "protoc" and name == "tokio":
            print("error: failed to run custom build command for `text-embeddings-router`", file=sys.stderr)
            print("  Could not find `protoc`. If `protoc` is installed, try setting the `PROTOC`", file=sys.stderr)
            sys.exit(101)
        kind = ["bin"] if name == "text-embeddings-router" else ["lib"]
        message = {"reason": "compiler-artifact", "package_id": name, "fresh": index == 0,
                   "target": {"name": name, "kind": kind},
                   "executable": "/tmp/x/" + name if kind == ["bin"] else None}
        print(json.dumps(message), flush=True)
        # A build script's artifact does not count as a crate.
        print(json.dumps({"reason": "compiler-artifact", "fresh": False,
                          "target": {"name": "build-script-build", "kind": ["custom-build"]}}), flush=True)
    data = bytearray(40 * 2**20)  # hold some memory so the sampler sees it
    time.sleep(0.8)
    print(json.dumps({"reason": "build-finished", "success": True}), flush=True)
    """
)


@pytest.fixture
def fake_cargo(tmp_path: Path) -> list[str]:
    script = tmp_path / "cargo.py"
    script.write_text(FAKE_CARGO)
    return [sys.executable, str(script)]


def test_progress_executables_log_and_memory(fake_cargo: list[str], tmp_path: Path) -> None:
    seen: list[tuple[int, int, str]] = []

    def record(state: CargoProgress) -> None:
        seen.append((state.done, state.total, state.current))

    outcome = run_cargo(fake_cargo, cwd=tmp_path, env=dict(os.environ), log_path=tmp_path / "b.log",
                        total_units=4, on_progress=record)  # fmt: skip
    assert [done for done, _, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][2] == "text-embeddings-router"
    assert outcome.executables == {"text-embeddings-router": Path("/tmp/x/text-embeddings-router")}
    assert outcome.units_built == 3 and outcome.units_fresh == 1
    assert outcome.peak_rss_bytes > 40 * 2**20
    log = (tmp_path / "b.log").read_text()
    assert "Compiling candle-core" in log and "exit status 0" in log


@pytest.mark.parametrize(
    ("mode", "cause"),
    [("oom", "ran out of memory"), ("protoc", "protoc is missing")],
)
def test_failure_names_the_likely_cause(fake_cargo: list[str], tmp_path: Path, mode: str, cause: str) -> None:
    env = {**os.environ, "FAKE_CARGO_MODE": mode}
    with pytest.raises(BuildError) as info:
        run_cargo(fake_cargo, cwd=tmp_path, env=env, log_path=tmp_path / "b.log", total_units=4)
    assert cause in str(info.value)
    assert info.value.log_path == str(tmp_path / "b.log")
    assert info.value.hint


def test_diagnose_knows_common_failures() -> None:
    assert diagnose("error: linker `cc` not found") == (
        "linking failed",
        "install a C toolchain (gcc) and check the log for missing libraries",
    )
    assert diagnose("thread 'main' panicked: nvcc: No such file or directory")[0].startswith("nvcc")  # type: ignore[index]
    assert diagnose("all fine") is None


def test_interrupt_waits_for_cargo_and_propagates(fake_cargo: list[str], tmp_path: Path) -> None:
    """Ctrl-C reaches cargo (same process group); pytei waits for it to exit and re-raises."""
    runner = tmp_path / "runner.py"
    runner.write_text(
        textwrap.dedent(
            f"""\
            import os, sys
            from pathlib import Path
            from pytei.build.cargo import run_cargo
            try:
                run_cargo({fake_cargo!r}, cwd=Path({str(tmp_path)!r}), env=dict(os.environ),
                          log_path=Path({str(tmp_path / "i.log")!r}), total_units=4)
            except KeyboardInterrupt:
                print("interrupted cleanly", flush=True)
                sys.exit(130)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(runner)],
        env={**os.environ, "FAKE_CARGO_DELAY": "2"},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted cleanly" in out


def test_cache_lock_names_its_holder_on_timeout(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", lock_timeout=0.2)
    holder_ready = threading.Event()
    release = threading.Event()
    script = textwrap.dedent(
        f"""\
        import sys, time
        from pathlib import Path
        from pytei.cache import Cache
        with Cache(Path({str(tmp_path / "cache")!r})).lock("build-cpu"):
            print("held", flush=True)
            time.sleep(5)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    holder_ready.set()
    try:
        with pytest.raises(CacheError, match=f"locked by pid {proc.pid}"), cache.lock("build-cpu"):
            pass
        # Other areas are independent.
        with cache.lock("build-ort"):
            pass
    finally:
        release.set()
        proc.kill()
        proc.wait()
        proc.stdout.close()
    with cache.lock("build-cpu", timeout=5):
        pass
