"""A series refreshed for another upstream ref (``pytei fork check --ref R --refresh-into DIR``).

Builds apply the series exactly: a patch that lands on another ref only with fuzz or a 3-way
merge is refused there, since nobody has looked at where its hunks went.  ``fork check`` already
applies such patches as leniently as it can and commits each one in a scratch tree; the diff of
each of those commits is the same change written against that ref, which then applies exactly.
Each refreshed patch keeps its header (why, what, verified) with a line saying what it was
refreshed from, so a human can review the moved hunks before trusting them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytei.cache import atomic_write
from pytei.errors import PatchError
from pytei.fork.definition import Patch
from pytei.fork.git import Git
from pytei.fork.trial import PatchTrial

__all__ = ["Refreshed", "write_refreshed_series"]


@dataclass(frozen=True)
class Refreshed:
    """What ``--refresh-into`` wrote: the series' patch names, and the patches left out
    because the ref already has them."""

    directory: Path
    series: tuple[str, ...]
    dropped: tuple[str, ...]
    rewritten: tuple[str, ...]  # the patches whose text changed (fuzz, offsets, 3-way)


def _header(patch: Patch) -> str:
    text = patch.path.read_text(encoding="utf-8")
    cut = text.find("\ndiff --git ")
    return text if cut < 0 else text[: cut + 1]


def write_refreshed_series(
    git: Git,
    patches: list[Patch],
    trials: list[PatchTrial],
    commits: list[tuple[str, str] | None],
    *,
    ref: str,
    ref_commit: str,
    into: Path,
) -> Refreshed:
    """Write ``into/series`` and one patch per applied trial, each the diff of its commit in the
    trial tree (``commits[i]`` is (parent, commit), None for a patch the ref already has).
    Nothing is written unless every patch applied; other files in ``into`` are left alone."""
    failed = [t.patch for t in trials if not t.applied]
    if failed:
        raise PatchError(
            f"cannot refresh the series for {ref}: {', '.join(failed)} do not apply even with fuzz or a 3-way merge",
            hint="refresh those patches by hand against that ref",
        )
    texts: dict[str, str] = {}
    dropped: list[str] = []
    rewritten: list[str] = []
    for patch, trial, span in zip(patches, trials, commits, strict=True):
        if span is None:
            dropped.append(patch.name)
            continue
        diff = git.out("diff", "--full-index", "--no-color", "--no-renames", span[0], span[1]) + "\n"
        original = patch.path.read_text(encoding="utf-8")
        header = _header(patch)
        if trial.outcome == "clean" or original[len(header) :] == diff:
            texts[patch.name] = original
            continue
        note = f"Refreshed: for {ref} ({ref_commit[:12]}) from a {trial.outcome} application ({trial.detail})"
        head, sep, _ = header.rpartition("---\n")
        header = f"{head}{note}\n{sep}" if sep else f"{header}{note}\n---\n"
        texts[patch.name] = header + diff
        rewritten.append(patch.name)
    names = list(texts)
    texts["series"] = (
        f"# refreshed for {ref} ({ref_commit}) by `pytei fork check --refresh-into`\n"
        + "\n".join(names)
        + "\n"
    )
    into.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():  # series last: a reader never sees it name a missing file
        atomic_write(into / name, text)
    return Refreshed(into, tuple(names), tuple(dropped), tuple(rewritten))
