"""CUDA builds: which toolkit, which checks, which environment for the kernel crates.

- The toolkit is the user's (``build.cuda_home``, ``CUDA_HOME``/``CUDA_PATH``, ``/usr/local/cuda``,
  ``nvcc`` on PATH), else CUDA 13.0 from PyPI's wheels, which pytei installs into its cache with
  the dev symlinks and link stubs the wheels lack (docs: gpu-cuda13.md).  A plan made where
  neither exists lists the toolkit as *needed* instead of failing, so ``--dry-run`` plans for
  another machine.
- PTX from an nvcc runs only on a driver that knows its ISA: each pin says which driver it needs.
- The checks that matter: the compute capability must be one the toolkit targets (CUDA 13 has
  no sm_70/sm_72); cudarc's toolkit-version check applies only when no explicit ``cuda-NNNNN``
  feature is on (TEI turns ``cuda-12020`` on, so cudarc never reads nvcc's version).
- Kernel crates: per-capability build caches (flash-attn, layer-norm, rotary, index-select) so a
  release build after a fast one reuses them; nvcc threads bounded by memory
  (``RAYON_NUM_THREADS``; pytei's job count does not see nvcc inside a build script); the
  cutlass fix for nvcc >= 13; and the flash-attention kernel selection (patches/candle/0001).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pytei._subprocess import run
from pytei.build.attention import read_attention
from pytei.build.toolchain import Nvcc, Version, find_nvcc
from pytei.cache import Cache, atomic_dir
from pytei.errors import BuildError, CommandFailedError, PyteiError, ToolVersionError

__all__ = [
    "CUDA_PINS",
    "FlashCausal",
    "CudaPin",
    "CudaPlan",
    "FlashSelection",
    "cudarc_version_source",
    "flash_selection_for_models",
    "plan_cuda",
    "provide_cuda",
]

# Memory one nvcc of a flash-attn or layer-norm kernel takes (cicc + ptxas, measured: 2.7-3.5 GB).
NVCC_JOB_GIB = 3.5


@dataclass(frozen=True)
class CudaPin:
    """A CUDA toolkit pytei can install from PyPI wheels."""

    series: str
    wheels: tuple[str, ...]
    min_driver: str  # the oldest NVIDIA driver that loads (JITs) this nvcc's PTX
    archs: frozenset[int]  # what its nvcc targets (`nvcc --list-gpu-arch`)
    # Link names the wheels lack: unversioned dev links, and empty stubs for libraries cudarc
    # only names for -l (it loads them at run time; --as-needed drops them from the binary).
    dev_links: Mapping[str, str] = field(default_factory=dict)
    stubs: Mapping[str, str] = field(default_factory=dict)


CUDA_PINS: dict[str, CudaPin] = {
    "13.0": CudaPin(
        series="13.0",
        wheels=(
            "nvidia-cuda-nvcc==13.0.88",
            "nvidia-nvvm==13.0.88",
            "nvidia-cuda-crt==13.0.88",
            "nvidia-cuda-runtime==13.0.96",
            "nvidia-curand==10.4.0.35",
            "nvidia-cuda-cccl==13.0.85",
        ),
        min_driver="580.65.06",
        archs=frozenset({75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121}),
        dev_links={"libcudart.so": "libcudart.so.13", "libcurand.so": "libcurand.so.10"},
        stubs={
            "libcuda.so": "libcuda.so.1",
            "libcublas.so": "libcublas.so.13",
            "libcublasLt.so": "libcublasLt.so.13",
            "libnvrtc.so": "libnvrtc.so.13",
        },
    ),
}
DEFAULT_PIN = "13.0"

# Capabilities a CUDA 13 toolkit no longer targets, and what to do instead.
_DROPPED = {
    70: "Volta (sm_70) was dropped by CUDA 13, and TEI lists Volta as unsupported: build with a "
    "CUDA 12 toolkit (point build.cuda_home at it; PyPI has no CUDA 12 nvcc)",
    72: "Xavier (sm_72) was dropped by CUDA 13: build on the board with JetPack 5's CUDA 11/12",
}

FlashCausal = Literal["no", "yes", "both"]


@dataclass(frozen=True)
class FlashSelection:
    """The flash-attention kernels a build compiles (empty ``head_dims``: all of them)."""

    head_dims: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    causal: FlashCausal = "both"

    @property
    def restricted(self) -> bool:
        return bool(self.head_dims or self.dtypes or self.causal != "both")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FlashSelection:
        """The selection a build recorded in its manifest's environment (:meth:`env`)."""
        dims = tuple(int(d) for d in env.get("CANDLE_FLASH_ATTN_HDIMS", "").split(",") if d.strip())
        dtypes = tuple(d.strip() for d in env.get("CANDLE_FLASH_ATTN_DTYPES", "").split(",") if d.strip())
        recorded = env.get("CANDLE_FLASH_ATTN_CAUSAL", "")
        causal: FlashCausal = "yes" if recorded == "yes" else "no" if recorded == "no" else "both"
        return cls(dims, dtypes, causal)

    def env(self) -> dict[str, str]:
        if not self.restricted:
            return {}
        return {
            "CANDLE_FLASH_ATTN_HDIMS": ",".join(str(d) for d in self.head_dims),
            "CANDLE_FLASH_ATTN_DTYPES": ",".join(self.dtypes),
            "CANDLE_FLASH_ATTN_CAUSAL": self.causal,
        }

    def suffix(self) -> str:
        """For the install name: a restricted build is another router than the full one."""
        if not self.restricted:
            return ""
        dims = ".".join(str(d) for d in self.head_dims) or "all"
        return (
            f"-fa{dims}"
            + ("" if not self.dtypes else "-" + ".".join(self.dtypes))
            + ("" if self.causal == "both" else f"-{'causal' if self.causal == 'yes' else 'noncausal'}")
        )


