"""The git sources of upstream's ``[patch]`` table, provided to cargo as local paths.

Cargo fetches every ``[patch]`` git source, with all its submodules, even when no selected
feature compiles it; and the cudarc fork commit that upstream pins cannot be fetched at all.
So pytei provides them itself:
- each git source is checked out at its pinned commit through the git mirrors into the
  cache (``git archive``: no history, no submodules);
- a submodule is added only when a package that reads it is compiled (``needed_for`` in
  fork.toml), and only the paths it needs;
- a source that cannot be fetched is replaced by a *stand-in*: the crates.io release of the
  locked version, with any feature names the workspace mentions declared; a stand-in is
  acceptable only while ``cargo tree`` shows that the build does not compile it (or the user
  chose the crates.io release explicitly for CUDA builds: ``build.cudarc = "crates-io"``).
Cargo gets them as ``--config patch.<registry>.<key>.path=...`` arguments, visible in the plan.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytei._subprocess import run, run_to_file
from pytei.cache import Cache, atomic_dir
from pytei.errors import BuildError, CommandFailedError, PatchError, UpstreamError
from pytei.fork.definition import ForkDefinition, GitDependency, Patch
from pytei.fork.git import Git
from pytei.fork.mirrors import normalize_url

__all__ = [
    "GitPatch",
    "ProvidedSource",
    "SourceProvider",
    "apply_to_source",
    "patch_config_args",
    "read_git_patches",
]

_REGISTRY_ALIASES = {"crates-io": "crates-io"}
# Local mirrors answer partial fetches only when their upload-pack allows it; the options
# reach it on its command line because git clears GIT_CONFIG_* for local transports.
_UPLOAD_PACK = "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"


@dataclass(frozen=True)
class GitPatch:
    """One entry of upstream's ``[patch.<registry>]`` table that names a git source."""

    registry: str
    key: str
    package: str
    url: str
    rev: str


@dataclass
class ProvidedSource:
    url: str
    rev: str
    kind: str  # "checkout" or "stand-in"
    path: str
    packages: dict[str, str] = field(default_factory=dict)  # package -> directory
    submodules: list[str] = field(default_factory=list)
    note: str = ""
    patches: list[str] = field(default_factory=list)  # our patches applied to it (patches/<name>/)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_git_patches(source_root: Path) -> list[GitPatch]:
    manifest = tomllib.loads((source_root / "Cargo.toml").read_text(encoding="utf-8"))
    patches = []
    for registry, entries in manifest.get("patch", {}).items():
        for key, spec in entries.items():
            if not isinstance(spec, dict) or "git" not in spec:
                continue
            rev = spec.get("rev") or spec.get("tag") or spec.get("branch")
            if not rev:
                raise BuildError(f"[patch.{registry}] {key} names git {spec['git']} without a rev")
            patches.append(GitPatch(registry, key, spec.get("package", key), spec["git"], str(rev)))
    return patches


def apply_to_source(tree: Path, patch: Patch, url: str, commit: str) -> None:
    """Apply one of our patches to an extracted (not git) source tree; all hunks or an error."""
    try:
        run(["git", "apply", "--whitespace=nowarn", "-p1", str(patch.path.resolve())], cwd=tree, stream=False)
    except CommandFailedError as exc:
        raise PatchError(
            f"patch {patch.name} does not apply to {url} at {commit[:12]}: "
            + (exc.output.strip().splitlines()[-1] if exc.output.strip() else "it does not apply"),
            patch=patch.name,
            hint=f"refresh {patch.path} against that commit",
        ) from exc


