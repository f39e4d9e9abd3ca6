"""Running a build plan: native libraries, cargo, installing the router, and its manifest."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pytei._version import __version__
from pytei.build.cargo import CargoOutcome, CargoProgress, run_cargo
from pytei.build.engine import ENGINE_LIBRARY, write_wheel
from pytei.build.hardware import Machine
from pytei.build.installs import BINARY_NAME, MANIFEST_NAME, InstalledRouter
from pytei.build.linklibs import NativeLibrary, provide
from pytei.build.manifest import (
    BinaryRecord,
    BuildManifest,
    CrateRecord,
    MachineRecord,
    NativeLibRecord,
    PatchRecord,
    SourceRecord,
    UnitCounts,
)
from pytei.build.plan import ROUTER_PACKAGE, BuildPlan
from pytei.cache import Cache, atomic_dir, sha256_file
from pytei.errors import BuildError, PyteiError

__all__ = ["BuildResult", "execute_plan"]

# Environment entries worth keeping in the manifest (what changes the binary or where it looks).
_RECORDED_ENV = ("CUDA_COMPUTE_CAP", "RUSTFLAGS", "RUSTUP_TOOLCHAIN", "GIT_SHA", "DOCKER_LABEL", "PROTOC",
                 "PYTEI_BUILD_ID", "PYTEI_ENGINE_FEATURES",
                 "ORT_LIB_LOCATION", "MKLROOT", "CUDA_ROOT", "NVCC_APPEND_FLAGS", "CANDLE_FLASH_ATTN_HDIMS",
                 "CANDLE_FLASH_ATTN_DTYPES", "CANDLE_FLASH_ATTN_CAUSAL")  # fmt: skip


@dataclass(frozen=True)
class BuildResult:
    router: InstalledRouter
    wall_seconds: float
    peak_rss_bytes: int
    units_built: int


def execute_plan(
    plan: BuildPlan,
    cache: Cache,
    machine: Machine,
    *,
    on_progress: Callable[[CargoProgress], None] | None = None,
    lock: bool = True,
) -> BuildResult:
    """Build and install; the previous install stays in place unless this one succeeds.

    ``lock=False``: the caller already holds the profile's build lock (``pytei build`` takes it
    before the plan checks the tree out, so that no other build rewrites the tree under it)."""
    started_at = datetime.now(UTC)
    with cache.lock(f"build-{plan.profile.name}") if lock else contextlib.nullcontext():
        natives = [provide(request, cache, plan.full_env) for request in plan.natives]
        for key, value in plan.full_env.items():
            if key.startswith("CANDLE_") and key.endswith("_BUILD_DIR"):
                Path(value).mkdir(parents=True, exist_ok=True)  # the kernel crates canonicalize them
        log_dir = cache.area("builds", plan.profile.name, "logs")
        log_path = log_dir / f"build-{started_at.strftime('%Y%m%dT%H%M%S')}.log"
        t0 = time.monotonic()
        outcome = run_cargo(
            plan.cargo_argv,
            cwd=Path(plan.source_dir),
            env=plan.full_env,
            log_path=log_path,
            total_units=plan.units,
            exact_total=plan.units_exact,
            final_link="linking (fat LTO)" if plan.cargo_profile == "release" else "linking",
            on_progress=on_progress,
        )
        wall = time.monotonic() - t0
        latest = log_dir / "latest.log"
        latest.unlink(missing_ok=True)
        latest.symlink_to(log_path.name)
        if plan.artifact == "engine":
            return _install_engine(plan, machine, natives, started_at, wall, outcome, log_path)
        binary = outcome.executables.get(ROUTER_PACKAGE)
        if binary is None or not binary.is_file():
            raise BuildError(f"cargo reported no {ROUTER_PACKAGE} binary", log_path=str(log_path))
        install_dir = plan.install_dir
        current = _up_to_date(install_dir, binary, plan)
        if current is not None:
            return BuildResult(current, wall, outcome.peak_rss_bytes, outcome.units_built)
        manifest = _manifest(plan, machine, natives, binary, started_at, wall, outcome, log_path)
        manifest = manifest.with_binary_path(install_dir / BINARY_NAME)
        with atomic_dir(install_dir) as scratch:
            shutil.copy2(binary, scratch / BINARY_NAME)
            for lib in natives:
                for path in lib.runtime_files:
                    if path.is_symlink():
                        (scratch / path.name).symlink_to(path.readlink())
                    else:
                        shutil.copy2(path, scratch / path.name)
            manifest.write(scratch / MANIFEST_NAME)
    router = InstalledRouter(
        plan.install_name, install_dir / BINARY_NAME, install_dir / MANIFEST_NAME, manifest
    )
    return BuildResult(router, wall, outcome.peak_rss_bytes, outcome.units_built)


def _up_to_date(install_dir: Path, binary: Path, plan: BuildPlan) -> InstalledRouter | None:
    """The installed router when cargo rebuilt nothing and it is the same binary and recipe.

    Its manifest then keeps describing the build that produced it (time, memory) instead of
    a no-op rebuild.
    """
    manifest_path = install_dir / MANIFEST_NAME
    if not manifest_path.is_file() or not (install_dir / BINARY_NAME).is_file():
        return None
    try:
        manifest = BuildManifest.read(manifest_path)
    except PyteiError:
        return None
    same = (
        manifest.binary.sha256 == sha256_file(binary)
        and manifest.fork_commit == plan.fork_commit
        and list(manifest.features) == plan.features
        and manifest.mode == plan.mode
    )
    if not same:
        return None
    return InstalledRouter(plan.install_name, install_dir / BINARY_NAME, manifest_path, manifest)


def _install_engine(
    plan: BuildPlan,
    machine: Machine,
    natives: list[NativeLibrary],
    started_at: datetime,
    wall: float,
    outcome: CargoOutcome,
    log_path: Path,
) -> BuildResult:
    """Pack ``pytei_native`` into a wheel in the install dir, with its manifest; the caller
    installs it (``pytei build --engine`` does, unless told where to write it instead)."""
    library = outcome.libraries.get(ENGINE_LIBRARY)
    if library is None or not library.is_file():
        raise BuildError(f"cargo reported no {ENGINE_LIBRARY} library", log_path=str(log_path))
    runtime = [path for lib in natives for path in lib.runtime_files]
    with atomic_dir(plan.install_dir) as scratch:
        wheel = write_wheel(scratch, Path(plan.source_dir), library, runtime, __version__)
        manifest = _manifest(plan, machine, natives, wheel, started_at, wall, outcome, log_path)
        manifest = manifest.with_binary_path(plan.install_dir / wheel.name)
        manifest.write(scratch / MANIFEST_NAME)
    engine = InstalledRouter(
        plan.install_name, plan.install_dir / wheel.name, plan.install_dir / MANIFEST_NAME, manifest
    )
    return BuildResult(engine, wall, outcome.peak_rss_bytes, outcome.units_built)


def _manifest(
    plan: BuildPlan,
    machine: Machine,
    natives: list[NativeLibrary],
    binary: Path,
    started_at: datetime,
    wall: float,
    outcome: CargoOutcome,
    log_path: Path,
) -> BuildManifest:
    return BuildManifest(
        artifact=plan.artifact,
        install_name=plan.install_name,
        pytei_version=__version__,
        profile=plan.profile.name,
        profile_reason=plan.reason,
        features=tuple(plan.features),
        transport=plan.transport,
        device=plan.device,
        default_dtype=plan.default_dtype,
        compute_cap=plan.profile.compute_cap or None,
        mode=plan.mode,
        cargo_profile=plan.cargo_profile,
        upstream=dict(plan.upstream),
        fork_commit=plan.fork_commit,
        patches=tuple(PatchRecord(p["name"], p["sha256"]) for p in plan.patches),
        crates=tuple(CrateRecord(c["name"], c["dest"], c["sha256"]) for c in plan.crates),
        sources=tuple(
            SourceRecord(
                url=s.url,
                rev=s.rev,
                kind="stand-in" if s.kind == "stand-in" else "checkout",
                path=s.path,
                packages=dict(s.packages),
                submodules=tuple(s.submodules),
                note=s.note,
                patches=tuple(s.patches),
            )
            for s in plan.sources
        ),
        env={k: v for k, v in plan.env.items() if k in _RECORDED_ENV},
        rustc=plan.toolchain["rustc"],
        toolchain_note=plan.toolchain["note"],
        tools=dict(plan.tools),
        native_libs=tuple(
            NativeLibRecord(
                name=n.name,
                version=n.version,
                source=n.source,
                root=str(n.root),
                runtime_files=tuple(p.name for p in n.runtime_files),
            )
            for n in natives
        ),
        jobs=plan.jobs,
        cargo_argv=tuple(plan.cargo_argv),
        started_at=started_at.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_seconds=round(wall, 1),
        peak_memory_bytes=outcome.peak_rss_bytes,
        build_machine=MachineRecord(
            os=machine.os,
            arch=machine.arch,
            cpu=machine.cpu_summary(),
            cores=machine.cores,
            memory_bytes=machine.memory_total,
        ),
        binary=BinaryRecord(path=str(binary), sha256=sha256_file(binary), size=binary.stat().st_size),
        log=str(log_path),
        warnings=tuple(plan.warnings),
        units=UnitCounts(outcome.units_built, outcome.units_fresh),
    )
