"""`pytei build --engine`: TEI's engine as a Python extension (``pytei_native``), built with the
router's plan (patched tree, mirrors, native libraries, features) and installed into this
Python.

- The crates are tei_fork/engine, copied into the tree as ``pytei-engine/``: a cargo workspace
  of its own (so upstream's workspace, lock and ``panic = "abort"`` release profile stay the
  router's), started from upstream's ``Cargo.lock`` so that shared crates resolve to the
  router's versions.
- pytei compiles it with its own cargo runner (progress, memory-bounded jobs, the log), then
  packs the wheel itself: maturin (the crate's pyproject.toml, for building by hand) would run
  cargo again, and with fat LTO the final link is most of the build.  The wheel holds the
  extension beside the runtime libraries it links (ONNX Runtime, Intel OpenMP), found through
  its ``$ORIGIN`` rpath, and is tagged abi3 (CPython 3.11 and later).
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from pytei._subprocess import run
from pytei.build.wheel import write_wheel_archive
from pytei.errors import BuildError

__all__ = [
    "ENGINE_DIR",
    "ENGINE_LIBRARY",
    "ENGINE_PACKAGE",
    "engine_env",
    "engine_features",
    "install_wheel",
    "prepare_engine_tree",
    "write_wheel",
]

ENGINE_DIR = "pytei-engine"  # in the build tree (tei_fork/fork.toml)
ENGINE_PACKAGE = "pytei-native"
ENGINE_LIBRARY = "pytei_native"
_PYTHON_PACKAGE = Path("python") / "python" / "pytei_native"
_TRANSPORTS = frozenset({"http", "grpc"})


def engine_features(features: Sequence[str]) -> list[str]:
    """The profile's features without a transport (the engine serves nothing)."""
    return [f for f in features if f not in _TRANSPORTS]


def engine_env(features: Sequence[str]) -> dict[str, str]:
    """What the extension records about itself (``pytei_native.build_info()``), and the
    interpreter PyO3 configures for."""
    return {
        "PYTEI_BUILD_ID": uuid.uuid4().hex[:16],
        "PYTEI_ENGINE_FEATURES": ",".join(features),
        "PYO3_PYTHON": sys.executable,
    }


def prepare_engine_tree(source_dir: Path) -> Path:
    """Start the engine workspace's lock from upstream's; the engine's manifest path."""
    workspace = source_dir / ENGINE_DIR
    if not (workspace / "Cargo.toml").is_file():
        raise BuildError(
            f"{workspace} is missing: the fork has no engine crates",
            hint="check tei_fork/fork.toml's [[crate]] pytei-engine entry",
        )
    lock, upstream_lock = workspace / "Cargo.lock", source_dir / "Cargo.lock"
    if not lock.is_file() and upstream_lock.is_file():
        shutil.copyfile(upstream_lock, lock)
    return workspace / "Cargo.toml"


def _platform_tag() -> str:
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


_SONAME = re.compile(r"\.so\.\d+$")


def wheel_library_names(runtime_files: Iterable[Path]) -> dict[str, Path]:
    """One name per library (a wheel holds no symlinks): the ``.so.N`` name its links give it,
    which is the SONAME the extension's NEEDED entry asks for (libonnxruntime.so.1), else its
    own name (libiomp5.so)."""
    names: dict[Path, list[str]] = {}
    for path in runtime_files:
        names.setdefault(path.resolve(), []).append(path.name)
    chosen = {}
    for real, aliases in names.items():
        versioned = sorted((a for a in aliases if _SONAME.search(a)), key=len)
        chosen[versioned[0] if versioned else real.name] = real
    return chosen


def write_wheel(
    out_dir: Path, source_dir: Path, extension: Path, runtime_files: Iterable[Path], version: str
) -> Path:
    """``pytei_native-VERSION-cp311-abi3-PLATFORM.whl`` in ``out_dir``: the package's Python
    files from the tree, the extension as ``_native.abi3.so``, the runtime libraries beside it."""
    package = source_dir / ENGINE_DIR / _PYTHON_PACKAGE
    files: list[tuple[str, bytes]] = [
        (f"pytei_native/{p.relative_to(package).as_posix()}", p.read_bytes())
        for p in sorted(package.rglob("*"))
        if p.suffix in (".py", ".pyi") or p.name == "py.typed"
    ]
    files.append(("pytei_native/_native.abi3.so", extension.read_bytes()))
    for name, real in wheel_library_names(runtime_files).items():
        files.append((f"pytei_native/{name}", real.read_bytes()))
    metadata = (
        "Metadata-Version: 2.1\nName: pytei-native\n"
        f"Version: {version}\nSummary: pytei's private binding of TEI's engine (use pytei.LocalEngine)\n"
        "Requires-Python: >=3.11\n"
    )
    return write_wheel_archive(
        out_dir, "pytei-native", version, f"cp311-abi3-{_platform_tag()}", files, metadata, purelib=False
    )


def install_wheel(wheel: Path, python: str = sys.executable) -> None:
    """Install (or replace) ``pytei_native`` in ``python``'s environment."""
    result = run(
        [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-cache-dir", str(wheel)],
        check=False,
        stream=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"installing {wheel.name} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}",
            hint=f"install it yourself: {python} -m pip install {wheel}",
        )