def _slug(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", normalize_url(url).split("://", 1)[-1]).strip("-").lower()


def _find_packages(root: Path, wanted: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for manifest in sorted(root.rglob("Cargo.toml")):
        try:
            name = tomllib.loads(manifest.read_text(encoding="utf-8")).get("package", {}).get("name")
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            continue
        if isinstance(name, str) and name in wanted and name not in found:
            found[name] = str(manifest.parent)
    return found


def _locked_version(source_root: Path, package: str, url: str) -> str | None:
    lock = tomllib.loads((source_root / "Cargo.lock").read_text(encoding="utf-8"))
    prefix = "git+" + normalize_url(url)
    for entry in lock.get("package", []):
        source = str(entry.get("source", ""))
        if entry.get("name") == package and normalize_url(source.split("?", maxsplit=1)[0]).startswith(
            prefix
        ):
            return str(entry["version"])
    return None


_FEATURE_REF = re.compile(r"""["']([A-Za-z0-9_-]+)\??/([A-Za-z0-9_.-]+)["']""")


def _features_mentioned(source_root: Path, package: str, key: str) -> set[str]:
    """Feature names of ``package`` that workspace manifests enable (``cudarc?/static-linking``)."""
    names: set[str] = set()
    for manifest in source_root.rglob("Cargo.toml"):
        if "target" in manifest.relative_to(source_root).parts:
            continue
        text = manifest.read_text(encoding="utf-8", errors="replace")
        for dep, feature in _FEATURE_REF.findall(text):
            if dep in (package, key):
                names.add(feature)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        tables = [data.get("dependencies", {}), data.get("workspace", {}).get("dependencies", {})]
        for table in tables:
            spec = table.get(key)
            if isinstance(spec, dict):
                names.update(str(f) for f in spec.get("features", []))
    return names


class SourceProvider:
    """Checks out (or stands in for) each ``[patch]`` git source of an upstream tree."""

    def __init__(
        self, cache: Cache, git_env: Mapping[str, str], fork: ForkDefinition, cargo_env: Mapping[str, str]
    ):
        self.cache = cache
        self.git_env = dict(git_env)
        self.fork = fork
        self.cargo_env = dict(cargo_env)
        self.base = cache.area("git-sources")

    def _known(self, url: str, rev: str) -> GitDependency | None:
        for dep in self.fork.git_dependencies:
            if normalize_url(dep.url) == normalize_url(url) and dep.commit.startswith(rev):
                return dep
        return None

    def _repo(self, url: str) -> Git:
        git_dir = self.base / f"{_slug(url)}.git"
        git = Git(git_dir, self.git_env)
        if not git_dir.exists():
            run(["git", "init", "--bare", "--quiet", str(git_dir)], env=self.git_env, stream=False)
        return git

    def _fetch_commit(self, url: str, rev: str) -> tuple[Git, str]:
        git = self._repo(url)
        if not git.has_commit(rev):
            result = git.fetch(url, [rev])
            if not git.has_commit(rev):
                reason = result.stderr.strip().splitlines()
                raise UpstreamError(
                    f"cannot fetch {url} at {rev[:12]}" + (f": {reason[-1]}" if reason else ""),
                    hint=f"add a git mirror holding that commit: PYTEI_GIT_MIRRORS='{url}=/path/to/clone'",
                )
        return git, git.out("rev-parse", f"{rev}^{{commit}}")

    def _fetch_paths(self, url: str, rev: str, paths: tuple[str, ...]) -> tuple[Git, str]:
        """Fetch ``rev``'s trees, then only the blobs under ``paths`` (a partial fetch).

        A large submodule (cutlass) is needed only for its headers; fetching just those is
        faster, and works from mirrors that lack unrelated large files.  A server that does
        not support filters sends everything, which works too.
        """
        git = self._repo(url)
        env_git = Git(git.git_dir, {**git.env, "GIT_NO_LAZY_FETCH": "1"})
        if not env_git.has_commit(rev):
            result = env_git.run(
                "fetch",
                "--no-tags",
                "--quiet",
                "--filter=blob:none",
                f"--upload-pack={_UPLOAD_PACK}",
                url,
                rev,
                check=False,
            )
            if not env_git.has_commit(rev):
                reason = result.stderr.strip().splitlines()
                raise UpstreamError(
                    f"cannot fetch {url} at {rev[:12]}" + (f": {reason[-1]}" if reason else ""),
                    hint=f"add a git mirror holding that commit: PYTEI_GIT_MIRRORS='{url}=/path/to/clone'",
                )
        commit = env_git.out("rev-parse", f"{rev}^{{commit}}")
        blobs = [
            entry.split()[2] for entry in env_git.out("ls-tree", "-r", commit, "--", *paths).splitlines()
        ]
        if not blobs:
            raise UpstreamError(f"{url} at {commit[:12]} has nothing under {', '.join(paths)}")
        check = env_git.run("cat-file", "--batch-check", input_text="\n".join(blobs) + "\n").stdout
        missing = [line.split()[0] for line in check.splitlines() if line.endswith(" missing")]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            env_git.run(
                "fetch", "--no-tags", "--quiet", f"--upload-pack={_UPLOAD_PACK}", url, *chunk, check=False
            )
        still = (
            env_git.run("cat-file", "--batch-check", input_text="\n".join(missing) + "\n").stdout
            if missing
            else ""
        )
        lost = [line.split()[0] for line in still.splitlines() if line.endswith(" missing")]
        if lost:
            raise UpstreamError(
                f"{len(lost)} files under {', '.join(paths)} of {url} at {commit[:12]} could not be fetched",
                hint="the mirror is incomplete; refresh it",
            )
        return env_git, commit

    def _archive(self, git: Git, commit: str, into: Path, paths: tuple[str, ...] = ()) -> None:
        """Write ``commit``'s tree (or only ``paths`` of it) into ``into``: modes and symlinks kept,
        no history, no submodules."""
        into.mkdir(parents=True, exist_ok=True)
        # A path is archived as its own subtree (commit:path): archiving the commit with a
        # pathspec still reads blobs outside it, which a partial fetch does not have.
        trees = [(f"{commit}:{path.rstrip('/')}", f"{path.rstrip('/')}/") for path in paths] or [(commit, "")]
        with tempfile.TemporaryDirectory(prefix="pytei-archive-", dir=self.base) as scratch:
            for number, (tree, prefix) in enumerate(trees):
                tar = Path(scratch) / f"tree-{number}.tar"
                try:
                    run_to_file(
                        [
                            "git",
                            f"--git-dir={git.git_dir}",
                            "archive",
                            "--format=tar",
                            f"--prefix={prefix}",
                            tree,
                        ],
                        tar,
                        env=git.env,
                    )
                except CommandFailedError as exc:
                    detail = exc.output.strip().splitlines()
                    raise UpstreamError(
                        f"cannot read {commit[:12]} from {git.git_dir}"
                        + (f": {detail[-1]}" if detail else ""),
                        hint="the mirror may be incomplete; refresh it",
                    ) from exc
                with tarfile.open(tar) as archive:
                    # "tar": keeps modes and in-tree symlinks, refuses absolute paths and escapes.
                    archive.extractall(into, filter="tar")

    def checkout(self, patch_group: list[GitPatch]) -> ProvidedSource:
        first = patch_group[0]
        git, commit = self._fetch_commit(first.url, first.rev)
        known = self._known(first.url, first.rev)
        patches = known.patches if known is not None else ()
        # A patched checkout has a directory of its own, named after the patches' digest.
        name = commit if not patches else f"{commit}-{known.patches_digest()[:12]}"  # type: ignore[union-attr]
        target = self.base / _slug(first.url) / name
        marker = target / ".pytei-source.json"
        if not marker.is_file():
            with atomic_dir(target) as scratch:
                self._archive(git, commit, scratch)
                for patch in patches:
                    apply_to_source(scratch, patch, first.url, commit)
                marker_data = {"url": first.url, "commit": commit, "patches": [p.name for p in patches]}
                (scratch / ".pytei-source.json").write_text(json.dumps(marker_data), encoding="utf-8")
        packages = _find_packages(target, {p.package for p in patch_group})
        missing = {p.package for p in patch_group} - set(packages)
        if missing:
            raise BuildError(f"{first.url} at {commit[:12]} has no package {', '.join(sorted(missing))}")
        note = f"patched: {', '.join(p.name for p in patches)}" if patches else ""
        return ProvidedSource(
            first.url, commit, "checkout", str(target), packages, patches=[p.name for p in patches], note=note
        )

    def add_submodules(self, source: ProvidedSource, compiled: set[str]) -> None:
        """Add the submodules of ``source`` that a compiled package reads."""
        known = self._known(source.url, source.rev)
        if known is None:
            return
        root = Path(source.path)
        for sub in known.submodules:
            if sub.needed_for and sub.needed_for not in compiled:
                continue
            target = root / sub.path
            marker = target / ".pytei-submodule"
            if marker.is_file():
                source.submodules.append(sub.path)
                continue
            if target.exists():
                shutil.rmtree(target)
            scratch = target.with_name(f".{target.name}.partial")
            shutil.rmtree(scratch, ignore_errors=True)
            if sub.paths:
                git, commit = self._fetch_paths(sub.url, sub.commit, sub.paths)
                self._archive(git, commit, scratch, sub.paths)
            else:
                git, commit = self._fetch_commit(sub.url, sub.commit)
                self._archive(git, commit, scratch)
            marker_text = f"{sub.url} {commit} {' '.join(sub.paths) or '(all)'}\n"
            (scratch / ".pytei-submodule").write_text(marker_text, encoding="utf-8")
            scratch.rename(target)
            source.submodules.append(sub.path)

    def stand_in(self, patch_group: list[GitPatch], source_root: Path, reason: str) -> ProvidedSource:
        """The crates.io release of each package at its locked version, features declared."""
        first = patch_group[0]
        packages: dict[str, str] = {}
        for patch in patch_group:
            version = _locked_version(source_root, patch.package, patch.url)
            if version is None:
                raise BuildError(
                    f"Cargo.lock has no {patch.package} from {patch.url}; cannot stand in for it"
                )
            directory = self._registry_copy(patch.package, version)
            self._declare_features(directory, _features_mentioned(source_root, patch.package, patch.key))
            packages[patch.package] = str(directory)
        note = f"unavailable ({reason}); crates.io release used"
        path = next(iter(packages.values()))
        return ProvidedSource(first.url, first.rev, "stand-in", path, packages, note=note)

    def _registry_copy(self, package: str, version: str) -> Path:
        target = self.cache.area("stand-ins") / f"{package}-{version}"
        if (target / "Cargo.toml").is_file():
            return target
        probe = self.cache.area("stand-ins", ".probe", f"{package}-{version}")
        (probe / "src").mkdir(exist_ok=True)
        (probe / "src" / "lib.rs").write_text("", encoding="utf-8")
        (probe / "Cargo.toml").write_text(
            f'[package]\nname = "pytei-probe"\nversion = "0.0.0"\nedition = "2021"\n\n'
            f'[dependencies]\n{package} = {{ version = "={version}", default-features = false }}\n\n'
            "[workspace]\n",
            encoding="utf-8",
        )
        vendor = probe / "vendor"
        try:
            run(
                [
                    "cargo",
                    "vendor",
                    "--versioned-dirs",
                    "--manifest-path",
                    str(probe / "Cargo.toml"),
                    str(vendor),
                ],
                env=self.cargo_env,
                stream=False,
                message=f"could not get {package} {version} from the crate registry",
            )
        except CommandFailedError as exc:
            raise BuildError(exc.message, hint="check access to crates.io (or your registry mirror)") from exc
        with atomic_dir(target) as scratch:
            shutil.copytree(vendor / f"{package}-{version}", scratch, dirs_exist_ok=True)
            (scratch / ".cargo-checksum.json").unlink(missing_ok=True)
        shutil.rmtree(probe, ignore_errors=True)
        return target

    @staticmethod
    def _declare_features(directory: Path, features: set[str]) -> None:
        manifest = directory / "Cargo.toml"
        text = manifest.read_text(encoding="utf-8")
        declared = set(tomllib.loads(text).get("features", {}))
        extra = sorted(features - declared)
        if not extra:
            return
        lines = "".join(f"{name} = []\n" for name in extra)
        if re.search(r"^\[features\]\s*$", text, re.MULTILINE):
            text = re.sub(
                r"^\[features\]\s*$", "[features]\n" + lines.rstrip("\n"), text, count=1, flags=re.MULTILINE
            )
        else:
            text += "\n[features]\n" + lines
        manifest.write_text(text, encoding="utf-8")


def patch_config_args(patches: list[GitPatch], sources: dict[str, ProvidedSource]) -> list[str]:
    """``--config`` arguments that point cargo's patch entries at the provided paths."""
    args: list[str] = []
    for patch in patches:
        source = sources[normalize_url(patch.url) + "@" + patch.rev]
        directory = source.packages[patch.package]
        registry = _REGISTRY_ALIASES.get(patch.registry, json.dumps(patch.registry))
        base = f"patch.{registry}.{patch.key}"
        args += ["--config", f"{base}.path={json.dumps(directory)}"]
        if patch.package != patch.key:
            args += ["--config", f"{base}.package={json.dumps(patch.package)}"]
    return args
