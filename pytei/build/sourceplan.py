"""Deciding about the git sources of a plan: provide each (checkout or stand-in), judge them
against what the build compiles, and check our patches to them (``pytei fork check``)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from pytei.build.gitsources import GitPatch, ProvidedSource, SourceProvider, apply_to_source
from pytei.errors import BuildError, PatchError, ToolVersionError, UpstreamError
from pytei.fork.definition import GitDependency
from pytei.fork.mirrors import normalize_url

__all__ = ["check_cudarc_accepts", "check_source_patches", "finish_sources", "provide_sources"]


def check_source_patches(provider: SourceProvider, dependency: GitDependency) -> tuple[str, list[str | None]]:
    """Whether our patches to ``dependency`` apply at its pinned commit (for ``pytei fork check``):
    the commit, and None or the reason per patch, in series order."""
    git, commit = provider._fetch_commit(dependency.url, dependency.commit)
    verdicts: list[str | None] = []
    with tempfile.TemporaryDirectory(prefix="pytei-check-", dir=provider.base) as scratch:
        tree = Path(scratch)
        provider._archive(git, commit, tree)
        for patch in dependency.patches:
            try:
                apply_to_source(tree, patch, dependency.url, commit)
                verdicts.append(None)
            except PatchError as exc:
                verdicts.append(exc.message)
    return commit, verdicts


def provide_sources(
    provider: SourceProvider, patches: list[GitPatch], source_dir: Path
) -> dict[str, ProvidedSource]:
    groups: dict[str, list[GitPatch]] = {}
    for patch in patches:
        groups.setdefault(normalize_url(patch.url) + "@" + patch.rev, []).append(patch)
    sources: dict[str, ProvidedSource] = {}
    for key, group in groups.items():
        try:
            sources[key] = provider.checkout(group)
        except UpstreamError as exc:
            # Unobtainable: a stand-in keeps cargo's resolver whole; _finish_sources judges it.
            text = str(exc)
            detail = f"cannot reach {text.rsplit(': ', 1)[-1]}" if "Could not resolve host" in text else text
            sources[key] = provider.stand_in(group, source_dir, detail.splitlines()[0])
    return sources


def finish_sources(
    provider: SourceProvider,
    sources: dict[str, ProvidedSource],
    compiled: set[str],
    cudarc_from_crates_io: bool,
    warnings: list[str],
) -> None:
    """Judge each source against what the build compiles: a stand-in that is compiled is an
    error unless it is cudarc and the user chose the crates.io release; submodules are added
    only for compiled packages that read them."""
    for source in sources.values():
        used = sorted(set(source.packages) & compiled)
        if source.kind == "stand-in":
            if not used:
                source.note += "; not compiled by this build"
                continue
            allowed = cudarc_from_crates_io and set(used) <= {"cudarc"}
            if not allowed:
                raise BuildError(
                    f"this build compiles {', '.join(used)} from {source.url} at {source.rev[:12]}, "
                    "which could not be fetched",
                    hint=(
                        f"add a git mirror holding that commit (PYTEI_GIT_MIRRORS='{source.url}=/path/to/clone')"
                        + (
                            ", or set build.cudarc=auto (or crates-io) to use the crates.io release"
                            if "cudarc" in used
                            else ""
                        )
                    ),
                )
            source.note += "; compiled (the crates.io release, build.cudarc)"
            warnings.append(
                f"{', '.join(used)} is the crates.io release of the locked version, not upstream's pinned fork "
                "(which is not public): it loads the CUDA libraries at run time, so static-linking cannot be honoured"
            )
        else:
            provider.add_submodules(source, compiled)


_CUDA_ARM = re.compile(r'"(\d+\.\d+)"\s*=>')


def check_cudarc_accepts(sources: dict[str, ProvidedSource], nvcc: str, version: str) -> None:
    """Refuse early a CUDA toolkit that the cudarc in use would reject an hour into the build.

    cudarc's build script matches the nvcc release against the versions it has bindings for
    (e.g. cudarc 0.13.5 knows 11.4-12.8); read that list from the source being built.
    """
    for source in sources.values():
        directory = source.packages.get("cudarc")
        if directory is None:
            continue
        build_rs = Path(directory) / "build.rs"
        known = set(_CUDA_ARM.findall(build_rs.read_text(encoding="utf-8"))) if build_rs.is_file() else set()
        if known and version not in known:
            ordered = sorted(known, key=lambda v: tuple(int(x) for x in v.split(".")))
            raise ToolVersionError(
                f"cudarc ({source.kind} of {source.url}) supports CUDA {ordered[0]}-{ordered[-1]}, "
                f"but nvcc is CUDA {version} ({nvcc})",
                hint=f"install a CUDA toolkit among {', '.join(ordered)} and point build.cuda_home at it",
            )
