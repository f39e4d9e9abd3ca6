"""The Python side of a runtime image: pytei as a wheel (made from this installation, so an
editable checkout and an installed release give the same image) and the wheels of its
dependencies for the image's Python, kept in pytei's cache so that a second image needs no
index; with one, the image installs with ``pip --no-index``."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from pytei._subprocess import run
from pytei._version import __version__
from pytei.build.wheel import write_wheel_archive
from pytei.cache import Cache
from pytei.errors import ImageBuildError

__all__ = ["CUDA_RUNTIME_WHEELS", "download_wheels", "pytei_requirements", "write_pytei_wheel"]

# What a CUDA 13 router loads at run time (pytei.serving.gpu finds them in the image's venv).
CUDA_RUNTIME_WHEELS = (
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-curand==10.4.0.35",
    "nvidia-cublas>=13.0,<13.1",
    "nvidia-cuda-nvrtc>=13.0,<13.1",
)
_PACKAGE = Path(__file__).resolve().parents[1]


def pytei_requirements() -> list[str]:
    """pytei's own requirements (no extras), pinned to the versions installed here: the image
    runs what this machine tested."""
    requires = importlib.metadata.requires("pytei") or []
    pinned = []
    for line in requires:
        if "extra ==" in line:
            continue
        name = line.split(";")[0].strip()
        for cut in "<>=!~[ ":
            name = name.split(cut)[0]
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(line.split(";")[0].strip())
    return pinned


def write_pytei_wheel(out_dir: Path) -> Path:
    """pytei's package files as a pure wheel with its requirements and console script."""
    files = [
        (f"pytei/{p.relative_to(_PACKAGE).as_posix()}", p.read_bytes())
        for p in sorted(_PACKAGE.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and "_fork" not in p.parts
    ]
    requires = "".join(f"Requires-Dist: {r}\n" for r in pytei_requirements())
    metadata = (
        f"Metadata-Version: 2.1\nName: pytei\nVersion: {__version__}\n"
        "Summary: pytei, as installed in a runtime image\nRequires-Python: >=3.11\n" + requires
    )
    entry_points = "[console_scripts]\npytei = pytei.cli:main\n"
    return write_wheel_archive(
        out_dir,
        "pytei",
        __version__,
        "py3-none-any",
        files,
        metadata,
        purelib=True,
        entry_points=entry_points,
    )


def _platforms(arch: str, glibc: tuple[int, int]) -> list[str]:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc[1], 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def download_wheels(
    cache: Cache, requirements: Sequence[str], *, python: str, arch: str, glibc: tuple[int, int]
) -> Path:
    """A folder of wheels that install ``requirements`` on CPython ``python`` for ``arch``:
    from pytei's wheel cache when it has them all, else from the index pip is configured with."""
    folder = cache.area("deploy", "wheels", f"cp{python.replace('.', '')}-{arch}")
    target = [
        "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
        *(arg for tag in _platforms(arch, glibc) for arg in ("--platform", tag)),
        "--dest", str(folder), *requirements,
    ]  # fmt: skip
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
    offline = run([*pip, "--no-index", "--find-links", str(folder), *target], check=False, stream=False)
    if offline.returncode == 0:
        return folder
    online = run([*pip, "--find-links", str(folder), *target], check=False, stream=False)
    if online.returncode != 0:
        last = (online.stderr or online.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ImageBuildError(
            f"the image's Python wheels could not be fetched: {last[0]}",
            hint=f"put the wheels in {folder}, or configure pip's index (PIP_INDEX_URL) for a mirror",
        )
    return folder
