"""Native libraries a build links, taken from PyPI wheels so no build step downloads them.

- ONNX Runtime (ort profiles): the shared library from the ``onnxruntime`` wheel, laid out
  for ``ORT_LIB_LOCATION`` (ort-sys links it instead of downloading pyke's build).  The router
  finds it at run time beside itself (rpath ``$ORIGIN``), where ``pytei build`` installs it.
- Intel MKL (mkl profiles): ``mkl-static``, ``mkl-include`` and ``intel-openmp`` installed
  into a dedicated prefix for ``MKLROOT`` (intel-mkl-src then never pulls from ghcr.io).
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytei._subprocess import run
from pytei.cache import Cache, atomic_dir
from pytei.errors import BuildError, CommandFailedError

__all__ = ["NativeLibrary", "NativeRequest", "provide", "provide_mkl", "provide_onnxruntime"]

NativeName = Literal["onnxruntime", "mkl", "cuda"]


@dataclass(frozen=True)
class NativeRequest:
    """A native library a build plan needs: its pinned version, or a user-given location."""

    name: NativeName
    version: str
    configured: str = ""  # build.onnxruntime_dir / build.mkl_root; empty: from PyPI wheels


@dataclass(frozen=True)
class NativeLibrary:
    name: str
    version: str
    root: Path  # what the build's environment points at
    runtime_files: tuple[Path, ...] = ()  # files to install beside the router
    source: str = ""  # where it came from, for the manifest


def provide(request: NativeRequest, cache: Cache, env: Mapping[str, str]) -> NativeLibrary:
    """The library ``request`` names, ready for the build (downloaded into the cache once)."""
    if request.name == "onnxruntime":
        return provide_onnxruntime(cache, request.version, env, request.configured)
    if request.name == "cuda":
        from pytei.build.cuda import provide_cuda  # noqa: PLC0415 (cuda imports this module's stage)

        home, source = provide_cuda(cache, request.version, env)
        return NativeLibrary("cuda", request.version, home, (), source)
    return provide_mkl(cache, request.version, env, request.configured)


def _pip(args: list[str], env: Mapping[str, str], what: str) -> None:
    try:
        run(
            [sys.executable, "-m", "pip", *args], env=dict(env), stream=False, message=f"could not get {what}"
        )
    except CommandFailedError as exc:
        raise BuildError(
            exc.message, hint="check access to PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS)"
        ) from exc


def provide_onnxruntime(
    cache: Cache, version: str, env: Mapping[str, str], configured: str = ""
) -> NativeLibrary:
    """A directory with ``libonnxruntime.so`` (+ SONAME link) for ORT_LIB_LOCATION."""
    if configured:
        root = Path(configured).expanduser()
        libs = sorted(root.glob("libonnxruntime.so*")) or sorted((root / "lib").glob("libonnxruntime.so*"))
        if not libs:
            raise BuildError(
                f"build.onnxruntime_dir {root} has no libonnxruntime.so",
                hint="point it at a directory holding ONNX Runtime's shared library (1.22 or newer)",
            )
        return NativeLibrary("onnxruntime", "user-provided", libs[0].parent, tuple(libs), f"directory {root}")
    target = cache.root / "native" / f"onnxruntime-{version}"
    marker = target / "pytei.json"
    if not marker.is_file():
        with cache.lock(f"native-onnxruntime-{version}"):
            if not marker.is_file():
                _fetch_onnxruntime(cache, version, env, target)
    info = json.loads(marker.read_text(encoding="utf-8"))
    lib = target / "lib"
    files = tuple(sorted(p for p in lib.iterdir() if p.name.startswith("libonnxruntime")))
    return NativeLibrary("onnxruntime", version, lib, files, str(info["wheel"]))


def _fetch_onnxruntime(cache: Cache, version: str, env: Mapping[str, str], target: Path) -> None:
    wheels = cache.area("wheels")
    _pip(
        ["download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), f"onnxruntime=={version}"],
        env,
        f"onnxruntime {version}",
    )
    candidates = sorted(wheels.glob(f"onnxruntime-{version}-*.whl"))
    if not candidates:
        raise BuildError(f"pip downloaded no onnxruntime {version} wheel for this platform")
    wheel = candidates[-1]
    with atomic_dir(target) as scratch:
        lib = scratch / "lib"
        lib.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            members = [
                m
                for m in archive.namelist()
                if m.startswith("onnxruntime/capi/libonnxruntime") and ".so" in m and not m.endswith("/")
            ]
            if not members:
                raise BuildError(f"{wheel.name} has no libonnxruntime shared library")
            for member in members:
                (lib / Path(member).name).write_bytes(archive.read(member))
        main = next(
            (lib / Path(m).name for m in members if Path(m).name.startswith(f"libonnxruntime.so.{version}")),
            None,
        )
        if main is None:
            raise BuildError(f"{wheel.name} has no libonnxruntime.so.{version}")
        # ort-sys links -lonnxruntime (needs the unversioned name); the loader wants the SONAME.
        for alias in ("libonnxruntime.so", "libonnxruntime.so.1"):
            (lib / alias).symlink_to(main.name)
        (scratch / "pytei.json").write_text(
            json.dumps({"wheel": wheel.name, "version": version}), encoding="utf-8"
        )


def provide_mkl(cache: Cache, version: str, env: Mapping[str, str], configured: str = "") -> NativeLibrary:
    """A prefix with include/mkl.h, lib/libmkl_core.a and lib/libiomp5.a for MKLROOT."""
    if configured:
        root = Path(configured).expanduser()
        if not (root / "include" / "mkl.h").is_file() or not list(root.rglob("libmkl_core.a")):
            raise BuildError(
                f"build.mkl_root {root} has no include/mkl.h and lib/libmkl_core.a",
                hint="install mkl-static, mkl-include and intel-openmp into it with pip --prefix",
            )
        return NativeLibrary("mkl", "user-provided", root, _openmp_runtime(root), f"directory {root}")
    target = cache.root / "native" / f"mkl-{version}"
    marker = target / "pytei.json"
    if not marker.is_file():
        with cache.lock(f"native-mkl-{version}"), atomic_dir(target) as scratch:
            _pip(
                [
                    "install",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--ignore-installed",
                    "--no-warn-script-location",
                    "--prefix",
                    str(scratch),
                    f"mkl-static=={version}",
                    f"mkl-include=={version}",
                    "intel-openmp",
                ],
                env,
                f"MKL {version} wheels",
            )
            # intel-mkl-src refuses a tree holding two MKLs, and skips symlinks; keep lib/ flat.
            if (
                not (scratch / "include" / "mkl.h").is_file()
                or not (scratch / "lib" / "libmkl_core.a").is_file()
            ):
                raise BuildError(
                    f"the MKL {version} wheels did not provide include/mkl.h and lib/libmkl_core.a"
                )
            (scratch / "pytei.json").write_text(json.dumps({"version": version}), encoding="utf-8")
    return NativeLibrary(
        "mkl",
        version,
        target,
        _openmp_runtime(target),
        f"wheels mkl-static=={version}, mkl-include, intel-openmp",
    )


def _openmp_runtime(root: Path) -> tuple[Path, ...]:
    """Intel's OpenMP runtime, which an MKL build loads at start (``libiomp5.so``): it is
    installed beside the router (rpath ``$ORIGIN``), else the router exits at launch."""
    found = sorted(root.rglob("libiomp5.so"))
    if not found:
        raise BuildError(
            f"{root} has no libiomp5.so (Intel OpenMP), which an MKL router loads at start",
            hint="install intel-openmp into it (pip install --prefix ROOT intel-openmp)",
        )
    return (found[0],)
