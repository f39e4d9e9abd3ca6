"""Trying the series on another upstream ref (``pytei fork check --ref``), patch by patch, file by
file, hunk by hunk.

Each patch is tried on the tree the previous ones left:
1. already there: it applies in *reverse* and not forwards -> ``upstream`` ("already applied
   upstream (can be dropped)");
2. exactly (``git apply``) -> ``clean``, or ``offset`` when GNU patch reports hunks moved;
3. with fuzz (GNU patch, up to 3 lines of context) -> ``fuzz`` / ``offset``;
4. with a 3-way merge on the blobs the patch's index lines name -> ``3way`` when every file
   merges, else ``fails`` with each file's outcome: ``3way-merged``, ``conflict`` (both sides
   changed the same lines) or ``fails`` (no merge possible), and each hunk's result.
A patch that fails leaves the tree as it was, so later patches are judged on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytei._subprocess import run
from pytei.errors import ToolMissingError
from pytei.fork.definition import Patch
from pytei.fork.git import Git
from pytei.fork.patching import failure, patch_commit_message

__all__ = ["FileTrial", "HunkTrial", "PatchTrial", "trial_apply"]

PatchOutcome = Literal["clean", "offset", "fuzz", "3way", "upstream", "fails"]
FileOutcome = Literal["applied", "offset", "fuzz", "3way-merged", "conflict", "fails", "upstream"]
HunkOutcome = Literal["applied", "offset", "fuzz", "failed"]

_HUNK_OK = re.compile(r"Hunk #(\d+) succeeded at (\d+)(?: with fuzz (\d+))?(?: \(offset (-?\d+) lines?\))?")
_HUNK_FAILED = re.compile(r"Hunk #(\d+) FAILED at (\d+)")
_PATCHING_FILE = re.compile(r"^(?:checking|patching) file (.+)$")
_THREE_WAY = re.compile(r"^Applied patch to '(.+)' (cleanly|with conflicts)\.$")
_THREE_WAY_FAILED = re.compile(
    r"^error: (.+?): (patch does not apply|does not exist in index|.*lacks the necessary blob)"
)


@dataclass(frozen=True)
class HunkTrial:
    number: int
    outcome: HunkOutcome
    line: int | None = None  # where it applied (or was tried) in the target file
    offset: int = 0
    fuzz: int = 0

    def describe(self) -> str:
        if self.outcome == "failed":
            return f"hunk #{self.number} FAILED" + (f" at {self.line}" if self.line else "")
        parts = [f"fuzz {self.fuzz}"] if self.fuzz else []
        if self.offset:
            parts.append(f"offset {self.offset}")
        extra = f" ({', '.join(parts)})" if parts else ""
        return f"hunk #{self.number} at {self.line}{extra}" if self.line else f"hunk #{self.number}{extra}"


@dataclass(frozen=True)
class FileTrial:
    file: str
    outcome: FileOutcome
    hunks: tuple[HunkTrial, ...] = ()

    def describe(self) -> str:
        shown = [h.describe() for h in self.hunks if h.outcome != "applied" or self.outcome != "applied"]
        return f"{self.file}: {self.outcome}" + (f" ({'; '.join(shown)})" if shown else "")


@dataclass(frozen=True)
class PatchTrial:
    """How one patch fared against a ref."""

    patch: str
    outcome: PatchOutcome
    detail: str = ""
    file: str | None = None  # the first file that failed
    hunk: int | None = None  # its first failed hunk
    files: tuple[FileTrial, ...] = field(default_factory=tuple)

    @property
    def applied(self) -> bool:
        return self.outcome != "fails"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _gnu_patch(worktree: Path, patch: Path, *, fuzz: int, dry_run: bool) -> tuple[bool, str]:
    args = ["patch", "-p1", f"--fuzz={fuzz}", "--forward", "--batch", "--no-backup-if-mismatch", "-r", "-"]
    if dry_run:
        args.append("--dry-run")
    result = run([*args, "-i", str(patch)], cwd=worktree, check=False, stream=False)
    return result.returncode == 0, result.stdout + result.stderr


def _hunks_by_file(output: str, patch: Patch) -> dict[str, list[HunkTrial]]:
    """GNU patch's report, per file and hunk; hunks it says nothing about applied as they were."""
    found: dict[str, dict[int, HunkTrial]] = {}
    current = ""
    for line in output.splitlines():
        match = _PATCHING_FILE.match(line.strip())
        if match:
            current = match.group(1).strip()
            found.setdefault(current, {})
            continue
        ok = _HUNK_OK.search(line)
        if ok and current:
            number, at, fuzz, offset = ok.groups()
            outcome: HunkOutcome = "fuzz" if fuzz else "offset" if offset else "applied"
            found[current][int(number)] = HunkTrial(
                int(number), outcome, int(at), int(offset or 0), int(fuzz or 0)
            )
            continue
        failed = _HUNK_FAILED.search(line)
        if failed and current:
            found[current][int(failed.group(1))] = HunkTrial(
                int(failed.group(1)), "failed", int(failed.group(2))
            )
    hunks: dict[str, list[HunkTrial]] = {}
    for file, starts in patch.hunks.items():
        seen = found.get(file, {})
        hunks[file] = [
            seen.get(n) or HunkTrial(n, "applied", start) for n, start in enumerate(starts, start=1)
        ]
    return hunks


