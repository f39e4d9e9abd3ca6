"""Replace this machine's paths in benchmarks/results/ and matrix/results/ with placeholders
before committing (the one scrubber both use).

Reports record what they ran against (binaries, model directories, manifests with mirror
locations); the figures are worth keeping, the local paths are not.  Replaced, longest first:
mirror locations (PYTEI_GIT_MIRRORS) -> <mirror>, the pytei cache -> <pytei-cache>, this
checkout -> <repo>, the home directory -> <home>, temporary directories -> <tmp>.

    python bin/scrub_results.py [DIR ...]     # rewrites the files in place (default: both results dirs)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pytei.cache import Cache
from pytei.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DIRS = (ROOT / "benchmarks" / "results", ROOT / "matrix" / "results")


def replacements() -> list[tuple[str, str]]:
    settings = load_settings()
    pairs = [(location, "<mirror>") for location in settings.get_map("git_mirrors").values()]
    pairs.append((str(Cache.from_settings(settings).root), "<pytei-cache>"))
    pairs.append((str(ROOT), "<repo>"))
    pairs.append((str(Path.home()), "<home>"))
    pairs.append((tempfile.gettempdir().rstrip("/") + "/", "<tmp>/"))
    return sorted({p for p in pairs if p[0] and p[0] != "/"}, key=lambda p: -len(p[0]))


def scrub(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def main() -> None:
    pairs = replacements()
    directories = [Path(a).resolve() for a in sys.argv[1:]] or [d for d in DEFAULT_DIRS if d.is_dir()]
    files = [p for d in directories for p in sorted(d.rglob("*")) if p.is_file() and p.suffix in (".json", ".md", ".txt", ".log", ".html")]
    changed = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        new = scrub(text, pairs)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    print(f"scrubbed {changed} of {len(files)} files under {', '.join(str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d) for d in directories)}")
    home = os.fsdecode(Path.home())
    leftover = [str(p) for p in files if home in p.read_text(errors="ignore")]
    if leftover:
        raise SystemExit(f"home directory still named in: {', '.join(leftover)}")


if __name__ == "__main__":
    main()