def flash_selection_for_models(models: Sequence[Path], dtypes: Sequence[str] = ("fp16",)) -> FlashSelection:
    """The kernels these models need, from their config.json (:mod:`pytei.models.attention`)."""
    dims: set[int] = set()
    causal: set[bool] = set()
    for model in models:
        attention = read_attention(model, hint="give --flash-attn-head-dims instead")
        dims.add(attention.head_dim)
        causal.add(attention.causal)
    which: FlashCausal = "both" if len(causal) > 1 else ("yes" if causal == {True} else "no")
    return FlashSelection(tuple(sorted(dims)), tuple(dtypes), which)


# What a Jetson Orin build compiles with: JetPack 6's toolkit, on the board (sm_87 is in it).
JETPACK_CUDA = "12.6"
JETPACK_CUDA_HOME = "/usr/local/cuda"


@dataclass
class CudaPlan:
    """What a CUDA plan adds: environment, tools (found or needed), the toolkit to provide."""

    env: dict[str, str]
    tools: dict[str, str]
    notes: list[str]
    needed: list[str]  # what this machine lacks and the build would get first
    pin: CudaPin | None  # the wheels pytei installs (None: the user's toolkit)
    nvcc_version: str  # "13.0"
    build_dirs: list[str]


def _provided_root(cache: Cache, pin: CudaPin) -> Path:
    return cache.root / "native" / f"cuda-{pin.series}"


def _toolkit_home(root: Path) -> Path:
    return root / "nvidia" / "cu13"  # where the CUDA 13 wheels put bin/, include/, lib/


