"""``pytei doctor``: what a build will need here, and what is missing."""

from __future__ import annotations

import contextlib
import importlib.metadata
import shutil
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from pytei._subprocess import find_tool, run
from pytei.build.hardware import Machine
from pytei.build.options import BuildOptions
from pytei.build.profiles import load_profiles, select_profile
from pytei.build.toolchain import Version, find_nvcc, find_protoc, find_rust, protoc_supports_optional
from pytei.cache import Cache
from pytei.errors import CommandFailedError, PyteiError
from pytei.fork.upstream import Upstream

__all__ = ["Check", "pinned_rust_of_fetched_fork", "run_checks"]

CheckStatus = Literal["ok", "missing", "warn", "info"]

# Upstream v1.9.3 pins this toolchain (rust-toolchain.toml); a fetched fork reports its own.
DEFAULT_PINNED_RUST = Version(1, 92, 0)


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    needed_for: str  # which builds need it
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _guard(name: str, needed_for: str, probe: Callable[[], Check]) -> Check:
    try:
        return probe()
    except PyteiError as exc:
        return Check(name, "missing", exc.message, needed_for, exc.hint or "")


def _git(env: Mapping[str, str]) -> Check:
    path = find_tool("git", env)
    line = run([path, "--version"], env=env, stream=False).stdout.strip()
    return Check("git", "ok", f"{line} ({path})", "every build")


def _rust(env: Mapping[str, str], pinned: Version) -> Check:
    rust = find_rust(env, pinned)
    return Check("rust", "ok" if "pinned" in rust.note else "warn", rust.note, "every build")


def pinned_rust_of_fetched_fork(options: BuildOptions, cache: Cache) -> Version | None:
    """The Rust version the fetched upstream pin asks for (None before `pytei fork fetch`)."""
    with contextlib.suppress(PyteiError, tomllib.TOMLDecodeError, ValueError, KeyError):
        upstream = Upstream(options.fork, cache)
        if upstream.repo_dir.exists() and upstream.git.has_commit(upstream.fork.commit):
            text = upstream.git.out("show", f"{upstream.fork.commit}:rust-toolchain.toml")
            return Version.parse(str(tomllib.loads(text)["toolchain"]["channel"]))
    return None


def _protoc(env: Mapping[str, str], options: BuildOptions) -> Check:
    protoc = find_protoc(env, options.protoc)
    ok, note = protoc_supports_optional(protoc, flag_patched=True)
    return Check(
        "protoc",
        "ok" if ok else "missing",
        f"{protoc.path}: {note}",
        "--grpc builds",
        "" if ok else "install protoc 3.12+ (apt-get install protobuf-compiler)",
    )


def _nvcc(env: Mapping[str, str], options: BuildOptions) -> Check:
    nvcc = find_nvcc(env, options.cuda_home)
    archs = ",".join(str(a) for a in sorted(nvcc.archs)) or "unknown"
    return Check(
        "nvcc", "ok", f"CUDA {nvcc.version} at {nvcc.path}; compiles for sm {archs}", "CUDA profiles"
    )


def _gpu(machine: Machine) -> Check:
    if machine.jetson_model:
        return Check("gpu", "info", f"{machine.jetson_model} (sm_87)", "CUDA profiles")
    if not machine.gpus:
        return Check("gpu", "info", "no NVIDIA GPU found (nvidia-smi)", "CUDA profiles")
    gpus = ", ".join(
        f"GPU {g.index}: {g.name}, compute capability {g.compute_cap / 10:.1f}" for g in machine.gpus
    )
    return Check("gpu", "ok", gpus, "CUDA profiles")


def _profile_choice(machine: Machine, configured: str) -> Check:
    """Which profile `pytei build` takes here and why: the choice users otherwise guess."""
    profiles = load_profiles()
    if configured and configured in profiles:
        profile, why = profiles[configured], "build.profile names it"
    else:
        try:
            selection = select_profile(machine, profiles)
        except PyteiError as exc:
            return Check("profile", "warn", exc.message, "pytei build without --profile", exc.hint or "")
        profile, why = selection.profile, selection.reason
    return Check(
        "profile", "info", f"{profile.name} ({why}): {profile.description}", "pytei build without --profile"
    )


