"""Running a build plan: native libraries, cargo, installing the router, and its manifest."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytei._version import __version__
from pytei.build.plan import ROUTER_PACKAGE, BuildPlan
from pytei.cache import Cache, atomic_dir, atomic_write, sha256_file
from pytei.build.cargo import CargoProgress, run_cargo
from pytei.config import Settings
from pytei.errors import BuildError
from pytei.build.hardware import Machine
from pytei.build.installs import BINARY_NAME, MANIFEST_NAME, InstalledRouter
from pytei.build.linklibs import NativeLibrary, provide_mkl, provide_onnxruntime

__all__ = ["MANIFEST_SCHEMA", "BuildResult", "execute_plan"]

MANIFEST_SCHEMA = 1


@dataclass(frozen=True)
class BuildResult:
    router: InstalledRouter
    wall_seconds: float
    peak_rss_bytes: int
    units_built: int


def _natives(plan: BuildPlan, settings: Settings, cache: Cache) -> list[NativeLibrary]:
    libs = []
    if "onnxruntime" in plan.profile.deps:
        libs.append(
            provide_onnxruntime(
                cache,
                settings.get_str("build.onnxruntime_version"),
                plan.full_env,
                settings.get_str("build.onnxruntime_dir"),
            )
        )
    if "mkl" in plan.profile.deps:
        libs.append(
            provide_mkl(
                cache,
                settings.get_str("build.mkl_version"),
                plan.full_env,
                settings.get_str("build.mkl_root"),
            )
        )
    return libs


def execute_plan(
    plan: BuildPlan,
    settings: Settings,
    cache: Cache,
    machine: Machine,
    *,
    on_progress: Callable[[CargoProgress], None] | None = None,
) -> BuildResult:
    """Build and install; the previous install stays in place unless this one succeeds."""
    started_at = datetime.now(UTC)
    with cache.lock(f"build-{plan.profile.name}"):
        natives = _natives(plan, settings, cache)
        log_dir = cache.area("builds", plan.profile.name, "logs")
        log_path = log_dir / f"build-{started_at.strftime('%Y%m%dT%H%M%S')}.log"
        t0 = time.monotonic()
        outcome = run_cargo(
            plan.cargo_argv,
            cwd=Path(plan.source_dir),
            env=plan.full_env,
            log_path=log_path,
            total_units=plan.compiled_packages,
            on_progress=on_progress,
        )
        wall = time.monotonic() - t0
        latest = log_dir / "latest.log"
        latest.unlink(missing_ok=True)
        latest.symlink_to(log_path.name)
        binary = outcome.executables.get(ROUTER_PACKAGE)
        if binary is None or not binary.is_file():
            raise BuildError(f"cargo reported no {ROUTER_PACKAGE} binary", log_path=str(log_path))
        install_dir = Path(plan.install_dir)
        current = _up_to_date(install_dir, binary, plan)
        if current is not None:
            return BuildResult(current, wall, outcome.peak_rss_bytes, outcome.units_built)
        manifest = _manifest(
            plan, machine, natives, binary, started_at, wall, outcome.peak_rss_bytes, log_path
        )
        manifest["units"] = {"built": outcome.units_built, "fresh": outcome.units_fresh}
        with atomic_dir(install_dir) as scratch:
            shutil.copy2(binary, scratch / BINARY_NAME)
            for lib in natives:
                for path in lib.runtime_files:
                    if path.is_symlink():
                        (scratch / path.name).symlink_to(path.readlink())
                    else:
                        shutil.copy2(path, scratch / path.name)
            manifest["binary"]["path"] = str(install_dir / BINARY_NAME)
            atomic_write(scratch / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
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
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = (
        manifest.get("binary", {}).get("sha256") == sha256_file(binary)
        and manifest.get("fork_commit") == plan.fork_commit
        and manifest.get("features") == plan.features
        and manifest.get("mode") == plan.mode
    )
    if not same:
        return None
    return InstalledRouter(plan.install_name, install_dir / BINARY_NAME, manifest_path, manifest)


def _manifest(
    plan: BuildPlan,
    machine: Machine,
    natives: list[NativeLibrary],
    binary: Path,
    started_at: datetime,
    wall: float,
    peak: int,
    log_path: Path,
) -> dict[str, Any]:
    interesting = ("CUDA_COMPUTE_CAP", "RUSTFLAGS", "RUSTUP_TOOLCHAIN", "GIT_SHA", "DOCKER_LABEL", "PROTOC",
                   "ORT_LIB_LOCATION", "MKLROOT", "CUDA_ROOT")  # fmt: skip
    return {
        "schema": MANIFEST_SCHEMA,
        "pytei_version": __version__,
        "profile": plan.profile.name,
        "profile_reason": plan.reason,
        "features": plan.features,
        "transport": plan.transport,
        "compute_cap": plan.profile.compute_cap or None,
        "mode": plan.mode,
        "cargo_profile": plan.cargo_profile,
        "upstream": plan.upstream,
        "fork_commit": plan.fork_commit,
        "patches": plan.patches,
        "crates": plan.crates,
        "sources": [s.to_json() for s in plan.sources],
        "env": {k: v for k, v in plan.env.items() if k in interesting},
        "rustc": plan.toolchain["rustc"],
        "toolchain_note": plan.toolchain["note"],
        "tools": plan.tools,
        "native_libs": [{"name": n.name, "version": n.version, "source": n.source} for n in natives],
        "jobs": plan.jobs,
        "cargo_argv": plan.cargo_argv,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "peak_memory_bytes": peak,
        "build_machine": {
            "os": machine.os,
            "arch": machine.arch,
            "cpu": machine.cpu_summary(),
            "cores": machine.cores,
            "memory_bytes": machine.memory_total,
        },
        "binary": {"sha256": sha256_file(binary), "size": binary.stat().st_size},
        "log": str(log_path),
        "warnings": plan.warnings,
    }