def plan_cuda(
    *,
    cache: Cache,
    env: Mapping[str, str],
    compute_cap: int,
    cuda_home: str,
    jetson: bool,
    flash: bool,
    selection: FlashSelection,
    memory_available: int,
    cores: int,
    planning: bool = False,
) -> CudaPlan:
    """The CUDA part of a plan; raises :class:`ToolVersionError` for a capability the toolkit
    cannot target.  ``planning`` (a dry run, possibly for another machine) lists a toolkit that
    only the target can have (JetPack's) as needed instead of refusing."""
    notes: list[str] = []
    needed: list[str] = []
    tools: dict[str, str] = {}
    pin: CudaPin | None = None  # set when pytei provides the toolkit
    try:
        nvcc: Nvcc | None = find_nvcc(env, cuda_home)
    except PyteiError:
        nvcc = None
    if nvcc is None:
        pin = CUDA_PINS[DEFAULT_PIN]
        provided = _provided_root(cache, pin)
        if jetson and not planning:
            raise ToolVersionError(
                "a Jetson Orin build needs JetPack's CUDA toolkit (CUDA 12 at /usr/local/cuda), and none was found",
                hint="build on the board (or point build.cuda_home at JetPack's toolkit): PyPI's CUDA 13 "
                "wheels are for servers (SBSA), not Tegra",
            )
        if jetson:
            pin = None  # nothing pytei can install: JetPack's toolkit comes with the board
            tools["nvcc"] = f"{JETPACK_CUDA_HOME}/bin/nvcc (JetPack 6, CUDA {JETPACK_CUDA}: needed)"
            needed.append(
                f"JetPack 6's CUDA {JETPACK_CUDA} toolkit at {JETPACK_CUDA_HOME} (build on the board, or set "
                "build.cuda_home): PyPI's CUDA 13 wheels are for servers (SBSA), not Tegra"
            )
        elif (provided / "pytei.json").is_file():
            nvcc = find_nvcc(env, str(_toolkit_home(provided)))
            tools["nvcc"] = f"{nvcc.path} (CUDA {nvcc.version}, pytei's wheels)"
        else:
            home = _toolkit_home(provided)
            tools["nvcc"] = f"{home / 'bin' / 'nvcc'} (CUDA {pin.series}, to be installed from PyPI: needed)"
            needed.append(f"CUDA {pin.series} toolkit from PyPI wheels: {' '.join(pin.wheels)}")
        if pin is not None:
            notes.append(
                f"CUDA {pin.series} from PyPI wheels; its PTX loads on NVIDIA driver {pin.min_driver} or newer "
                "(an older driver cannot JIT it: use a toolkit as old as the target's driver)"
            )
    else:
        tools["nvcc"] = f"{nvcc.path} (CUDA {nvcc.version})"
    if nvcc is not None:
        version, archs, major = f"{nvcc.version.major}.{nvcc.version.minor}", nvcc.archs, nvcc.version.major
    elif pin is None:  # planning a Jetson build: JetPack 6's toolkit targets sm_87
        version, archs, major = JETPACK_CUDA, frozenset[int](), int(JETPACK_CUDA.split(".", maxsplit=1)[0])
    else:
        version, archs, major = pin.series, pin.archs, int(pin.series.split(".")[0])
    if archs and compute_cap not in archs:
        why = _DROPPED.get(compute_cap) if major >= 13 else None
        raise ToolVersionError(
            f"CUDA {version} (nvcc {nvcc.path if nvcc else 'from PyPI'}) cannot compile for sm_{compute_cap}"
            + (f": {why}" if why else ""),
            hint="install a CUDA toolkit that supports it and set build.cuda_home",
        )
    if pin is not None:
        home = _toolkit_home(_provided_root(cache, pin))
    elif nvcc is not None:
        home = nvcc.cuda_home
    else:
        home = Path(JETPACK_CUDA_HOME)
    # position-independent kernels serve both artifacts: the router links them into an
    # executable, the in-process engine into a shared object (which refuses non-PIC code)
    kernels = cache.root / "kernels" / f"sm{compute_cap}-cuda{version}-pic"
    build_dirs = {
        "CANDLE_FLASH_ATTN_BUILD_DIR": kernels / "flash-attn",
        "CANDLE_FLASH_ATTN_V1_BUILD_DIR": kernels / "flash-attn-v1",
        "CANDLE_LAYER_NORM_BUILD_DIR": kernels / "layer-norm",
        "CANDLE_ROTARY_BUILD_DIR": kernels / "rotary",
        "CANDLE_INDEX_SELECT_BUILD_DIR": kernels / "index-select",
    }
    nvcc_jobs = max(
        1, min(cores, int(memory_available / (NVCC_JOB_GIB * 2**30)) if memory_available else cores)
    )
    result = {
        "CUDA_COMPUTE_CAP": str(compute_cap),
        "CUDA_ROOT": str(home),
        "PATH": f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        # bindgen_cuda runs one nvcc per rayon thread, inside a single cargo job.
        "RAYON_NUM_THREADS": str(nvcc_jobs),
        **{key: str(path) for key, path in build_dirs.items()},
    }
    nvcc_flags = ["-Xcompiler", "-fPIC"]
    if major >= 13 and flash:
        # cutlass 3.5 (candle's submodule) picks the pre-12.5 driver typedefs for nvcc 13.0
        # (its version test reads MINOR >= 5); flash-attn v2 never calls those wrappers.
        nvcc_flags.append("-DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL")
    result["NVCC_APPEND_FLAGS"] = " ".join(nvcc_flags)
    if flash:
        result.update(selection.env())
        if selection.restricted:
            notes.append(
                "flash-attn kernels: head dims "
                + (",".join(map(str, selection.head_dims)) or "all")
                + f", {','.join(selection.dtypes) or 'fp16,bf16'}, causal {selection.causal} "
                "(a model needing others is refused when the router starts)"
            )
    notes.append(f"nvcc runs {nvcc_jobs} at a time (~{NVCC_JOB_GIB:g} GiB each)")
    return CudaPlan(result, tools, notes, needed, pin, version, [str(p) for p in build_dirs.values()])


