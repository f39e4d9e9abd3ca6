"""What a CUDA router needs on the host that serves it, and the proof that it uses the GPU.

- Libraries: the router links ``libcudart.so.13`` and loads cuBLAS, cuBLASLt, NVRTC and cuRAND
  at run time under the names cudarc 0.13 knows (``libcublas.so``, ``.so.12``... never
  ``.so.13``).  On a host with only the CUDA 13 runtime wheels (a torch cu130 venv, or
  ``pip install nvidia-cublas nvidia-cuda-nvrtc nvidia-curand nvidia-cuda-runtime``) and no
  toolkit, pytei links the libraries it finds under the unversioned names in a folder of its
  cache and puts that folder, then theirs, first on ``LD_LIBRARY_PATH``.
- The driver compiles the kernels' PTX at the first start (about 10 s on an H200); its cache is
  kept under pytei's cache (``CUDA_CACHE_PATH``), so later starts take about a second.
- A router built for the GPU that logs "Starting ... model on Cpu", or whose first embedding is
  not finite, is not a healthy service (upstream #870, #896): :func:`verify_router` says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pytei.cache import Cache
from pytei.errors import HardwareError, PyteiError, ServerExitedError
from pytei.serving.health import ProbeError, http_post_json

__all__ = [
    "CUDA_LIBRARIES",
    "cuda_runtime_env",
    "find_cuda_libraries",
    "model_device",
    "require_cuda_libraries",
    "require_gpu",
    "verify_router",
]

# versioned file -> the names the router looks for (the link name the loader finds first)
CUDA_LIBRARIES: dict[str, tuple[str, ...]] = {
    "libcudart.so.13": ("libcudart.so",),
    "libcublas.so.13": ("libcublas.so",),
    "libcublasLt.so.13": ("libcublasLt.so",),
    "libnvrtc.so.13": ("libnvrtc.so",),
    "libcurand.so.10": ("libcurand.so",),
}
_DEVICE = re.compile(r"Starting (\w+) model on (\w+)")


def require_gpu(what: str, dev: Path = Path("/dev")) -> None:
    """Refuse to start a CUDA router where no NVIDIA device is visible: TEI would either fail
    deep in cudarc or, worse, serve on the CPU (upstream #870).  In a container the devices
    appear only when the runtime passes them in (``--gpus``, ``nvidia.com/gpu``)."""
    if (dev / "nvidiactl").exists() and any(dev.glob("nvidia[0-9]*")):
        return
    raise HardwareError(
        f"{what} was built for CUDA and this machine has no NVIDIA GPU (no {dev}/nvidia0)",
        hint="in a container: docker run --gpus all (NVIDIA Container Toolkit) or request nvidia.com/gpu; "
        "elsewhere build and serve a CPU profile (pytei build --profile ort)",
    )


def _candidates(env: Mapping[str, str], extra: Sequence[str]) -> list[Path]:
    dirs = [Path(d) for d in extra]
    for key in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(key):
            root = Path(env[key])
            dirs += [root / "lib64", root / "lib", *sorted(root.glob("targets/*/lib"))]
    dirs += [Path(d) for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += [Path("/usr/local/cuda/lib64"), *sorted(Path("/usr/local").glob("cuda*/targets/*/lib"))]
    # CUDA wheels of any Python environment on sys.path (a torch cu130 venv, pytei's own)
    for entry in sys.path:
        base = Path(entry) / "nvidia"
        if base.is_dir():
            dirs += [base / "cu13" / "lib", *sorted(base.glob("*/lib"))]
    dirs += [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib64")]
    seen: list[Path] = []
    for directory in dirs:
        if directory.is_dir() and directory not in seen and directory.name != "stubs":
            seen.append(directory)
    return seen


def find_cuda_libraries(env: Mapping[str, str], extra: Sequence[str] = ()) -> dict[str, Path]:
    """Each CUDA library the router needs -> the first real file of it on this host."""
    found: dict[str, Path] = {}
    for directory in _candidates(env, extra):
        for name in CUDA_LIBRARIES:
            path = directory / name
            if name not in found and path.is_file():
                found[name] = path.resolve()
    return found


def require_cuda_libraries(
    env: Mapping[str, str], extra: Sequence[str], what: str, error: type[PyteiError]
) -> dict[str, Path]:
    """:func:`find_cuda_libraries`, raising ``error`` naming the wheels when one is missing."""
    found = find_cuda_libraries(env, extra)
    missing = [name for name in CUDA_LIBRARIES if name not in found]
    if missing:
        raise error(
            f"{what} needs {', '.join(missing)}, which this host does not have",
            hint="pip install nvidia-cuda-runtime nvidia-cublas nvidia-cuda-nvrtc nvidia-curand (CUDA 13), "
            "or install the CUDA 13 toolkit, or set serve.cuda_lib_dirs",
        )
    return found


def cuda_runtime_env(cache: Cache, env: Mapping[str, str], extra: Sequence[str] = ()) -> dict[str, str]:
    """The router's extra environment: a folder of the link names cudarc loads, first on
    LD_LIBRARY_PATH, and the driver's JIT cache in pytei's cache.  Raises when a library is
    missing, naming the wheels that provide it."""
    found = require_cuda_libraries(env, extra, "this CUDA router", ServerExitedError)
    digest = hashlib.sha256("\n".join(str(found[n]) for n in sorted(found)).encode()).hexdigest()[:16]
    folder = cache.area("cuda-libs", digest)
    for name, target in found.items():
        for link in (*CUDA_LIBRARIES[name], name):
            path = folder / link
            if not path.is_symlink() or path.resolve() != target:
                path.unlink(missing_ok=True)
                path.symlink_to(target)
    library_dirs = [str(folder), *dict.fromkeys(str(p.parent) for p in found.values())]
    current = env.get("LD_LIBRARY_PATH", "")
    extra_env = {"LD_LIBRARY_PATH": os.pathsep.join([*library_dirs, *([current] if current else [])])}
    if not env.get("CUDA_CACHE_PATH"):
        extra_env["CUDA_CACHE_PATH"] = str(cache.area("cuda-jit"))
        extra_env.setdefault("CUDA_CACHE_MAXSIZE", str(4 * 2**30))
    return extra_env


def model_device(log: str) -> tuple[str, str] | None:
    """("FlashBert", "Cuda") from TEI's "Starting FlashBert model on Cuda(...)" log line."""
    matches = _DEVICE.findall(log)
    return matches[-1] if matches else None


def _floats(value: object) -> Iterable[float]:
    if isinstance(value, list):
        for item in value:
            yield from _floats(item)
    elif isinstance(value, int | float):
        yield float(value)


def verify_router(
    url: str, log: str, *, device: str, name: str, log_path: Path, headers: Mapping[str, str] | None = None
) -> str:
    """Raise :class:`ServerExitedError` unless the router runs its model where it was built to
    and answers a probe with finite numbers; returns what was seen (e.g. "FlashBert on Cuda")."""
    started = model_device(log)
    seen = f"{started[0]} on {started[1]}" if started else "(no model line in the log)"
    if device in ("cuda", "metal") and started is not None and started[1].lower() != device:
        raise ServerExitedError(
            f"the router {name!r} was built for {device.upper()} but runs its model on {started[1]} ({seen})",
            hint=f"its log ({log_path}) says why: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES",
        )
    probe = {"inputs": "pytei checks that this router computes finite numbers."}
    try:
        status, body = http_post_json(url, "/embed", probe, timeout=60.0, headers=headers)
    except ProbeError as exc:
        raise ServerExitedError(
            f"the router {name!r} did not answer a probe embedding: {exc.detail}"
        ) from exc
    if status != 200:
        return seen  # not an embedding route (a reranker answers 424): nothing to check here
    values = list(_floats(json.loads(body)))
    if not values or not all(math.isfinite(v) for v in values):
        bad = sum(1 for v in values if not math.isfinite(v))
        raise ServerExitedError(
            f"the router {name!r} ({seen}) returned {bad} non-finite values of {len(values)} for a probe text",
            hint="a kernel of this build does not work on this GPU (e.g. flash attention on Turing, upstream "
            "#896): try --dtype float32, or rebuild for this GPU's profile",
        )
    return seen
