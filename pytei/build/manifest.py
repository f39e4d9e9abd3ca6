"""The build's output as a typed contract: :class:`BuildManifest`, written once by the build.

Everything after the build (serving, benchmarks, the in-process engine, the matrix, images)
reads build facts from here as attributes, never by poking at ``manifest.json`` or by
re-deriving them from feature lists.  The JSON layout is pytei 0.1's, plus the fields that
schema 2 added (``artifact``, ``install_name``, ``device``, ``default_dtype``, ``units.total``,
and where each native library's runtime files are); a schema-1 file is migrated on read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from pytei.cache import atomic_write
from pytei.errors import CacheError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "Artifact",
    "BinaryRecord",
    "BuildManifest",
    "BuildMode",
    "Device",
    "Dtype",
    "MachineRecord",
    "NativeLibRecord",
    "PatchRecord",
    "SourceRecord",
    "Transport",
    "UnitCounts",
    "default_dtype_for",
    "device_for",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 2

Artifact = Literal["router", "engine"]
Transport = Literal["http", "grpc"]
Device = Literal["cpu", "cuda", "metal"]
Dtype = Literal["float32", "float16", "bfloat16"]
BuildMode = Literal["release", "fast"]

_CUDA_FEATURES = frozenset({"candle-cuda", "candle-cuda-turing", "candle-cuda-volta"})


def device_for(features: Sequence[str], compute_cap: int | None) -> Device:
    """Where a build with these features runs its models."""
    if compute_cap or _CUDA_FEATURES & set(features):
        return "cuda"
    if "metal" in features:
        return "metal"
    return "cpu"


def default_dtype_for(features: Sequence[str], device: Device) -> Dtype | None:
    """The ``--dtype`` pytei passes when the user gives none (None: the router's own default).

    Upstream defaults candle to float16 unless ort/mkl/accelerate is compiled in; on a CPU that
    is slower than float32 and less exact (benchmarks/results/cpu_dtype_compare.json: 2.68x
    fewer texts/s), so CPU builds get float32.  The python backend chooses for itself.
    """
    if "python" in features:
        return None
    return "float32" if device == "cpu" else "float16"


@dataclass(frozen=True)
class PatchRecord:
    name: str
    sha256: str


@dataclass(frozen=True)
class CrateRecord:
    name: str
    dest: str
    sha256: str


@dataclass(frozen=True)
class SourceRecord:
    """A git source of upstream's ``[patch]`` table as this build got it."""

    url: str
    rev: str
    kind: Literal["checkout", "stand-in"]
    path: str
    packages: Mapping[str, str] = field(default_factory=dict)
    submodules: tuple[str, ...] = ()
    note: str = ""
    patches: tuple[str, ...] = ()  # our patches applied to it


@dataclass(frozen=True)
class NativeLibRecord:
    """A native library the artifact links, and where it came from."""

    name: str
    version: str
    source: str  # a wheel name, "directory <path>", ...
    root: str = ""  # what the build environment pointed at ("" in schema-1 manifests)
    runtime_files: tuple[str, ...] = ()  # file names installed beside the artifact


@dataclass(frozen=True)
class MachineRecord:
    os: str
    arch: str
    cpu: str
    cores: int
    memory_bytes: int


@dataclass(frozen=True)
class BinaryRecord:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class UnitCounts:
    """Cargo units (crates, build scripts, proc macros) compiled and already fresh."""

    built: int
    fresh: int

    @property
    def total(self) -> int:
        return self.built + self.fresh


@dataclass(frozen=True)
class BuildManifest:
    """What was built, from which sources, how, how long and with how much memory."""

    artifact: Artifact
    install_name: str
    profile: str
    profile_reason: str
    features: tuple[str, ...]
    transport: Transport
    device: Device
    default_dtype: Dtype | None
    compute_cap: int | None
    mode: BuildMode
    cargo_profile: str
    pytei_version: str
    upstream: Mapping[str, str]
    fork_commit: str
    patches: tuple[PatchRecord, ...]
    crates: tuple[CrateRecord, ...]
    sources: tuple[SourceRecord, ...]
    env: Mapping[str, str]
    rustc: str
    toolchain_note: str
    tools: Mapping[str, str]
    native_libs: tuple[NativeLibRecord, ...]
    jobs: int
    cargo_argv: tuple[str, ...]
    started_at: str
    finished_at: str
    wall_seconds: float
    peak_memory_bytes: int
    build_machine: MachineRecord
    binary: BinaryRecord
    log: str
    warnings: tuple[str, ...] = ()
    units: UnitCounts = UnitCounts(0, 0)
    schema: int = MANIFEST_SCHEMA

    # -- reading and writing ----------------------------------------------------------------

    @classmethod
    def read(cls, path: Path) -> BuildManifest:
        """Read and check ``path``; a corrupt or foreign file is a :class:`CacheError`."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheError(
                f"the build manifest {path} is unreadable ({exc})",
                hint="rebuild with `pytei build` (the binary beside it cannot be trusted)",
            ) from exc
        return cls.from_json(data, where=str(path))

    def write(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def find_beside(cls, binary: Path) -> BuildManifest | None:
        """The manifest pytei wrote next to ``binary`` (None for a binary pytei did not build)."""
        path = binary.parent / MANIFEST_NAME
        return cls.read(path) if path.is_file() else None

    def with_binary_path(self, path: Path) -> BuildManifest:
        return replace(self, binary=replace(self.binary, path=str(path)))

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": self.schema,
            "artifact": self.artifact,
            "install_name": self.install_name,
            "pytei_version": self.pytei_version,
            "profile": self.profile,
            "profile_reason": self.profile_reason,
            "features": list(self.features),
            "transport": self.transport,
            "device": self.device,
            "default_dtype": self.default_dtype,
            "compute_cap": self.compute_cap,
            "mode": self.mode,
            "cargo_profile": self.cargo_profile,
            "upstream": dict(self.upstream),
            "fork_commit": self.fork_commit,
            "patches": [{"name": p.name, "sha256": p.sha256} for p in self.patches],
            "crates": [{"name": c.name, "dest": c.dest, "sha256": c.sha256} for c in self.crates],
            "sources": [
                {
                    "url": s.url,
                    "rev": s.rev,
                    "kind": s.kind,
                    "path": s.path,
                    "packages": dict(s.packages),
                    "submodules": list(s.submodules),
                    "note": s.note,
                    "patches": list(s.patches),
                }
                for s in self.sources
            ],
            "env": dict(self.env),
            "rustc": self.rustc,
            "toolchain_note": self.toolchain_note,
            "tools": dict(self.tools),
            "native_libs": [
                {
                    "name": n.name,
                    "version": n.version,
                    "source": n.source,
                    "root": n.root,
                    "runtime_files": list(n.runtime_files),
                }
                for n in self.native_libs
            ],
            "jobs": self.jobs,
            "cargo_argv": list(self.cargo_argv),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_seconds": self.wall_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "build_machine": {
                "os": self.build_machine.os,
                "arch": self.build_machine.arch,
                "cpu": self.build_machine.cpu,
                "cores": self.build_machine.cores,
                "memory_bytes": self.build_machine.memory_bytes,
            },
            "binary": {"sha256": self.binary.sha256, "size": self.binary.size, "path": self.binary.path},
            "log": self.log,
            "warnings": list(self.warnings),
            "units": {"built": self.units.built, "fresh": self.units.fresh, "total": self.units.total},
        }
        return data

    @classmethod
    def from_json(cls, data: object, *, where: str = "manifest") -> BuildManifest:
        if not isinstance(data, dict):
            raise _bad(where, "it is not a JSON object")
        schema = data.get("schema")
        if schema == 1:
            data = _migrate_from_1(data)
        elif schema != MANIFEST_SCHEMA:
            raise _bad(
                where,
                f"schema {schema!r} is not one this pytei reads (1 or {MANIFEST_SCHEMA})",
                hint="rebuild with `pytei build` using this pytei, or upgrade pytei",
            )
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(where, f"{type(exc).__name__}: {exc}") from exc


def _bad(where: str, why: str, hint: str | None = None) -> CacheError:
    return CacheError(
        f"the build manifest {where} is not valid: {why}",
        hint=hint or "rebuild with `pytei build` (the binary beside it cannot be trusted)",
    )


def _migrate_from_1(data: Mapping[str, Any]) -> dict[str, Any]:
    """pytei 0.1.0's manifest: routers only; device and dtype were decided at serve time."""
    migrated = dict(data)
    features = list(data.get("features") or [])
    device = device_for(features, data.get("compute_cap"))
    migrated.update(
        schema=MANIFEST_SCHEMA,
        artifact="router",
        install_name=str(data.get("profile", "")) + ("-grpc" if data.get("transport") == "grpc" else ""),
        device=device,
        default_dtype=default_dtype_for(features, device),
    )
    return migrated


def _literal(value: object, kind: object, name: str) -> Any:
    allowed = get_args(kind)
    if value not in allowed:
        raise ValueError(f"{name} is {value!r}, not one of {', '.join(map(repr, allowed))}")
    return value


def _strs(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} is not a list of strings")
    return tuple(value)


def _str_map(value: object, name: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"{name} is not an object")
    return {str(k): str(v) for k, v in value.items()}


def _parse(data: Mapping[str, Any]) -> BuildManifest:
    dtype = data.get("default_dtype")
    units = data.get("units") or {}
    machine = data["build_machine"]
    binary = data["binary"]
    return BuildManifest(
        schema=int(data["schema"]),
        artifact=_literal(data["artifact"], Artifact, "artifact"),
        install_name=str(data["install_name"]),
        pytei_version=str(data["pytei_version"]),
        profile=str(data["profile"]),
        profile_reason=str(data.get("profile_reason", "")),
        features=_strs(data["features"], "features"),
        transport=_literal(data.get("transport", "http"), Transport, "transport"),
        device=_literal(data["device"], Device, "device"),
        default_dtype=None if dtype is None else _literal(dtype, Dtype, "default_dtype"),
        compute_cap=None if data.get("compute_cap") in (None, 0) else int(data["compute_cap"]),
        mode=_literal(data["mode"], BuildMode, "mode"),
        cargo_profile=str(data["cargo_profile"]),
        upstream=_str_map(data["upstream"], "upstream"),
        fork_commit=str(data["fork_commit"]),
        patches=tuple(PatchRecord(str(p["name"]), str(p["sha256"])) for p in data.get("patches", [])),
        crates=tuple(
            CrateRecord(str(c["name"]), str(c["dest"]), str(c["sha256"])) for c in data.get("crates", [])
        ),
        sources=tuple(
            SourceRecord(
                url=str(s["url"]),
                rev=str(s["rev"]),
                kind=_literal(s["kind"], Literal["checkout", "stand-in"], "sources[].kind"),
                path=str(s.get("path", "")),
                packages=_str_map(s.get("packages", {}), "sources[].packages"),
                submodules=_strs(s.get("submodules", []), "sources[].submodules"),
                note=str(s.get("note", "")),
                patches=_strs(s.get("patches", []), "sources[].patches"),
            )
            for s in data.get("sources", [])
        ),
        env=_str_map(data.get("env", {}), "env"),
        rustc=str(data.get("rustc", "")),
        toolchain_note=str(data.get("toolchain_note", "")),
        tools=_str_map(data.get("tools", {}), "tools"),
        native_libs=tuple(
            NativeLibRecord(
                name=str(n["name"]),
                version=str(n["version"]),
                source=str(n.get("source", "")),
                root=str(n.get("root", "")),
                runtime_files=_strs(n.get("runtime_files", []), "native_libs[].runtime_files"),
            )
            for n in data.get("native_libs", [])
        ),
        jobs=int(data.get("jobs", 0)),
        cargo_argv=_strs(data.get("cargo_argv", []), "cargo_argv"),
        started_at=str(data.get("started_at", "")),
        finished_at=str(data.get("finished_at", "")),
        wall_seconds=float(data.get("wall_seconds", 0.0)),
        peak_memory_bytes=int(data.get("peak_memory_bytes", 0)),
        build_machine=MachineRecord(
            os=str(machine["os"]),
            arch=str(machine["arch"]),
            cpu=str(machine["cpu"]),
            cores=int(machine["cores"]),
            memory_bytes=int(machine["memory_bytes"]),
        ),
        binary=BinaryRecord(
            path=str(binary.get("path", "")), sha256=str(binary["sha256"]), size=int(binary["size"])
        ),
        log=str(data.get("log", "")),
        warnings=_strs(data.get("warnings", []), "warnings"),
        units=UnitCounts(int(units.get("built", 0)), int(units.get("fresh", 0))),
    )
