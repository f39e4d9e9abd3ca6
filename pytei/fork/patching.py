"""Applying the series: all or nothing at the pin, and a tolerant trial against other refs.

At the pin, patches are applied to a *temporary index* seeded from the base commit (``git
apply --cached``), each turned into a commit with fixed identity and a trailer naming the
patch and its sha256.  Nothing touches a work tree until every patch has applied, so a
failure leaves the worktree exactly as it was.

Against another ref, patches are tried leniently by :mod:`pytei.fork.trial`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytei.errors import PatchError
from pytei.fork.definition import CrateSpec, ForkDefinition, Patch
from pytei.fork.git import Git

__all__ = [
    "TRAILER_CRATE",
    "TRAILER_PATCH",
    "TRAILER_SHA",
    "build_series_commit",
    "check_applies",
    "commit_crates",
    "failure",
    "patch_commit_message",
    "temporary_index",
]

TRAILER_PATCH = "Pytei-Patch"
TRAILER_SHA = "Pytei-Patch-Sha256"
TRAILER_CRATE = "Pytei-Crate"

# "error: patch failed: router/build.rs:12" (git) — the line is the hunk's start in the original.
_GIT_FAILED = re.compile(r"error: patch failed: (.+):(\d+)")
# "error: router/build.rs: does not exist in index" / "already exists in index"
_GIT_FILE = re.compile(
    r"error: (.+?): (does not exist in index|already exists in index|No such file or directory)"
)


@contextmanager
def temporary_index(git: Git, base: str) -> Iterator[Path]:
    """An index file seeded from ``base``'s tree, removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="pytei-index-"))
    index = scratch / "index"
    try:
        git.run("read-tree", base, index_file=index)
        yield index
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _crate_commit(git: Git, index: Path, parent: str, crate: CrateSpec) -> str:
    files = crate.files()
    if not files:
        raise PatchError(
            f"crate {crate.name} at {crate.source} has no files", hint="check tei_fork/fork.toml"
        )
    blobs = git.out("hash-object", "-w", "--stdin-paths", input_text="\n".join(str(f) for f in files)).split()
    lines = []
    for path, blob in zip(files, blobs, strict=True):
        mode = "100755" if path.stat().st_mode & 0o111 else "100644"
        lines.append(f"{mode} {blob}\t{crate.dest}/{path.relative_to(crate.source).as_posix()}")
    git.run("update-index", "--add", "--index-info", index_file=index, input_text="\n".join(lines) + "\n")
    tree = git.out("write-tree", index_file=index)
    message = (
        f"pytei: add crate {crate.name} at {crate.dest}\n\n"
        f"{TRAILER_CRATE}: {crate.name} {crate.content_sha256()}\n"
    )
    return git.commit_tree(tree, parent, message)


def _commit_crates(
    git: Git, index: Path, fork: ForkDefinition, head: str, steps: list[tuple[str, str]]
) -> str:
    for crate in fork.crates:
        head = _crate_commit(git, index, head, crate)
        steps.append((f"crate:{crate.name}", head))
    return head


def commit_crates(git: Git, fork: ForkDefinition, base: str) -> str:
    """``base`` plus one commit per fork crate (no patches)."""
    with temporary_index(git, base) as index:
        return _commit_crates(git, index, fork, base, [])


def patch_commit_message(patch: Patch) -> str:
    subject = patch.header.splitlines()[0].strip() if patch.header else patch.name
    subject = subject.removeprefix("Subject:").strip() or patch.name
    return f"pytei: {patch.name}: {subject}\n\n{TRAILER_PATCH}: {patch.name}\n{TRAILER_SHA}: {patch.sha256}\n"


def failure(patch: Patch, output: str) -> PatchError:
    file: str | None = None
    hunk: int | None = None
    match = _GIT_FAILED.search(output)
    if match:
        file, line = match.group(1), int(match.group(2))
        hunk = patch.hunk_number(file, line)
    else:
        other = _GIT_FILE.search(output)
        if other:
            file = other.group(1)
    where = ""
    if file:
        where = f" at {file}" + (f", hunk #{hunk}" if hunk else "")
    reason = (
        output.strip().splitlines()[-1].removeprefix("error: ") if output.strip() else "it does not apply"
    )
    return PatchError(
        f"patch {patch.name} does not apply{where}: {reason}",
        patch=patch.name,
        file=file,
        hunk=hunk,
        hint=f"refresh {patch.name} against the upstream commit (`pytei fork check` shows fuzz and 3-way results)",
    )


def build_series_commit(git: Git, fork: ForkDefinition, base: str) -> tuple[str, list[tuple[str, str]]]:
    """Commit crates then patches on ``base`` without touching any work tree.

    Returns the final commit and ``(name, commit)`` for each step.  Raises PatchError naming
    the patch, file and hunk at the first patch that does not apply.
    """
    steps: list[tuple[str, str]] = []
    head = base
    with temporary_index(git, base) as index:
        head = _commit_crates(git, index, fork, head, steps)
        for patch in fork.patches:
            result = git.run(
                "apply",
                "--cached",
                "--whitespace=nowarn",
                str(patch.path.resolve()),
                check=False,
                index_file=index,
            )
            if result.returncode != 0:
                raise failure(patch, result.stderr + result.stdout)
            tree = git.out("write-tree", index_file=index)
            head = git.commit_tree(tree, head, patch_commit_message(patch))
            steps.append((patch.name, head))
    return head, steps


def check_applies(git: Git, base: str, patches: list[Patch]) -> dict[str, str | None]:
    """For each patch in order on ``base``: None if it applies (exactly), else the reason."""
    verdicts: dict[str, str | None] = {}
    with temporary_index(git, base) as index:
        for patch in patches:
            result = git.run(
                "apply",
                "--cached",
                "--whitespace=nowarn",
                str(patch.path.resolve()),
                check=False,
                index_file=index,
            )
            verdicts[patch.name] = None if result.returncode == 0 else failure(patch, result.stderr).message
    return verdicts
