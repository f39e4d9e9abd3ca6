"""What machine this is: OS, CPU, NVIDIA GPUs, Jetson.

Parsing is separate from reading so tests feed recorded ``nvidia-smi`` output, ``/proc/cpuinfo``
and device-tree text for every kind of machine pytei has a profile for.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pytei._subprocess import find_tool, run
from pytei.build.toolchain import cpu_count
from pytei.errors import CommandFailedError, HardwareError, ToolMissingError

__all__ = ["Gpu", "Machine", "detect_machine", "parse_cpuinfo", "parse_nvidia_smi"]

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,compute_cap,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_cap: int  # major*10 + minor, as TEI's CUDA_COMPUTE_CAP
    memory_mib: int = 0


# x86: AVX-512 VNNI, AVX-VNNI (Alder Lake and later), AMX; arm64: SDOT/UDOT and I8MM.
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp")


@dataclass(frozen=True)
class Machine:
    os: str  # "linux", "darwin", ...
    arch: str  # "x86_64", "aarch64", "arm64"
    cpu_vendor: str = ""
    cpu_model: str = ""
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    gpus: tuple[Gpu, ...] = ()
    jetson_model: str | None = None
    cores: int = 1
    memory_total: int = 0
    memory_available: int = 0
    notes: tuple[str, ...] = ()  # what detection could not read, and why

    @property
    def compute_caps(self) -> list[int]:
        return sorted({gpu.compute_cap for gpu in self.gpus})

    @property
    def int8_dot(self) -> str | None:
        """The CPU's int8 dot-product instructions (what makes int8 matmuls beat fp32), or None."""
        return next((flag for flag in INT8_DOT_FLAGS if flag in self.cpu_flags), None)

    def cpu_summary(self) -> str:
        levels = [flag for flag in ("avx512f", "avx2", "fma", "neon", "asimd") if flag in self.cpu_flags]
        model = self.cpu_model or self.cpu_vendor or "unknown CPU"
        return f"{model} ({self.arch}{', ' + ' '.join(levels) if levels else ''})"


def parse_compute_cap(text: str) -> int:
    """``8.6`` -> 86, ``12.0`` -> 120, ``9.0`` -> 90."""
    major, _, minor = text.strip().partition(".")
    try:
        return int(major) * 10 + int(minor or 0)
    except ValueError:
        raise HardwareError(f"nvidia-smi reported an unreadable compute capability {text!r}") from None


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Rows of ``index, name, compute_cap, memory.total`` (csv, no header, no units)."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3:
            raise HardwareError(f"unexpected nvidia-smi line {line!r}", hint="update the NVIDIA driver")
        memory = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
        gpus.append(Gpu(int(parts[0]), parts[1], parse_compute_cap(parts[2]), memory))
    return tuple(gpus)


def parse_cpuinfo(text: str) -> tuple[str, str, frozenset[str]]:
    """Vendor, model name and flags from /proc/cpuinfo (x86 ``flags`` or arm ``Features``)."""
    vendor = model = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        value = value.strip()
        if key == "vendor_id" and not vendor:
            vendor = value
        elif key in ("model name", "Model", "Hardware") and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        elif key == "CPU implementer" and not vendor:
            vendor = {"0x41": "ARM", "0x4e": "NVIDIA", "0x61": "Apple", "0xc0": "Ampere"}.get(value, value)
    return vendor, model, flags


def parse_jetson(device_tree_model: str | None, tegra_release: str | None) -> str | None:
    """The Jetson model name when this is a Jetson board (device tree or L4T release file)."""
    model = (device_tree_model or "").replace("\x00", "").strip()
    if "jetson" in model.lower() or "orin" in model.lower():
        return model
    if tegra_release:
        return "NVIDIA Jetson (L4T " + tegra_release.split(",")[0].strip("# ").strip() + ")"
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _query_gpus(env: Mapping[str, str], notes: list[str]) -> tuple[Gpu, ...]:
    try:
        smi = find_tool("nvidia-smi", env)
    except ToolMissingError:
        return ()
    try:
        output = run([smi, *NVIDIA_SMI_QUERY], env=env, stream=False, timeout=30).stdout
    except CommandFailedError as exc:
        notes.append(
            f"nvidia-smi failed ({exc.output.splitlines()[-1] if exc.output else exc}); no GPU assumed"
        )
        return ()
    return parse_nvidia_smi(output)


def detect_machine(
    env: Mapping[str, str] | None = None,
    *,
    root: Path = Path("/"),
    gpu_query: Callable[[Mapping[str, str], list[str]], tuple[Gpu, ...]] = _query_gpus,
) -> Machine:
    """Read this machine; ``root`` lets tests point at a recorded filesystem."""
    environment = os.environ if env is None else env
    notes: list[str] = []
    system = platform.system().lower()
    arch = platform.machine().lower()
    vendor = model = ""
    flags: frozenset[str] = frozenset()
    cpuinfo = _read(root / "proc" / "cpuinfo")
    if cpuinfo is not None:
        vendor, model, flags = parse_cpuinfo(cpuinfo)
    elif system == "linux":
        notes.append("/proc/cpuinfo is unreadable; CPU flags unknown")
    if system == "darwin":
        model = platform.processor() or model
    jetson = parse_jetson(
        _read(root / "proc" / "device-tree" / "model"), _read(root / "etc" / "nv_tegra_release")
    )
    memory = psutil.virtual_memory()
    return Machine(
        os=system,
        arch=arch,
        cpu_vendor=vendor,
        cpu_model=model,
        cpu_flags=flags,
        gpus=gpu_query(environment, notes),
        jetson_model=jetson,
        cores=cpu_count(),
        memory_total=memory.total,
        memory_available=memory.available,
        notes=tuple(notes),
    )
