"""Running ``cargo build``: live progress from its JSON messages, a full log, peak memory.

Cargo prints one JSON message per compiled unit on stdout (``--message-format=json-render-
diagnostics``); its human-readable status lines ("Compiling x v1") go to stderr.  pytei reads
both: the JSON for progress and the built binary's path, the status lines for the crate in
progress, and writes everything to a log whose tail (plus the likely cause) is shown when the
build fails.  Peak memory is the largest total resident size of cargo's whole process tree,
sampled twice a second (rustc, build scripts, nvcc and the linker all count).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from pytei._subprocess import output_tail
from pytei.errors import BuildError

__all__ = ["CargoOutcome", "CargoProgress", "diagnose", "run_cargo"]

logger = logging.getLogger("pytei.build")

_COMPILING = re.compile(r"^\s*(Compiling|Checking|Running|Building|Linking)\s+(\S+)(?: v(\S+))?")

# Known failure signatures, most specific first: (pattern, cause, fix).
_CAUSES: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(
            r"(signal: 9, SIGKILL|Killed\s*$|out of memory|memory allocation of \d+ bytes failed|"
            r"LLVM ERROR: .*memory|Cannot allocate memory)",
            re.MULTILINE,
        ),
        "the build ran out of memory",
        "build with fewer jobs (--jobs 1) or with --fast (no LTO), or add swap",
    ),
    (
        re.compile(
            r"(Could not find `protoc`|protoc failed|Failed to invoke protoc|protoc.*not found)",
            re.IGNORECASE,
        ),
        "protoc is missing or failed",
        "install protobuf-compiler (apt-get install protobuf-compiler) or set PROTOC",
    ),
    (
        re.compile(r"(proto3 file that contains optional fields|explicit 'optional' labels are disallowed)"),
        "protoc is too old for proto3 optional fields",
        "use protoc 3.15+ or keep patch 0002 in the series",
    ),
    (
        re.compile(
            r"(nvcc.*(not found|No such file)|failed to execute .*nvcc|`nvcc` failed|CUDA_COMPUTE_CAP)",
            re.IGNORECASE,
        ),
        "nvcc (the CUDA compiler) is missing or failed",
        "install the CUDA toolkit (or the nvidia-cuda-nvcc wheels) and set build.cuda_home",
    ),
    (
        re.compile(r"(intel-mkl|mkl_|MKL not found|Two or more MKL found|libmkl)", re.IGNORECASE),
        "Intel MKL was not found or did not link",
        "let pytei provide it (leave build.mkl_root empty) or point build.mkl_root at a prefix with lib/libmkl_core.a",
    ),
    (
        re.compile(r"(onnxruntime|ort-sys|ort_sys)", re.IGNORECASE),
        "ONNX Runtime was not found or did not link",
        "let pytei provide it from the onnxruntime wheel (leave build.onnxruntime_dir empty)",
    ),
    (
        re.compile(
            r"(failed to load source for dependency|failed to fetch|Couldn't resolve host|"
            r"unable to update|failed to get .* as a dependency)"
        ),
        "a dependency could not be fetched",
        "configure git mirrors (PYTEI_GIT_MIRRORS) and check access to crates.io",
    ),
    (
        re.compile(r"linker `cc` not found|error: linking with `cc` failed"),
        "linking failed",
        "install a C toolchain (gcc) and check the log for missing libraries",
    ),
]


def diagnose(log_text: str) -> tuple[str, str] | None:
    """The likely cause of a failed build and its fix, from the log."""
    # The log opens with the command line, whose --config arguments name crates (mkl, ort...).
    lines = [line for line in log_text.splitlines() if not line.startswith("$ ")]
    tail = "\n".join(lines[-400:])
    for pattern, cause, fix in _CAUSES:
        if pattern.search(tail):
            return cause, fix
    return None


@dataclass
class CargoProgress:
    """Where a build is: ``done`` of ``total`` cargo units (compilations and build-script runs),
    the crate being compiled, and the phase: ``compiling``, then ``linking`` (with fat LTO in
    release mode, the longest step of a release build) and, after cargo, ``installing``."""

    total: int
    done: int = 0
    current: str = ""
    started: float = 0.0
    phase: str = "compiling"
    exact: bool = True  # the total comes from cargo's unit graph
    final_link: str = "linking"  # what the last unit's phase is called

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def advance(self) -> None:
        self.done = min(self.done + 1, max(self.total - 1, 0) if self.exact else self.total)
        if self.exact and self.done >= self.total - 1:
            # Only the router's own binary is left: cargo is in its final link.
            self.phase = self.final_link


@dataclass(frozen=True)
class CargoOutcome:
    executables: dict[str, Path]  # binary target name -> path
    wall_seconds: float
    peak_rss_bytes: int
    units_built: int
    units_fresh: int
    log_path: Path
    libraries: dict[str, Path] = field(default_factory=dict)  # cdylib target name -> path


class _MemorySampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while True:
            total = 0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in processes:
                try:
                    total += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak = max(self.peak, total)
            if self._stop.wait(0.5):
                return

    def stop(self) -> None:
        self._stop.set()


def _pump_stderr(stream: IO[str], log: IO[str], lock: threading.Lock, progress: CargoProgress) -> None:
    for line in stream:
        with lock:
            log.write(line)
        match = _COMPILING.match(line)
        if match:
            progress.current = match.group(2)


def run_cargo(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    total_units: int,
    on_progress: Callable[[CargoProgress], None] | None = None,
    exact_total: bool = True,
    final_link: str = "linking",
) -> CargoOutcome:
    """Run cargo; raise BuildError with the log tail and likely cause when it fails.

    ``on_progress`` is called for every finished unit and at least once a second in between
    (so a clock shown with it never stops while cargo works, in the final link above all).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress = CargoProgress(
        total=max(total_units, 1), started=time.monotonic(), exact=exact_total, final_link=final_link
    )
    executables: dict[str, Path] = {}
    libraries: dict[str, Path] = {}
    built = fresh = 0
    lock = threading.Lock()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n")
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None and proc.stderr is not None
        sampler = _MemorySampler(proc.pid)
        sampler.start()
        pump = threading.Thread(target=_pump_stderr, args=(proc.stderr, log, lock, progress), daemon=True)
        pump.start()
        ticking = threading.Event()
        ticker = threading.Thread(target=_tick, args=(ticking, progress, on_progress, lock), daemon=True)
        ticker.start()
        try:
            for line in proc.stdout:
                message = _parse(line)
                if message is None:
                    with lock:
                        log.write(line)
                    continue
                reason = message.get("reason")
                if reason in ("compiler-artifact", "build-script-executed"):
                    with lock:
                        progress.advance()
                    kinds = message.get("target", {}).get("kind", [])
                    if reason == "compiler-artifact" and "custom-build" not in kinds:
                        if message.get("fresh"):
                            fresh += 1
                        else:
                            built += 1
                    if on_progress is not None:
                        on_progress(progress)
                    executable = message.get("executable")
                    if executable:
                        executables[message["target"]["name"]] = Path(executable)
                    if "cdylib" in kinds:
                        found = [
                            f for f in message.get("filenames", []) if f.endswith((".so", ".dylib", ".dll"))
                        ]
                        if found:
                            libraries[message["target"]["name"]] = Path(found[0])
            returncode = proc.wait()
        except BaseException:
            # Ctrl-C reaches cargo too (same process group); wait so the target directory is
            # left as cargo leaves it on interrupt, which the next build resumes from.
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            ticking.set()
            sampler.stop()
            pump.join(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        wall = progress.elapsed
        log.write(f"\n# exit status {returncode}, {wall:.1f}s, peak memory {sampler.peak / 2**20:.0f} MiB\n")
    if returncode != 0:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        cause = diagnose(text)
        errors = [line for line in text.splitlines() if line.startswith("error")]
        first = errors[0] if errors else f"cargo exited with status {returncode}"
        logger.error("%s", output_tail(text, 25))
        raise BuildError(
            f"the build failed: {first}"
            + (f" — likely cause: {cause[0]}" if cause else "")
            + f" (log: {log_path})",
            log_path=str(log_path),
            hint=cause[1] if cause else f"read {log_path}",
        )
    progress.done, progress.phase = progress.total, "installing"
    if on_progress is not None:
        on_progress(progress)
    return CargoOutcome(executables, wall, sampler.peak, built, fresh, log_path, libraries)


def _tick(
    stop: threading.Event,
    progress: CargoProgress,
    on_progress: Callable[[CargoProgress], None] | None,
    lock: threading.Lock,
) -> None:
    while on_progress is not None and not stop.wait(1.0):
        with lock:
            on_progress(progress)


def _parse(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
