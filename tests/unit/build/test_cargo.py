"""pytei's cargo runner against a stand-in cargo that prints cargo's real message formats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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
    time.sleep(float(os.environ.get("FAKE_CARGO_LINK", "0.8")))  # the final link: no message
    print(json.dumps({"reason": "build-finished", "success": True}), flush=True)
    """
)


@pytest.fixture
def fake_cargo(tmp_path: Path) -> list[str]:
    script = tmp_path / "cargo.py"
    script.write_text(FAKE_CARGO)
    return [sys.executable, str(script)]


def test_progress_executables_log_and_memory(fake_cargo: list[str], tmp_path: Path) -> None:
    seen: list[tuple[int, int, str, str, float]] = []

    def record(state: CargoProgress) -> None:
        seen.append((state.done, state.total, state.current, state.phase, state.elapsed))

    # 8 units: 4 crates and 4 build scripts; cargo goes quiet for 2.5 s in its final link.
    env = {**os.environ, "FAKE_CARGO_LINK": "2.5"}
    outcome = run_cargo(fake_cargo, cwd=tmp_path, env=env, log_path=tmp_path / "b.log",
                        total_units=8, on_progress=record, final_link="linking (fat LTO)")  # fmt: skip
    dones = [done for done, *_ in seen]
    assert dones == sorted(dones) and dones[-1] == 8 and all(total == 8 for _, total, *_ in seen)
    assert all(done <= 7 for done, _, _, phase, _ in seen if phase != "installing")  # full only once cargo is done
    linking = [s for s in seen if s[3] == "linking (fat LTO)"]
    assert len(linking) >= 2 and linking[-1][4] - linking[0][4] >= 1.5  # the clock went on
    assert seen[-1][3] == "installing"
    assert any(current == "text-embeddings-router" for _, _, current, *_ in seen)
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


def _hold(cache_dir: Path, seconds: float) -> subprocess.Popen[str]:
    script = textwrap.dedent(
        f"""\
        import sys, time
        from pathlib import Path
        from pytei.cache import Cache
        with Cache(Path({str(cache_dir)!r})).lock("build-cpu", what="pytei build --profile cpu"):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_cache_lock_names_its_holder_on_timeout(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", lock_timeout=0.2)
    proc = _hold(tmp_path / "cache", 5)
    try:
        told: list[str] = []
        with (
            pytest.raises(CacheError, match=f"locked by pid {proc.pid} \\(pytei build --profile cpu\\)"),
            cache.lock("build-cpu", timeout=0.3, on_wait=told.append),
        ):
            pass
        assert told == [f"waiting for pid {proc.pid} (pytei build --profile cpu), which holds pytei's 'build-cpu' lock"]
        # Other areas are independent.
        with cache.lock("build-ort"):
            pass
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    with cache.lock("build-cpu", timeout=5):
        pass


def test_a_live_holder_is_waited_for_as_long_as_it_lives(tmp_path: Path) -> None:
    # lock_timeout (0.2 s) is far shorter than the holder's work: the wait goes on while it lives.
    cache = Cache(tmp_path / "cache", lock_timeout=0.2)
    proc = _hold(tmp_path / "cache", 1.5)
    told: list[str] = []
    started = time.monotonic()
    with cache.lock("build-cpu", on_wait=told.append):
        waited = time.monotonic() - started
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    assert waited >= 1.0 and len(told) == 1 and f"pid {proc.pid}" in told[0]


def test_the_unit_count_is_cargos_unit_graph_of_the_build(tmp_path: Path) -> None:
    """The progress total: every compilation cargo will run, not the packages `cargo tree` lists."""
    import shutil

    from pytei.build.plan import count_units

    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    crate = Path(__file__).resolve().parents[3] / "tei_fork" / "sparse-pool"
    argv = ["cargo", "build", "--locked", "--manifest-path", str(crate / "Cargo.toml"),
            "--target-dir", str(tmp_path / "target"), "--message-format=json-render-diagnostics"]  # fmt: skip
    units = count_units(argv, crate, dict(os.environ))
    assert units is not None and units >= 1
    # with its tests, cargo compiles more units than for the library alone
    with_tests = count_units([*argv, "--all-targets"], crate, dict(os.environ))
    assert with_tests is not None and with_tests > units
    assert count_units(["cargo", "build", "--no-such-flag"], crate, dict(os.environ)) is None