def _file_outcome(hunks: Iterable[HunkTrial]) -> FileOutcome:
    outcomes = {hunk.outcome for hunk in hunks}
    if "failed" in outcomes:
        return "fails"
    if "fuzz" in outcomes:
        return "fuzz"
    return "offset" if "offset" in outcomes else "applied"


def _summary(files: Iterable[FileTrial]) -> str:
    return "; ".join(file.describe() for file in files if file.outcome not in ("applied",))


def trial_apply(git: Git, worktree: Path, patch: Patch) -> PatchTrial:
    """Apply ``patch`` to the checked-out ``worktree`` as leniently as needed and commit it."""
    wt = git.with_work_tree(worktree)
    path = str(patch.path.resolve())
    exact = wt.run("apply", "--check", "--whitespace=nowarn", path, check=False)
    if exact.returncode != 0 and wt.ok("apply", "--check", "--reverse", "--whitespace=nowarn", path):
        files = tuple(FileTrial(file, "upstream") for file in patch.files)
        return PatchTrial(patch.name, "upstream", "already applied upstream (can be dropped)", files=files)
    try:
        ok, output = _gnu_patch(
            worktree, patch.path.resolve(), fuzz=0 if exact.returncode == 0 else 3, dry_run=True
        )
        hunks = _hunks_by_file(output, patch)
    except ToolMissingError:  # without GNU patch: no offsets or fuzz, git's verdicts only
        ok, hunks = False, {file: [] for file in patch.files}
    if exact.returncode == 0:
        files = tuple(FileTrial(f, _file_outcome(h) if h else "applied", tuple(h)) for f, h in hunks.items())
        moved = any(file.outcome == "offset" for file in files)
        wt.run("apply", "--index", "--whitespace=nowarn", path)
        _commit(wt, patch)
        return PatchTrial(patch.name, "offset" if moved else "clean", _summary(files), files=files)
    if ok:
        _gnu_patch(worktree, patch.path.resolve(), fuzz=3, dry_run=False)
        files = tuple(FileTrial(f, _file_outcome(h), tuple(h)) for f, h in hunks.items())
        outcome: PatchOutcome = "fuzz" if any(file.outcome == "fuzz" for file in files) else "offset"
        _commit(wt, patch)
        return PatchTrial(patch.name, outcome, _summary(files), files=files)
    three_way = wt.run("apply", "--3way", "--whitespace=nowarn", path, check=False)
    merged: dict[str, str] = {}
    for line in (three_way.stdout + three_way.stderr).splitlines():
        match = _THREE_WAY.match(line.strip())
        if match:
            merged[match.group(1)] = match.group(2)
    files = tuple(_three_way_file(file, hunks.get(file, []), merged.get(file)) for file in patch.files)
    if three_way.returncode == 0:
        _commit(wt, patch)
        return PatchTrial(
            patch.name,
            "3way",
            _summary(files) or "merged with the blobs the patch's index lines name",
            files=files,
        )
    # Leave the tree as it was before this patch so later patches are tried on a clean state.
    wt.run("reset", "--hard", "--quiet", "HEAD")
    wt.run("clean", "-fdq")
    error = failure(patch, exact.stderr)
    bad = [file for file in files if file.outcome in ("conflict", "fails")]
    first = bad[0] if bad else None
    first_hunk = next((h.number for h in first.hunks if h.outcome == "failed"), None) if first else None
    detail = "; ".join(file.describe() for file in bad) or error.message
    return PatchTrial(
        patch.name,
        "fails",
        detail,
        first.file if first else error.file,
        first_hunk if first_hunk is not None else error.hunk,
        files,
    )


def _three_way_file(file: str, hunks: list[HunkTrial], merged: str | None) -> FileTrial:
    direct = _file_outcome(hunks) if hunks else "applied"
    if direct != "fails":
        return FileTrial(file, direct, tuple(hunks))
    if merged == "cleanly":
        return FileTrial(file, "3way-merged", tuple(hunks))
    if merged == "with conflicts":
        return FileTrial(file, "conflict", tuple(hunks))
    return FileTrial(file, "fails", tuple(hunks))


def _commit(wt: Git, patch: Patch) -> None:
    wt.run("add", "-A")
    wt.run(
        "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", input_text=patch_commit_message(patch)
    )
