"""The fork's definition: ``tei_fork/fork.toml`` and ``patches/series``.

Installed pytei carries both under ``pytei/_fork``; a source checkout uses the repository's
own ``tei_fork/`` and ``patches/``; the ``fork_dir`` setting points at any other pair (a
directory holding ``tei_fork/`` and ``patches/``).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytei.errors import ForkDefinitionError

__all__ = [
    "CrateSpec",
    "ForkDefinition",
    "GitDependency",
    "Patch",
    "Submodule",
    "fork_root",
    "load_fork",
]

_SHA = re.compile(r"^[0-9a-f]{40}$")
_PATCH_NAME = re.compile(r"^\d{4}-[A-Za-z0-9._-]+\.patch$")


@dataclass(frozen=True)
class Submodule:
    path: str
    url: str
    commit: str
    paths: tuple[str, ...] = ()
    needed_for: str | None = None


@dataclass(frozen=True)
class GitDependency:
    name: str
    url: str
    commit: str
    dev_only: bool = False
    submodules: tuple[Submodule, ...] = ()
    # Our own patches to this source (patches/<dir>/series), applied where pytei checks it out.
    patches: tuple[Patch, ...] = ()

    def patches_digest(self) -> str:
        """Identifies the patched checkout: the same patches always give the same directory."""
        digest = hashlib.sha256()
        for patch in self.patches:
            digest.update(f"{patch.name}\0{patch.sha256}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class CrateSpec:
    name: str
    source: Path
    dest: str

    def content_sha256(self) -> str:
        """A digest of the crate's files (names and bytes), ignoring build output."""
        digest = hashlib.sha256()
        for path in sorted(self.files()):
            digest.update(path.relative_to(self.source).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def files(self) -> list[Path]:
        return [
            p
            for p in self.source.rglob("*")
            if p.is_file() and "target" not in p.relative_to(self.source).parts and p.suffix != ".pyc"
        ]


@dataclass(frozen=True)
class Patch:
    """One file of the series: its bytes' digest, header, and the files and hunks it touches."""

    name: str
    path: Path
    sha256: str
    header: str
    hunks: dict[str, list[int]] = field(default_factory=dict)  # file -> old start line of each hunk

    @property
    def files(self) -> list[str]:
        return list(self.hunks)

    def hunk_number(self, file: str, old_line: int) -> int | None:
        """1-based index of the hunk of ``file`` that starts at ``old_line`` in the original."""
        starts = self.hunks.get(file, [])
        if old_line in starts:
            return starts.index(old_line) + 1
        return None


@dataclass(frozen=True)
class ForkDefinition:
    root: Path
    upstream_url: str
    tag: str
    commit: str
    git_dependencies: tuple[GitDependency, ...]
    crates: tuple[CrateSpec, ...]
    patches: tuple[Patch, ...]

    def patch(self, name: str) -> Patch:
        for patch in self.patches:
            if patch.name == name or patch.name.split("-", 1)[0] == name:
                return patch
        raise ForkDefinitionError(f"no patch named {name!r} in the series", hint="see `pytei fork status`")


def fork_root(configured: str | Path = "") -> Path:
    """The directory holding ``tei_fork/`` and ``patches/`` (``configured``: the fork_dir setting)."""
    if configured:
        root = Path(configured).expanduser()
        if not (root / "tei_fork" / "fork.toml").is_file():
            raise ForkDefinitionError(
                f"fork_dir {root} has no tei_fork/fork.toml", hint="point fork_dir at a pytei source checkout"
            )
        return root
    package = Path(__file__).resolve().parents[1]  # the pytei package
    for candidate in (package / "_fork", package.parent):
        if (candidate / "tei_fork" / "fork.toml").is_file():
            return candidate
    raise ForkDefinitionError(
        "pytei's fork definition (tei_fork/fork.toml) is missing from this installation",
        hint="reinstall pytei, or set fork_dir to a pytei source checkout",
    )


def _require(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ForkDefinitionError(f"{where}: {key!r} is missing or not a string")
    return value


def _commit(table: dict[str, Any], where: str) -> str:
    commit = _require(table, "commit", where)
    if not _SHA.match(commit):
        raise ForkDefinitionError(f"{where}: commit {commit!r} is not a full 40-character sha")
    return commit


def load_fork(root: Path) -> ForkDefinition:
    path = root / "tei_fork" / "fork.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ForkDefinitionError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ForkDefinitionError(f"{path} is not valid TOML: {exc}") from exc
    upstream = data.get("upstream")
    if not isinstance(upstream, dict):
        raise ForkDefinitionError(f"{path}: the [upstream] table is missing")
    deps = []
    for index, dep in enumerate(data.get("git_dependency", [])):
        where = f"{path}: git_dependency[{index}]"
        submodules = tuple(
            Submodule(
                path=_require(sub, "path", where),
                url=_require(sub, "url", where),
                commit=_commit(sub, where),
                paths=tuple(sub.get("paths", ())),
                needed_for=sub.get("needed_for"),
            )
            for sub in dep.get("submodule", [])
        )
        patch_dir = dep.get("patches")
        if patch_dir is not None and (
            not isinstance(patch_dir, str) or "/" in patch_dir or patch_dir in (".", "..")
        ):
            raise ForkDefinitionError(f'{where}: patches must name a folder of patches/ (e.g. "candle")')
        deps.append(
            GitDependency(
                name=_require(dep, "name", where),
                url=_require(dep, "url", where),
                commit=_commit(dep, where),
                dev_only=bool(dep.get("dev_only", False)),
                submodules=submodules,
                patches=tuple(load_series(root / "patches" / patch_dir)) if patch_dir else (),
            )
        )
    crates = []
    for index, crate in enumerate(data.get("crate", [])):
        where = f"{path}: crate[{index}]"
        source = root / "tei_fork" / _require(crate, "source", where)
        dest = _require(crate, "dest", where)
        if Path(dest).is_absolute() or ".." in Path(dest).parts:
            raise ForkDefinitionError(f"{where}: dest {dest!r} must be a path inside the upstream tree")
        if not (source / "Cargo.toml").is_file():
            raise ForkDefinitionError(f"{where}: {source} has no Cargo.toml")
        crates.append(CrateSpec(name=_require(crate, "name", where), source=source, dest=dest))
    return ForkDefinition(
        root=root,
        upstream_url=_require(upstream, "url", str(path)),
        tag=_require(upstream, "tag", str(path)),
        commit=_commit(upstream, f"{path}: [upstream]"),
        git_dependencies=tuple(deps),
        crates=tuple(crates),
        patches=tuple(load_series(root / "patches")),
    )


def load_series(directory: Path) -> list[Patch]:
    series = directory / "series"
    if not series.is_file():
        raise ForkDefinitionError(f"{series} is missing", hint="create it: one patch file name per line")
    patches = []
    seen: set[str] = set()
    for number, line in enumerate(series.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not _PATCH_NAME.match(name):
            raise ForkDefinitionError(f"{series}:{number}: {name!r} is not named NNNN-name.patch")
        if name in seen:
            raise ForkDefinitionError(f"{series}:{number}: {name} is listed twice")
        seen.add(name)
        path = directory / name
        if not path.is_file():
            raise ForkDefinitionError(f"{series}:{number}: {path} does not exist")
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        header, hunks = parse_patch(text)
        if not hunks:
            raise ForkDefinitionError(f"{path} contains no diff", hint="a patch is a unified diff (git diff)")
        patches.append(Patch(name, path, hashlib.sha256(data).hexdigest(), header, hunks))
    return patches


_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(text: str) -> tuple[str, dict[str, list[int]]]:
    """The text before the first diff, and each file's hunk start lines (in the original)."""
    header_lines: list[str] = []
    hunks: dict[str, list[int]] = {}
    current: str | None = None
    in_header = True
    for line in text.splitlines():
        match = _DIFF_GIT.match(line)
        if match:
            in_header = False
            current = match.group(1)
            hunks.setdefault(current, [])
            continue
        if in_header:
            header_lines.append(line)
            continue
        hunk = _HUNK.match(line)
        if hunk and current is not None:
            hunks[current].append(int(hunk.group(1)))
    return "\n".join(header_lines).strip(), hunks
