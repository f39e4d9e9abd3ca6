"""Where built routers are installed, and finding them again.

Layout: ``<cache>/routers/<install name>/text-embeddings-router`` with ``manifest.json`` beside
it; the install name is the profile, plus ``-grpc`` for a gRPC router and ``-fast`` for a
``--fast`` build, so a fast build never replaces the release router of the same profile.  The binary and its manifest are replaced together (manifest last), so a reader that finds
a manifest finds the binary it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytei.build.manifest import MANIFEST_NAME, BuildManifest
from pytei.cache import Cache
from pytei.errors import CacheError, RouterNotBuiltError

__all__ = [
    "BINARY_NAME",
    "MANIFEST_NAME",
    "InstalledRouter",
    "find_router",
    "installed_routers",
    "router_dir",
]

BINARY_NAME = "text-embeddings-router"


@dataclass(frozen=True)
class InstalledRouter:
    """A router ``pytei build`` installed: its binary and the :class:`BuildManifest` of it."""

    profile: str  # the install name: the profile, plus "-grpc" for gRPC routers
    binary: Path
    manifest_path: Path
    manifest: BuildManifest

    @property
    def built_at(self) -> str:
        return self.manifest.finished_at


def router_dir(cache: Cache, profile: str) -> Path:
    return cache.root / "routers" / profile


def _load(directory: Path) -> InstalledRouter | None:
    manifest_path = directory / MANIFEST_NAME
    binary = directory / BINARY_NAME
    if not manifest_path.is_file():
        return None
    try:
        manifest = BuildManifest.read(manifest_path)
    except CacheError as exc:
        raise CacheError(exc.message, hint=f"rebuild with `pytei build --profile {directory.name}`") from exc
    if not binary.is_file():
        raise CacheError(
            f"{manifest_path} describes a router that is missing ({binary})",
            hint=f"rebuild with `pytei build --profile {directory.name}`",
        )
    return InstalledRouter(directory.name, binary, manifest_path, manifest)


def installed_routers(cache: Cache) -> list[InstalledRouter]:
    """Every installed router, most recently built first."""
    base = cache.root / "routers"
    if not base.is_dir():
        return []
    found = [router for d in sorted(base.iterdir()) if d.is_dir() and (router := _load(d)) is not None]
    return sorted(found, key=lambda r: r.built_at, reverse=True)


def find_router(cache: Cache, profile: str | None = None) -> InstalledRouter:
    """The router installed as ``profile`` (an install name: ``cpu``, ``cpu-grpc``, ``cpu-fast``),
    or the newest of its release and fast builds; with no profile, the most recently built HTTP
    router."""
    if profile:
        base = cache.root / "routers"
        names = [profile] if profile.endswith("-fast") else [profile, f"{profile}-fast"]
        # a build with only some flash-attention kernels: cuda-hopper-fa32-fp16-noncausal
        names += (
            sorted(d.name for d in base.glob(f"{profile}-fa*") if not profile.endswith("-fast"))
            if base.is_dir()
            else []
        )
        found = [router for name in names if (router := _load(router_dir(cache, name))) is not None]
        if not found:
            raise RouterNotBuiltError(
                f"no router has been built for profile {profile!r}",
                hint=f"run `pytei build --profile {profile.removesuffix('-fast')}`"
                + (" --fast" if profile.endswith("-fast") else ""),
            )
        return max(found, key=lambda r: r.built_at)
    routers = installed_routers(cache)
    if not routers:
        raise RouterNotBuiltError("no router has been built yet", hint="run `pytei build`")
    # HTTP routers first: a gRPC build answers no HTTP, so it is used only when named
    # (`--profile cpu-grpc`) or when it is the only one.
    http = [r for r in routers if r.manifest.transport == "http"]
    return (http or routers)[0]