_EXPLICIT = re.compile(r"\bcuda-(\d{2})(\d{2})(\d)\b")


def cudarc_version_source(features: str) -> tuple[str, str] | None:
    """From cudarc's enabled features: ("12.2", "cuda-12020") when an explicit version feature
    is on (cudarc then never reads the toolkit's version), None when it asks the toolkit."""
    found = sorted(_EXPLICIT.findall(features), reverse=True)
    if not found:
        return None
    major, minor, _ = found[0]
    return f"{int(major)}.{int(minor)}", f"cuda-{major}{minor}{found[0][2]}"


# --- providing the toolkit ----------------------------------------------------------------


def provide_cuda(cache: Cache, series: str, env: Mapping[str, str]) -> tuple[Path, str]:
    """Install the pinned CUDA wheels into the cache (once); returns the toolkit root and the
    source description for the manifest."""
    pin = CUDA_PINS[series]
    root = _provided_root(cache, pin)
    marker = root / "pytei.json"
    if not marker.is_file():
        with cache.lock(f"native-cuda-{series}"):
            if not marker.is_file():
                _install(cache, pin, env, root)
    return _toolkit_home(root), "wheels " + ", ".join(pin.wheels)


def _install(cache: Cache, pin: CudaPin, env: Mapping[str, str], root: Path) -> None:
    wheels = cache.area("wheels", f"cuda-{pin.series}")
    try:
        run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *pin.wheels],
            env=dict(env), stream=False, message=f"could not download the CUDA {pin.series} wheels",
        )  # fmt: skip
    except CommandFailedError as exc:
        raise BuildError(
            exc.message, hint="check access to PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS)"
        ) from exc
    with atomic_dir(root) as scratch:
        names = [str(p) for p in sorted(wheels.glob("*.whl"))]
        run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "--target", str(scratch),
             *names], env=dict(env), stream=False)  # fmt: skip
        home = scratch / "nvidia" / "cu13"
        if not (home / "bin" / "nvcc").is_file():
            raise BuildError(f"the CUDA {pin.series} wheels gave no bin/nvcc under {home}")
        lib = home / "lib"
        for name, target in pin.dev_links.items():
            if not (lib / target).exists():
                raise BuildError(f"the CUDA {pin.series} wheels have no lib/{target}")
            (lib / name).symlink_to(target)
        stubs = lib / "stubs"
        stubs.mkdir(exist_ok=True)
        for name, soname in pin.stubs.items():
            _stub(stubs / name, soname, env)
        # cudarc's build script looks for lib64 too; the wheels have lib only.
        (home / "lib64").symlink_to("lib")
        nvcc = find_nvcc(env, str(home))
        data = {"series": pin.series, "wheels": list(pin.wheels), "nvcc": str(nvcc.version),
                "archs": sorted(nvcc.archs), "min_driver": pin.min_driver}  # fmt: skip
        (scratch / "pytei.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


def _stub(path: Path, soname: str, env: Mapping[str, str]) -> None:
    """An empty shared object with ``soname``: enough for the linker to resolve ``-l``."""
    source = path.with_suffix(".c")
    source.write_text("/* link stub written by pytei */\n", encoding="utf-8")
    try:
        run(
            ["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(path), str(source)],
            env=dict(env),
            stream=False,
        )
    finally:
        source.unlink(missing_ok=True)


def driver_ok(driver: str, pin: CudaPin) -> bool:
    return Version.parse(driver) >= Version.parse(pin.min_driver)
