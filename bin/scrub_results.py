"""Replace this machine's paths in benchmarks/results/ with placeholders before committing.

Reports record what they ran against (binaries, model directories, manifests with mirror
locations); the figures are worth keeping, the local paths are not.  Replaced, longest first:
mirror locations (PYTEI_GIT_MIRRORS) -> <mirror>, the pytei cache -> <pytei-cache>, this
checkout -> <repo>, the home directory -> <home>, temporary directories -> <tmp>.

    python benchmarks/scrub_results.py            # rewrites the files in place
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pytei.cache import Cache
from pytei.config import load_settings

RESULTS = Path(__file__).parent / "results"


def replacements() -> list[tuple[str, str]]:
    settings = load_settings()
    pairs = [(location, "<mirror>") for location in settings.get_map("git_mirrors").values()]
    pairs.append((str(Cache.from_settings(settings).root), "<pytei-cache>"))
    pairs.append((str(Path(__file__).resolve().parent.parent), "<repo>"))
    pairs.append((str(Path.home()), "<home>"))
    pairs.append((tempfile.gettempdir().rstrip("/") + "/", "<tmp>/"))
    return sorted({p for p in pairs if p[0] and p[0] != "/"}, key=lambda p: -len(p[0]))


def scrub(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def main() -> None:
    pairs = replacements()
    changed = 0
    for path in sorted(RESULTS.rglob("*")):
        if not path.is_file() or path.suffix not in (".json", ".md", ".txt", ".log"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        new = scrub(text, pairs)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    print(
        f"scrubbed {changed} files under {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
    )
    leftover = [
        str(p)
        for p in RESULTS.rglob("*")
        if p.is_file() and os.fsdecode(Path.home()) in p.read_text(errors="ignore")
    ]
    if leftover:
        raise SystemExit(f"home directory still named in: {', '.join(leftover)}")


if __name__ == "__main__":
    main()
