"""Loading ``pytei_native`` (TEI's engine built by ``pytei build --engine``) and checking that it
is the build pytei recorded.

The extension is a separate distribution, built per profile from the patched fork; pytei's own
wheel stays pure Python.  ``native_module`` is replaceable (``use_native``) so that the facade
can be tested against a fake in the unit tier.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from pytei.build.manifest import BuildManifest
from pytei.cache import Cache
from pytei.errors import EngineNotBuiltError

__all__ = [
    "EngineBuild",
    "NativeEngineLike",
    "engine_manifests",
    "native_module",
    "resolve_build",
    "use_native",
]

_HINT = "run `pytei build --engine` (with --profile P for another build) in this Python environment"
# The module to use instead of the installed one (tests); a one-slot holder, not a global.
_OVERRIDE: list[ModuleType | None] = [None]


class NativeEngineLike(Protocol):
    """What ``pytei_native.NativeEngine`` offers (see tei_fork/engine/python/src/lib.rs)."""

    def info(self) -> str: ...
    def health(self) -> bool: ...
    def metrics(self) -> str: ...
    def embed(
        self, items: list[Any], **options: Any
    ) -> tuple[bytes, int, int, list[tuple[int, int, int, int]]]: ...
    def embed_sparse(
        self, items: list[Any], **options: Any
    ) -> tuple[list[tuple[bytes, bytes]], list[Any]]: ...
    def embed_all(
        self, items: list[Any], **options: Any
    ) -> tuple[list[tuple[bytes, int, int]], list[Any]]: ...
    def predict(
        self, items: list[Any], **options: Any
    ) -> tuple[bytes, int, int, list[tuple[int, int, int, int]]]: ...
    def tokenize(
        self, texts: list[str], **options: Any
    ) -> list[list[tuple[int, str, bool, int | None, int | None]]]: ...
    def decode(self, ids: list[list[int]], **options: Any) -> list[str]: ...
    def close(self) -> None: ...


def use_native(module: ModuleType | None) -> None:
    """Use ``module`` instead of the installed ``pytei_native`` (None: back to the real one)."""
    _OVERRIDE[0] = module


def native_module() -> ModuleType:
    if _OVERRIDE[0] is not None:
        return _OVERRIDE[0]
    try:
        return importlib.import_module("pytei_native")
    except ImportError as exc:
        if "libcudart" not in str(exc):
            raise EngineNotBuiltError(
                f"pytei's in-process engine is not installed in this Python ({exc})", hint=_HINT
            ) from None
    # a CUDA build: its runtime library goes beside it, then the import is tried again
    from pytei.local._cuda import link_cuda_libraries, package_dir  # noqa: PLC0415

    folder = package_dir()
    if folder is None:
        raise EngineNotBuiltError("pytei's in-process engine is not installed in this Python", hint=_HINT)
    link_cuda_libraries(folder, os.environ)
    return importlib.import_module("pytei_native")


class EngineBuild:
    """The installed extension's build facts, and the manifest pytei wrote for that build
    (None for an extension built by hand)."""

    def __init__(self, info: dict[str, Any], manifest: BuildManifest | None) -> None:
        self.info = info
        self.manifest = manifest

    @property
    def features(self) -> tuple[str, ...]:
        if self.manifest is not None:
            return tuple(self.manifest.features)
        raw = self.info.get("features") or ""
        return tuple(f for f in str(raw).split(",") if f)


def _build_id(manifest: BuildManifest) -> str | None:
    return (manifest.env or {}).get("PYTEI_BUILD_ID")


def engine_manifests(cache: Cache) -> list[BuildManifest]:
    """Every engine build pytei recorded (``<cache>/engines/<install name>/manifest.json``)."""
    base = cache.root / "engines"
    if not base.is_dir():
        return []
    return [BuildManifest.read(Path(path)) for path in sorted(base.glob("*/manifest.json"))]


def resolve_build(module: ModuleType, cache: Cache, profile: str | None) -> EngineBuild:
    """The installed extension against pytei's records: with ``profile``, it must be that
    profile's last engine build; without, whichever build it is."""
    info = dict(module.build_info())
    built = info.get("build_id")
    manifests = engine_manifests(cache)
    if profile:
        mine = [m for m in manifests if profile in (m.install_name, m.profile)]
        if not mine:
            raise EngineNotBuiltError(
                f"no in-process engine has been built for profile {profile!r}", hint=_HINT
            )
        wanted = max(mine, key=lambda m: m.finished_at or "")
        if _build_id(wanted) != built:
            installed = next(
                (m.install_name for m in manifests if _build_id(m) == built), "one built by hand"
            )
            raise EngineNotBuiltError(
                f"the pytei_native installed here is {installed} (build {built}), not the {profile} engine "
                f"pytei built last (build {_build_id(wanted)})",
                hint=f"run `pytei build --engine --profile {profile}` in this Python environment",
            )
        return EngineBuild(info, wanted)
    return EngineBuild(info, next((m for m in manifests if _build_id(m) == built), None))