def _int8(machine: Machine) -> Check:
    if machine.gpus or machine.os != "linux":
        return Check(
            "int8", "info", "int8 ONNX serving is for CPU ort routers", "pytei serve --quantize int8"
        )
    if machine.int8_dot is None:
        return Check(
            "int8", "info",
            "no int8 dot-product instructions (VNNI, ARM dot product): int8 matmuls are rarely faster than fp32 here",
            "pytei serve --quantize int8",
        )  # fmt: skip
    return Check(
        "int8", "ok",
        f"{machine.int8_dot}: int8 matmuls served 2.1x fp32's texts/s on an AMX/VNNI Xeon with the Lee-corpus "
        "scores unchanged (benchmarks/results/cpu_int8.json); try `pytei serve --quantize int8`",
        "pytei serve --quantize int8",
    )  # fmt: skip


def _wheel_library(name: str, cache: Cache, version: str, needed_for: str) -> Check:
    provided = cache.root / "native" / f"{name}-{version}"
    if (provided / "pytei.json").is_file():
        return Check(name, "ok", f"provided by pytei at {provided}", needed_for)
    try:
        installed = importlib.metadata.version("onnxruntime" if name == "onnxruntime" else "mkl-static")
        where = f"installed wheel {installed}; pytei takes {version} into its cache"
    except importlib.metadata.PackageNotFoundError:
        where = f"pytei downloads the {version} wheel from PyPI at the first such build"
    return Check(name, "info", where, needed_for)


def run_checks(
    options: BuildOptions,
    cache: Cache,
    machine: Machine,
    env: Mapping[str, str],
    pinned_rust: Version | None = None,
    profile: str = "",
) -> list[Check]:
    """The checks, in the order `pytei doctor` prints them; ``profile`` is build.profile."""
    pinned = pinned_rust or DEFAULT_PINNED_RUST
    checks = [
        _guard("git", "every build", lambda: _git(env)),
        _guard("rust", "every build", lambda: _rust(env, pinned)),
        _guard("protoc", "--grpc builds", lambda: _protoc(env, options)),
        _guard("nvcc", "CUDA profiles", lambda: _nvcc(env, options)),
        _gpu(machine),
        _profile_choice(machine, profile),
        _int8(machine),
        _wheel_library("onnxruntime", cache, options.onnxruntime_version, "ort profiles"),
        _wheel_library("mkl", cache, options.mkl_version, "mkl profiles"),
    ]
    try:
        pip = run(
            [sys.executable, "-m", "pip", "--version"], env=env, stream=False, check=True
        ).stdout.split()[1]
        checks.append(Check("pip", "ok", f"pip {pip}", "ort/mkl profiles, packaged models"))
    except (CommandFailedError, PyteiError, IndexError):
        checks.append(
            Check(
                "pip",
                "missing",
                "pip does not run",
                "ort/mkl profiles, packaged models",
                "install pip for this Python",
            )
        )
    free = shutil.disk_usage(cache.root).free
    # A release build's target directory takes about 5 GiB; CUDA builds more.
    checks.append(
        Check(
            "disk",
            "ok" if free > 10 * 2**30 else "warn",
            f"{free / 2**30:.0f} GiB free at {cache.root}",
            "every build",
            "" if free > 10 * 2**30 else "free at least 10 GiB, or set PYTEI_HOME elsewhere",
        )
    )
    available = machine.memory_available / 2**30
    checks.append(
        Check(
            "memory",
            "ok" if available >= 4 else "warn",
            f"{available:.1f} GiB available of {machine.memory_total / 2**30:.1f}; {machine.cores} cores",
            "every build",
            "" if available >= 4 else "use --fast and --jobs 1 on small machines",
        )
    )
    checks.append(
        Check("cpu", "info", machine.cpu_summary(), "portable builds target the baseline of this arch")
    )
    for note in machine.notes:
        checks.append(Check("detection", "warn", note, "profile selection"))
    checks.append(Check("cache", "info", str(cache.root), "everything pytei fetches and builds"))
    return checks
