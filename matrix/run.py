"""Run the matrix's cells that pass the filters, one subprocess each, then render the report.

    python matrix/run.py [--tag quick] [--ref R] [--profile P] [--model M] [--rerun failed|stale|all]

A cell's failure is recorded in its file and never stops the run.  By default every selected
cell runs; ``--rerun failed`` runs only those whose last result is failing (or missing),
``--rerun stale`` also those whose inputs changed since (cells.toml, the patch series, the fork
definition, the cell runner).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matrix.cells import Cell, load_matrix, machine_kind

CELLS_DIR = Path(__file__).with_name("results") / "cells"


def inputs_digest() -> str:
    """What a cell's result depends on besides pytei itself."""
    digest = hashlib.sha256()
    for path in [ROOT / "matrix" / "cells.toml", ROOT / "matrix" / "cell.py", ROOT / "tei_fork" / "fork.toml",
                 *sorted((ROOT / "patches").rglob("*"))]:  # fmt: skip
        if path.is_file():
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def wanted(cell: Cell, args: argparse.Namespace, digest: str) -> bool:
    if args.tag and args.tag not in cell.tags:
        return False
    for key in ("ref", "profile", "model"):
        given = getattr(args, key)
        value = {"ref": cell.ref, "profile": cell.profile.name, "model": cell.model.name if cell.model else "(any)"}[key]
        if given and value not in given.split(","):
            return False
    if args.rerun == "all":
        return True
    path = CELLS_DIR / f"{cell.id}.json"
    if not path.is_file():
        return True
    last = json.loads(path.read_text(encoding="utf-8"))
    return last.get("status") == "failing" or (args.rerun == "stale" and last.get("inputs") != digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag")
    parser.add_argument("--ref")
    parser.add_argument("--profile")
    parser.add_argument("--model")
    parser.add_argument("--rerun", choices=["failed", "stale", "all"], default="all")
    args = parser.parse_args()
    digest = inputs_digest()
    cells = [c for c in load_matrix().cells(machine_kind()) if wanted(c, args, digest)]
    print(f"{len(cells)} cells to run", flush=True)
    for index, cell in enumerate(cells, 1):
        print(f"[{index}/{len(cells)}] {cell.id}", flush=True)
        done = subprocess.run([sys.executable, str(ROOT / "matrix" / "cell.py"), cell.id, "--inputs", digest], check=False)
        if done.returncode != 0:  # the runner itself broke: record that, go on
            CELLS_DIR.mkdir(parents=True, exist_ok=True)
            record = {"id": cell.id, "ref": cell.ref, "profile": cell.profile.name,
                      "model": cell.model.name if cell.model else "(any)", "runs": cell.runs, "status": "failing",
                      "reason": f"matrix/cell.py exited {done.returncode}", "columns": {}, "inputs": digest}  # fmt: skip
            (CELLS_DIR / f"{cell.id}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "bin" / "scrub_results.py"), str(CELLS_DIR.parent)], check=True)
    subprocess.run([sys.executable, str(ROOT / "matrix" / "report.py")], check=True)


if __name__ == "__main__":
    main()
