"""CUDA libraries for the in-process engine.  The extension links ``libcudart.so.13`` and
cudarc ``dlopen``s cuBLAS, cuBLASLt, NVRTC and cuRAND under its own names at run time; both
are searched in the extension's ``$ORIGIN`` runpath (``pytei build --engine`` sets it), because
``LD_LIBRARY_PATH`` is read when the process starts, before any import.  So the libraries this
host has (a torch cu130 venv's wheels, a toolkit, serve.cuda_lib_dirs) are linked, under every
name the loader and cudarc ask for, into the ``pytei_native`` package folder."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytei.errors import EngineNotBuiltError
from pytei.serving.gpu import CUDA_LIBRARIES, require_cuda_libraries

__all__ = ["link_cuda_libraries", "package_dir"]


def package_dir() -> Path | None:
    spec = importlib.util.find_spec("pytei_native")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def link_cuda_libraries(folder: Path, env: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """Link each CUDA library into ``folder`` under its names; the names linked.  Missing
    libraries or a read-only folder are one-line errors with the fix."""
    found = require_cuda_libraries(env, extra, "this CUDA engine", EngineNotBuiltError)
    linked = []
    try:
        for name, target in found.items():
            for link in (name, *CUDA_LIBRARIES[name]):
                path = folder / link
                if path.is_symlink() and path.resolve() == target:
                    continue
                if path.exists() and not path.is_symlink():
                    continue  # a real file the wheel carries: leave it
                path.unlink(missing_ok=True)
                path.symlink_to(target)
                linked.append(link)
    except OSError as exc:
        dirs = os.pathsep.join(dict.fromkeys(str(p.parent) for p in found.values()))
        raise EngineNotBuiltError(
            f"cannot link the CUDA libraries into {folder}: {exc.strerror}",
            hint=f"make it writable, or start Python with LD_LIBRARY_PATH={dirs}",
        ) from None
    return linked
