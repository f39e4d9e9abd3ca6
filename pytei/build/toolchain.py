"""The programs a build needs, found and version-checked: rust, protoc, nvcc, git.

Each finder returns a small frozen record or raises ToolMissingError / ToolVersionError with
the fix.  ``pytei doctor`` calls them all and reports instead of raising.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytei._subprocess import find_tool, run
from pytei.errors import CommandFailedError, ToolMissingError, ToolVersionError

__all__ = [
    "Nvcc",
    "cpu_cores",
    "Protoc",
    "RustToolchain",
    "Version",
    "find_nvcc",
    "find_protoc",
    "find_rust",
    "pinned_rust_version",
]

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.search(text)
        if match is None:
            raise ValueError(f"no version in {text!r}")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class RustToolchain:
    cargo: Path
    rustc_version: Version
    rustc_version_line: str
    toolchain: str | None  # what RUSTUP_TOOLCHAIN must be set to (None without rustup)
    pinned: Version | None
    note: str  # what was chosen and why, for the build log and manifest


@dataclass(frozen=True)
class Protoc:
    path: Path
    version: Version


@dataclass(frozen=True)
class Nvcc:
    path: Path
    version: Version
    archs: frozenset[int]  # compute capabilities it can compile for (sm_XX)
    cuda_home: Path


def pinned_rust_version(source_root: Path) -> Version | None:
    """The toolchain channel upstream's rust-toolchain.toml asks for, when it is a version."""
    path = source_root / "rust-toolchain.toml"
    if not path.is_file():
        return None
    try:
        channel = str(tomllib.loads(path.read_text(encoding="utf-8"))["toolchain"]["channel"])
    except (KeyError, tomllib.TOMLDecodeError, OSError):
        return None
    try:
        return Version.parse(channel)
    except ValueError:
        return None


def _rustc_version(env: Mapping[str, str], toolchain: str | None) -> tuple[Version, str]:
    environment = dict(env)
    if toolchain:
        environment["RUSTUP_TOOLCHAIN"] = toolchain
    line = run(["rustc", "--version"], env=environment, stream=False).stdout.strip()
    return Version.parse(line), line


def find_rust(env: Mapping[str, str], pinned: Version | None) -> RustToolchain:
    """Pick the toolchain: the pinned one if installed, else an installed newer one."""
    cargo = find_tool("cargo", env)
    find_tool("rustc", env)
    toolchain: str | None = None
    installed: list[str] = []
    try:
        rustup = find_tool("rustup", env)
    except ToolMissingError:
        rustup = None
    if rustup is not None:
        listing = run([rustup, "toolchain", "list"], env=env, check=False, stream=False).stdout
        installed = [line.split()[0] for line in listing.splitlines() if line.strip()]
        if pinned is not None:
            match = next(
                (name for name in installed if name.startswith(f"{pinned}-") or name == str(pinned)), None
            )
            if match is not None:
                toolchain = match
        if toolchain is None:
            default = next((line.split()[0] for line in listing.splitlines() if "(default)" in line), None)
            toolchain = default or "stable"
    try:
        version, line = _rustc_version(env, toolchain)
    except CommandFailedError as exc:
        raise ToolMissingError(
            f"rustc ({toolchain or 'on PATH'}) does not run: {exc.output.splitlines()[-1] if exc.output else exc}",
            hint="install a Rust toolchain with rustup",
        ) from exc
    if pinned is None:
        note = f"using {line} (upstream pins no version)"
    elif version == pinned or (toolchain and toolchain.startswith(str(pinned))):
        note = f"using the pinned toolchain {line}"
    elif version > pinned:
        note = f"upstream pins Rust {pinned}, which is not installed; using the newer {line}"
    else:
        raise ToolVersionError(
            f"upstream needs Rust {pinned} or newer, but the installed toolchain is {line}",
            hint=f"install it: `rustup toolchain install {pinned}` (or a newer stable)",
        )
    return RustToolchain(cargo, version, line, toolchain, pinned, note)


def find_protoc(env: Mapping[str, str], configured: str = "") -> Protoc:
    """protoc from the setting, then $PROTOC, then PATH."""
    candidate = configured or env.get("PROTOC", "") or "protoc"
    path = find_tool(candidate, env)
    line = run([path, "--version"], env=env, stream=False).stdout.strip()
    try:
        version = Version.parse(line)
    except ValueError as exc:
        raise ToolVersionError(
            f"{path} printed no version ({line!r})", hint="install protobuf-compiler"
        ) from exc
    # protoc 21.x and later print "libprotoc 21.12" (the 3.x prefix was dropped).
    if version.major >= 4 and version.major < 20:
        raise ToolVersionError(f"unrecognised protoc version {line!r} from {path}")
    return Protoc(path, version)


def protoc_supports_optional(protoc: Protoc, flag_patched: bool) -> tuple[bool, str]:
    """Whether proto3 ``optional`` compiles: natively from 3.15, with the flag from 3.12."""
    v = protoc.version
    if v.major >= 20 or (v.major == 3 and v.minor >= 15):
        return True, f"protoc {v} supports proto3 optional"
    if v.major == 3 and v.minor >= 12:
        if flag_patched:
            return True, f"protoc {v} needs --experimental_allow_proto3_optional (patch 0002 passes it)"
        return False, f"protoc {v} needs --experimental_allow_proto3_optional, which this tree does not pass"
    return False, f"protoc {v} is too old for proto3 optional (needs 3.12 or newer)"


def _cuda_home_candidates(env: Mapping[str, str], configured: str) -> list[Path]:
    homes = [configured, env.get("CUDA_HOME", ""), env.get("CUDA_PATH", ""), "/usr/local/cuda"]
    return [Path(h) for h in homes if h]


def find_nvcc(env: Mapping[str, str], configured: str = "") -> Nvcc:
    """nvcc from build.cuda_home, CUDA_HOME/CUDA_PATH, /usr/local/cuda, then PATH."""
    path: Path | None = None
    for home in _cuda_home_candidates(env, configured):
        if (home / "bin" / "nvcc").is_file():
            path = home / "bin" / "nvcc"
            break
    if path is None:
        path = find_tool("nvcc", env)
    line = run([path, "--version"], env=env, stream=False).stdout
    release = re.search(r"release (\d+)\.(\d+)", line)
    if release is None:
        raise ToolVersionError(f"{path} printed no CUDA release", hint="reinstall the CUDA toolkit")
    version = Version(int(release.group(1)), int(release.group(2)))
    listing = run([path, "--list-gpu-arch"], env=env, check=False, stream=False).stdout
    archs = frozenset(int(m) for m in re.findall(r"compute_(\d+)", listing))
    return Nvcc(path, version, archs, path.parent.parent)


def cpu_cores() -> list[int]:
    """The cores this process may run on (its affinity), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return list(range(os.cpu_count() or 1))


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
